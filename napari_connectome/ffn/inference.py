"""FFN inference, the public API (no napari): one object from a click, or every object in a region.

* :func:`grow_object` grows one object from one seed and yields snapshots of the growing probability
  map every ``every`` steps, so a viewer can show it live; the last snapshot carries the final mask.
* :func:`segment_region` segments a whole region with google/ffn's rules (seed policy or explicit
  seeds; a new segment only claims unclaimed voxels; small segments dropped; seeds inside or next to
  existing segments skipped).
* :func:`segment_many` does the same for many regions at once (e.g. the blocks of a job), batching
  their predictions into one forward pass per round (:class:`~.runner.LockstepRunner`).
* :func:`iter_segment_region` and :func:`iter_segment_many` are the same runs as iterators of
  :class:`RegionProgress` (FFN steps, objects, live labels), for viewers and progress bars.

``config`` is the model's config (``.arch``, ``.image_mean``, ``.image_stddev``), as returned by
``napari_connectome.ffn.checkpoint.load_model``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.canvas import Canvas, ObjectOutcome, commit_object, grow, segment_all
from napari_connectome.ffn.options import InferenceOptions, options_for_model
from napari_connectome.ffn.runner import LockstepRunner
from napari_connectome.ffn.seeds import check_points, in_seed_order, policy_seeds
from napari_connectome.ffn.speculative import segment_all_speculative
from napari_connectome.progress import ProgressCallback

if TYPE_CHECKING:
    import torch


@dataclass
class ObjectSnapshot:
    """A growing object. Arrays cover the box ``offset`` .. ``offset + shape`` (z, y, x)."""

    steps: int
    offset: tuple[int, int, int]
    probability: np.ndarray | None = None  # object probability 0..1 (live updates)
    done: bool = False
    mask: np.ndarray | None = None  # final voxels of the object (last snapshot only)
    outcome: ObjectOutcome | None = None
    # Faces of the image the final object reaches ("z-", "x+", ...): it may go on beyond them.
    edges: tuple[str, ...] = ()


def faces_reached(mask: np.ndarray, offset: Sequence[int], shape: Sequence[int]) -> tuple[str, ...]:
    """The faces of an image of ``shape`` that ``mask`` (a box at ``offset``) touches."""
    out = []
    if not mask.any():
        return ()
    idx = np.nonzero(mask)
    for axis, name in enumerate("zyx"):
        lo = int(idx[axis].min()) + int(offset[axis])
        hi = int(idx[axis].max()) + int(offset[axis])
        if lo == 0:
            out.append(f"{name}-")
        if hi == int(shape[axis]) - 1:
            out.append(f"{name}+")
    return tuple(out)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # uint64, 0 = background
    counters: dict[str, Any]
    origins: dict[int, dict[str, Any]] = field(default_factory=dict)
    outcomes: list[ObjectOutcome] = field(default_factory=list)
    # per voxel, uint8: how strongly a later object claimed this voxel of another segment
    # (:func:`~napari_connectome.ffn.canvas.commit_object`); None where not recorded
    claim: np.ndarray | None = None


def _arch(model: Any, config: Any):
    arch = (
        getattr(config, "arch", None)
        or getattr(config, "architecture", None)
        or getattr(model, "arch", None)
    )
    if arch is None:
        raise UserInputError(
            "the model has no architecture (fov_size, deltas); load it with load_model"
        )
    return arch


def check_image(
    image: Any, fov_size: Sequence[int], what: str = "the image", *, config: Any = None
) -> np.ndarray:
    """The image as a numpy array, after the checks every entry point shares (clear errors).
    With the model's ``config``, its values must also suit the model (:func:`check_em_values`)."""
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 3:
        raise UserInputError(
            f"{what} has {len(shape)} dimension(s) {shape}, but this FFN model is 3D (z, y, x); "
            "open a 3D volume (or a 3D region of it)"
        )
    if any(s < f for s, f in zip(shape, fov_size)):
        raise UserInputError(
            f"the model's field of view {tuple(fov_size)} (z, y, x) is larger than {what} "
            f"{shape}; choose a larger region"
        )
    arr = np.asarray(image)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise UserInputError(f"{what} contains NaN or infinite values; fill or crop them first")
    if arr.dtype.kind not in "uif":
        raise UserInputError(
            f"{what} has dtype {arr.dtype}; a grayscale (numeric) EM image is needed"
        )
    if config is not None:
        check_em_values(
            arr,
            float(getattr(config, "image_mean", 128.0)),
            float(getattr(config, "image_stddev", 33.0)),
            what,
        )
    return arr


