"""Reading the job's input: its geometry up front, one block's region inside a worker.

Goes through :func:`napari_connectome.volumes.open_volume`, so every format the viewer opens can be
segmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.box import Box

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class InputInfo:
    shape: Triple
    dtype: str
    voxel_size_nm: tuple[float, float, float]
    offset_nm: tuple[float, float, float]


_OPEN: dict[str, tuple] = {}


def _open_array(source: str):
    """(lazy array, voxel size, offset) of ``source``, opened once per process.

    Opening once matters twice: every block of a worker reuses the handle (no per-block open cost),
    and an HDF5 file opened and closed again in the same process invalidates handles that earlier
    openings still hold (h5py closes every object of the shared file).
    """
    if source not in _OPEN:
        _OPEN[source] = _open_uncached(source)
    return _OPEN[source]


def _open_uncached(source: str):
    from napari_connectome.volumes import open_volume

    vol = open_volume(source)
    return vol.data, tuple(vol.voxel_size_nm), tuple(vol.offset_nm)


def input_info(source: str) -> InputInfo:
    arr, vs, off = _open_array(source)
    if len(arr.shape) != 3:
        raise UserInputError(
            f"input {source!r} has {len(arr.shape)} dimensions {tuple(arr.shape)}: jobs need a "
            "3D (z, y, x) volume"
        )
    return InputInfo(tuple(int(s) for s in arr.shape), str(arr.dtype), vs, off)


def read_region(source: str, box: Box) -> np.ndarray:
    arr, _, _ = _open_array(source)
    region = arr[box.slices]
    if hasattr(region, "compute"):
        region = region.compute(scheduler="synchronous")
    return np.asarray(region)
