"""The queue's ranking on small graphs whose right order is known: which decisions the queue
holds (every touching pair left apart and every merge of the rule, with the sides' sizes), what
fixing each is worth in bits of VI, and the order by chance of an error times that worth."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_connectome.agglomerate import agglomerate
from napari_connectome.agglomerate.queue import (
    FEATURES,
    SHAPE_FEATURES,
    Calibration,
    Candidates,
    ProofreadQueue,
    fit_calibration,
    read_candidates,
)
from napari_connectome.errors import UserInputError
from napari_connectome.evaluate import evaluate_segmentation
from napari_connectome.volumes import open_volume


def candidates(**cols) -> Candidates:
    n = len(cols["affinity"])
    base = {
        "merged": np.zeros(n, bool),
        "a": np.arange(1, n + 1, dtype=np.uint64),
        "b": np.arange(101, n + 101, dtype=np.uint64),
        "point": np.zeros((n, 3), np.int64),
        "area": np.full(n, 10, np.int64),
        "p90": np.full(n, 0.5),
        "total_voxels": 1000,
    }
    base.update(cols)
    for k in ("affinity", "n_a", "n_b"):
        base[k] = np.asarray(base[k])
    return Candidates(**base)


def test_gain_is_the_vi_change_of_joining_two_pure_pieces():
    c = candidates(affinity=[0.5, 0.5, 0.5], n_a=[500, 100, 1], n_b=[500, 100, 999])
    gain = c.gain()
    assert gain[0] == pytest.approx(1.0)  # two halves of the whole volume: one bit
    assert gain[0] > gain[1] > gain[2] > 0
    # against the metric itself: one body cut in two pieces of 100 voxels, in 1000 voxels
    gt = np.zeros(1000, np.uint64)
    gt[:200], gt[200:] = 1, 2
    seg = gt.copy()
    seg[100:200] = 3
    vi = evaluate_segmentation(seg.reshape(10, 10, 10), gt.reshape(10, 10, 10))
    assert vi["vi_split"] == pytest.approx(gain[1])


def test_fit_recovers_the_direction_of_the_evidence():
    rng = np.random.default_rng(0)
    n = 400
    aff = rng.uniform(0, 1, n)
    same = rng.uniform(0, 1, n) < 1 / (1 + np.exp(-12 * (aff - 0.5)))
    c = candidates(affinity=aff, n_a=np.full(n, 100), n_b=np.full(n, 100))
    cal = fit_calibration(c, same, 0.5)
    assert cal.weights[0] > 5  # higher affinity, one neuron more likely
    p = cal.p_same(c.features(0.5))
    assert p[aff > 0.9].mean() > 0.8 > 0.2 > p[aff < 0.1].mean()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Four blocks along x: 1 | 2 through bright cytoplasm (merged by the rule), 2 | 3 and 3 | 4
    through dark membranes (left apart); 4 is a thin slab."""
    tmp = tmp_path_factory.mktemp("toy")
    seg = np.zeros((12, 12, 40), np.uint64)
    seg[..., :10], seg[..., 10:20], seg[..., 20:36], seg[..., 36:] = 1, 2, 3, 4
    em = np.full(seg.shape, 200, np.uint8)
    em[..., 19:21] = 20
    em[..., 35:37] = 20
    em += np.random.default_rng(1).integers(0, 10, seg.shape, dtype=np.uint8)
    path = tmp / "toy.h5"
    with h5py.File(path, "w") as f:
        f["seg"], f["raw"] = seg, em
    dest = tmp / "agg.ome.zarr"
    agglomerate(open_volume(f"{path}:seg"), open_volume(f"{path}:raw"), dest, threshold=0.5)
    return dest


def test_candidates_are_every_pair_left_apart_and_every_merge(toy):
    c = read_candidates(toy)
    rows = {(bool(m), int(a), int(b)): k for k, (m, a, b) in enumerate(zip(c.merged, c.a, c.b))}
    assert set(rows) == {(True, 1, 2), (False, 2, 3), (False, 3, 4)}
    size = 12 * 12
    k = rows[(True, 1, 2)]
    assert (c.n_a[k], c.n_b[k], c.area[k]) == (10 * size, 10 * size, size)
    k = rows[(False, 2, 3)]  # sides: the merged segment 1+2 and 3
    assert (c.n_a[k], c.n_b[k]) == (20 * size, 16 * size)
    k = rows[(False, 3, 4)]
    assert (c.n_a[k], c.n_b[k]) == (16 * size, 4 * size)
    assert c.affinity[rows[(True, 1, 2)]] > 0.5 > c.affinity[rows[(False, 2, 3)]]
    assert c.total_voxels == seg_voxels(toy)


