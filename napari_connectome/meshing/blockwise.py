"""Whole-volume passes for exports, as Dask tasks: per-segment voxel counts and boxes, and a small
runner that reports progress.

Why a pass of our own: meshing a segment needs its box (and its voxel count, for the level rule),
and an export of "every segment" needs the ids. A region graph (``napari-connectome graph``) has
them already and is used when given; otherwise one task per block of the segmentation counts its
ids and boxes (renumbered once, ``np.bincount`` + ``ndimage.find_objects``) and the blocks' tables
are merged by id (:func:`napari_connectome.graph.kernels.reduce_stats`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress

Stats = dict[str, np.ndarray]  # id (uint64, sorted), count (int64), lo, hi (int64 (N, 3), z y x)
BATCH = 16  # tasks per threaded batch: progress moves, memory stays bounded


def run_tasks(
    tasks: Sequence[Any],
    *,
    client: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    message: str = "",
) -> list[Any]:
    """Compute dask ``delayed`` tasks, in order: on ``client`` (a ``dask.distributed.Client``) as
    futures, else on dask's threaded scheduler in batches."""
    import dask

    progress = progress or no_progress
    total = len(tasks)
    progress(0, total, message)
    if client is not None:
        from dask.distributed import as_completed

        futures = client.compute(list(tasks))
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * total
        for done, fut in enumerate(as_completed(futures), 1):
            out[index[fut.key]] = fut.result()
            progress(done, total, message)
        return out
    n = workers or max(1, min(4, os.cpu_count() or 1))
    results: list[Any] = []
    for start in range(0, total, BATCH):
        batch = tasks[start : start + BATCH]
        results.extend(dask.compute(*batch, scheduler="threads", num_workers=n))
        progress(len(results), total, message)
    return results


def block_stats(block: np.ndarray, offset: Sequence[int]) -> Stats:
    """Ids (0 left out), voxel counts and boxes (level-0 voxels, hi exclusive) of one block."""
    from napari_connectome.graph.kernels import renumbered_stats

    block = np.asarray(block)
    if block.dtype.kind not in "iu":
        raise UserInputError(f"segment ids must be integers, not {block.dtype}")
    return renumbered_stats(block.astype(np.uint64, copy=False), offset)[2]


def _merge(*parts: Stats) -> Stats:
    from napari_connectome.graph.kernels import STAT_KEYS, concat, empty_stats, reduce_stats

    parts = tuple(p for p in parts if len(p["id"]))
    return reduce_stats(concat(parts, STAT_KEYS)) if parts else empty_stats()


def block_slices(shape: Sequence[int], chunks: Sequence[Sequence[int]]) -> list[tuple[slice, ...]]:
    """The regions of a dask array's blocks (its chunks are whole storage chunks)."""
    import itertools

    edges = [np.r_[0, np.cumsum(c)] for c in chunks]
    return [
        tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, idx))
        for idx in itertools.product(*(range(len(c)) for c in chunks))
    ]


class Lazy:
    """A lazy array handed to tasks as it is: dask computes a dask array (or one inside a list)
    given to a task before the task runs, i.e. the whole volume; wrapped, each task reads only
    the region it slices (on this thread: ``scheduler="sync"``)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        block = self.data[key]
        if hasattr(block, "compute"):
            block = block.compute(scheduler="sync")
        return np.asarray(block)


def _read(data: Lazy, region: tuple[slice, ...]) -> np.ndarray:
    return data[region]


def volume_stats(
    data: Any,
    *,
    client: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Stats:
    """Counts and boxes of every id of a 3D segmentation (a dask array), one task per block."""
    import dask
    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=tuple(min(64, s) for s in data.shape))
    regions = block_slices(data.shape, data.chunks)
    lazy = Lazy(data)
    tasks = [
        dask.delayed(block_stats)(dask.delayed(_read)(lazy, r), [s.start for s in r])
        for r in regions
    ]
    # merge in groups of 8 inside the graph, so the driver receives a handful of tables
    while len(tasks) > 8:
        tasks = [dask.delayed(_merge)(*tasks[i : i + 8]) for i in range(0, len(tasks), 8)]
    parts = run_tasks(tasks, client=client, workers=workers, progress=progress, message="ids")
    return _merge(*parts)


def stats_from_region_graph(path: str | os.PathLike, labels: Any) -> Stats:
    """The same table from a region graph computed for ``labels`` (checked by chunk digests)."""
    from napari_connectome.graph import RegionGraph

    graph = RegionGraph.open(path)
    graph.check_source(labels)
    rows = np.arange(graph.n_fragments)
    counts, lo, hi = graph.stats(rows)
    return {
        "id": np.asarray(graph.fragment_ids, np.uint64),
        "count": np.asarray(counts, np.int64),
        "lo": np.asarray(lo, np.int64),
        "hi": np.asarray(hi, np.int64),
    }


def region_graph_beside(source: str) -> Path | None:
    """``SEG/region_graph`` (where jobs and ``napari-connectome graph`` put it), if complete."""
    folder = Path(source) / "region_graph"
    return folder if (folder / "region_graph.json").is_file() else None


def select(stats: Stats, segments: Sequence[int] | None) -> Stats:
    """The rows of ``segments`` (all when None); an id the volume does not hold is refused."""
    if segments is None:
        return stats
    want = np.unique(np.asarray([int(s) for s in segments], np.uint64))
    rows = np.searchsorted(stats["id"], want)
    found = (rows < len(stats["id"])) & (
        stats["id"][np.minimum(rows, max(len(stats["id"]) - 1, 0))] == want
        if len(stats["id"])
        else np.zeros(len(want), bool)
    )
    if not found.all():
        missing = ", ".join(str(int(s)) for s in want[~found][:10])
        raise UserInputError(f"segment(s) {missing} do not occur in the segmentation")
    return {k: v[rows] for k, v in stats.items()}


def level_factors(shape0: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """Downsampling factors of a pyramid level against level 0 (from the shapes)."""
    return tuple(max(1, round(int(a) / max(1, int(b)))) for a, b in zip(shape0, shape))  # type: ignore[return-value]


def stats_for(
    volume: Any,
    segments: Sequence[int] | None,
    *,
    region_graph: str | os.PathLike | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    on_source: Callable[[str], None] | None = None,
) -> Stats:
    """The selected (or all) segments' counts and boxes: from the given region graph, one beside
    the segmentation, or a blockwise pass."""
    graph = region_graph or region_graph_beside(str(volume.source))
    if graph is not None:
        if on_source:
            on_source(f"segment boxes from the region graph {graph}")
        stats = stats_from_region_graph(graph, volume.multiscale[0])
    else:
        stats = volume_stats(volume.data, client=client, workers=workers, progress=progress)
    return select(stats, segments)
