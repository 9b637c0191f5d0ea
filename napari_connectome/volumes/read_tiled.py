"""A virtual tiled volume: one small volume (the tile) repeated on a grid, made chunk by chunk.

For benchmarks and scale tests: a segmentation of 10^11 voxels or more without 800 GB on disk. A
folder with a ``tiled.json``::

    {"format": "napari-connectome-tiled", "tile": "/abs/path/tile.ome.zarr",
     "reps": [nz, ny, nx], "id_stride": 255, "voxel_size_nm": [10, 10, 10]}

opens (``open_volume(folder)``) as the tile repeated ``reps`` times along z, y, x. With
``id_stride`` N > 0 the tile holds label ids below N and the copy with linear index
``t = (tz * ny + ty) * nx + tx`` has every nonzero id raised by ``t * N`` (uint64), so every copy's
fragments are distinct; with 0 (an EM image) the voxels are the tile's. Every resolution level of
the tile becomes a level of the tiled volume (the tile's level tiled the same way), so a multiscale
layer and meshes from coarse levels work. ``tile`` may be relative to the folder; ``voxel_size_nm``
is optional (default: the tile's). Nothing is computed until a region is read, and a read makes
only the voxels it asks for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.volume import Volume

TILED_JSON = "tiled.json"
FORMAT = "napari-connectome-tiled"


class TiledArray:
    """One level of a tiled volume as a numpy-style array (dask reads it per chunk).

    Picklable: it holds the tile's source text and reopens the tile in each process.
    """

    def __init__(
        self,
        tile_source: str,
        level: int,
        tile_shape: tuple[int, int, int],
        tile_dtype: Any,
        reps: tuple[int, int, int],
        id_stride: int,
    ) -> None:
        self.tile_source, self.level = tile_source, int(level)
        self.tile_shape = tuple(int(s) for s in tile_shape)
        self.reps = tuple(int(r) for r in reps)
        self.id_stride = int(id_stride)
        self.tile_dtype = np.dtype(tile_dtype)
        self.dtype = np.dtype(np.uint64) if self.id_stride else self.tile_dtype
        self.shape = tuple(t * r for t, r in zip(self.tile_shape, self.reps))
        self.ndim = 3
        self._tile: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tile": None}

    def tile(self) -> Any:
        """The tile's array at this level (opened once per process)."""
        if self._tile is None:
            from napari_connectome.volumes.opening import open_volume

            self._tile = open_volume(self.tile_source).multiscale[self.level]
        return self._tile

    def _read_tile(self, region: tuple[slice, ...]) -> np.ndarray:
        part = self.tile()[region]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_connectome.volumes.lazy import _normalise

        keys = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in keys):
            i = next(i for i, k in enumerate(keys) if k is Ellipsis)
            keys = keys[:i] + (slice(None),) * (3 - len(keys) + 1) + keys[i + 1 :]
        if any(isinstance(k, slice) and k.step not in (None, 1) for k in keys):
            raise IndexError("a tiled volume is read with step-1 slices")
        region = _normalise(keys, self.shape)
        drop = [ax for ax, k in enumerate(keys) if not isinstance(k, slice)]
        out = np.zeros(tuple(s.stop - s.start for s in region), self.dtype)
        if out.size:
            ranges = [
                range(s.start // t, (s.stop - 1) // t + 1) for s, t in zip(region, self.tile_shape)
            ]
            for tz in ranges[0]:
                for ty in ranges[1]:
                    for tx in ranges[2]:
                        self._fill(out, region, (tz, ty, tx))
        return out.squeeze(axis=tuple(drop)) if drop else out

    def _fill(self, out: np.ndarray, region: tuple[slice, ...], tile: tuple[int, int, int]) -> None:
        lo = [i * t for i, t in zip(tile, self.tile_shape)]
        inter = [
            slice(max(r.start, a), min(r.stop, a + t))
            for r, a, t in zip(region, lo, self.tile_shape)
        ]
        src = tuple(slice(i.start - a, i.stop - a) for i, a in zip(inter, lo))
        dst = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inter, region))
        part = self._read_tile(src)
        if not self.id_stride:
            out[dst] = part
            return
        if part.size and int(part.max()) >= self.id_stride:
            raise UserInputError(
                f"tile {self.tile_source} holds id {int(part.max())}, not below its id_stride "
                f"{self.id_stride}: copies would share ids; raise id_stride in {TILED_JSON}"
            )
        t = (tile[0] * self.reps[1] + tile[1]) * self.reps[2] + tile[2]
        block = part.astype(np.uint64)
        np.add(block, np.uint64(t * self.id_stride), out=block, where=part != 0)
        out[dst] = block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def read_tiled_json(folder: Path) -> dict[str, Any]:
    path = Path(folder) / TILED_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path} cannot be read as JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format", FORMAT) != FORMAT:
        raise UserInputError(f"{path} is not a tiled volume description (format {FORMAT!r}).")
    reps = meta.get("reps")
    if (
        not isinstance(reps, list)
        or len(reps) != 3
        or not all(isinstance(r, int) and r >= 1 for r in reps)
    ):
        raise UserInputError(f"{path}: 'reps' must be 3 positive integers [nz, ny, nx], not {reps}")
    stride = meta.get("id_stride", 0)
    if not isinstance(stride, int) or stride < 0:
        raise UserInputError(f"{path}: 'id_stride' must be an integer >= 0, not {stride!r}")
    if not isinstance(meta.get("tile"), str):
        raise UserInputError(f"{path}: 'tile' must name the tile volume (a SOURCE string)")
    size = meta.get("voxel_size_nm")
    if size is not None and (
        not isinstance(size, list) or len(size) != 3 or not all(float(v) > 0 for v in size)
    ):
        raise UserInputError(f"{path}: 'voxel_size_nm' must be 3 positive numbers, not {size}")
    return meta


