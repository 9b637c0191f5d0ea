"""Array-likes that let dask read any backend chunk by chunk and name broken chunks clearly.

dask builds the lazy array from ``shape``/``dtype``/``__getitem__``; the wrappers here only add what
dask cannot know: how to read a tensorstore region, and which stored chunk failed to decode.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

# Target size of one dask chunk. Bigger chunks mean fewer tasks (dask spends ~1 ms per task, which
# dominates when a 2D view crosses thousands of small storage chunks); dask pushes a slice down into
# the read of each chunk, so a 2D view still reads only the storage chunks it crosses.
DASK_CHUNK_BYTES = 64 * 2**20


def dask_chunks(
    shape: tuple[int, ...],
    storage_chunks: tuple[int, ...],
    itemsize: int,
    target: int = DASK_CHUNK_BYTES,
) -> tuple[int, ...]:
    """dask chunking aligned to storage chunks: each dask chunk is a whole number of stored chunks
    (doubling every axis in turn, fastest first, up to about ``target`` bytes)."""
    chunks = [max(1, min(int(c), int(s))) for c, s in zip(storage_chunks, shape)]
    grew = True
    while grew:
        grew = False
        for i in reversed(range(len(chunks))):
            if chunks[i] < shape[i] and int(np.prod(chunks)) * 2 * itemsize <= target:
                chunks[i] = min(chunks[i] * 2, int(shape[i]))
                grew = True
    return tuple(chunks)


def _normalise(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    if not isinstance(key, tuple):
        key = (key,)
    out = []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
            out.append(slice(start, stop))
        else:
            i = int(k)
            i = i + n if i < 0 else i
            out.append(slice(i, i + 1))
    out.extend(slice(0, n) for n in shape[len(out) :])
    return tuple(out)


class GuardedZarrArray:
    """A zarr array whose decode failures become a :class:`UserInputError` naming the chunk."""

    def __init__(self, array: Any, source: str) -> None:
        self.array = array
        self.source = source
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(array.chunks)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except (UserInputError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            bad = self._find_bad_chunk(key)
            if bad is None:
                raise
            raise UserInputError(
                f"chunk '{bad}' of {self.source} cannot be decoded ({type(exc).__name__}: {exc}); "
                "the file is damaged: re-copy or re-create that chunk (or delete it to read it as "
                "the fill value)."
            ) from exc

    def _find_bad_chunk(self, key: Any) -> str | None:
        coords = first_bad_chunk(self.array.__getitem__, key, self.chunks, self.shape)
        if coords is None:
            return None
        base = str(self.array.store_path).removeprefix("file://")
        return f"{base}/{self.array.metadata.encode_chunk_key(coords)}"


def first_bad_chunk(
    read: Any, key: Any, chunks: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """Grid coordinates of the first stored chunk under ``key`` whose read fails, if any.

    Called only after a read failed, to turn "something is broken" into "this chunk is broken".
    """
    region = _normalise(key, shape)
    ranges = [
        range(s.start // c, max(s.start // c, (s.stop - 1) // c) + 1)
        for s, c in zip(region, chunks)
    ]
    for coords in itertools.product(*ranges):
        sel = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape))
        try:
            read(sel)
        except Exception:  # noqa: BLE001  (any failure marks the chunk; the caller re-raises the original)
            return coords
    return None


class TensorStoreArray:
    """A tensorstore view exposed as a numpy-style array (read synchronously per dask chunk)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        layout = store.chunk_layout
        chunk = layout.read_chunk.shape if layout.read_chunk.shape is not None else None
        self.chunks = tuple(int(c) for c in chunk) if chunk else self.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.store[key].read().result())
        except ValueError as exc:
            if "decod" not in str(exc).lower() and "corrupt" not in str(exc).lower():
                raise
            raise UserInputError(
                f"a chunk of {self.store.kvstore.url if self.store.kvstore else 'the volume'} in "
                f"region {_normalise(key, self.shape)} cannot be decoded ({exc}); the data is "
                "damaged: re-copy or re-create it."
            ) from exc


class HDF5Array:
    """An HDF5 dataset that dask can pickle (it reopens the file by name in each process) and whose
    decode failures name the broken chunk."""

    def __init__(self, path: str, name: str) -> None:
        import h5py

        self.path, self.name = str(path), name
        self._file: Any = None
        with h5py.File(self.path, "r") as f:
            ds = f[name]
            self.shape, self.dtype, self.ndim = tuple(ds.shape), np.dtype(ds.dtype), ds.ndim
            self.chunks = tuple(ds.chunks) if ds.chunks else None

    def _dataset(self) -> Any:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file[self.name]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self._dataset()[key]
        except OSError as exc:
            where = ""
            coords = (
                first_bad_chunk(self._dataset().__getitem__, key, self.chunks, self.shape)
                if self.chunks
                else None
            )
            if coords is not None:
                where = f" (chunk at {tuple(i * c for i, c in zip(coords, self.chunks))})"
            raise UserInputError(
                f"dataset '{self.name}' of {self.path} cannot be read{where}: {exc}; the file is "
                "damaged or incomplete: re-copy it."
            ) from exc


def to_dask(
    array: Any,
    storage_chunks: tuple[int, ...] | None = None,
    *,
    lock: bool = False,
    target: int = DASK_CHUNK_BYTES,
) -> Any:
    """Wrap an array-like as a dask array whose chunks are whole storage chunks (about ``target``
    bytes each; 0: exactly one storage chunk each)."""
    import dask.array as da

    chunks = storage_chunks or getattr(array, "chunks", None) or array.shape
    chunks = dask_chunks(
        tuple(array.shape), tuple(chunks), np.dtype(array.dtype).itemsize, target=target
    )
    return da.from_array(array, chunks=chunks, lock=lock, asarray=False, inline_array=True)
