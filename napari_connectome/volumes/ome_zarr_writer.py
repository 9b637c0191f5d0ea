"""Create and fill OME-Zarr 0.5 (zarr v3) images and label images, block by block.

Every array and all metadata are created before any data is written, so a job can hand the path to
many workers; data moves in chunk-aligned blocks so a volume larger than RAM never sits in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress
from napari_connectome.volumes.atomic import (
    check_destination,
    commit,
    remove_path,
    temp_sibling,
)
from napari_connectome.volumes.output_safety import ownership_marker
from napari_connectome.volumes.pyramid import downsample_mean, downsample_mode, plan_levels
from napari_connectome.volumes.volume import SPATIAL_AXES, Volume, check_label_dtype

DEFAULT_CHUNK = 64  # 64^3 voxels: 256 KiB of uint8, 2 MiB of uint64 labels
DEFAULT_CHUNK_2D = 256  # the same order of bytes for a 2D image
BLOCK_BYTES = 32 * 2**20  # a block read/written at once, per worker thread
_AXIS_TYPES = {"t": "time", "c": "channel"}


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def default_chunks(shape: Sequence[int], axes: str, chunk: int | Sequence[int] | None) -> tuple:
    """Storage chunks: ``chunk`` voxels along spatial axes, 1 along channel/time axes (default 64,
    or 256 for 2D images)."""
    if chunk is not None and not isinstance(chunk, int):
        if len(chunk) != len(shape):
            raise UserInputError(f"chunks {tuple(chunk)} must have one entry per axis ({axes}).")
        return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunk, shape))
    n_spatial = sum(a in SPATIAL_AXES for a in axes)
    size = (DEFAULT_CHUNK if n_spatial > 2 else DEFAULT_CHUNK_2D) if chunk is None else int(chunk)
    if size < 1:
        raise UserInputError(f"chunk size must be a positive number of voxels, not {size}.")
    return tuple(max(1, min(size, int(s))) if a in SPATIAL_AXES else 1 for a, s in zip(axes, shape))


def iter_blocks(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int, budget: int = BLOCK_BYTES
) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned regions covering ``shape``, each a whole number of chunks and about ``budget``
    bytes, so each write replaces complete chunks and never reads one back."""
    block = list(chunks)
    # grow the block along the fastest axes first while it stays within the budget
    for i in reversed(range(len(shape))):
        while block[i] < shape[i] and np.prod(block) * itemsize * 2 <= budget:
            block[i] = min(block[i] * 2, -(-shape[i] // chunks[i]) * chunks[i])
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(st, min(st + b, s)) for st, b, s in zip(starts, block, shape))


def _axes_meta(axes: str) -> list[dict[str, str]]:
    out = []
    for a in axes:
        if a in SPATIAL_AXES:
            out.append({"name": a, "type": "space", "unit": "nanometer"})
        else:
            out.append({"name": a, "type": _AXIS_TYPES.get(a, "custom")})
    return out


class OmeZarrWriter:
    """An OME-Zarr 0.5 image with all arrays created: write level-0 blocks, then the pyramid."""

    def __init__(self, path: str | Path) -> None:
        import zarr

        from napari_connectome.volumes.read_zarr import ome_attrs

        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="r+")
        meta = ome_attrs(self.group)
        ms = meta["multiscales"][0]
        self.axes = "".join(a["name"] for a in ms["axes"])
        self.labels = "image-label" in meta
        self.level_paths = [d["path"] for d in ms["datasets"]]
        self.arrays = [self.group[p] for p in self.level_paths]
        self.voxel_sizes = [
            next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
            for d in ms["datasets"]
        ]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.arrays[0].dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].chunks)

    def __getitem__(self, level: int) -> Any:
        """The zarr array of one level (0 = full resolution)."""
        return self.arrays[level]

    def write(self, region: tuple[slice, ...], data: Any, level: int = 0) -> None:
        """Write ``data`` into ``region`` of a level (chunk-aligned: no read-modify-write)."""
        self.arrays[level][region] = np.asarray(data, dtype=self.dtype)

    def build_pyramid(self, progress: ProgressCallback | None = None) -> None:
        """Recompute levels 1.. from level 0, block by block."""
        build_pyramid(self.path, progress=progress)

    def __repr__(self) -> str:
        kind = "labels" if self.labels else "image"
        n = len(self.arrays)
        return f"OmeZarrWriter({str(self.path)!r}, {kind}, shape={self.shape}, levels={n})"


