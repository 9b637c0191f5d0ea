"""Zarr v2/v3 arrays and groups, including OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3) multiscales."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.lazy import GuardedZarrArray, to_dask
from napari_connectome.volumes.units import offset_from_attrs, unit_to_nm, voxel_size_from_attrs
from napari_connectome.volumes.volume import Volume, dtype_looks_like_labels

DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}


def default_axes(ndim: int) -> str:
    return DEFAULT_AXES.get(ndim, "".join(f"d{i}" for i in range(ndim)))


def ome_attrs(node: Any) -> dict[str, Any]:
    """OME metadata of a zarr node: under ``ome`` for 0.5 (zarr v3), at top level for 0.4."""
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, Mapping) else attrs


def is_multiscale_group(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Group) and bool(ome_attrs(node).get("multiscales"))


def _scale_translation(transforms: list[Mapping], ndim: int) -> tuple[list[float], list[float]]:
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = [s * a for s, a in zip(scale, t["scale"])]
        elif t.get("type") == "translation" and "translation" in t:
            translation = [o + a for o, a in zip(translation, t["translation"])]
    return scale, translation


def _axes_from_meta(axes_meta: list, ndim: int) -> tuple[str, list[float]]:
    """Axis letters and per-axis unit factors (to nm) from OME ``axes``."""
    if not axes_meta:
        return default_axes(ndim), [1.0] * ndim
    names, factors = [], []
    for ax in axes_meta:
        if isinstance(ax, Mapping):
            names.append(str(ax.get("name", "?"))[:1].lower())
            factors.append(
                unit_to_nm(ax.get("unit")) if ax.get("type", "space") == "space" else 1.0
            )
        else:
            names.append(str(ax)[:1].lower())
            factors.append(1.0)
    return "".join(names), factors


def open_multiscale(group: Any, source: str, name: str, *, level: int, fmt: str) -> Volume:
    """One OME-Zarr multiscale image (or label image) group, at ``level`` and coarser."""
    meta = ome_attrs(group)
    ms = meta["multiscales"][0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise UserInputError(f"{source} has OME multiscales metadata but no datasets in it.")
    if not 0 <= level < len(datasets):
        raise UserInputError(
            f"{source} has {len(datasets)} resolution levels (0..{len(datasets) - 1}); "
            f"level {level} does not exist."
        )
    arrays, sizes, offsets, chunk_shapes = [], [], [], []
    first = group[datasets[0]["path"]]
    axes, factors = _axes_from_meta(ms.get("axes") or [], first.ndim)
    g_scale, g_trans = _scale_translation(ms.get("coordinateTransformations") or [], first.ndim)
    for ds in datasets:
        try:
            arr = group[ds["path"]]
        except KeyError as exc:
            raise UserInputError(
                f"{source} lists dataset '{ds['path']}' in its multiscales metadata, but it is "
                "missing; the OME-Zarr is incomplete: re-create or re-download it."
            ) from exc
        scale, trans = _scale_translation(ds.get("coordinateTransformations") or [], arr.ndim)
        sizes.append(tuple(float(s * g * f) for s, g, f in zip(scale, g_scale, factors)))
        offsets.append(
            tuple(float((t * g + gt) * f) for t, g, gt, f in zip(trans, g_scale, g_trans, factors))
        )
        chunk_shapes.append(tuple(arr.chunks))
        arrays.append(to_dask(GuardedZarrArray(arr, f"{source}/{ds['path']}")))
    is_labels = "image-label" in meta or bool(isinstance(group.attrs.get("image-label"), Mapping))
    return Volume(
        name=name,
        data=arrays[level],
        multiscale=arrays[level:],
        voxel_size_nm=sizes[level],
        offset_nm=offsets[level],
        axes=axes,
        is_labels=is_labels,
        source=source,
        level_voxel_sizes=sizes[level:],
        format=fmt,
        storage_chunks=chunk_shapes[level],
        level_offsets_nm=offsets[level:],
    )


def _parent_multiscale(array: Any, root: Any) -> tuple[Any, int] | None:
    """If ``array`` is a level of an OME multiscale group, that group and the level index."""
    path = array.path
    if "/" not in path and root is not None and is_multiscale_group(root):
        parent, leaf = root, path
    elif "/" in path and root is not None:
        parent_path, leaf = path.rsplit("/", 1)
        try:
            parent = root[parent_path]
        except KeyError:
            return None
    else:
        return None
    if not is_multiscale_group(parent):
        return None
    for i, ds in enumerate(ome_attrs(parent)["multiscales"][0].get("datasets", [])):
        if ds.get("path") == leaf:
            return parent, i
    return None


def open_plain_array(array: Any, source: str, name: str, fmt: str) -> Volume:
    """A zarr array without OME metadata: voxel size from its attributes, else 1 nm."""
    attrs = dict(array.attrs)
    ndim = array.ndim
    axes = attrs.get("axes")
    names = getattr(array.metadata, "dimension_names", None)
    if isinstance(axes, str) and len(axes) == ndim:
        axes = axes.lower()
    elif names and all(names) and len(names) == ndim:
        axes = "".join(str(n)[:1].lower() for n in names)
    else:
        axes = default_axes(ndim)
    size = voxel_size_from_attrs(attrs, ndim) or (1.0,) * ndim
    offset = offset_from_attrs(attrs, ndim) or (0.0,) * ndim
    data = to_dask(GuardedZarrArray(array, source))
    return Volume(
        name=name,
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=offset,
        axes=axes,
        is_labels=bool(attrs.get("is_labels", dtype_looks_like_labels(array.dtype))),
        source=source,
        level_voxel_sizes=[size],
        format=fmt,
        storage_chunks=tuple(array.chunks),
    )


def zarr_format_name(node: Any, ome: bool) -> str:
    version = node.metadata.zarr_format
    if ome:
        return "ome-zarr-0.5" if version == 3 else "ome-zarr-0.4"
    return f"zarr-v{version}"


def open_zarr_node(root_path: Path, inner: str, source: str, *, level: int) -> Volume:
    """Open ``inner`` inside the zarr store at ``root_path``: array, OME multiscale group or a group
    holding exactly one array."""
    import zarr

    root = zarr.open(str(root_path), mode="r")
    node = root
    if inner:
        try:
            node = root[inner.strip("/")]
        except KeyError as exc:
            raise UserInputError(
                f"'{inner}' does not exist in {root_path}; it holds: "
                f"{', '.join(list_zarr_arrays(root)) or 'no arrays'}."
            ) from exc
    name = (inner.strip("/").split("/")[-1] if inner else root_path.name.split(".")[0]) or "volume"
    if is_multiscale_group(node):
        if not inner:  # a store root: its multiscales name says more than the file name
            meta_name = ome_attrs(node)["multiscales"][0].get("name")
            if isinstance(meta_name, str) and meta_name.strip("/") and meta_name != "image":
                name = meta_name.strip("/")
        return open_multiscale(node, source, name, level=level, fmt=zarr_format_name(node, True))
    if isinstance(node, zarr.Array):
        parent = _parent_multiscale(node, root)
        if parent is not None:
            group, idx = parent
            vol = open_multiscale(group, source, name, level=idx, fmt=zarr_format_name(node, True))
            return vol
        if level:
            raise UserInputError(f"{source} is a single-scale array; only level 0 exists.")
        return open_plain_array(node, source, name, zarr_format_name(node, False))
    arrays = list_zarr_arrays(node)
    if len(arrays) == 1:
        return open_zarr_node(
            root_path,
            f"{inner.strip('/')}/{arrays[0]}".strip("/"),
            f"{root_path}/{inner.strip('/')}/{arrays[0]}".replace("//", "/"),
            level=level,
        )
    raise UserInputError(
        f"{source} is a zarr group with {len(arrays)} arrays; name one as {source}/ARRAY. "
        f"Arrays: {', '.join(arrays) or 'none'}."
    )


def list_zarr_arrays(group: Any, prefix: str = "") -> list[str]:
    """Paths of every array below ``group`` (recursively), multiscale groups listed as one entry."""
    import zarr

    if isinstance(group, zarr.Array):
        return [prefix] if prefix else []
    out = []
    for key, child in sorted(group.members(), key=lambda kv: kv[0]):
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(child, zarr.Array) or is_multiscale_group(child):
            out.append(path)
        else:
            out.extend(list_zarr_arrays(child, path))
    return out


def discover_zarr(root_path: Path, inner: str, source_prefix: str) -> list[Volume]:
    """Every layer under a zarr path: OME image + its ``labels/``, or every array of >= 3 dims."""
    import zarr

    root = zarr.open(str(root_path), mode="r")
    node = root[inner.strip("/")] if inner else root
    if isinstance(node, zarr.Array):
        return [open_zarr_node(root_path, inner, source_prefix, level=0)]
    vols: list[Volume] = []
    if is_multiscale_group(node):
        vols.append(open_zarr_node(root_path, inner, source_prefix, level=0))
        labels = node.get("labels") if hasattr(node, "get") else None
        if labels is not None and not isinstance(labels, zarr.Array):
            for lname in ome_attrs(labels).get("labels", []) or []:
                if lname in labels and is_multiscale_group(labels[lname]):
                    inner_l = f"{inner.strip('/')}/labels/{lname}".strip("/")
                    vol = open_zarr_node(
                        root_path, inner_l, f"{source_prefix}/labels/{lname}", level=0
                    )
                    vol.is_labels = True
                    vols.append(vol)
        return vols
    for path in list_zarr_arrays(node):
        child = node[path]
        ndim = child.ndim if isinstance(child, zarr.Array) else 3
        if ndim < 3:
            continue
        inner_c = f"{inner.strip('/')}/{path}".strip("/")
        vols.append(open_zarr_node(root_path, inner_c, f"{source_prefix}/{path}", level=0))
    return vols