def seg_voxels(dest) -> int:
    return int((np.asarray(open_volume(str(dest / "supervoxels")).data) > 0).sum())


def test_queue_order_is_chance_of_error_times_worth(toy):
    # the evidence says nothing (all weights 0): every decision is a coin toss, so only the worth
    # orders them: 1+2 | 3 (20 and 16 blocks: 35.7 block-bits), 1 | 2 (10 and 10: 20), 3 | 4 (16
    # and 4: 14.4), the thin slab last
    coin = Calibration(0.0, (0.0,) * len(FEATURES))
    q = ProofreadQueue(toy, calibration=coin, gain_weight=1.0)
    assert [(it.a, it.b) for it in q.items] == [(2, 3), (1, 2), (3, 4)]
    assert all(it.p_wrong == pytest.approx(0.5) for it in q.items)
    assert q.expected_errors() == pytest.approx(1.5)
    assert q.expected_gain() == pytest.approx(sum(0.5 * it.gain for it in q.items))
    # affinity alone: a merge at high affinity is probably right, a pair left apart at low
    # affinity probably right too, but less so the closer it is to the threshold
    by_aff = Calibration(0.0, (20.0,) + (0.0,) * (len(FEATURES) - 1))
    q = ProofreadQueue(toy, calibration=by_aff, gain_weight=0.0)
    p = [it.p_wrong for it in q.items]
    assert p == sorted(p, reverse=True)
    q1 = ProofreadQueue(toy, calibration=by_aff, gain_weight=1.0)
    e = [it.p_wrong * it.gain for it in q1.items]
    assert e == sorted(e, reverse=True)
    # every item says why it is there
    text = q.describe(0)
    assert "chance the rule is wrong" in text
    assert "mbit of VI" in text
    assert ("merged at affinity" in text) == (q.items[0].kind == "merged")


