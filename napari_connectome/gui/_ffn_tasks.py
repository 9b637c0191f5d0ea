"""FFN work for the desk widgets, as generators a napari thread worker can run and abort.

No Qt here: each function yields small updates (progress, finished objects, the growing mask) and
stops cleanly when the worker stops iterating it, which is how Cancel works. The segmentation
itself is :mod:`napari_connectome.ffn` (canvas, google/ffn's ``segment_all`` rules, the lockstep
runner); this module only drives it round by round so the viewer sees objects as they finish.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

# The widgets' precision menu; auto first (the default), decided by ffn/precision.py.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
PRECISION_TIP = (
    "auto: bf16 where the CPU (AVX512_BF16 or AMX-BF16) or the GPU has native bf16, fp32 "
    "otherwise (bf16 without it is emulated and many times slower); fp16 is GPU only"
)


@dataclass
class RegionUpdate:
    """One step of a region run. ``labels`` is set when objects finished since the last update;
    ``counters`` on the first update (the precision chosen and why, threads) and the last."""

    seeds_done: int
    seeds_total: int
    segments: int
    labels: np.ndarray | None = None
    finished: bool = False
    counters: dict[str, Any] = field(default_factory=dict)


def iter_segment_region(
    image: Any,
    model: Any,
    config: Any,
    options: Any = None,
    *,
    seeds: Sequence[Sequence[int]] | None = None,
    device: str = "cpu",
    precision: str = "auto",
    min_interval_s: float = 0.25,
) -> Iterator[RegionUpdate]:
    """Segment ``image`` with google/ffn's rules, yielding after every FFN round.

    Finished objects are reported as a copy of the region's labels (uint32, 0 = background) at most
    every ``min_interval_s`` seconds and once at the end, so a viewer shows them as they appear
    without copying the volume on every step. Torch leaves the Qt thread a core meanwhile.
    """
    from napari_connectome.ffn.threads import leave_a_core

    with leave_a_core():
        yield from _segment_region_steps(
            image, model, config, options, seeds, device, precision, min_interval_s
        )


def _segment_region_steps(
    image, model, config, options, seeds, device, precision, min_interval_s
) -> Iterator[RegionUpdate]:
    from napari_connectome.ffn.canvas import Canvas, segment_all
    from napari_connectome.ffn.inference import check_image, run_settings
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.seeds import check_points, policy_seeds

    options = options or options_for_model(config)
    arch = config.architecture
    runner = LockstepRunner(model, device=device, precision=precision, batch=1)
    img = check_image(image, arch.fov_size, "the region", config=config)
    canvas = Canvas(
        img,
        fov_size=arch.fov_size,
        deltas=arch.deltas,
        image_mean=float(config.image_mean),
        image_stddev=float(config.image_stddev),
        options=options,
        device=runner.device,
    )
    if seeds is None:
        points = policy_seeds(options.seed_policy, img, None, options.seed_policy_args)
    else:
        points = check_points(seeds, canvas.shape, tuple(canvas.margin), None)
    total = len(points)
    state = {"done": 0, "new": False}

    def on_object(outcome: Any) -> None:
        state["done"] += 1
        state["new"] = state["new"] or outcome.segment_id > 0

    driver = segment_all(canvas, points, explicit_ids=seeds is not None, on_object=on_object)
    t_start = last = time.perf_counter()
    settings = run_settings(runner)
    yield RegionUpdate(0, total, 0, counters=dict(settings))
    for _ in runner.iterate([driver]):
        now = time.perf_counter()
        labels = None
        if state["new"] and now - last >= min_interval_s:
            labels, state["new"], last = _positive(canvas.segmentation), False, now
        yield RegionUpdate(state["done"], total, int(canvas.counters["segments"]), labels)
    counters = {**canvas.counters, **settings}
    counters["seconds"] = round(time.perf_counter() - t_start, 3)
    yield RegionUpdate(
        total,
        total,
        int(canvas.counters["segments"]),
        _positive(canvas.segmentation),
        finished=True,
        counters=counters,
    )


def _positive(segmentation: np.ndarray) -> np.ndarray:
    """The canvas marks failed seeds with -1; the viewer shows only real ids."""
    out = segmentation.astype(np.uint32)
    out[segmentation < 0] = 0
    return out


# --------------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------------

Box = tuple[slice, slice, slice]


def clip_box(
    lo: Sequence[float], hi: Sequence[float], shape: Sequence[int], min_size: Sequence[int]
) -> Box:
    """An integer box covering ``lo``..``hi`` inside ``shape``, grown to at least ``min_size``."""
    shape_a = np.asarray(shape, int)
    need = np.asarray(min_size, int)
    if np.any(shape_a < need):
        raise UserInputError(
            f"the image {tuple(shape_a)} (z, y, x) is smaller than the model's field of view "
            f"{tuple(need)}; open a larger volume"
        )
    start = np.floor(np.minimum(lo, hi)).astype(int)
    stop = np.ceil(np.maximum(lo, hi)).astype(int)
    start, stop = np.clip(start, 0, shape_a), np.clip(stop, 0, shape_a)
    short = np.maximum(need - (stop - start), 0)
    start = start - short // 2
    stop = stop + (short - short // 2)
    shift_up = np.maximum(-start, 0)
    shift_down = np.maximum(stop - shape_a, 0)
    start, stop = start + shift_up - shift_down, stop + shift_up - shift_down
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def box_around(point: Sequence[float], size: Sequence[int], shape: Sequence[int]) -> Box:
    """A box of ``size`` centred on ``point``, moved inside ``shape`` (for click-to-segment)."""
    p = np.asarray(point, float)
    half = np.asarray(size, int) / 2
    return clip_box(p - half, p + half, shape, np.minimum(size, shape))


# --------------------------------------------------------------------------------------------------
# click to segment
# --------------------------------------------------------------------------------------------------


@dataclass
class GrowUpdate:
    """The growing object: probabilities (or the final mask) of a box at ``offset`` in the crop."""

    steps: int
    offset: tuple[int, int, int]
    probability: np.ndarray
    done: bool = False
    mask: np.ndarray | None = None
    status: str = ""
    voxels: int = 0
    precision_reason: str = ""  # what precision runs and why (every update)


def iter_grow(
    image: np.ndarray,
    seed: Sequence[int],
    model: Any,
    config: Any,
    *,
    segmentation: np.ndarray | None = None,
    device: str = "cpu",
    precision: str = "auto",
    every: int = 2,
) -> Iterator[GrowUpdate]:
    """Grow one object from ``seed`` in ``image`` (a crop); a snapshot every ``every`` steps.
    Torch leaves the Qt thread a core meanwhile."""
    from napari_connectome.ffn.inference import grow_object
    from napari_connectome.ffn.precision import choose_precision
    from napari_connectome.ffn.runner import resolve_device
    from napari_connectome.ffn.threads import leave_a_core

    _, why = choose_precision(precision, resolve_device(device), warn=False)  # the runner warns
    seg = None
    if segmentation is not None:
        seg = np.asarray(segmentation)
        seg = np.where(seg > np.iinfo(np.int32).max, 1, seg).astype(np.int32)  # ids > 0 matter
    with leave_a_core():
        for snap in grow_object(
            image,
            tuple(int(v) for v in seed),
            model,
            config,
            segmentation=seg,
            device=device,
            precision=precision,
            every=every,
        ):
            if snap.done:
                out = snap.outcome
                yield GrowUpdate(
                    snap.steps,
                    snap.offset,
                    snap.probability,
                    True,
                    snap.mask,
                    out.status if out else "",
                    int(out.voxels) if out else 0,
                    why,
                )
            else:
                yield GrowUpdate(snap.steps, snap.offset, snap.probability, precision_reason=why)