def tile_source_of(folder: Path, meta: dict[str, Any]) -> str:
    """The tile's SOURCE text: absolute as given, else relative to the folder."""
    text = str(meta["tile"])
    if "://" in text or Path(text).is_absolute():
        return text
    return str(Path(folder).resolve() / text)


def open_tiled(folder: Path, *, level: int = 0) -> Volume:
    """Open a tiled folder (see the module docstring) at ``level`` and coarser."""
    from napari_connectome.volumes.lazy import to_dask
    from napari_connectome.volumes.opening import open_volume

    folder = Path(folder)
    meta = read_tiled_json(folder)
    tile_text = tile_source_of(folder, meta)
    if Path(tile_text).resolve() == folder.resolve():
        raise UserInputError(f"{folder / TILED_JSON}: a tiled volume cannot tile itself")
    tile = open_volume(tile_text)
    if tile.data.ndim != 3:
        raise UserInputError(f"tile {tile_text} is {tile.data.ndim}D; a tiled volume needs 3D")
    stride = int(meta.get("id_stride", 0))
    if stride and tile.dtype.kind not in "ub":
        raise UserInputError(f"tile {tile_text} has dtype {tile.dtype}: ids need unsigned ints")
    reps = tuple(int(r) for r in meta["reps"])
    chunks0 = tuple(int(c) for c in tile.storage_chunks)
    if any(s % c for s, c in zip(tile.shape, chunks0)):
        raise UserInputError(
            f"tile {tile_text} (shape {list(tile.shape)}) is not a whole number of its chunks "
            f"{list(chunks0)}: pad or crop it so that no chunk straddles two copies"
        )
    sizes = [tuple(float(v) for v in s) for s in tile.level_voxel_sizes]
    if meta.get("voxel_size_nm"):
        want = [float(v) for v in meta["voxel_size_nm"]]
        sizes = [tuple(w * s / b for w, s, b in zip(want, lv, sizes[0])) for lv in sizes]
    if not 0 <= level < len(tile.multiscale):
        raise UserInputError(
            f"{folder} has {len(tile.multiscale)} resolution levels; level {level} does not exist"
        )
    arrays = []
    for k, arr in enumerate(tile.multiscale):
        tshape = tuple(int(s) for s in arr.shape)
        chunks = chunks0 if k == 0 else tuple(int(c[0]) for c in arr.chunks)
        arrays.append(to_dask(TiledArray(tile_text, k, tshape, arr.dtype, reps, stride), chunks))
    storage = chunks0 if level == 0 else open_volume(tile_text, level=level).storage_chunks
    offsets = [tuple(0.0 for _ in range(3))] * len(arrays)
    if tile.level_offsets_nm:
        offsets = [tuple(float(v) for v in o) for o in tile.level_offsets_nm]
    return Volume(
        name=folder.name,
        data=arrays[level],
        multiscale=arrays[level:],
        voxel_size_nm=sizes[level],
        offset_nm=offsets[level],
        axes="zyx",
        is_labels=bool(stride) or tile.is_labels,
        source=str(folder),
        level_voxel_sizes=sizes[level:],
        format="tiled",
        storage_chunks=tuple(int(c) for c in storage),
        level_offsets_nm=offsets[level:],
    )


def tile_index(position: tuple[int, int, int], reps: tuple[int, int, int]) -> int:
    """Linear index of the copy at tile grid ``position`` (its ids are offset by this x stride)."""
    return (position[0] * reps[1] + position[1]) * reps[2] + position[2]


def n_tiles(reps: tuple[int, int, int]) -> int:
    return math.prod(reps)