def test_bad_settings_are_refused(toy, tmp_path):
    with pytest.raises(UserInputError, match="gain_weight"):
        ProofreadQueue(toy, gain_weight=2)
    with pytest.raises(UserInputError, match="band"):
        ProofreadQueue(toy, band=0)
    with pytest.raises(UserInputError, match="not an agglomerate output"):
        ProofreadQueue(tmp_path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A neurite-like block 1 across the volume (x < 30) holding three small pieces that end
    inside it on every side: cube 2 alone, and 4 | 5 joined through bright cytoplasm (merged by
    the rule, box x 15..28); block 3 (x >= 30) reaches the faces. Membranes are dark."""
    tmp = tmp_path_factory.mktemp("shapes")
    seg = np.ones((16, 16, 40), np.uint64)
    seg[5:10, 5:10, 5:10] = 2
    seg[5:10, 5:10, 15:20] = 4
    seg[5:10, 5:10, 20:28] = 5
    seg[..., 30:] = 3
    em = np.full(seg.shape, 200, np.uint8)
    for ax in range(3):
        d = np.diff(seg.astype(np.int64), axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        wall = np.zeros(seg.shape, bool)
        wall[tuple(lo)] |= d
        wall[tuple(hi)] |= d
        em[wall] = 20
    em[5:10, 5:10, 19:21] = 200  # 4 | 5: no membrane between them
    em += np.random.default_rng(2).integers(0, 10, seg.shape, dtype=np.uint8)
    path = tmp / "shapes.h5"
    with h5py.File(path, "w") as f:
        f["seg"], f["raw"] = seg, em
    dest = tmp / "agg.ome.zarr"
    # 4 | 5 scores about 0.17 (a small face), the membranes about 0.05: 0.1 merges only 4 | 5
    agglomerate(open_volume(f"{path}:seg"), open_volume(f"{path}:raw"), dest, threshold=0.1)
    return dest


def test_the_shape_rule_tells_a_piece_ending_inside_from_a_side_reaching_the_boundary(shapes):
    c = read_candidates(shapes)
    rows = {(bool(m), int(a), int(b)): k for k, (m, a, b) in enumerate(zip(c.merged, c.a, c.b))}
    assert set(rows) == {(True, 4, 5), (False, 1, 2), (False, 1, 3), (False, 1, 5)}
    assert c.features(0.1).shape[1] == len(FEATURES)  # the default ranking leaves them out
    x = c.features(0.1, shape=True)
    assert x.shape[1] == len(FEATURES) + len(SHAPE_FEATURES)
    inside, reach = x[:, len(FEATURES)], x[:, len(FEATURES) + 1]
    # the cube (125 voxels) and the pieces end inside; the block beyond x = 30 reaches the faces
    assert inside[rows[(False, 1, 2)]] == 1.0
    assert inside[rows[(False, 1, 3)]] == 0.0
    assert reach[rows[(False, 1, 3)]] == 1.0  # spans z and y
    # the merge: the smaller side is 4 alone (box 5 x 5 x 5 in 16 x 16 x 40)
    assert inside[rows[(True, 4, 5)]] == 1.0
    assert reach[rows[(True, 4, 5)]] == pytest.approx(5 / 16)
    # left apart from 1 (shown at 1 | 5, the widest contact): the merged 4 + 5, its box the
    # union of theirs (x 15..28: 13 of 40)
    k = rows[(False, 1, 5)]
    assert sorted((c.n_a[k], c.n_b[k])) == [325, 16 * 16 * 30 - 125 - 125 - 200]
    assert inside[k] == 1.0
    assert reach[k] == pytest.approx(13 / 40)
    # the reason says it in words
    q = ProofreadQueue(shapes)
    by_pair = {(it.kind, it.a, it.b): it for it in q.items}
    orphan = by_pair[("apart", 1, 2)].reason(q.threshold)
    assert "the smaller side ends inside the volume on every side" in orphan
    wide = by_pair[("apart", 1, 3)].reason(q.threshold)
    assert "ends inside" not in wide
    assert "the smaller side spans 100% of the volume: a long neurite" in wide
    # with everything else equal, a side ending inside weighs towards one neuron
    only_shape = Calibration(0.0, (0.0,) * len(FEATURES) + (2.0, 0.0))
    assert only_shape.shape
    assert not Calibration().shape
    p = only_shape.p_same(x)
    assert p[rows[(False, 1, 2)]] > 0.5
    assert p[rows[(False, 1, 3)]] == pytest.approx(0.5)
    q = ProofreadQueue(shapes, calibration=only_shape, gain_weight=0.0)
    assert q.items[0].inside  # ranked by the shape rule alone, a piece ending inside comes first
    assert [it.p_wrong for it in q.items] == sorted((it.p_wrong for it in q.items), reverse=True)
    with pytest.raises(UserInputError, match="weights"):
        ProofreadQueue(shapes, calibration=Calibration(0.0, (1.0, 2.0)))


def test_a_thin_slab_of_serial_sections_does_not_make_every_side_long():
    """8 sections of 40 nm under 128 x 128 voxels of 10 nm: every object crosses the slab, so
    the reach counts y and x only; a volume as deep as wide in nm counts every axis."""
    from napari_connectome.agglomerate.queue import _shape_rule

    shape = np.array([8, 128, 128])
    lo, hi = np.array([[0, 10, 10]]), np.array([[8, 30, 40]])  # all of z, 20 x 30 in y, x
    _, reach = _shape_rule(lo, hi, shape, [40, 10, 10])
    assert reach[0] == pytest.approx(30 / 128)
    _, reach = _shape_rule(lo, hi, shape, None)  # 8 isotropic voxels: still a thin slab
    assert reach[0] == pytest.approx(30 / 128)
    _, reach = _shape_rule(np.array([[0, 10, 10]]), np.array([[64, 30, 40]]), [64, 128, 128])
    assert reach[0] == 1.0  # half as deep as wide: z counts, and the side spans all of it
    _, reach = _shape_rule(lo, hi, np.array([32, 128, 128]), [40, 10, 10])  # 1.28 um each way
    assert reach[0] == pytest.approx(8 / 32)
