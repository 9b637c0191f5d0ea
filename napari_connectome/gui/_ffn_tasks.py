"""FFN work for the desk widgets: typed requests in, typed updates out, the core's inference.

No Qt here. A widget reads its inputs on the Qt thread into a small frozen dataclass
(:class:`RegionInputs`, :class:`GrowRequest`), a worker thread turns it into a plan (the model
loaded, the region clipped with what was clamped said, the run's time estimated) and runs
:func:`napari_connectome.ffn.inference.iter_segment_region` or
:func:`~napari_connectome.ffn.inference.grow_object`, yielding :class:`RegionUpdate` or
:class:`GrowUpdate`. A worker that stops iterating stops the run after the current FFN step, which
is how Cancel, Stop and Esc work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.box import Box

# The widgets' precision menu; auto first (the default), decided by ffn/precision.py.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
PRECISION_TIP = (
    "auto: bf16 where the CPU (AVX512_BF16 or AMX-BF16) or the GPU has native bf16, fp32 "
    "otherwise (bf16 without it is emulated and many times slower); fp16 is GPU only"
)
#: Interactive regions are read into memory; larger ones belong in a job (napari-connectome submit).
MAX_REGION_VOXELS = 2**25


# --------------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------------


def _ranges(lo: Sequence[float], hi: Sequence[float]) -> str:
    return ", ".join(f"{a} {int(b)}:{int(c)}" for a, b, c in zip("zyx", lo, hi))


def clip_box(
    lo: Sequence[float], hi: Sequence[float], shape: Sequence[int], min_size: Sequence[int]
) -> tuple[Box, str]:
    """An integer box covering ``lo``..``hi`` inside ``shape``, grown to at least ``min_size``,
    and a sentence saying what was clamped or grown ('' if nothing). A box that does not overlap
    the volume at all is refused: clamping it would segment a corner nobody chose."""
    shape_a = np.asarray(shape, int)
    need = np.asarray(min_size, int)
    if np.any(shape_a < need):
        raise UserInputError(
            f"the image {tuple(shape_a)} (z, y, x) is smaller than the model's field of view "
            f"{tuple(need)}; open a larger volume"
        )
    start = np.floor(np.minimum(lo, hi)).astype(int)
    stop = np.ceil(np.maximum(lo, hi)).astype(int)
    if np.any(stop <= 0) or np.any(start >= shape_a):
        raise UserInputError(
            f"the box ({_ranges(start, stop)}) lies outside the volume (z 0:{shape_a[0]}, "
            f"y 0:{shape_a[1]}, x 0:{shape_a[2]}); draw it over the image"
        )
    asked = (start.copy(), stop.copy())
    start, stop = np.clip(start, 0, shape_a), np.clip(stop, 0, shape_a)
    notes = []
    if np.any(asked[0] != start) or np.any(asked[1] != stop):
        notes.append(
            f"box clamped from {_ranges(*asked)} to {_ranges(start, stop)} (the volume's edge)"
        )
    short = np.maximum(need - (stop - start), 0)
    if short.any():
        before = (start.copy(), stop.copy())
        start = start - short // 2
        stop = stop + (short - short // 2)
        shift_up = np.maximum(-start, 0)
        shift_down = np.maximum(stop - shape_a, 0)
        start, stop = start + shift_up - shift_down, stop + shift_up - shift_down
        notes.append(
            f"box grown from {_ranges(*before)} to {_ranges(start, stop)} to fit the model's "
            f"field of view {tuple(int(v) for v in need)}"
        )
    return Box(tuple(start), tuple(stop)), "; ".join(notes)


def box_around(point: Sequence[float], size: Sequence[int], shape: Sequence[int]) -> Box:
    """A box of ``size`` centred on ``point``, moved inside ``shape`` (for click-to-segment)."""
    p = np.asarray(point, float)
    half = np.asarray(size, int) / 2
    box, _ = clip_box(p - half, p + half, shape, np.minimum(size, shape))
    return box


@dataclass(frozen=True)
class ModelChoice:
    """A model menu entry as the worker needs it (see :mod:`._models`)."""

    choice: str
    path: Path | None
    device: str
    precision: str


@dataclass(frozen=True)
class RegionInputs:
    """What Segment region was asked, read on the Qt thread: the image's full-resolution array,
    the requested box (voxels, floats, before clipping), seed points (voxels) or None."""

    data: Any
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    seed_points: np.ndarray | None
    model: ModelChoice


@dataclass
class RegionPlan:
    """A region run, ready to start: what the user confirms before a long run."""

    inputs: RegionInputs
    box: Box
    note: str  # what was clamped or grown, or ''
    seeds: np.ndarray | None  # region-local points, or None for the seed policy
    skipped_seeds: int
    estimate: Any  # napari_connectome.ffn.estimate.RunEstimate
    model: Any = field(repr=False, default=None)
    config: Any = field(repr=False, default=None)
    runner: Any = field(repr=False, default=None)

    def as_core_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`napari_connectome.ffn.inference.iter_segment_region`."""
        return {
            "image": np.asarray(self.inputs.data[self.box.slices]),
            "model": self.model,
            "config": self.config,
            "seeds": self.seeds,
            "runner": self.runner,
        }


