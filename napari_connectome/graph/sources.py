"""Voxel sources a Dask worker can read a block of by itself, and which stored chunks exist.

A task never receives voxels from the driver: it receives one of these small, picklable readers
(a zarr array, which pickles as its store and path; an HDF5 file name and dataset; a dask array as
a last resort) and reads its own block. For zarr, the driver lists the stored chunk keys once, so
a block whose chunks are all absent becomes no task at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

Triple = tuple[int, int, int]
DEFAULT_UNIT = 64  # digest grid for sources without chunks of their own (numpy arrays)


class ZarrReader:
    """A zarr (v2 or v3) array; decode failures name the chunk (GuardedZarrArray)."""

    def __init__(self, array: Any, text: str) -> None:
        self.array, self.text = array, text

    def read(self, sl: tuple[slice, ...]) -> np.ndarray:
        from napari_connectome.volumes.lazy import GuardedZarrArray

        return np.asarray(GuardedZarrArray(self.array, self.text)[sl])


_H5_FILES: dict[str, Any] = {}


class HDF5Reader:
    """An HDF5 dataset by file and name; each process opens the file once and keeps it open (an
    h5py file closed in a process invalidates the handles other openings of it still hold)."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = str(path), name

    def read(self, sl: tuple[slice, ...]) -> np.ndarray:
        import h5py

        f = _H5_FILES.get(self.path)
        if f is None or not f.id.valid:
            f = _H5_FILES[self.path] = h5py.File(self.path, "r")
        try:
            return np.asarray(f[self.name][sl])
        except OSError as exc:
            raise UserInputError(
                f"dataset '{self.name}' of {self.path} cannot be read in region "
                f"{[(s.start, s.stop) for s in sl]}: {exc}; the file is damaged: re-copy it."
            ) from exc


