"""Segment a volume (or a region of it) from file to OME-Zarr labels: the work behind ``segment``.

The command line, a script and a widget call :func:`segment_volume` with one
:class:`SegmentVolumeRequest`, so all three check the same things in the same order and write the
same output. Everything is checked before the model runs (inputs, ROI, seeds, device, the
destination), and the result is written to a hidden sibling and renamed into place, so a bad input
or a crash leaves nothing behind and an existing destination is never touched without
``overwrite``. Messages for the user (device, estimate, what was written) go to ``log``; seed
progress goes to ``progress`` (:mod:`napari_connectome.progress`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.consensus import DEFAULT_MIN_SIZE
from napari_connectome.progress import ProgressCallback
from napari_connectome.volumes.box import Box

if TYPE_CHECKING:
    from napari_connectome.ffn.inference import SegmentationResult

COUNTERS_FILE = "ffn_counters.json"
"""The run's report beside the labels: source, model, ROI, device, options, counters, objects."""

Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class SegmentVolumeRequest:
    """What to segment and how. Paths and the ROI are as a user gives them; nothing is opened yet.

    ``roi`` is ``"z0:z1,y0:y1,x0:x1"`` (an empty bound = the volume edge) or three ``(start, stop)``
    pairs, None for the whole volume. ``seeds`` are (z, y, x) points in volume voxels, or their
    ``"z,y,x"`` texts (segment k grows from the k-th point), or None for the seed policy.
    ``overrides`` replace fields of the model's recommended
    :class:`~napari_connectome.ffn.options.InferenceOptions` (None values are ignored); an unknown
    name fails here rather than after the model has loaded.
    """

    source: str
    dest: Path | str
    model: str | Path | None = None  # model directory or zoo name; None: the default model
    roi: str | Sequence[Sequence[int]] | None = None
    seeds: Sequence[Sequence[int] | str] | None = None  # (z, y, x) points or "z,y,x" texts
    mask: str | None = None  # exclusion mask source (nonzero = never segment), same shape
    device: str = "cpu"
    precision: str = "auto"
    batch: int = 1
    compile: bool = False
    threads: int | None = None  # CPU threads for torch; None: leave torch's setting
    overrides: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    # Over-segmentation for agglomerate: run the seed policy forward and in reverse and write
    # their split consensus (ffn/consensus.py) with its smallest piece and rule for voxels only
    # one run segmented.
    oversegment: bool = False
    consensus_min_size: int = DEFAULT_MIN_SIZE
    consensus_unmatched: str = "drop"

    def __post_init__(self) -> None:
        from napari_connectome.ffn.consensus import UNMATCHED
        from napari_connectome.ffn.options import InferenceOptions

        known = {f.name for f in fields(InferenceOptions)}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise UserInputError(
                f"unknown inference option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        if not self.oversegment:
            return
        if self.seeds:
            raise UserInputError(
                "--oversegment runs the seed policy forward and in reverse; it cannot be combined "
                "with --seed (explicit points grow in the order given)"
            )
        if self.overrides.get("seed_order") is not None:
            raise UserInputError(
                "--oversegment runs both seed orders itself; leave out --seed-order"
            )
        if self.overrides.get("seed_policy") == "points":
            raise UserInputError("--oversegment needs a seed policy (peaks or grid), not points")
        if int(self.consensus_min_size) < 0:
            raise UserInputError(
                f"--consensus-min-size must be >= 0 voxels, got {self.consensus_min_size}"
            )
        if self.consensus_unmatched not in UNMATCHED:
            raise UserInputError(
                f"--consensus-unmatched must be one of {', '.join(UNMATCHED)}, "
                f"got {self.consensus_unmatched!r}"
            )


@dataclass
class SegmentVolumeResult:
    """What was written: the labels at ``dest`` and the report at ``dest / COUNTERS_FILE``."""

    dest: Path
    roi: Box  # in volume voxels
    segmentation: SegmentationResult
    report: dict[str, Any]

    @property
    def counters(self) -> dict[str, Any]:
        return self.segmentation.counters


def parse_roi(text: str | None, shape: tuple[int, ...]) -> Region:
    """``z0:z1,y0:y1,x0:x1`` (an empty bound = the volume edge) -> slices within ``shape``."""
    if not text:
        return tuple(slice(0, s) for s in shape)  # type: ignore[return-value]
    parts = text.split(",")
    if len(parts) != 3:
        raise UserInputError(f"--roi {text!r}: give three ranges z0:z1,y0:y1,x0:x1")
    out = []
    for axis, part, n in zip("zyx", parts, shape):
        lo, sep, hi = part.partition(":")
        try:
            a = int(lo) if lo.strip() else 0
            b = int(hi) if hi.strip() else n
        except ValueError:
            raise UserInputError(f"--roi {text!r}: {part!r} is not a range like 10:200") from None
        if not sep or a < 0 or b > n or a >= b:
            raise UserInputError(
                f"--roi {text!r}: the {axis} range {part!r} must lie within 0:{n} and not be empty"
            )
        out.append(slice(a, b))
    return tuple(out)  # type: ignore[return-value]


def parse_seed(text: str) -> tuple[int, int, int]:
    """``"z,y,x"`` -> a point, or a clear error naming the expected form."""
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise UserInputError(f"--seed {text!r}: give a point as z,y,x integers, e.g. 100,120,130")
    return vals  # type: ignore[return-value]


def _point(seed: Sequence[int] | str) -> tuple[int, int, int]:
    if isinstance(seed, str):
        return parse_seed(seed)
    point = tuple(int(v) for v in seed)
    if len(point) != 3:
        raise UserInputError(f"seed {tuple(seed)}: give a point as (z, y, x) integers")
    return point  # type: ignore[return-value]


def roi_text(roi: str | Sequence[Sequence[int]] | None) -> str | None:
    """The ROI as the ``z0:z1,y0:y1,x0:x1`` text that messages quote (pairs are written out)."""
    if roi is None or isinstance(roi, str):
        return roi
    return ",".join(f"{int(a)}:{int(b)}" for a, b in roi)


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _log_to_logger(message: str) -> None:
    logging.getLogger(__name__).info(message)


def segment_volume(
    request: SegmentVolumeRequest,
    *,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> SegmentVolumeResult:
    """Check ``request``, run the FFN on its region and write labels + report to its ``dest``.

    Raises :class:`~napari_connectome.errors.UserInputError` (nothing written) for bad input.
    ``progress(done, total, message)`` counts seeds; it is first called once the model runs, so a
    progress bar made lazily appears after the ``log`` lines about device and estimate.
    """
    import numpy as np

    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.estimate import estimate_run
    from napari_connectome.ffn.inference import check_image, segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner, resolve_device
    from napari_connectome.volumes import open_volume, require_3d, write_ome_zarr
    from napari_connectome.volumes.atomic import (
        check_destination,
        commit,
        remove_path,
        temp_sibling,
    )
    from napari_connectome.volumes.output_safety import refuse_overlap

    say = _log_to_logger if log is None else log
    req = request
    source = str(req.source)
    roi_given = roi_text(req.roi)
    dest = Path(req.dest).expanduser()
    model_path = req.model if req.model and Path(req.model).expanduser().exists() else None
    refuse_overlap(dest, [source, req.mask, model_path])
    check_destination(dest, req.overwrite)
    device = resolve_device(req.device)
    if req.threads:
        import torch

        torch.set_num_threads(req.threads)
    seeds = [_point(s) for s in req.seeds] if req.seeds else None

    vol = require_3d(open_volume(source), "FFN segmentation")
    if vol.axes != "zyx":
        raise UserInputError(f"{source} has axes '{vol.axes}'; segment needs a zyx volume")
    if vol.is_labels and vol.format.startswith("ome-zarr"):
        raise UserInputError(
            f"{source} is an OME-Zarr label image (a segmentation), not EM; give the EM "
            "image as SOURCE"
        )
    roi = Box.from_slices(parse_roi(roi_given, vol.shape))
    start = np.array(roi.start)
    if seeds is not None:
        local = []
        for s in seeds:
            p = np.asarray(s)
            if np.any(p < 0) or np.any(p >= np.asarray(vol.shape)):
                raise UserInputError(
                    f"seed {s} (z, y, x) lies outside the volume of shape {vol.shape}"
                )
            if any(not (a <= v < b) for v, a, b in zip(s, roi.start, roi.stop)):
                raise UserInputError(f"seed {s} lies outside the --roi {roi_given}")
            local.append(tuple(int(v) for v in p - start))
        seeds = local

    if req.model:
        model_dir: Any = req.model
    else:
        from napari_connectome.ffn.zoo import default_model

        model_dir = default_model()
    model, config = load_model(model_dir, device="cpu")
    options = options_for_model(config, **dict(req.overrides))

    # Cheap checks first (shape vs FOV), then read the region and check its values.
    roi_shape = roi.shape
    fov = config.architecture.fov_size
    if any(s < f for s, f in zip(roi_shape, fov)):
        raise UserInputError(
            f"the model's field of view {fov} (z, y, x) is larger than the region {roi_shape}; "
            "choose a larger --roi"
        )
    what = f"{source} (region {roi_shape})"
    image = check_image(np.asarray(vol.data[roi.slices]), fov, what=what, config=config)
    mask = None
    if req.mask:
        mvol = open_volume(req.mask)
        if mvol.shape != vol.shape:
            raise UserInputError(
                f"--mask {req.mask} has shape {mvol.shape} but the volume has {vol.shape}"
            )
        mask = np.asarray(mvol.data[roi.slices]) != 0

    runner = LockstepRunner(
        model, device=device, precision=req.precision, batch=req.batch, compile=req.compile
    )
    threads = torch_threads()
    say(
        f"FFN on {runner.device}: {runner.precision_reason}; {threads} CPU "
        f"thread{'s' if threads != 1 else ''}"
    )
    n_seeds = None if seeds is None else len(seeds)
    estimate = estimate_run(roi_shape, runner, config, seeds=n_seeds)
    if req.oversegment:  # two runs over the region
        from dataclasses import replace

        estimate = replace(estimate, steps=2 * estimate.steps)
    say(f"region {estimate.describe()}{' for both runs' if req.oversegment else ''}")
    if req.oversegment:
        say("over-segmentation: two runs (seeds forward, then reversed), then their consensus")
        result, oversegment = oversegment_region(
            image,
            model,
            config,
            options,
            mask=mask,
            runner=runner,
            min_size=req.consensus_min_size,
            unmatched=req.consensus_unmatched,
            progress=progress,
            log=say,
        )
    else:
        oversegment = None
        result = segment_region(
            image, model, config, options, seeds=seeds, mask=mask, progress=progress, runner=runner
        )

    voxel = tuple(float(v) for v in vol.voxel_size_nm[-3:])
    offset = tuple(float(o) + float(a) * v for o, a, v in zip(vol.offset_nm[-3:], start, voxel))
    # labels and counters are assembled at a hidden sibling and renamed into place together
    tmp = temp_sibling(dest, "segment")
    try:
        write_ome_zarr(
            result.labels,
            tmp,
            voxel_size_nm=voxel,
            offset_nm=offset,
            labels=True,
            name=dest.name.split(".")[0],
        )
        if result.claim is not None:
            write_claim(tmp, result.claim)
        report = {
            "source": source,
            "model": str(model_dir),
            # where it was, absolute: agglomerate resegments with it by default (seg_model.py)
            "model_folder": str(_model_folder(model_dir)),
            "roi_zyx": [[a, b] for a, b in zip(roi.start, roi.stop)],
            "device": str(runner.device),
            "precision": runner.precision,
            "precision_requested": runner.precision_requested,
            "precision_reason": runner.precision_reason,
            "options": options.to_dict(),
            "counters": result.counters,
            "objects": {
                str(k): {**v, "start_zyx": [int(a) + int(b) for a, b in zip(v["start_zyx"], start)]}
                for k, v in result.origins.items()
            },
        }
        if oversegment is not None:
            report["oversegment"] = oversegment
        (tmp / COUNTERS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        commit(tmp, dest, req.overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    c = result.counters
    say(
        f"wrote {dest}: {c.get('segments', 0)} segments, {c.get('steps', 0)} FFN steps "
        f"in {c['seconds']:.1f} s"
    )
    return SegmentVolumeResult(dest=dest, roi=roi, segmentation=result, report=report)


def _model_folder(model_dir: Any) -> Path:
    """The absolute folder of the model ``load_model`` loaded (a folder or a zoo name)."""
    from napari_connectome.ffn.zoo import get_model

    return Path(get_model(model_dir)).expanduser().resolve()


CLAIM = "ffn_claim"  # the FFN claim beside the labels' levels (agglomerate reads it)


def stored_claim(source: Any) -> Path | None:
    """Where a segmentation folder (``source`` as a user gave it) keeps its FFN claim, if it has
    one; callers check its shape against theirs."""
    if not isinstance(source, str | Path):
        return None
    path = Path(str(source)) / CLAIM
    return path if (path / "zarr.json").is_file() else None


def create_claim(labels_dir: Path, shape: Any, chunks: Any) -> Any:
    """The (empty, 0 = no claim) FFN claim array inside the labels' OME-Zarr; a job creates it
    with its output and each block writes its own part."""
    import zarr

    return zarr.create_array(
        str(Path(labels_dir) / CLAIM),
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype="uint8",
        fill_value=0,
        dimension_names=("z", "y", "x"),
        attributes={
            "napari_connectome": "ffn_claim",
            "what": "per voxel, 255 x the highest probability a later FFN object gave it while "
            "another segment held it (docs/agglomeration.md)",
        },
    )


def write_claim(labels_dir: Path, claim: Any) -> None:
    """Store the FFN claim (uint8, level 0's shape and chunks) inside the labels' OME-Zarr."""
    import zarr

    level0 = zarr.open_array(str(labels_dir / "0"), mode="r")
    create_claim(labels_dir, level0.shape, level0.chunks)[...] = claim


def _pass_progress(
    progress: ProgressCallback | None, index: int, passes: int, name: str
) -> ProgressCallback | None:
    """Seed progress of pass ``index`` of ``passes`` as one bar over all passes (each pass tries
    the same seeds, in another order)."""
    if progress is None:
        return None

    def update(done: int, total: int, message: str = "") -> None:
        progress(index * total + done, passes * total, f"{name}: {message}" if message else name)

    return update


def oversegment_region(
    image: Any,
    model: Any,
    config: Any,
    options: Any,
    *,
    mask: Any = None,
    runner: Any = None,
    min_size: int = DEFAULT_MIN_SIZE,
    unmatched: str = "drop",
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[SegmentationResult, dict[str, Any]]:
    """Segment ``image`` with the seed policy forward and reversed, and return their split
    consensus (:func:`~napari_connectome.ffn.consensus.split_consensus`) as one result, with
    what each run and the consensus cost (the report's ``oversegment`` entry).

    The result's counters add up both runs (steps, predict calls, seconds); its ``origins`` are
    empty, since a consensus supervoxel has no single seed."""
    import time

    from napari_connectome.ffn.consensus import consensus_claim, split_consensus
    from napari_connectome.ffn.inference import SegmentationResult, segment_region

    say = _log_to_logger if log is None else log
    runs: dict[str, SegmentationResult] = {}
    for k, order in enumerate(("forward", "reverse")):
        runs[order] = segment_region(
            image,
            model,
            config,
            options.updated(seed_order=order),
            mask=mask,
            runner=runner,
            progress=_pass_progress(progress, k, 2, order),
        )
        c = runs[order].counters
        say(
            f"{order} run: {c.get('segments', 0)} segments, {c.get('steps', 0)} FFN steps "
            f"in {c['seconds']:.1f} s"
        )
    t0 = time.perf_counter()
    labels, stats = split_consensus(
        runs["forward"].labels, runs["reverse"].labels, min_size=min_size, unmatched=unmatched
    )
    consensus_seconds = round(time.perf_counter() - t0, 3)
    say(
        f"consensus: {stats.segments} supervoxels from {stats.segments_a} and {stats.segments_b} "
        f"segments; {stats.voxels_dropped_unmatched} voxels segmented by one run only and "
        f"{stats.voxels_dropped_small} in pieces under {min_size} voxels left at 0"
    )
    fwd, rev = runs["forward"].counters, runs["reverse"].counters
    counters = {
        key: fwd.get(key, 0) + rev.get(key, 0)
        for key in ("steps", "predict_calls", "batch_predict_calls", "forward_batches")
    }
    counters["seconds"] = round(
        float(fwd["seconds"]) + float(rev["seconds"]) + consensus_seconds, 3
    )
    counters["segments"] = stats.segments
    counters["consensus_seconds"] = consensus_seconds
    for key in ("precision", "precision_requested", "precision_reason", "threads"):
        if key in fwd:
            counters[key] = fwd[key]
    report = {
        "rule": "split consensus of seed orders forward and reverse (ffn/consensus.py)",
        "consensus": stats.to_dict(),
        "consensus_seconds": consensus_seconds,
        "runs": {order: res.counters for order, res in runs.items()},
    }
    claim = consensus_claim([runs["forward"].claim, runs["reverse"].claim], labels)
    result = SegmentationResult(
        labels=labels,
        counters=counters,
        outcomes=[*runs["forward"].outcomes, *runs["reverse"].outcomes],
        claim=claim,
    )
    return result, report