def check_em_values(image: np.ndarray, image_mean: float, image_stddev: float, what: str) -> None:
    """Refuse an image the model cannot have been trained on, instead of segmenting noise.

    Label ids (integers of 4 bytes or more) given as EM are refused. An FFN sees
    ``(image - image_mean) / image_stddev``; a model normalised for 8-bit EM (``image_mean`` below
    256, like google/ffn's 128 / 33) given 16-bit values (above 255) would see values of several
    hundred standard deviations, so that is refused with how to convert. 8-bit data stored as
    uint16 (all values <= 255) passes, and so does 16-bit EM for a model trained on it.
    """
    dt = np.dtype(image.dtype)
    if dt.kind in "iu" and dt.itemsize >= 4:
        raise UserInputError(
            f"{what} has dtype {dt}, the dtype of label ids, not of EM; give the EM image "
            "(8-bit grayscale) as the input, not a segmentation"
        )
    if dt.kind not in "iu" or dt.itemsize < 2 or image_mean >= 256 or not image.size:
        return
    low, high = int(image.min()), int(image.max())
    if low >= 0 and high <= 255:
        return
    raise UserInputError(
        f"{what} is {dt} EM with values {low}..{high}, but the model expects 8-bit EM "
        f"(normalised with mean {image_mean:g} and stddev {image_stddev:g}); convert it to uint8 "
        "first (e.g. map its 0.5-99.5 percentile range to 0-255; see docs/segmenting.md), or use "
        "a model trained on 16-bit EM"
    )


def _check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise UserInputError(f"the {name} has shape {m.shape} but the image has {tuple(shape)}")
    return m.astype(bool) if name == "mask" else m


def _make_canvas(image, model, config, options, mask, segmentation, device) -> Canvas:
    arch = _arch(model, config)
    img = check_image(image, arch.fov_size, config=config)
    return Canvas(
        img,
        fov_size=arch.fov_size,
        deltas=arch.deltas,
        image_mean=float(getattr(config, "image_mean", 128.0)),
        image_stddev=float(getattr(config, "image_stddev", 33.0)),
        options=options,
        mask=_check_mask(mask, img.shape),
        segmentation=_check_mask(segmentation, img.shape, "existing segmentation"),
        device=device,
    )


def _runner(model, device, precision, batch, compile, runner) -> LockstepRunner:
    if runner is not None:
        return runner
    return LockstepRunner(model, device=device, precision=precision, batch=batch, compile=compile)