class ArrayReader:
    """Anything else that slices (a dask array: computed in the worker, synchronously; a numpy
    array or memmap)."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def read(self, sl: tuple[slice, ...]) -> np.ndarray:
        region = self.array[sl]
        if hasattr(region, "compute"):
            region = region.compute(scheduler="synchronous")
        return np.asarray(region)


class RegionReader:
    """Another reader's region starting at ``start`` (a job's ROI of its input)."""

    def __init__(self, reader: Any, start: Triple) -> None:
        self.reader, self.start = reader, tuple(int(a) for a in start)

    def read(self, sl: tuple[slice, ...]) -> np.ndarray:
        return self.reader.read(
            tuple(slice(s.start + a, s.stop + a) for s, a in zip(sl, self.start))
        )


@dataclass
class VoxelSource:
    """A 3D array to read blockwise: its reader, geometry, chunk grid and a text naming it."""

    reader: Any
    shape: Triple
    dtype: np.dtype
    chunks: Triple  # the digest grid: the storage chunks (a Volume's storage_chunks)
    text: str
    zarr_array: Any = None  # set for zarr sources: lets the driver list stored chunks
    store_unit: Triple | None = None  # what one store key holds: a shard, else one chunk

    def __post_init__(self) -> None:
        if self.store_unit is None:
            self.store_unit = self.chunks

    @property
    def grid(self) -> Triple:
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunks))

    def region(self, start: Sequence[int], stop: Sequence[int]) -> VoxelSource:
        """The part ``start:stop`` of this source, read by the same reader (chunk grid: the
        stored chunks' shape; chunk presence is not listed for a region)."""
        start = tuple(int(a) for a in start)
        stop = tuple(int(b) for b in stop)
        if any(a < 0 or b > n or a >= b for a, b, n in zip(start, stop, self.shape)):
            raise UserInputError(
                f"region {list(start)}..{list(stop)} does not lie inside {self.text} of shape "
                f"{list(self.shape)}"
            )
        if start == (0, 0, 0) and stop == self.shape:
            return self
        shape = tuple(b - a for a, b in zip(start, stop))
        text = f"{self.text}[{', '.join(f'{a}:{b}' for a, b in zip(start, stop))}]"
        return VoxelSource(RegionReader(self.reader, start), shape, self.dtype, self.chunks, text)

    def stored_chunks(self) -> set[Triple] | None:
        """Grid indices of the chunks stored in a zarr store, or None when every chunk must be
        read (not zarr, a store that cannot list, or a fill value other than 0)."""
        arr = self.zarr_array
        if arr is None:
            return None
        fill = arr.fill_value
        if fill is None or np.asarray(fill).item() != 0:
            return None
        store = arr.store_path.store
        if not getattr(store, "supports_listing", False):
            return None
        from zarr.core.sync import sync

        prefix = arr.store_path.path.strip("/")
        prefix = f"{prefix}/" if prefix else ""

        async def _keys() -> set[str]:
            return {k.removeprefix(prefix) async for k in store.list_prefix(prefix)}

        keys = sync(_keys())
        encode = arr.metadata.encode_chunk_key  # a shard's key for a sharded array
        per = [u // c for u, c in zip(self.store_unit, self.chunks)]
        units = [math.ceil(s / u) for s, u in zip(self.shape, self.store_unit)]
        out: set[Triple] = set()
        for idx in np.ndindex(*units):
            if encode(idx) in keys:
                ranges = [range(i * p, min((i + 1) * p, g)) for i, p, g in zip(idx, per, self.grid)]
                out.update(itertools.product(*ranges))
        return out


def _unwrap_dask(data: Any) -> Any | None:
    """The array a dask array was made from with ``da.from_array`` (unsliced), if it was."""
    try:
        layers = data.dask.layers
        if len(layers) != 1:
            return None
        (layer,) = layers.values()
        obj, index = layer.indices[0]
        if index is None and tuple(getattr(obj, "shape", ())) == tuple(data.shape):
            return obj
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return None


def _zarr_unit(arr: Any) -> Triple:
    shards = getattr(arr, "shards", None)
    return tuple(int(c) for c in (shards or arr.chunks))


def _zarr_text(arr: Any) -> str:
    base = str(arr.store_path).removeprefix("file://")
    return base


def as_source(obj: Any, what: str = "labels", storage_chunks: Triple | None = None) -> VoxelSource:
    """A :class:`VoxelSource` for a Volume, zarr array, h5py dataset, dask or numpy array."""
    from napari_connectome.volumes.volume import Volume

    text = ""
    if isinstance(obj, VoxelSource):
        return obj
    if isinstance(obj, Volume):
        text = obj.source
        storage_chunks = tuple(int(c) for c in obj.storage_chunks) or None
        obj = obj.data
    shape = tuple(int(s) for s in getattr(obj, "shape", ()))
    if len(shape) != 3:
        raise UserInputError(
            f"{what} must be a 3D (z, y, x) array, got shape {shape or getattr(obj, 'shape', None)}"
        )
    dtype = np.dtype(obj.dtype)
    inner = _unwrap_dask(obj) if hasattr(obj, "dask") else None
    inner = obj if inner is None else inner
    from napari_connectome.volumes.lazy import GuardedZarrArray, HDF5Array

    if isinstance(inner, GuardedZarrArray):
        text = text or inner.source
        inner = inner.array
    if _is_zarr_array(inner):
        text = text or _zarr_text(inner)
        chunks = tuple(int(c) for c in inner.chunks)
        return VoxelSource(
            ZarrReader(inner, text), shape, dtype, chunks, text, inner, _zarr_unit(inner)
        )
    if isinstance(inner, HDF5Array):
        chunks = storage_chunks or inner.chunks or _default_chunks(shape)
        text = text or f"{inner.path}:{inner.name}"
        return VoxelSource(HDF5Reader(inner.path, inner.name), shape, dtype, chunks, text)
    if _is_h5py_dataset(inner):
        chunks = tuple(inner.chunks) if inner.chunks else (storage_chunks or _default_chunks(shape))
        text = text or f"{inner.file.filename}:{inner.name}"
        return VoxelSource(HDF5Reader(inner.file.filename, inner.name), shape, dtype, chunks, text)
    if hasattr(obj, "dask"):
        chunks = storage_chunks or tuple(int(c[0]) for c in obj.chunks)
        # the array-like the dask array wraps reads a block directly (no graph to slice)
        reader = ArrayReader(obj if inner is obj else inner)
        return VoxelSource(reader, shape, dtype, chunks, text or f"dask array {obj.name}")
    if isinstance(obj, np.ndarray):
        chunks = storage_chunks or _default_chunks(shape)
        return VoxelSource(ArrayReader(obj), shape, dtype, chunks, text or "numpy array")
    raise UserInputError(
        f"{what}: cannot read a {type(obj).__name__}; give a Volume (open_volume), a zarr array, "
        "an h5py dataset, a dask or a numpy array"
    )


def _default_chunks(shape: Triple) -> Triple:
    return tuple(min(DEFAULT_UNIT, s) for s in shape)


def _is_zarr_array(obj: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        return False
    return isinstance(obj, zarr.Array)


def _is_h5py_dataset(obj: Any) -> bool:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        return False
    return isinstance(obj, h5py.Dataset)