def plan_region(inputs: RegionInputs) -> RegionPlan:
    """Worker thread: load the model, clip the box, place the seeds, estimate the time."""
    from napari_connectome.ffn.estimate import estimate_run
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.threads import leave_a_core
    from napari_connectome.gui._models import load

    m = inputs.model
    model, config, folder = load(m.choice, m.path, m.device)
    shape = tuple(inputs.data.shape)
    box, note = clip_box(inputs.lo, inputs.hi, shape, config.fov_size)
    size = box.size
    if size > MAX_REGION_VOXELS:
        raise UserInputError(
            f"the region {' x '.join(map(str, box.shape))} has {size:,} voxels, more than "
            f"the {MAX_REGION_VOXELS:,} segmented interactively; draw a smaller box (region: box "
            "from a Shapes layer) or run a job (napari-connectome submit)"
        )
    seeds, skipped = None, 0
    if inputs.seed_points is not None and len(inputs.seed_points):
        # Points where the model's FOV does not fit inside the region cannot start an object.
        start = np.array(box.start)
        points = np.round(inputs.seed_points).astype(int) - start
        margin = np.asarray(config.fov_size) // 2
        usable = np.all((points >= margin) & (points < np.asarray(box.shape) - margin), 1)
        seeds, skipped = points[usable], int((~usable).sum())
        if not len(seeds):
            raise UserInputError(
                f"none of the {len(points)} seed points lies inside the region with room for "
                f"the model's field of view {tuple(config.fov_size)}; move them or the region"
            )
    runner = LockstepRunner(model, device=m.device, precision=m.precision, batch=1)
    with leave_a_core():  # measured with the threads the run will have
        estimate = estimate_run(
            box.shape,
            runner,
            config,
            key=str(folder.resolve()),
            seeds=None if seeds is None else len(seeds),
        )
    return RegionPlan(inputs, box, note, seeds, skipped, estimate, model, config, runner)


@dataclass
class RegionUpdate:
    """Where a region run stands. Progress counts FFN steps: ``steps`` done of ``steps_expected``
    (done + the expected steps of the voxels no object holds yet); ``labels`` (uint32, the objects
    growing included) with each update; ``counters`` on the first and the last update."""

    steps: int
    steps_expected: int
    seeds_done: int
    seeds_total: int
    segments: int
    seconds: float
    eta_seconds: float
    labels: np.ndarray | None = None
    finished: bool = False
    counters: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # seeds per status (last update)


def run_region(plan: RegionPlan, min_interval_s: float = 0.5) -> Iterator[RegionUpdate]:
    """Worker thread: the core's region inference, as updates a viewer can draw.

    The first and last step and then at most one step every ``min_interval_s`` become an update,
    each with the labels so far. Every update repaints widgets on the Qt thread, and with software
    OpenGL (no GPU, a VM, Xvfb) a repaint recomposes the whole window while holding the GIL: one
    update per FFN step (~90/s for ``fib25-small``) made the demo's FFN 5x slower than without a
    window (37 s against 7 s; 0.5 s: 11 s, ``docs/benchmarks.md``). A consumer that stops
    iterating still stops the run within one interval.
    """
    from collections import Counter

    from napari_connectome.ffn.estimate import expected_steps
    from napari_connectome.ffn.inference import iter_segment_region, run_settings
    from napari_connectome.ffn.threads import leave_a_core

    est, cfg = plan.estimate, plan.config
    shape = est.shape
    last = 0.0
    with leave_a_core():
        for p in iter_segment_region(**plan.as_core_arguments()):
            now = time.perf_counter()
            if not p.done and p.steps and now - last < min_interval_s:
                continue
            last = now
            labels = p.live_labels()
            free = float(np.count_nonzero(labels == 0)) / max(labels.size, 1)
            remaining = 0 if p.done else expected_steps(shape, cfg.fov_size, cfg.deltas, free)
            # the run's own rate once it has one, the measured step time before
            rate = p.seconds / p.steps if p.steps >= 20 else est.step_seconds
            update = RegionUpdate(
                steps=p.steps,
                steps_expected=p.steps + remaining,
                seeds_done=p.seeds_done,
                seeds_total=p.seeds_total,
                segments=p.segments,
                seconds=p.seconds,
                eta_seconds=remaining * rate,
                labels=labels,
            )
            if p.done:
                (res,) = p.results
                update.finished = True
                update.counters = dict(res.counters)
                update.outcomes = dict(Counter(o.status for o in res.outcomes))
            elif p.steps == 0:
                update.counters = run_settings(plan.runner)  # what runs and why, at once
            yield update