def grow_object(
    image: Any,
    seed_zyx: Sequence[int],
    model: torch.nn.Module,
    config: Any = None,
    options: InferenceOptions | None = None,
    *,
    mask: Any = None,
    segmentation: Any = None,
    device: str | None = "cpu",
    precision: str = "auto",
    every: int = 10,
    runner: LockstepRunner | None = None,
) -> Iterator[ObjectSnapshot]:
    """Grow one object from ``seed_zyx``; yield a snapshot every ``every`` steps, then the result.

    ``segmentation`` (optional, same shape, > 0 = already segmented) plays google's role of earlier
    segments: the FOV never moves onto them and the object does not claim their voxels. The final
    snapshot has ``done=True``, ``mask`` (bool, the object's voxels; empty if rejected) and
    ``outcome`` (status ok / weak_seed / too_small, steps, voxels).
    """
    options = options or options_for_model(config)
    run = _runner(model, device, precision, 1, False, runner)
    canvas = _make_canvas(image, model, config, options, mask, segmentation, run.device)
    (seed,) = check_points([seed_zyx], canvas.shape, tuple(canvas.margin), canvas.mask)
    seed = tuple(int(v) for v in seed)
    if canvas.segmentation[seed] > 0:
        raise UserInputError(
            f"seed {seed} lies in existing segment {int(canvas.segmentation[seed])}; "
            "click an unsegmented voxel"
        )
    state: dict[str, Any] = {"steps": 0}

    def on_step(steps: int, pos) -> None:
        state["steps"] = steps

    def driver():
        t0 = time.perf_counter()
        steps, start_value, extent = yield from grow(canvas, seed, on_step)
        sid = max(canvas.max_id, 0) + 1
        state["outcome"] = commit_object(
            canvas, seed, steps, start_value, extent, time.perf_counter() - t0, segment_id=sid
        )

    for _ in run.iterate([driver()]):
        if every and state["steps"] % every == 0 and "outcome" not in state:
            lo, hi = canvas._dirty
            lo, hi = np.maximum(lo, 0), np.minimum(hi, canvas.shape)
            yield ObjectSnapshot(
                steps=state["steps"],
                offset=tuple(int(v) for v in lo),
                probability=canvas.probability_box(lo, hi),
            )
    out: ObjectOutcome = state["outcome"]
    lo, hi = canvas._dirty
    lo, hi = np.maximum(lo, 0), np.minimum(hi, canvas.shape)
    box = canvas.segmentation[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    final = box == out.segment_id if out.segment_id else np.zeros(box.shape, bool)
    yield ObjectSnapshot(
        steps=out.steps,
        offset=tuple(int(v) for v in lo),
        probability=canvas.probability_box(lo, hi),
        done=True,
        mask=final,
        outcome=out,
        edges=faces_reached(final, lo, canvas.shape),
    )


@dataclass
class RegionProgress:
    """Where a region run stands after one scheduler round (what :func:`iter_segment_many` yields).

    Progress counts FFN steps (FOV predictions), the unit the run's time goes into; seeds are
    reported too but say little (one large object can take most of a run). The last update has
    ``results``; earlier ones can draw the objects as they grow (:meth:`live_labels`).
    """

    steps: int  # FFN steps taken so far, all regions together
    seeds_done: int
    seeds_total: int
    segments: int  # objects kept so far
    seconds: float
    results: list[SegmentationResult] | None = None  # the last update only
    canvases: list[Canvas] = field(default_factory=list, repr=False)
    growing: list[bool] = field(default_factory=list, repr=False)

    @property
    def done(self) -> bool:
        return self.results is not None

    def live_labels(self, i: int = 0, dtype: Any = np.uint32) -> np.ndarray:
        """Region ``i``'s labels now (0 = background), the object still growing included (with
        the next free id; its voxels at or above segment_threshold that no object holds yet)."""
        canvas = self.canvases[i]
        seg = canvas.segmentation
        out = seg.astype(dtype)
        out[seg < 0] = 0
        if self.growing[i] and canvas._dirty is not None:
            lo, hi = canvas._dirty
            lo, hi = np.maximum(lo, 0), np.minimum(hi, canvas.shape)
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            grown = canvas.object_mask(lo, hi) & (seg[box] <= 0)
            if canvas.mask is not None:
                grown &= ~canvas.mask[box]
            out[box][grown] = canvas.max_id + 1
        return out


def iter_segment_many(
    images: Sequence[Any],
    model: torch.nn.Module,
    config: Any = None,
    options: InferenceOptions | None = None,
    *,
    seeds: Sequence[Sequence[Sequence[int]] | None] | None = None,
    masks: Sequence[Any] | None = None,
    device: str | None = "cpu",
    precision: str = "auto",
    batch: int = 8,
    compile: bool = False,
    on_object: Callable[[int, ObjectOutcome], None] | None = None,
    runner: LockstepRunner | None = None,
    speculate: bool = True,
) -> Iterator[RegionProgress]:
    """:func:`segment_many` as an iterator: one :class:`RegionProgress` after every round.

    Stopping the iteration (a viewer's Cancel) stops the run after the current round; the objects
    finished so far stay in ``canvases``. All inputs are checked before the first yield.
    """
    options = options or options_for_model(config)
    n = len(images)
    seeds = list(seeds) if seeds is not None else [None] * n
    masks = list(masks) if masks is not None else [None] * n
    if len(seeds) != n or len(masks) != n:
        raise UserInputError("seeds and masks need one entry per image")
    run = _runner(model, device, precision, batch, compile, runner)
    t_start = time.perf_counter()
    canvases, seed_lists = [], []
    for i, img in enumerate(images):
        canvas = _make_canvas(img, model, config, options, masks[i], None, run.device)
        if seeds[i] is None:
            t0 = time.perf_counter()
            pts = policy_seeds(
                options.seed_policy, np.asarray(img), canvas.mask, options.seed_policy_args
            )
            pts = in_seed_order(pts, options.seed_order)
            canvas.counters["seed_policy_seconds"] += time.perf_counter() - t0
        else:
            if options.seed_order != "forward":
                raise UserInputError(
                    f"seed_order {options.seed_order!r} orders the seed policy's points; explicit "
                    "seeds grow in the order given (segment k from point k), so give them in the "
                    "order you want instead"
                )
            pts = check_points(seeds[i], canvas.shape, tuple(canvas.margin), canvas.mask)
        canvases.append(canvas)
        seed_lists.append(pts)

    total = sum(len(s) for s in seed_lists)
    outcomes: list[list[ObjectOutcome]] = [[] for _ in range(n)]
    steps0 = int(run.counters["predict_calls"])
    # predict calls of the whole run when region i last finished an object: more since = growing
    last_end = [steps0] * n

    def report(i: int):
        def cb(out: ObjectOutcome) -> None:
            outcomes[i].append(out)
            last_end[i] = int(run.counters["predict_calls"])
            if on_object is not None:
                on_object(i, out)

        return cb

    def progress(steps: int) -> RegionProgress:
        return RegionProgress(
            steps=steps - steps0,
            seeds_done=sum(len(o) for o in outcomes),
            seeds_total=total,
            segments=sum(int(c.counters["segments"]) for c in canvases),
            seconds=time.perf_counter() - t_start,
            canvases=canvases,
            growing=[steps > e for e in last_end],
        )

    # Spare batch width beyond one object per region grows several objects of a region at once
    # (speculatively, committed in seed order: the same labels as one at a time).
    width = max(1, run.batch // n) if speculate else 1
    drivers = [
        segment_all(c, s, explicit_ids=seeds[i] is not None, on_object=report(i))
        if width == 1
        else segment_all_speculative(
            c, s, width=width, explicit_ids=seeds[i] is not None, on_object=report(i)
        )
        for i, (c, s) in enumerate(zip(canvases, seed_lists))
    ]
    yield progress(steps0)
    for steps in run.iterate(drivers):
        yield progress(steps)
    last = progress(int(run.counters["predict_calls"]))
    elapsed = time.perf_counter() - t_start
    last.results = [
        SegmentationResult(
            canvas.result(),
            _counters(canvas.counters, run, elapsed, n),
            canvas.origins,
            outs,
            claim=canvas.claim,
        )
        for canvas, outs in zip(canvases, outcomes)
    ]
    last.growing = [False] * n
    yield last


def segment_many(
    images: Sequence[Any],
    model: torch.nn.Module,
    config: Any = None,
    options: InferenceOptions | None = None,
    *,
    seeds: Sequence[Sequence[Sequence[int]] | None] | None = None,
    masks: Sequence[Any] | None = None,
    device: str | None = "cpu",
    precision: str = "auto",
    batch: int = 8,
    compile: bool = False,
    progress: ProgressCallback | None = None,
    on_object: Callable[[int, ObjectOutcome], None] | None = None,
    runner: LockstepRunner | None = None,
    speculate: bool = True,
) -> list[SegmentationResult]:
    """Segment several independent regions concurrently, one batched forward pass per round.

    Each region is segmented exactly as :func:`segment_region` would (google's sequential rules
    hold inside a region); ``batch`` regions advance together. ``seeds[i]`` are explicit points for
    region i (object k from point k) or None for the seed policy. ``on_object(i, outcome)``
    reports every seed's fate as it happens; ``progress(done, total, message)`` counts seeds.
    When ``batch`` exceeds the number of regions, each region grows ``batch // len(images)``
    objects at once (:mod:`.speculative`; same labels as one at a time) unless
    ``speculate=False``. :func:`iter_segment_many` is the same run as an iterator.
    """
    seen = [-1]
    last: RegionProgress | None = None
    for last in iter_segment_many(
        images,
        model,
        config,
        options,
        seeds=seeds,
        masks=masks,
        device=device,
        precision=precision,
        batch=batch,
        compile=compile,
        on_object=on_object,
        runner=runner,
        speculate=speculate,
    ):
        if progress is not None and last.seeds_done != seen[0]:
            seen[0] = last.seeds_done
            progress(last.seeds_done, last.seeds_total, f"{last.segments} segments")
    assert last is not None
    assert last.results is not None
    return last.results


def run_settings(run: LockstepRunner) -> dict[str, Any]:
    """What a run used and why (counters, reports, widgets): precision chosen, torch threads."""
    import torch

    return {
        "precision": run.precision,
        "precision_requested": run.precision_requested,
        "precision_reason": run.precision_reason,
        "threads": int(torch.get_num_threads()),
    }


def _counters(
    canvas_c: Counter, run: LockstepRunner, seconds: float, n_regions: int
) -> dict[str, Any]:
    run_c = run.counters
    out: dict[str, Any] = dict(sorted(canvas_c.items()))
    out["seconds"] = round(seconds, 3)
    out["predict_calls"] = int(canvas_c["steps"])  # FOV predictions made for this region
    out["batch_predict_calls"] = int(run_c["predict_calls"])  # all regions of the run together
    out["forward_batches"] = int(run_c["forward_batches"])
    out["regions_in_run"] = n_regions
    if "seed_policy_seconds" in out:
        out["seed_policy_seconds"] = round(out["seed_policy_seconds"], 3)
    out.update(run_settings(run))
    return out


def segment_region(
    image: Any,
    model: torch.nn.Module,
    config: Any = None,
    options: InferenceOptions | None = None,
    *,
    seeds: Sequence[Sequence[int]] | None = None,
    mask: Any = None,
    device: str | None = "cpu",
    precision: str = "auto",
    batch: int = 1,
    compile: bool = False,
    progress: ProgressCallback | None = None,
    on_object: Callable[[ObjectOutcome], None] | None = None,
    runner: LockstepRunner | None = None,
    speculate: bool = True,
) -> SegmentationResult:
    """Segment every object in ``image`` with google/ffn's rules; see :func:`segment_many`.

    ``seeds``: explicit (z, y, x) points (segment k grows from the k-th point) or None for the
    options' seed policy (default: google's PolicyPeaks). ``batch`` > 1 grows that many objects
    at once, committed in seed order (same labels as ``batch=1``; pays on GPUs).
    """
    cb = None if on_object is None else (lambda _i, out: on_object(out))
    (res,) = segment_many(
        [image],
        model,
        config,
        options,
        seeds=[seeds],
        masks=[mask],
        device=device,
        precision=precision,
        batch=batch,
        compile=compile,
        progress=progress,
        on_object=cb,
        runner=runner,
        speculate=speculate,
    )
    return res


def iter_segment_region(
    image: Any,
    model: torch.nn.Module,
    config: Any = None,
    options: InferenceOptions | None = None,
    *,
    seeds: Sequence[Sequence[int]] | None = None,
    mask: Any = None,
    device: str | None = "cpu",
    precision: str = "auto",
    batch: int = 1,
    runner: LockstepRunner | None = None,
) -> Iterator[RegionProgress]:
    """:func:`segment_region` as an iterator of :class:`RegionProgress` (the desk's Segment
    region); the last update's ``results[0]`` is what :func:`segment_region` returns."""
    yield from iter_segment_many(
        [image],
        model,
        config,
        options,
        seeds=[seeds],
        masks=[mask],
        device=device,
        precision=precision,
        batch=batch,
        runner=runner,
    )
