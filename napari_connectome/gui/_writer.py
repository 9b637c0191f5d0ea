"""napari writers: image and labels layers to OME-Zarr 0.5 with their voxel size and offset.

The writing is :func:`napari_connectome.volumes.write_ome_zarr` (blockwise, pyramid, temp name then
rename); here we only map a layer's scale/translate back to nanometres and refuse existing paths so
a save can never overwrite a user's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError


def _write(path: str, data: Any, meta: dict[str, Any], *, labels: bool) -> list[str]:
    from napari_connectome.volumes import write_ome_zarr

    dest = Path(path)
    if dest.suffix.lower() != ".zarr":
        dest = dest.with_name(dest.name + ".ome.zarr")
    if dest.exists():
        raise UserInputError(f"{dest} already exists; choose a new name (nothing was overwritten)")
    level0 = data[0] if isinstance(data, list | tuple) else data
    if np.asarray(level0.shape).size < 2:
        raise UserInputError("only 2D or 3D layers can be written to OME-Zarr")
    if labels and np.dtype(level0.dtype).kind not in "ub":
        raise UserInputError(
            f"labels layer has dtype {level0.dtype}; label ids must be unsigned integers"
        )
    ndim = len(level0.shape)
    scale = tuple(float(s) for s in meta.get("scale", (1.0,) * ndim))
    translate = tuple(float(t) for t in meta.get("translate", (0.0,) * ndim))
    out = write_ome_zarr(
        level0,
        dest,
        voxel_size_nm=scale,
        offset_nm=translate,
        labels=labels,
        name=meta.get("name") or dest.name.split(".")[0],
    )
    return [str(out)]


def _notify_and_raise(exc: UserInputError) -> None:
    """napari turns a writer's ValueError into "not a valid writer"; show the real reason too."""
    from napari.utils.notifications import show_error

    show_error(f"Save failed: {exc}")
    raise exc


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer for one labels layer (uint ids) to ``.ome.zarr``."""
    try:
        if np.dtype((data[0] if isinstance(data, list | tuple) else data).dtype).kind == "i":
            data = _as_unsigned(data)
        return _write(path, data, meta, labels=True)
    except UserInputError as exc:
        _notify_and_raise(exc)
        raise


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer for one image layer to ``.ome.zarr``."""
    try:
        return _write(path, data, meta, labels=False)
    except UserInputError as exc:
        _notify_and_raise(exc)
        raise


def _as_unsigned(data: Any) -> Any:
    """napari makes new labels layers int32; ids are never negative, so store them unsigned."""
    level0 = data[0] if isinstance(data, list | tuple) else data
    if np.min(level0) < 0:
        raise UserInputError("labels layer has negative ids; label ids must be >= 0")
    return level0.astype(np.dtype(f"u{np.dtype(level0.dtype).itemsize}"))
