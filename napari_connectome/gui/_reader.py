"""napari reader: every volume a path holds (OME-Zarr with labels, zarr, N5, HDF5, TIFF) as layers,
also a zarr store on a cluster (``ssh://PROFILE/abs/path``, read over SFTP on demand).

The formats themselves live in :mod:`napari_connectome.volumes`; this module only turns each
:class:`~napari_connectome.volumes.Volume` into napari ``LayerData`` with its physical scale, so the
GUI and the core never disagree about how a file is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.gui._layers import spatial_axis_labels

LayerData = tuple[Any, dict[str, Any], str]
LABELS_OPACITY = 0.35  # the EM underneath stays readable
# label volumes an over-segmentation is usually stored as: opened hidden, one toggle away
FRAGMENT_NAMES = ("fragment", "supervoxel", "oversegmentation", "watershed")
ReaderFunction = Callable[[str | list[str]], list[LayerData]]

# Formats napari itself cannot open: for these a failure is reported instead of passed on.
_OWN_SUFFIXES = (".zarr", ".n5", ".h5", ".hdf5", ".hdf")
_SHARED_SUFFIXES = (".tif", ".tiff")


def volume_layer_data(volume: Any, *, name: str | None = None) -> LayerData:
    """The napari layer for one volume: image or labels, scale in nm, translate, multiscale."""
    axes = volume.axes
    sizes = tuple(float(v) for v in volume.voxel_size_nm)
    offsets = tuple(float(v) for v in volume.offset_nm)
    if len(sizes) != len(axes):  # sizes given for the spatial axes only
        spatial = iter(sizes)
        sizes = tuple(next(spatial) if a in "zyx" else 1.0 for a in axes)
    if len(offsets) != len(axes):
        spatial = iter(offsets)
        offsets = tuple(next(spatial) if a in "zyx" else 0.0 for a in axes)
    multiscale = len(volume.multiscale) > 1
    data = list(volume.multiscale) if multiscale else volume.data
    meta: dict[str, Any] = {
        "name": name or volume.name,
        "multiscale": multiscale,
        "metadata": {
            "source": volume.source,
            "voxel_size_nm": sizes,
            "axes": axes,
            "format": getattr(volume, "format", ""),
        },
    }
    if volume.is_labels:
        layer_type = "labels"
        meta["opacity"] = LABELS_OPACITY
    else:
        layer_type = "image"
        if np.dtype(volume.dtype) == np.uint8:
            meta["contrast_limits"] = (0, 255)  # skip a pass over a huge lazy array
        if "c" in axes:
            keep = [i for i, a in enumerate(axes) if a != "c"]
            meta["channel_axis"] = axes.index("c")
            sizes = tuple(sizes[i] for i in keep)
            offsets = tuple(offsets[i] for i in keep)
    meta["scale"] = sizes
    meta["translate"] = offsets
    meta["units"] = "nm"
    names = spatial_axis_labels(axes, len(sizes))
    # napari splits channels and would read a tuple of names as one name per channel
    meta["axis_labels"] = [names] * volume.shape[axes.index("c")] if "c" in axes else names
    return data, meta, layer_type


def read_volumes(path: str | Path) -> list[LayerData]:
    """Open every volume at ``path`` as layers, image layers first so labels draw on top."""
    from napari_connectome.volumes import discover_volumes

    store = None
    if _is_ssh(str(path)):
        from napari_connectome.gui.remote_volumes import open_viewer_store

        store = open_viewer_store(str(path))
    volumes = discover_volumes(path, store=store)
    layers = [volume_layer_data(v) for v in volumes]
    _show_one_labels(layers)
    return sorted(layers, key=lambda layer: layer[2] == "labels")


def _show_one_labels(layers: list[LayerData]) -> None:
    """Of several label volumes only one shows over the EM (the first that is not an
    over-segmentation by its name); the others open hidden, one click away."""
    labels = [meta for _, meta, kind in layers if kind == "labels"]
    if len(labels) < 2:
        return

    def fragment_like(meta: dict[str, Any]) -> bool:
        return any(word in str(meta["name"]).lower() for word in FRAGMENT_NAMES)

    keep = next((m for m in labels if not fragment_like(m)), labels[0])
    for meta in labels:
        if meta is not keep:
            meta["visible"] = False


def _is_ssh(path: str) -> bool:
    return path[:6].lower() == "ssh://"


def _failing_reader(error: UserInputError) -> ReaderFunction:
    def reader(path: str | list[str]) -> list[LayerData]:
        raise error

    return reader


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """npe2 reader hook: a reader for paths our volume layer understands, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        return None
    found: list[LayerData] = []
    for p in paths:
        p = str(p).rstrip("/\\")
        if _is_ssh(p):  # only we read these: a failure is reported, not passed on
            try:
                found.extend(read_volumes(p))
            except UserInputError as exc:
                return _failing_reader(exc)
            continue
        suffix = Path(p.split(":")[0] if ":" in Path(p).name else p).suffix.lower()
        is_dir = Path(p).is_dir()
        if not is_dir and suffix not in _OWN_SUFFIXES + _SHARED_SUFFIXES:
            return None
        try:
            found.extend(read_volumes(p))
        except UserInputError as exc:
            if suffix in _OWN_SUFFIXES:
                return _failing_reader(exc)
            return None  # a TIFF or folder we cannot read: let other readers try

    def reader(_: str | list[str]) -> list[LayerData]:
        return found

    return reader