def _create_at(
    path: Path,
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    voxel_size_nm: tuple[float, ...],
    offset_nm: tuple[float, ...],
    chunks: tuple[int, ...],
    labels: bool,
    levels: int | None,
    axes: str,
    name: str,
) -> None:
    """Write the group, every level's (empty) array and the OME metadata at ``path``."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import add_metadata, write_multiscales_metadata

    plan = plan_levels(shape, voxel_size_nm, axes, chunks, levels)
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    datasets = []
    for i, (lshape, lsize, _) in enumerate(plan):
        lchunks = tuple(min(c, s) for c, s in zip(chunks, lshape))
        group.create_array(
            str(i),
            shape=lshape,
            chunks=lchunks,
            dtype=dtype,
            fill_value=0,
            dimension_names=list(axes),
        )
        # centre of voxel 0 at this level: the centre of the block of level-0 voxels it covers
        translation = [
            float(o + (ls - s0) / 2.0) for o, ls, s0 in zip(offset_nm, lsize, voxel_size_nm)
        ]
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(v) for v in lsize]},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    fmt = FormatV05()
    meta: dict[str, Any] = {}
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=_axes_meta(axes), name=name, **meta)
    if labels:
        add_metadata(group, {"image-label": {"version": fmt.version}}, fmt=fmt)
    group.attrs.update(ownership_marker("ome_zarr_writer"))  # what --overwrite may replace


def _validate(
    shape: Sequence[int],
    dtype: Any,
    voxel_size_nm: Sequence[float],
    offset_nm: Sequence[float] | None,
    axes: str,
    labels: bool,
    levels: int | None,
    what: str,
) -> tuple[tuple[int, ...], np.dtype, tuple[float, ...], tuple[float, ...]]:
    shape = tuple(int(s) for s in shape)
    dt = np.dtype(dtype)
    if len(axes) != len(shape) or len(set(axes)) != len(axes):
        raise UserInputError(
            f"axes '{axes}' do not match the {len(shape)}D shape {shape} of {what}."
        )
    size = tuple(float(v) for v in voxel_size_nm)
    if len(size) != len(shape) or not all(v > 0 for v in size):
        raise UserInputError(
            f"voxel_size_nm {size} must give one positive size per axis ({axes}) of {what}."
        )
    offset = (0.0,) * len(shape) if offset_nm is None else tuple(float(v) for v in offset_nm)
    if len(offset) != len(shape):
        raise UserInputError(f"offset_nm {offset} must give one value per axis ({axes}) of {what}.")
    if labels:
        check_label_dtype(dt, what)
    if levels is not None and int(levels) < 1:
        raise UserInputError(f"levels must be at least 1 (level 0 alone), not {levels}.")
    return shape, dt, size, offset


def create_ome_zarr(
    dest: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    voxel_size_nm: Sequence[float],
    offset_nm: Sequence[float] | None = None,
    chunks: int | Sequence[int] | None = None,
    labels: bool = False,
    levels: int | None = None,
    axes: str = "zyx",
    overwrite: bool = False,
    name: str | None = None,
) -> OmeZarrWriter:
    """Create a complete, empty OME-Zarr 0.5 image (all levels, all metadata) at ``dest``.

    Unwritten chunks read as 0. The structure is built at a hidden sibling and renamed into place,
    so an existing ``dest`` (only replaced with ``overwrite=True``) is never left half replaced.
    """
    dest = Path(dest).expanduser()
    shape_t, dt, size, offset = _validate(
        shape, dtype, voxel_size_nm, offset_nm, axes, labels, levels, str(dest)
    )
    check_destination(dest, overwrite)
    tmp = temp_sibling(dest)
    try:
        _create_at(
            tmp,
            shape_t,
            dt,
            voxel_size_nm=size,
            offset_nm=offset,
            chunks=default_chunks(shape_t, axes, chunks),
            labels=labels,
            levels=levels,
            axes=axes,
            name=name or dest.name.split(".")[0],
        )
        commit(tmp, dest, overwrite)
    except BaseException as exc:
        remove_path(tmp)
        if _no_space(exc):
            raise _disk_full(dest) from None
        raise
    return OmeZarrWriter(dest)


def _run_blocks(
    regions: list[Any], work: Any, progress: ProgressCallback, done0: int, total: int, msg: str
) -> int:
    """Run ``work(region)`` on a few threads with a bounded number in flight (bounded memory).

    On the first failure nothing new starts, and this returns (raises) only once every write it
    started has ended, so the caller's cleanup is not refilled by late writes.
    """
    done = done0
    workers = _threads()
    pool = ThreadPoolExecutor(workers)
    pending: set = set()
    try:
        for region in regions:
            pending.add(pool.submit(work, region))
            if len(pending) >= 2 * workers:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()
                    done += 1
                    progress(done, total, msg)
        while pending:
            f = pending.pop()
            f.result()
            done += 1
            progress(done, total, msg)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        _wait_for_zarr_io()
        raise
    finally:
        pool.shutdown(wait=True)
    return done


def _wait_for_zarr_io(timeout_s: float = 30.0) -> None:
    """Wait until the chunk writes zarr still runs on its event loop have ended.

    zarr writes the chunks of one assignment as concurrent tasks and, when one fails (a full disk),
    raises at once while the others go on writing; removing the output before they end leaves
    files behind.
    """
    try:
        from zarr.core import sync as zarr_sync
    except ImportError:  # pragma: no cover - another zarr layout: nothing to wait for
        return
    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or not loop.is_running():
        return

    async def quiet() -> None:
        me = asyncio.current_task()
        deadline = loop.time() + timeout_s
        while True:
            others = {t for t in asyncio.all_tasks() if t is not me and not t.done()}
            left = deadline - loop.time()
            if not others or left <= 0:
                return
            await asyncio.wait(others, timeout=left)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(quiet(), loop).result(timeout_s + 5)


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _disk_full(dest: Path) -> UserInputError:
    what = "" if dest.name.startswith(".") else f" while writing {dest.name}"
    return UserInputError(
        f"no space left on the disk (or quota) holding {dest.parent}{what}: free some space or "
        "choose an output on another disk; nothing was left behind and an existing output is "
        "unchanged."
    )


def _read_block(data: Any, region: tuple[slice, ...]) -> np.ndarray:
    block = data[region]
    if hasattr(block, "compute"):
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def _pyramid_regions(writer: OmeZarrWriter, budget: int) -> list[list[tuple[slice, ...]]]:
    return [
        list(iter_blocks(arr.shape, arr.chunks, writer.dtype.itemsize, budget))
        for arr in writer.arrays[1:]
    ]


def _fill_pyramid(
    writer: OmeZarrWriter, progress: ProgressCallback, done: int, total: int, budget: int
) -> int:
    reduce = downsample_mode if writer.labels else downsample_mean
    # the source region of a block is 2^d times its size: halve the budget per factor-2 axis
    for level, regions in enumerate(_pyramid_regions(writer, budget // 8), start=1):
        src, dst = writer.arrays[level - 1], writer.arrays[level]
        factors = tuple(
            round(b / a) for a, b in zip(writer.voxel_sizes[level - 1], writer.voxel_sizes[level])
        )

        def work(region: tuple[slice, ...], src=src, dst=dst, factors=factors) -> None:
            src_region = tuple(
                slice(r.start * f, min(r.stop * f, n))
                for r, f, n in zip(region, factors, src.shape)
            )
            dst[region] = reduce(np.asarray(src[src_region]), factors)

        done = _run_blocks(regions, work, progress, done, total, f"level {level}")
    return done


def build_pyramid(
    dest: str | Path,
    *,
    progress: ProgressCallback | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> None:
    """(Re)compute levels 1.. of an OME-Zarr from level 0, each level from the one above, block by
    block (mean for images, mode for labels)."""
    writer = OmeZarrWriter(dest)
    total = sum(len(r) for r in _pyramid_regions(writer, block_bytes // 8))
    _fill_pyramid(writer, progress or no_progress, 0, total, block_bytes)


def write_ome_zarr(
    data: Any,
    dest: str | Path,
    *,
    voxel_size_nm: Sequence[float] | None = None,
    offset_nm: Sequence[float] | None = None,
    labels: bool = False,
    chunks: int | Sequence[int] | None = None,
    levels: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    name: str | None = None,
    axes: str | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Path:
    """Copy any array-like (numpy, dask, zarr, h5py or a :class:`Volume`) into a new OME-Zarr 0.5
    pyramid at ``dest``, block by block, and rename it into place only when complete.

    A :class:`Volume` brings its own voxel size, offset and axes unless given here. At most a few
    blocks of about ``block_bytes`` each are in memory at once (per worker thread and queue).
    """
    dest = Path(dest).expanduser()
    if isinstance(data, Volume):
        vol = data
        voxel_size_nm = voxel_size_nm or vol.voxel_size_nm
        offset_nm = offset_nm if offset_nm is not None else vol.offset_nm
        axes = axes or vol.axes
        name = name or vol.name
        data = vol.data
    shape = tuple(int(s) for s in data.shape)
    axes = axes or {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}.get(len(shape), "")
    if voxel_size_nm is None:
        voxel_size_nm = (1.0,) * len(shape)
    shape, dt, size, offset = _validate(
        shape, data.dtype, voxel_size_nm, offset_nm, axes, labels, levels, "the input"
    )
    check_destination(dest, overwrite)
    progress = progress or no_progress
    tmp = temp_sibling(dest)
    try:
        _create_at(
            tmp,
            shape,
            dt,
            voxel_size_nm=size,
            offset_nm=offset,
            chunks=default_chunks(shape, axes, chunks),
            labels=labels,
            levels=levels,
            axes=axes,
            name=name or dest.name.split(".")[0],
        )
        writer = OmeZarrWriter(tmp)
        level0 = list(iter_blocks(shape, writer.chunks, dt.itemsize, block_bytes))
        total = len(level0) + sum(len(r) for r in _pyramid_regions(writer, block_bytes // 8))
        target = writer.arrays[0]

        def copy(region: tuple[slice, ...]) -> None:
            target[region] = _read_block(data, region).astype(dt, copy=False)

        done = _run_blocks(level0, copy, progress, 0, total, "level 0")
        _fill_pyramid(writer, progress, done, total, block_bytes)
        commit(tmp, dest, overwrite)
    except BaseException as exc:
        remove_path(tmp)
        if _no_space(exc):
            raise _disk_full(dest) from None
        raise
    return dest