# --------------------------------------------------------------------------------------------------
# click to segment
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrowRequest:
    """One click: the crop around it (``box`` of the image's full-resolution ``data``), the seed
    inside the crop, the segments already there (never claimed), and the model."""

    data: Any
    box: Box
    seed: tuple[int, int, int]
    existing: Any  # the target labels layer's data
    model: ModelChoice
    every: int = 2  # FFN steps between the core's snapshots
    min_interval_s: float = 0.2  # and at most this often a preview for the Qt thread (run_region)

    def as_core_arguments(self, model: Any, config: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`napari_connectome.ffn.inference.grow_object`."""
        seg = np.asarray(self.existing[self.box.slices])
        seg = np.where(seg > np.iinfo(np.int32).max, 1, seg).astype(np.int32)  # ids > 0 matter
        return {
            "image": np.asarray(self.data[self.box.slices]),
            "seed_zyx": self.seed,
            "model": model,
            "config": config,
            "segmentation": seg,
            "device": self.model.device,
            "precision": self.model.precision,
            "every": self.every,
        }


@dataclass
class GrowUpdate:
    """The growing object: probabilities (or the final mask) of a box at ``offset`` in the crop."""

    steps: int
    offset: tuple[int, int, int]
    probability: np.ndarray
    segment_threshold: float
    done: bool = False
    mask: np.ndarray | None = None
    status: str = ""
    voxels: int = 0
    min_segment_size: int = 0
    edges: tuple[str, ...] = ()  # faces of the crop the final object reaches
    precision_reason: str = ""  # what precision runs and why (every update)


def run_grow(request: GrowRequest) -> Iterator[GrowUpdate]:
    """Worker thread: grow one object with the core's :func:`grow_object`, a snapshot every
    ``request.every`` steps and at most every ``request.min_interval_s`` (each preview repaints the
    window, see :func:`run_region`). Torch leaves the Qt thread a core meanwhile."""
    from napari_connectome.ffn.inference import grow_object
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.precision import choose_precision
    from napari_connectome.ffn.runner import resolve_device
    from napari_connectome.ffn.threads import leave_a_core
    from napari_connectome.gui._models import load

    m = request.model
    model, config, _ = load(m.choice, m.path, m.device)
    _, why = choose_precision(m.precision, resolve_device(m.device), warn=False)  # runner warns
    opts = options_for_model(config)
    last = 0.0
    with leave_a_core():
        for snap in grow_object(**request.as_core_arguments(model, config)):
            now = time.perf_counter()
            if not snap.done and last and now - last < request.min_interval_s:
                continue
            last = now
            out = snap.outcome
            yield GrowUpdate(
                steps=snap.steps,
                offset=snap.offset,
                probability=snap.probability,
                segment_threshold=float(opts.segment_threshold),
                done=snap.done,
                mask=snap.mask,
                status=out.status if out else "",
                voxels=int(out.voxels) if out else 0,
                min_segment_size=int(opts.min_segment_size),
                edges=snap.edges,
                precision_reason=why,
            )


#: What became of a click, in words (google/ffn's outcome codes stay in the counters).
OUTCOME_SENTENCES = {
    "weak_seed": (
        "the FFN is not confident at the clicked voxel (a membrane or dark gap?); "
        "click inside a neuron"
    ),
    "too_small": (
        "the object grew to only {voxels:,} voxels, fewer than the model's minimum of {minimum:,}; "
        "click in a larger part of the neuron"
    ),
    "no_steps": "the FFN could not take a single step from there; click further from the edge",
}


def outcome_sentence(status: str, voxels: int = 0, minimum: int = 0) -> str:
    """A user-facing sentence for an object's outcome code."""
    text = OUTCOME_SENTENCES.get(status, "the FFN did not grow an object there; click elsewhere")
    return text.format(voxels=voxels, minimum=minimum)
