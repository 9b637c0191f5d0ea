"""N5 and neuroglancer precomputed through tensorstore (zarr 3 dropped N5 support).

Both formats list axes fastest-first (x, y, z); we present them as (z, y, x) like other readers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.volumes.lazy import TensorStoreArray, to_dask
from napari_connectome.volumes.precomputed_chunks import ChunkFilesArray, check_scale
from napari_connectome.volumes.read_zarr import default_axes
from napari_connectome.volumes.units import unit_to_nm, warn_no_voxel_size
from napari_connectome.volumes.volume import Volume, dtype_looks_like_labels


def _open(spec: dict, source: str) -> Any:
    import tensorstore as ts

    try:
        return ts.open(spec, read=True).result()
    except ValueError as exc:
        raise UserInputError(f"{source} cannot be opened ({exc}).") from exc


def _reversed_store(store: Any) -> Any:
    """The same data with axis order reversed (x, y, z -> z, y, x) and the origin moved to 0."""
    import tensorstore as ts

    return store[ts.d[:].translate_to[0]][ts.d[::-1].transpose[:]]


def _n5_attrs(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "attributes.json").read_text())
    except (OSError, ValueError):
        return {}


def _n5_size_offset(attrs: dict, ndim: int) -> tuple[tuple[float, ...] | None, tuple[float, ...]]:
    """Voxel size and offset (nm) from N5 attributes, given in x-first order, returned z-first."""
    factor = unit_to_nm(attrs.get("unit") or (attrs.get("units") or [None])[0])
    size = None
    for key in ("resolution", "pixelResolution", "voxel_size", "scales"):
        raw = attrs.get(key)
        if isinstance(raw, dict):  # pixelResolution: {"dimensions": [...], "unit": "nm"}
            factor = unit_to_nm(raw.get("unit"))
            raw = raw.get("dimensions")
        if isinstance(raw, list) and raw and isinstance(raw[0], list):  # "scales": per level
            raw = raw[0]
        if isinstance(raw, list) and len(raw) == ndim:
            size = tuple(float(v) * factor for v in reversed(raw))
            break
    offset = attrs.get("offset")
    off = (
        tuple(float(v) * factor for v in reversed(offset))
        if isinstance(offset, list) and len(offset) == ndim
        else (0.0,) * ndim
    )
    return size, off


def open_n5(root: Path, inner: str, source: str) -> Volume:
    """One N5 dataset (``root.n5/group/dataset``)."""
    path = root / inner if inner else root
    attrs = _n5_attrs(path)
    if "dimensions" not in attrs:
        datasets = list_n5_datasets(path)
        if len(datasets) == 1:
            return open_n5(root, f"{inner}/{datasets[0]}".strip("/"), f"{source}/{datasets[0]}")
        raise UserInputError(
            f"{source} is an N5 group, not a dataset; name one as {source}/DATASET "
            f"(datasets: {', '.join(datasets) or 'none'})."
        )
    store = _reversed_store(
        _open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}, source)
    )
    ndim = store.rank
    size, offset = _n5_size_offset(attrs, ndim)
    if size is None:
        warn_no_voxel_size(
            source,
            "no attribute resolution, pixelResolution or voxel_size in attributes.json",
            fix='add "resolution": [x, y, z] (in nm) to its attributes.json',
        )
        size = (1.0,) * ndim
    array = TensorStoreArray(store)
    data = to_dask(array)
    axes_attr = attrs.get("axes")
    axes = (
        "".join(str(a)[:1].lower() for a in reversed(axes_attr))
        if isinstance(axes_attr, list) and len(axes_attr) == ndim
        else default_axes(ndim)
    )
    return Volume(
        name=path.name,
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=offset,
        axes=axes,
        is_labels=dtype_looks_like_labels(array.dtype, source),
        source=source,
        level_voxel_sizes=[size],
        format="n5",
        storage_chunks=array.chunks,
    )


def list_n5_datasets(path: Path, prefix: str = "") -> list[str]:
    out = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        attrs = _n5_attrs(child)
        name = f"{prefix}/{child.name}" if prefix else child.name
        if "dimensions" in attrs:
            out.append(name)
        elif not child.name.isdigit():  # a group (chunk folders have numeric names)
            out.extend(list_n5_datasets(child, name))
    return out


def discover_n5(root: Path) -> list[Volume]:
    if "dimensions" in _n5_attrs(root):
        return [open_n5(root, "", str(root))]
    vols = [open_n5(root, name, f"{root}/{name}") for name in list_n5_datasets(root)]
    return [v for v in vols if v.data.ndim >= 3]


def open_precomputed(path: Path, *, level: int = 0) -> Volume:
    """A neuroglancer precomputed volume: each scale is a level; a single channel is dropped."""
    source = str(path)
    try:
        info = json.loads((path / "info").read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}/info is not readable JSON ({exc}).") from exc
    scales = info.get("scales") or []
    if not 0 <= level < len(scales):
        raise UserInputError(
            f"{source} has {len(scales)} scales (levels 0..{len(scales) - 1}); "
            f"level {level} does not exist."
        )
    arrays, sizes, offsets, chunk_shapes, empty = [], [], [], [], []
    single_channel = int(info.get("num_channels", 1)) == 1
    for i, scale in enumerate(scales):
        store = _reversed_store(
            _open(
                {
                    "driver": "neuroglancer_precomputed",
                    "kvstore": {"driver": "file", "path": str(path) + "/"},
                    "scale_index": i,
                },
                source,
            )
        )
        if single_channel:
            store = store[0]
        # what is on disk decides who reads it: never zeros for chunk files tensorstore misses
        files = check_scale(path, scale, i)
        if files.layout == "empty":
            empty.append(str(scale.get("key", i)))
        level_array = (
            ChunkFilesArray(path, info, i) if files.layout == "files" else TensorStoreArray(store)
        )
        res = [float(v) for v in reversed(scale["resolution"])]
        vo = [float(v) for v in reversed(scale.get("voxel_offset", [0, 0, 0]))]
        lead = () if single_channel else (1.0,)
        sizes.append((*lead, *res))
        offsets.append(
            ((0.0,) if not single_channel else ()) + tuple(o * r for o, r in zip(vo, res))
        )
        chunk_shapes.append(level_array.chunks)
        arrays.append(to_dask(level_array))
    if empty:
        warnings.warn(
            f"{source}: scale{'s' if len(empty) > 1 else ''} {', '.join(empty)} hold no chunk "
            "files, so every voxel there reads as 0 (a scale not yet written or downsampled?).",
            DataWarning,
            stacklevel=2,
        )
    axes = "zyx" if single_channel else "czyx"
    return Volume(
        name=path.name,
        data=arrays[level],
        multiscale=arrays[level:],
        voxel_size_nm=sizes[level],
        offset_nm=offsets[level],
        axes=axes,
        is_labels=info.get("type") == "segmentation",
        source=source,
        level_voxel_sizes=sizes[level:],
        format="precomputed",
        storage_chunks=chunk_shapes[level],
        level_offsets_nm=offsets[level:],
    )
