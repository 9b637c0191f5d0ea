"""The over-segmentation: seeds in reverse order, the split consensus of two runs, and
``segment --oversegment`` writing it, the way a user runs it (real painter model, real files)."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.ffn.consensus import UNMATCHED, split_consensus
from napari_connectome.ffn.inference import segment_region
from napari_connectome.ffn.seeds import grid_seeds, in_seed_order
from napari_connectome.volumes import open_volume
from tests import test_segment_cli as segment_cli_tests
from tests.test_ffn_inference import CONFIG, OPTS, bright_painter

model_dir = segment_cli_tests.model_dir  # the painter model and EM of the CLI's tests
em = segment_cli_tests.em


def brute_force_consensus(a, b, min_size, unmatched):
    """The rule of ffn/consensus.py written out voxel by voxel: kept voxels, flood fill over
    6-neighbours with the same (a, b) pair, pieces under min_size to 0, ids by first voxel."""
    shape = a.shape
    keep = {"drop": (a > 0) & (b > 0), "keep": (a > 0) | (b > 0), "first": a > 0}[unmatched]
    piece = -np.ones(shape, int)
    pieces = []
    for start in np.ndindex(shape):  # C order: pieces are found in order of their first voxel
        if not keep[start] or piece[start] >= 0:
            continue
        members, queue = [start], deque([start])
        piece[start] = len(pieces)
        while queue:
            p = queue.popleft()
            for axis in range(3):
                for d in (-1, 1):
                    q = list(p)
                    q[axis] += d
                    q = tuple(q)
                    if not 0 <= q[axis] < shape[axis] or piece[q] >= 0 or not keep[q]:
                        continue
                    if (a[q], b[q]) == (a[start], b[start]):
                        piece[q] = len(pieces)
                        members.append(q)
                        queue.append(q)
        pieces.append(members)
    out = np.zeros(shape, np.uint64)
    next_id = 1
    for members in pieces:
        if len(members) >= max(min_size, 1):
            for p in members:
                out[p] = next_id
            next_id += 1
    return out


def blocky(rng, shape, n_ids, block):
    """Random ids on coarse blocks (so pieces are larger than one voxel), some 0."""
    coarse = rng.integers(0, n_ids + 1, [-(-s // block) for s in shape])
    up = coarse.repeat(block, 0).repeat(block, 1).repeat(block, 2)
    return up[: shape[0], : shape[1], : shape[2]]


@pytest.mark.parametrize("unmatched", UNMATCHED)
@pytest.mark.parametrize("min_size", [0, 1, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_consensus_is_the_brute_force_rule(unmatched, min_size, seed):
    rng = np.random.default_rng(seed)
    shape = (6, 7, 8)
    a = blocky(rng, shape, 3, 2).astype(np.uint64) * np.uint64(10**12)  # large uint64 ids
    b = blocky(rng, shape, 4, 3).astype(np.int32)
    a_before, b_before = a.copy(), b.copy()

    out, stats = split_consensus(a, b, min_size=min_size, unmatched=unmatched)

    expected = brute_force_consensus(a, b, min_size, unmatched)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(a, a_before)  # inputs untouched
    np.testing.assert_array_equal(b, b_before)
    assert stats.segments == int(out.max())
    assert stats.voxels_segmented == np.count_nonzero(out)
    assert stats.segments_a == np.unique(a[a > 0]).size
    assert stats.segments_b == np.unique(b[b > 0]).size
    kept = brute_force_consensus(a, b, 0, unmatched)
    assert stats.pieces == int(kept.max())
    assert stats.voxels_dropped_small == np.count_nonzero(kept) - np.count_nonzero(out)
    assert stats.voxels_dropped_unmatched == np.count_nonzero((a > 0) | (b > 0)) - np.count_nonzero(
        kept
    )


def test_consensus_splits_where_the_runs_disagree_and_depends_only_on_the_partitions():
    a = np.zeros((1, 4, 8), np.uint32)
    a[0, :, :6] = 7  # run A: one object over x 0..5
    b = np.zeros_like(a)
    b[0, :, :3] = 2  # run B: the same voxels as two objects, and one more beyond A's
    b[0, :, 3:8] = 5
    out, stats = split_consensus(a, b, min_size=1)
    assert stats.segments == 2
    np.testing.assert_array_equal(out[0, :, :3], 1)
    np.testing.assert_array_equal(out[0, :, 3:6], 2)
    np.testing.assert_array_equal(out[0, :, 6:], 0)  # only B segmented it: dropped
    # renaming the ids of either run changes nothing; swapping the runs changes nothing for drop
    again, _ = split_consensus(
        np.where(a > 0, a * 3 + 1, 0), np.where(b > 0, 100 - b, 0), min_size=1
    )
    np.testing.assert_array_equal(again, out)
    swapped, _ = split_consensus(b, a, min_size=1)
    np.testing.assert_array_equal(swapped, out)
    # a piece of one pair that is two parts in space is two supervoxels
    a2 = np.ones((1, 1, 5), np.uint8)
    b2 = np.array([[[1, 2, 1, 1, 1]]], np.uint8)
    out2, _ = split_consensus(a2, b2, min_size=1)
    np.testing.assert_array_equal(out2, [[[1, 2, 3, 3, 3]]])
    out3, stats3 = split_consensus(a2, b2, min_size=2)  # the two single voxels go to 0
    np.testing.assert_array_equal(out3, [[[0, 0, 1, 1, 1]]])
    assert stats3.voxels_dropped_small == 2


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 3), int), {}, "shapes"),
        (np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), int), {}, "integer ids"),
        (-np.ones((2, 2, 2), int), np.zeros((2, 2, 2), int), {}, "negative"),
        (np.zeros((2, 2), int), np.zeros((2, 2), int), {}, "3D"),
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), {"min_size": -1}, "min_size"),
        (np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), {"unmatched": "all"}, "unmatched"),
    ],
)
def test_split_consensus_refuses_bad_input(a, b, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        split_consensus(a, b, **kwargs)


def test_reverse_seed_order_tries_the_policy_seeds_last_first():
    pts = grid_seeds((20, 20, 20), step=8, offsets=(0, 4))
    rev = in_seed_order(pts, "reverse")
    np.testing.assert_array_equal(rev, pts[::-1])
    assert in_seed_order(pts, "forward") is pts
    with pytest.raises(UserInputError, match="seed order"):
        in_seed_order(pts, "random")

    # in a run: every seed's outcome is reported in the order it was tried
    img = np.zeros((40, 40, 40), np.uint8)
    img[8:32, 8:32, 8:32] = 255
    grid = {"step": 8, "offsets": [8]}
    opts = OPTS.updated(seed_policy="grid", seed_policy_args=grid, max_steps=1)
    fwd = segment_region(img, bright_painter(), CONFIG, opts)
    rev = segment_region(img, bright_painter(), CONFIG, opts.updated(seed_order="reverse"))
    tried_fwd = [o.seed for o in fwd.outcomes]
    assert [o.seed for o in rev.outcomes] == tried_fwd[::-1]
    assert fwd.origins[1]["start_zyx"] != rev.origins[1]["start_zyx"]
    # one FOV per object (max_steps 1): which object claims the shared voxels depends on the order
    assert not np.array_equal(fwd.labels, rev.labels)
    assert np.array_equal(fwd.labels > 0, rev.labels > 0)

    with pytest.raises(UserInputError, match="explicit seeds"):
        segment_region(img, bright_painter(), CONFIG, opts.updated(seed_order="reverse"),
                       seeds=[(20, 20, 20)])  # fmt: skip


def _cube_em(tmp_path):
    import h5py

    raw = np.zeros((40, 40, 48), np.uint8)
    raw[8:32, 8:32, 8:40] = 255
    path = tmp_path / "cube.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=raw)
    return f"{path}:raw"


def test_segment_oversegment_writes_the_consensus_of_both_seed_orders(model_dir, tmp_path, capsys):
    source = _cube_em(tmp_path)
    common = ["--model", model_dir, "--seed-policy", "grid", "--max-steps", "1",
              "--min-segment-size", "20", "--threads", "1"]  # fmt: skip
    fwd, rev, over = (tmp_path / f"{n}.ome.zarr" for n in ("fwd", "rev", "over"))
    assert main(["segment", source, str(fwd), *map(str, common), "--quiet"]) == 0
    assert main(["segment", source, str(rev), *map(str, common), "--seed-order", "reverse",
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["segment", source, str(over), *map(str, common), "--oversegment",
                 "--consensus-min-size", "10", "--progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err

    a = np.asarray(open_volume(fwd).data)
    b = np.asarray(open_volume(rev).data)
    c = np.asarray(open_volume(over).data)
    assert not np.array_equal(a, b)
    expected, stats = split_consensus(a, b, min_size=10)
    np.testing.assert_array_equal(c, expected)
    assert stats.segments > max(len(np.unique(a)), len(np.unique(b))) - 1  # finer than either run
    for line in ("forward run:", "reverse run:", "consensus:"):
        assert line in err
    assert "reverse:" in err  # the progress bar names the pass
    report = json.loads((over / "ffn_counters.json").read_text())
    runs = report["oversegment"]["runs"]
    fwd_report = json.loads((fwd / "ffn_counters.json").read_text())
    assert runs["forward"]["steps"] == fwd_report["counters"]["steps"]
    assert report["counters"]["steps"] == runs["forward"]["steps"] + runs["reverse"]["steps"]
    assert report["counters"]["segments"] == stats.segments
    assert report["oversegment"]["consensus"]["min_size"] == 10
    assert report["oversegment"]["consensus"]["unmatched"] == "drop"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "20,20,20"], "--seed"),
        (["--seed-order", "reverse"], "--seed-order"),
        (["--consensus-unmatched", "all"], "invalid choice"),
        (["--consensus-min-size", "-3"], "must be 0 or more"),
    ],
)
def test_oversegment_bad_input_exits_2_and_writes_nothing(
    extra, message, model_dir, tmp_path, capsys
):
    source = _cube_em(tmp_path)
    dest = tmp_path / "out.ome.zarr"
    argv = ["segment", source, str(dest), "--model", str(model_dir), "--oversegment", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.h5"]


def _same_partition(x: np.ndarray, y: np.ndarray) -> bool:
    """Equal up to renaming the ids (0 stays 0)."""
    if not np.array_equal(x == 0, y == 0):
        return False
    pairs = np.unique(np.stack([x.ravel(), y.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _cube_job(tmp_path, model_dir, oversegment) -> dict:
    return {
        "name": "cube",
        "input": _cube_em(tmp_path),
        "output": str(tmp_path / "job.ome.zarr"),
        "block_shape": [40, 40, 48],  # one block: its labels are the segmenter's own
        "overlap": [0, 0, 0],
        "segmenter": {
            "kind": "ffn",
            "model": str(model_dir),
            "device": "cpu",
            "inference": {"seed_policy": "grid", "max_steps": 1, "min_segment_size": 20},
            "oversegment": oversegment,
        },
        "backend": {"kind": "local", "workers": 1},
        "pyramid_levels": 1,
        "region_graph": False,
    }


def test_a_job_with_oversegment_writes_the_consensus(model_dir, tmp_path, capsys):
    import yaml

    spec = _cube_job(tmp_path, model_dir, {"min_size": 10})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run-job", str(path), "--quiet"]) == 0, capsys.readouterr().err
    out = np.asarray(open_volume(tmp_path / "job.ome.zarr").data)

    raw = np.asarray(open_volume(spec["input"]).data)
    opts = OPTS.updated(seed_policy="grid", max_steps=1, min_segment_size=20)
    fwd = segment_region(raw, bright_painter(), CONFIG, opts)
    rev = segment_region(raw, bright_painter(), CONFIG, opts.updated(seed_order="reverse"))
    expected, stats = split_consensus(fwd.labels, rev.labels, min_size=10)
    assert stats.segments > int(fwd.labels.max())  # finer than the forward run alone
    assert _same_partition(out, expected)


@pytest.mark.parametrize(
    ("oversegment", "inference", "message"),
    [
        ({"min_size": -1}, {}, "min_size"),
        ({"unmatched": "all"}, {}, "unmatched"),
        (True, {"seed_order": "reverse"}, "both seed orders"),
    ],
)
def test_a_bad_oversegment_section_exits_2_and_writes_nothing(
    oversegment, inference, message, model_dir, tmp_path, capsys
):
    import yaml

    spec = _cube_job(tmp_path, model_dir, oversegment)
    spec["segmenter"]["inference"].update(inference)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run-job", str(path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.h5", "job.yaml"]


def _labels_h5(tmp_path, name, data, resolution=(10, 10, 10)):
    import h5py

    path = tmp_path / name
    with h5py.File(path, "w") as f:
        d = f.create_dataset("seg", data=data)
        d.attrs["resolution_nm_zyx"] = list(resolution)
    return f"{path}:seg"


def test_consensus_command_combines_two_segmentation_files(tmp_path, capsys):
    rng = np.random.default_rng(5)
    a = blocky(rng, (12, 14, 16), 4, 4).astype(np.uint64)
    b = blocky(rng, (12, 14, 16), 5, 3).astype(np.uint32)
    src_a, src_b = _labels_h5(tmp_path, "a.h5", a), _labels_h5(tmp_path, "b.h5", b)
    dest = tmp_path / "sv.ome.zarr"
    assert main(["consensus", src_a, src_b, str(dest), "--min-size", "3", "--quiet"]) == 0
    assert "supervoxels from" in capsys.readouterr().err
    vol = open_volume(dest)
    assert vol.is_labels
    assert tuple(vol.voxel_size_nm) == (10.0, 10.0, 10.0)
    expected, stats = split_consensus(a, b, min_size=3)
    np.testing.assert_array_equal(np.asarray(vol.data), expected)
    report = json.loads((dest / "consensus.json").read_text())
    assert report["segments"] == stats.segments
    assert report["min_size"] == 3
    # an existing DEST is refused without --overwrite and replaced with it
    assert main(["consensus", src_a, src_b, str(dest), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["consensus", src_a, src_b, str(dest), "--unmatched", "keep", "--min-size", "3",
                 "--overwrite", "--quiet"]) == 0  # fmt: skip
    keep, _ = split_consensus(a, b, min_size=3, unmatched="keep")
    np.testing.assert_array_equal(np.asarray(open_volume(dest).data), keep)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shapes", "shape"),
        ("float", "not integer ids"),
        ("voxel_size", "different voxel size"),
        ("min_size", "must be 0 or more"),
        ("inside_input", "inside"),
    ],
)
def test_consensus_command_bad_input_exits_2_and_writes_nothing(case, message, tmp_path, capsys):
    a = np.ones((8, 8, 8), np.uint32)
    src_a = _labels_h5(tmp_path, "a.h5", a)
    b, extra, dest = a, [], tmp_path / "out.ome.zarr"
    if case == "shapes":
        b = np.ones((8, 8, 9), np.uint32)
    elif case == "float":
        b = a.astype(np.float32)
    elif case == "min_size":
        extra = ["--min-size", "-1"]
    src_b = _labels_h5(tmp_path, "b.h5", b, (8, 8, 8) if case == "voxel_size" else (10, 10, 10))
    if case == "inside_input":
        zarr_in = tmp_path / "in.ome.zarr"
        assert main(["consensus", src_a, src_b, str(zarr_in), "--quiet"]) == 0
        src_a, dest = str(zarr_in), zarr_in / "nested.ome.zarr"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["consensus", src_a, src_b, str(dest), *extra, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not dest.exists()


def test_the_job_spec_and_the_cli_share_the_consensus_defaults():
    from napari_connectome.ffn.consensus import DEFAULT_MIN_SIZE
    from napari_connectome.jobs.spec import parse_spec

    spec = parse_spec(
        {"input": "em.h5:raw", "output": "o.zarr", "segmenter": {"oversegment": True}}
    )
    assert spec.segmenter.oversegment.min_size == DEFAULT_MIN_SIZE
    assert spec.segmenter.oversegment.unmatched == "drop"
    plain = parse_spec({"input": "em.h5:raw", "output": "o.zarr"})
    assert "oversegment" not in plain.model_dump()["segmenter"]  # old specs keep their fingerprint
    off = parse_spec(
        {"input": "em.h5:raw", "output": "o.zarr", "segmenter": {"oversegment": False}}
    )
    assert off.fingerprint() == plain.fingerprint()
    assert spec.fingerprint() != plain.fingerprint()
