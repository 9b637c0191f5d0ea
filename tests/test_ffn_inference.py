"""FFN inference semantics on synthetic volumes with a hand-wired model (fast, CPU).

The model is a real ConvStack3DFFN whose weights make it paint bright voxels as object and dark ones
as background, so the expected segmentation is known exactly: a bright rod longer than the FOV is
only covered if the FOV really moves along it, touching cubes merge, and so on.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.inference import grow_object, segment_many, segment_region
from napari_connectome.ffn.model import FFNArchitecture, build_model
from napari_connectome.ffn.movement import FaceMaxQueue, face_maxima
from napari_connectome.ffn.options import InferenceOptions
from napari_connectome.ffn.seeds import grid_seeds

ARCH = FFNArchitecture(depth=1, features=2, fov_size=(17, 17, 17), deltas=(4, 4, 4))
CONFIG = SimpleNamespace(architecture=ARCH, image_mean=128.0, image_stddev=33.0)
OPTS = InferenceOptions(min_segment_size=20)


def bright_painter() -> torch.nn.Module:
    """logits_out = logits_in + 4 * relu(image) - 3: bright (255) -> p~1, dark (0) -> p~0."""
    model = build_model(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv0_a.weight[0, 0, 1, 1, 1] = 1.0  # image centre tap
        model.conv0_b.weight[0, 0, 1, 1, 1] = 1.0
        model.conv_lom.weight[0, 0] = 4.0
        model.conv_lom.bias[0] = -3.0
    return model


def volume(shape=(40, 40, 96)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_grow_object_follows_a_rod_longer_than_the_fov():
    img = volume()
    img[18:23, 18:23, 4:92] = 255  # 88 voxels long, FOV is 17
    snaps = list(grow_object(img, (20, 20, 48), bright_painter(), CONFIG, OPTS, every=2))
    live, final = snaps[:-1], snaps[-1]
    assert live, "the growing object must be reported while it grows"
    assert all(s.probability is not None and not s.done for s in live)
    assert final.done
    assert final.outcome.status == "ok"
    assert final.outcome.steps > 10  # the FOV moved both ways along the rod
    ours = np.zeros(img.shape, bool)
    z, y, x = final.offset
    dz, dy, dx = final.mask.shape
    ours[z : z + dz, y : y + dy, x : x + dx] = final.mask
    np.testing.assert_array_equal(ours, img > 0)


def test_segment_region_with_explicit_seeds_numbers_objects_by_seed():
    img = volume()
    img[10:20, 10:20, 10:20] = 255  # object 1
    img[10:20, 10:20, 60:70] = 255  # object 2
    seeds = [(15, 15, 65), (15, 15, 15), (30, 30, 40), (12, 12, 62)]
    res = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=seeds)
    np.testing.assert_array_equal(res.labels[10:20, 10:20, 60:70], 1)
    np.testing.assert_array_equal(res.labels[10:20, 10:20, 10:20], 2)
    assert res.labels.dtype == np.uint64
    assert np.count_nonzero(res.labels) == 2000
    statuses = [o.status for o in res.outcomes]
    # seed 3 lies on background: the seed itself fades, google's "weak seed" rule drops it;
    # seed 4 lies inside object 1: skipped, as google skips seeds in existing segments.
    assert statuses == ["ok", "ok", "weak_seed", "skipped_invalid"]
    assert res.counters["segments"] == 2
    assert res.counters["steps"] == sum(o.steps for o in res.outcomes)
    assert res.origins[1]["start_zyx"] == [15, 15, 65]


def test_new_segments_claim_only_unclaimed_voxels_and_small_ones_are_dropped():
    img = volume()
    img[10:20, 10:20, 10:30] = 255
    img[25:28, 25:28, 73:76] = 255  # 27 voxels
    opts = InferenceOptions(min_segment_size=30, seed_policy="grid")
    grid = {"step": 6, "offsets": [2]}  # seeds at 2, 8, 14, ...: several in each object
    res = segment_region(img, bright_painter(), CONFIG, opts.updated(seed_policy_args=grid))
    cube = res.labels[10:20, 10:20, 10:30]
    # one object: the seeds inside it after the first were skipped, not grown again
    assert np.unique(cube[cube > 0]).size == 1
    assert np.count_nonzero(cube) >= 0.99 * cube.size  # a corner the FOV never reached may stay 0
    assert not res.labels[25:28, 25:28, 73:76].any()  # too small
    assert res.counters["invalid_too_small"] >= 1
    assert res.counters["skipped_invalid"] > 0


def test_mask_keeps_objects_out_and_rejects_seeds_on_it():
    img = volume()
    img[18:23, 18:23, 4:92] = 255
    mask = np.zeros(img.shape, bool)
    mask[:, :, 60:] = True
    res = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 30)], mask=mask)
    assert res.labels[18:23, 18:23, 4:60].all()
    assert not res.labels[mask].any()
    with pytest.raises(UserInputError, match="mask"):
        segment_region(img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 70)], mask=mask)


def test_batched_regions_give_the_same_result_as_one_by_one():
    rng = np.random.default_rng(1)
    images = []
    for _ in range(3):
        img = volume((34, 34, 48))
        for _ in range(5):
            z, y, x = rng.integers(8, 22), rng.integers(8, 22), rng.integers(8, 36)
            img[z : z + 6, y : y + 6, x : x + rng.integers(4, 12)] = 255
        images.append(img)
    opts = OPTS.updated(seed_policy="grid", seed_policy_args={"step": 8, "offsets": [8]})
    model = bright_painter()
    together = segment_many(images, model, CONFIG, opts, batch=3)
    assert together[0].counters["forward_batches"] < together[0].counters["batch_predict_calls"]
    for img, res in zip(images, together):
        alone = segment_region(img, model, CONFIG, opts)
        np.testing.assert_array_equal(res.labels, alone.labels)
        assert res.counters["steps"] == alone.counters["steps"]


def test_bf16_autocast_and_consistency_iterations():
    img = volume()
    img[18:23, 18:23, 4:92] = 255
    res = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 48)])
    bf = segment_region(img, bright_painter(), CONFIG, OPTS, seeds=[(20, 20, 48)], precision="bf16")
    np.testing.assert_array_equal(bf.labels, res.labels)
    cons = segment_region(
        img,
        bright_painter(),
        CONFIG,
        OPTS.updated(consistency_threshold=0.01),
        seeds=[(20, 20, 48)],
    )
    np.testing.assert_array_equal(cons.labels, res.labels)
    # positions are predicted again until the output stops changing
    assert cons.counters["batch_predict_calls"] > cons.counters["steps"]


def test_face_maxima_and_queue_follow_google_order():
    logits = torch.full((1, 17, 17, 17), -5.0)
    logits[0, 8 + 4, 9, 7] = 3.0  # z+ face, offset (4, 1, -1)
    logits[0, 8, 8, 8 - 4] = 2.5  # x- face
    scores, offsets = face_maxima(logits, (4, 4, 4))
    assert scores.shape == (1, 6)
    assert offsets[0, 1].tolist() == [4, 1, -1]
    assert scores[0, 1] == 3.0
    assert offsets[0, 4].tolist() == [0, 0, -4]
    q = FaceMaxQueue((20, 20, 20), (4, 4, 4))
    q.queue.clear()
    q.mark_visited((20, 20, 20))
    q.push_moves((20, 20, 20), scores[0].numpy(), offsets[0].numpy(), threshold=2.0)
    assert list(q.queue) == [(24, 21, 19), (20, 20, 16)]  # best score first
    assert q.quantize((21, 21, 21)) == q.quantize((20, 20, 20))


def test_grid_seeds_match_google_policy_grid():
    pts = grid_seeds((32, 32, 32), step=16, offsets=(0, 8))
    assert pts[:2].tolist() == [[0, 0, 0], [0, 0, 16]]
    assert len(pts) == 16
    assert pts[8].tolist() == [8, 8, 8]


@pytest.mark.parametrize(
    ("image", "seeds", "message"),
    [
        (np.zeros((40, 40), np.uint8), None, "3D"),
        (np.zeros((10, 40, 40), np.uint8), None, "field of view"),
        (np.full((40, 40, 40), np.nan, np.float32), None, "NaN"),
        (np.zeros((40, 40, 40), np.uint8), [(50, 20, 20)], "outside the volume"),
        (np.zeros((40, 40, 40), np.uint8), [(3, 20, 20)], "border"),
    ],
)
def test_bad_input_is_a_clear_user_error(image, seeds, message):
    with pytest.raises(UserInputError, match=message):
        segment_region(image, bright_painter(), CONFIG, OPTS, seeds=seeds)


def test_bad_options_and_missing_cuda_are_user_errors():
    with pytest.raises(UserInputError, match="between 0 and 1"):
        InferenceOptions(move_threshold=1.5)
    with pytest.raises(UserInputError, match="seed_policy"):
        InferenceOptions(seed_policy="random")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="CUDA"):
            segment_region(volume(), bright_painter(), CONFIG, OPTS, device="cuda")


def test_several_objects_of_one_region_in_flight_give_the_sequential_labels():
    rng = np.random.default_rng(7)
    img = volume((40, 40, 96))
    img[18:23, 18:23, 4:92] = 255  # a rod: seeds along it collide when grown at once
    for _ in range(8):
        z, y, x = rng.integers(6, 30), rng.integers(6, 30), rng.integers(6, 80)
        img[z : z + 5, y : y + 5, x : x + rng.integers(4, 14)] = 255
    model = bright_painter()
    seeds = [(20, 20, 10), (20, 20, 50), (20, 20, 80)]
    grid = OPTS.updated(seed_policy="grid", seed_policy_args={"step": 8, "offsets": [8]})
    for opts, pts in ((OPTS, seeds), (grid, None)):
        one = segment_region(img, model, CONFIG, opts, seeds=pts)
        four = segment_region(img, model, CONFIG, opts, seeds=pts, batch=4)
        np.testing.assert_array_equal(four.labels, one.labels)
        assert four.counters["segments"] == one.counters["segments"]
        assert [o.status for o in four.outcomes] == [o.status for o in one.outcomes]
        assert four.counters["forward_batches"] < four.counters["batch_predict_calls"]
        if pts is seeds:
            # seeds 2 and 3 grew alongside seed 1, then lay inside its object: dropped
            statuses = [o.status for o in four.outcomes]
            assert statuses == ["ok", "skipped_invalid", "skipped_invalid"]
            assert four.counters["speculative_restarts"] >= 2


def test_existing_uint64_segments_are_respected_by_a_click():
    img = volume()
    img[18:23, 18:23, 4:92] = 255
    existing = np.zeros(img.shape, np.uint64)
    existing[18:23, 18:23, 60:92] = 2**40  # an id beyond int32, already proofread
    *_, final = grow_object(
        img, (20, 20, 30), bright_painter(), CONFIG, OPTS, segmentation=existing
    )
    ours = np.zeros(img.shape, bool)
    z, y, x = final.offset
    dz, dy, dx = final.mask.shape
    ours[z : z + dz, y : y + dy, x : x + dx] = final.mask
    np.testing.assert_array_equal(ours, (img > 0) & (existing == 0))
    with pytest.raises(UserInputError, match="existing segment"):
        list(grow_object(img, (20, 20, 70), bright_painter(), CONFIG, OPTS, segmentation=existing))
    small = (existing > 0).astype(np.uint8)  # e.g. Google's uint8 segmentation
    *_, same = grow_object(img, (20, 20, 30), bright_painter(), CONFIG, OPTS, segmentation=small)
    np.testing.assert_array_equal(same.mask, final.mask)
