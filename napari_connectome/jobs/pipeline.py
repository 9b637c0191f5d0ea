"""The job driver: check the spec, create the output, then run the phases on Dask.

Phases (:func:`job_phases`, run by :func:`~napari_connectome.jobs.phases.run_phases`): segment
every missing block -> match every face -> one lookup table -> relabel every block -> pyramid ->
region graph; the cluster they run on starts in :mod:`~napari_connectome.jobs.cluster`. The
driver is the only writer of ``progress.jsonl`` (workers return, the driver appends),
so lines never interleave, even with workers on many nodes of a shared file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.segment_volume import CLAIM
from napari_connectome.jobs.cluster import (  # open_client, launch_mode: named here too
    LOCAL_WORKERS_PER_CORE,
    default_workers,
    launch_mode,
    open_client,
)
from napari_connectome.jobs.grid import BlockGrid
from napari_connectome.jobs.layout import JobLayout, atomic_write_bytes, atomic_write_json
from napari_connectome.jobs.output import create_output, level_shapes, open_level
from napari_connectome.jobs.spec import MAX_BLOCKS, JobSpec, load_spec
from napari_connectome.progress import ProgressCallback, no_progress
from napari_connectome.volumes.box import chunk_indices, grid_shape


@dataclass
class JobResult:
    output: Path
    blocks_total: int
    blocks_segmented: int  # segmented by this run (the rest were already done)
    n_segments: int
    seconds: float
    seams: dict = field(default_factory=dict)  # per axis, see napari_connectome.jobs.seams


def make_grid(spec: JobSpec) -> BlockGrid:
    """The block grid, after checking the input, ROI and block size against each other."""
    from napari_connectome.jobs.segmenters import segmenter_min_shape
    from napari_connectome.jobs.source import input_info

    info = input_info(spec.input)
    if spec.roi is None:
        start, stop = (0, 0, 0), info.shape
    else:
        start, stop = spec.roi.start, spec.roi.stop
        if any(e > s for e, s in zip(stop, info.shape)):
            raise UserInputError(
                f"roi {list(start)}..{list(stop)} lies outside the input volume of shape "
                f"{list(info.shape)}: shrink roi.stop"
            )
    if spec.mask:
        mask_shape = input_info(spec.mask).shape
        if mask_shape != info.shape:
            raise UserInputError(
                f"mask shape {list(mask_shape)} differs from input shape {list(info.shape)}"
            )
    dtype = np.dtype(info.dtype)
    if spec.segmenter.kind == "ffn" and dtype.kind in "iu" and dtype.itemsize >= 4:
        raise UserInputError(
            f"input {spec.input} has dtype {dtype}, the dtype of label ids, not of EM: give the "
            "EM image (8-bit grayscale) as the input, not a segmentation"
        )
    grid = BlockGrid(start, stop, tuple(spec.block_shape), tuple(spec.overlap), info.shape)
    if len(grid) > MAX_BLOCKS:
        raise UserInputError(
            f"the region {list(grid.roi_shape)} in blocks of {list(spec.block_shape)} is "
            f"{len(grid):,} blocks ({' x '.join(map(str, grid.grid_shape))}): one job's Dask "
            "scheduler manages about 1e4-1e5 blocks (docs/scaling.md), and the driver holds "
            f"every block; use larger blocks, or split the volume into jobs of at most "
            f"{MAX_BLOCKS:,} blocks with roi"
        )
    if spec.backend.kind == "local":
        check_host(spec)  # the workers run here
    fov = segmenter_min_shape(spec.segmenter)
    for block in grid:
        shape = block.read.shape
        if any(s < f for s, f in zip(shape, fov)):
            raise UserInputError(
                f"block {list(block.index)} reads a region of {list(shape)} voxels, smaller than "
                "the "
                f"segmenter's field of view {list(fov)}: use a larger block_shape or overlap"
            )
    return grid


def spec_warnings(spec: JobSpec) -> list[str]:
    """What a job may run with but most likely should not (``run-job`` prints them; the
    ``--check`` line lists them)."""
    from napari_connectome.jobs.segmenters import segmenter_min_shape

    out = []
    if spec.segmenter.kind == "ffn":
        fov = segmenter_min_shape(spec.segmenter)
        if any(o < f for o, f in zip(spec.overlap, fov)):
            out.append(
                f"overlap {list(spec.overlap)} is less than the FFN's field of view {list(fov)}: "
                "objects will be cut at block faces more often (the seam check shows it); use "
                "one to one and a half fields of view (docs/hpc.md, overlap)"
            )
    return out


def check_host(spec: JobSpec) -> None:
    """What only the machine whose workers run the blocks can check: a GPU the segmenter asks
    for, and no more local worker processes than its cores can carry."""
    if spec.backend.kind in ("local", "slurm", "pbs") and launch_mode(spec) == "local":
        cores = os.cpu_count() or 1
        workers = default_workers(spec)
        if workers > LOCAL_WORKERS_PER_CORE * cores:
            raise UserInputError(
                f"backend.workers {workers} on a machine with {cores} CPU cores: each worker is a "
                "process with its own copy of the segmenter and its blocks, so more than "
                f"{LOCAL_WORKERS_PER_CORE} per core only costs memory; use at most "
                f"{LOCAL_WORKERS_PER_CORE * cores} (default: one per GPU, else one per 2 cores)"
            )
    if spec.segmenter.kind == "ffn" and spec.backend.kind != "dask":
        from napari_connectome.jobs.segmenters import check_device

        check_device(spec.segmenter.device)


def prepare_output(spec: JobSpec, grid: BlockGrid) -> JobLayout:
    """Create the output complete (or accept it for a resume); refuse to touch anything else."""
    from napari_connectome.jobs.segmenters import stores_claim
    from napari_connectome.jobs.source import input_info

    layout = JobLayout(spec.output)
    root = layout.root
    _refuse_output_over_inputs(spec)
    if root.exists():
        state = layout.read_state()
        staged = (
            layout.spec.is_file() and state is None
        )  # `submit` uploaded the spec, nothing ran yet
        if state is not None and spec.resume:
            old = load_spec(layout.spec)
            if old.fingerprint() != spec.fingerprint():
                raise UserInputError(
                    f"output {root} belongs to a different job ({spec.differences(old)}): set "
                    "the same values to resume it, "
                    "choose another output, or use --overwrite to replace it"
                )
            return layout
        if spec.overwrite and not staged:
            from napari_connectome.volumes.output_safety import is_ours

            if not is_ours(root):
                raise UserInputError(
                    f"output {root} exists and napari-connectome did not write it (no "
                    "napari_connectome marker in its zarr.json, not a job's output): refusing to "
                    "delete it even with --overwrite; choose another output"
                )
            shutil.rmtree(root)
        elif not staged:
            raise UserInputError(
                f"output {root} already exists: set resume: true to continue that job, or pass "
                "--overwrite (overwrite: true) to replace it"
            )
    if not root.parent.is_dir():
        raise UserInputError(
            f"output folder {root.parent} does not exist: create it or fix 'output'"
        )
    info = input_info(spec.input)
    offset = tuple(o + s * v for o, s, v in zip(info.offset_nm, grid.roi_start, info.voxel_size_nm))
    root.mkdir(exist_ok=True)
    layout.job.mkdir(exist_ok=True)
    atomic_write_bytes(layout.spec, spec.to_yaml().encode())
    create_output(
        root,
        grid.roi_shape,
        grid.block_shape,
        voxel_size_nm=info.voxel_size_nm,
        offset_nm=offset,
        levels=spec.pyramid_levels,
        name=spec.name,
        claim=stores_claim(spec.segmenter),
    )
    layout.progress.touch()
    atomic_write_json(layout.state, {"state": "created", "fingerprint": spec.fingerprint()})
    return layout


def _refuse_output_over_inputs(spec: JobSpec) -> None:
    """The output may not be, lie inside or contain the input, the mask or the model folder."""
    from napari_connectome.volumes.output_safety import refuse_overlap

    model = spec.segmenter.model if spec.segmenter.kind == "ffn" else None
    model = model if model and Path(model).expanduser().exists() else None
    refuse_overlap(spec.output, [spec.input, spec.mask, model])


class ProgressLog:
    """Appends one JSON line per event to the job's progress log (flushed, so tails see it at
    once)."""

    def __init__(self, path: Path):
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, **event) -> None:
        event.setdefault("t", round(time.time(), 3))
        self._f.write(json.dumps(event, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def run_job(
    spec: JobSpec,
    *,
    client=None,
    progress: ProgressCallback | None = None,
) -> JobResult:
    """Run (or resume) a job to completion. ``client``: an existing Dask client; default from the
    spec."""
    from napari_connectome.jobs.driver_lock import DriverLock

    progress = progress or no_progress
    t_start = time.perf_counter()
    layout = JobLayout(spec.output)
    lock = DriverLock(layout.job, layout.root)
    if layout.job.is_dir():
        lock.acquire()  # one driver per output, before anything there is rewritten or deleted
    try:
        grid = make_grid(spec)
        if spec.backend.kind != "local":
            check_host(spec)  # slurm/pbs: in the allocation, where the blocks will run
        _clear_unfinished_start(layout, lock)
        before = _listing(layout)
        try:
            layout = prepare_output(spec, grid)
        except BaseException:
            if _listing(layout) != before:
                with contextlib.suppress(OSError):  # the error to report is the first one
                    _undo_start(layout, lock)
            raise
        lock.acquire()  # on the output as it is now (an overwrite recreated it)
        return _drive(spec, grid, layout, client, progress, t_start)
    finally:
        lock.release()


# what an output holds after prepare_output and before any block ran (besides the level arrays)
_START_FILES = JobLayout.START_FILES
_START_JOB_FILES = JobLayout.START_JOB_FILES


def _listing(layout: JobLayout) -> tuple:
    def names(d: Path) -> list[str]:
        try:
            return sorted(os.listdir(d))
        except OSError:
            return []

    return (layout.root.is_dir(), names(layout.root), names(layout.job))


def _is_unfinished_start(layout: JobLayout) -> bool:
    """The output holds only what a start writes before the first block (no results), so
    removing it loses nothing. Anything else in it (a user's files, any block) says no."""

    def ours(name: str, known: set[str]) -> bool:
        return name in known or (name.startswith(".") and name.endswith(".tmp"))

    root = layout.root
    if not root.is_dir() or root.is_symlink():
        return False
    for name in os.listdir(root):
        if (name.isdigit() or name == CLAIM) and (root / name).is_dir():
            if set(os.listdir(root / name)) - {"zarr.json"}:
                return False  # a chunk was written
        elif not ours(name, _START_FILES):
            return False
    if layout.job.is_dir() and not all(ours(n, _START_JOB_FILES) for n in os.listdir(layout.job)):
        return False  # blocks/, faces/, lut.npy, relabel/: results
    try:
        return b'"block"' not in layout.progress.read_bytes()
    except FileNotFoundError:
        return True


def _clear_unfinished_start(layout: JobLayout, lock) -> None:
    """A start killed before it wrote the spec (out of memory, kill -9) leaves an output that is
    neither a job's nor free, so neither a rerun nor --overwrite would accept it: remove it."""
    if layout.job.is_dir() and not layout.spec.is_file() and _is_unfinished_start(layout):
        import sys

        print(f"removing {layout.root}: left by a start that did not finish", file=sys.stderr)
        lock.release()
        shutil.rmtree(layout.root)


def clear_unfinished_start(output: str | Path) -> None:
    """What ``run-job`` does first, for ``submit`` (whose staging would refuse the leftover)."""
    from napari_connectome.jobs.driver_lock import DriverLock

    layout = JobLayout(output)
    lock = DriverLock(layout.job, layout.root)
    if layout.job.is_dir():
        lock.check_free()
    _clear_unfinished_start(layout, lock)


def _undo_start(layout: JobLayout, lock) -> None:
    """Output creation failed (disk full, read-only, interrupted): leave nothing that blocks a
    rerun. An output `submit` staged keeps its spec and scheduler folder (the log says why)."""
    if not _is_unfinished_start(layout) or lock.held_by_another():
        return  # results, or another driver's fresh output
    if not (layout.scheduler.is_dir() and layout.spec.is_file()):
        lock.release()
        shutil.rmtree(layout.root, ignore_errors=True)
        return
    keep = {JobLayout.SPEC, JobLayout.SCHEDULER, JobLayout.DRIVER_LOCK}
    for path in [*layout.root.iterdir(), *layout.job.iterdir()]:
        if path == layout.job or (path.parent == layout.job and path.name in keep):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@dataclass
class _Run:
    """What one run of a job computes as it goes, shared by its phases."""

    blocks: list
    pending: list
    offsets: Any = None
    digest: str = ""
    n_final: int = 0
    relabelled: int = 0
    seams: dict = field(default_factory=dict)


def job_phases(spec, grid, layout, client, log, progress, run: _Run) -> list:
    """The job's phases, in order: segment every missing block, match every face (then one
    lookup table), relabel every block not relabelled with that table, one pyramid level after
    another, the region graph."""
    from napari_connectome.jobs import tasks
    from napari_connectome.jobs.phases import Phase

    spec_json = spec.model_dump_json()
    fp = spec.fingerprint()
    blocks, total = run.blocks, len(run.blocks)
    pending = {b.index for b in run.pending}
    chunk_key = open_level(layout.root, 0, mode="r").metadata.chunk_key_encoding.encode_chunk_key
    segmented = [total - len(pending)]

    def begin_segment() -> None:
        log.write(
            event="start",
            job=spec.name,
            blocks_total=total,
            already_done=total - len(pending),
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        progress(segmented[0], total, "segmenting")

    def segmented_one(_block, info) -> None:
        segmented[0] += 1
        log.write(
            event="block",
            phase="segment",
            block=info["block"],
            chunk=f"0/{chunk_key(tuple(info['block']))}",
            n_segments=info["n_segments"],
            seconds=info["seconds"],
            written_t=info.get("written_t"),
            worker=info.get("worker"),
            worker_name=info.get("worker_name"),
        )
        progress(segmented[0], total, "segmenting")

    segment = Phase(
        "segment",
        items=lambda: blocks,
        task=tasks.segment_block,
        args=lambda b: (spec_json, grid, b.index),
        key=lambda b: f"segment-{fp}-{b.name}",
        is_done=lambda b: b.index not in pending,
        on_done=segmented_one,
        begin=begin_segment,
    )

    def lookup_table(faces: list, pairs: list) -> None:
        from napari_connectome.jobs.reconcile import block_offsets, global_lut

        counts = [int(layout.read_block_info(b)["n_segments"]) for b in blocks]
        run.offsets = offsets = block_offsets(counts)
        edges = [
            np.stack([p[:, 0] + offsets[a.flat], p[:, 1] + offsets[b.flat]], axis=1)
            for (a, b, _), p in zip(faces, pairs)
            if len(p)
        ]
        edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.uint64)
        lut = global_lut(int(sum(counts)), edges)
        import io

        buf = io.BytesIO()
        np.save(buf, lut, allow_pickle=False)
        atomic_write_bytes(layout.lut, buf.getvalue())
        run.digest = _table_digest(lut)
        run.n_final = int(lut.max(initial=0))
        log.write(event="phase", phase="relabel", fragments=int(sum(counts)), segments=run.n_final)

    reconcile = Phase(
        "reconcile",
        items=lambda: list(grid.faces()),
        task=tasks.match_face,
        args=lambda face: (spec_json, grid, face[0].index, face[2]),
        key=lambda face: f"face-{fp}-{face[0].name}-{face[2]}",
        begin=lambda: log.write(event="phase", phase="reconcile"),
        end=lookup_table,
    )

    def relabel_args(b) -> tuple:
        neighbours = tuple((n.index, int(run.offsets[n.flat])) for n in grid.face_neighbours(b))
        return (spec_json, grid, b.index, int(run.offsets[b.flat]), neighbours, run.digest)

    def relabelled(todo: list, _results: list) -> None:
        run.relabelled = len(todo)
        run.seams = _seam_report(layout, blocks)

    relabel = Phase(
        "relabel",
        items=lambda: blocks,
        task=tasks.relabel_block,
        args=relabel_args,
        key=lambda b: f"relabel-{fp}-{b.name}",
        # a block relabelled with another table (a resume by a newer version) is done again
        is_done=lambda b: layout.relabel_digest(b) == run.digest,
        on_done=lambda _b, info: log.write(
            event="block",
            phase="relabel",
            block=info["block"],
            chunk=info["chunk"],
            written_t=info["written_t"],
            filled=info.get("filled", 0),
        ),
        end=relabelled,
    )

    def pyramid(level: int) -> Phase:
        def chunks() -> list:
            arr = open_level(layout.root, level, mode="r")
            return list(chunk_indices(grid_shape(arr.shape, arr.chunks)))

        return Phase(
            f"pyramid {level}",
            items=chunks,
            task=tasks.downsample,
            args=lambda idx: (spec.output, level, idx),
            key=lambda idx: f"pyramid-{fp}-{level}-{idx[0]}_{idx[1]}_{idx[2]}",
            begin=lambda: log.write(event="phase", phase="pyramid", level=level),
        )

    def region_graph() -> Phase | None:
        if not spec.region_graph:
            return None
        from napari_connectome.jobs.graph_phase import region_graph_phase

        return Phase(
            "region_graph",
            items=lambda: [layout.region_graph],
            # its own blockwise pass on the same workers; it says when it is complete
            task=lambda _dest: region_graph_phase(
                spec,
                grid,
                layout,
                client,
                log,
                progress,
                output_changed=bool(run.relabelled),
            ),
            where="driver",
        )

    def agglomerate() -> Phase | None:
        if spec.agglomerate is None:
            return None
        from napari_connectome.jobs.agglomerate_phase import agglomerate_output, agglomerate_phase

        return Phase(
            "agglomerate",
            items=lambda: [agglomerate_output(spec)],
            # its own blockwise passes on the same workers (jobs/agglomerate_phase.py)
            task=lambda _dest: agglomerate_phase(
                spec,
                grid,
                layout,
                client,
                log,
                progress,
                output_changed=bool(run.relabelled),
                seam_report=run.seams,
            ),
            where="driver",
        )

    levels = len(level_shapes(grid.roi_shape, spec.pyramid_levels))
    pyramids = (pyramid(lv) for lv in range(1, levels))
    return [segment, reconcile, relabel, *pyramids, region_graph, agglomerate]


def _drive(spec, grid, layout, client, progress, t_start) -> JobResult:
    from napari_connectome.jobs.phases import run_phases

    fp = spec.fingerprint()
    blocks = list(grid)
    run = _Run(blocks, [b for b in blocks if layout.read_block_info(b) is None])
    log = ProgressLog(layout.progress)
    atomic_write_json(layout.state, {"state": "running", "fingerprint": fp, "pid": os.getpid()})
    ctx = nullcontext(client) if client is not None else open_client(spec)
    try:
        with ctx as dask_client:
            run_phases(dask_client, job_phases(spec, grid, layout, dask_client, log, progress, run))
    except BaseException as exc:
        log.write(event="failed", error=f"{type(exc).__name__}: {exc}")
        atomic_write_json(layout.state, {"state": "failed", "fingerprint": fp, "error": str(exc)})
        log.close()
        raise
    seconds = time.perf_counter() - t_start
    log.write(event="done", segments=run.n_final, seconds=round(seconds, 3), seams=run.seams)
    log.close()
    atomic_write_json(
        layout.state,
        {"state": "done", "fingerprint": fp, "segments": run.n_final, "seams": run.seams},
    )
    progress(len(blocks), len(blocks), "done")
    return JobResult(layout.root, len(blocks), len(run.pending), run.n_final, seconds, run.seams)


def _table_digest(lut: np.ndarray) -> str:
    """What a relabel depends on besides the stored blocks: the table and the code's version."""
    import hashlib

    from napari_connectome.jobs.reconcile import RECONCILE_VERSION

    h = hashlib.sha256(f"reconcile-v{RECONCILE_VERSION}".encode())
    h.update(np.ascontiguousarray(lut, dtype=np.uint64).tobytes())
    return h.hexdigest()[:32]


def _seam_report(layout: JobLayout, blocks: list) -> dict:
    """Sum the seam counts the relabel markers hold (markers from older versions hold none)."""
    from napari_connectome.jobs.seams import SeamCounts

    total = SeamCounts()
    for b in blocks:
        text = layout.relabel_done(b).read_text()
        if text.strip():
            total.add(json.loads(text)["seams"])
    return total.report()
