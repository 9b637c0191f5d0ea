"""Zarr v2/v3 arrays and groups, including OME-Zarr 0.4 (zarr v2) and 0.5 (zarr v3) multiscales."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.lazy import DASK_CHUNK_BYTES, GuardedZarrArray, to_dask
from napari_connectome.volumes.units import (
    VOXEL_SIZE_KEYS_TEXT,
    offset_from_attrs,
    unit_to_nm,
    voxel_size_from_attrs,
    warn_no_voxel_size,
)
from napari_connectome.volumes.volume import Volume, dtype_looks_like_labels

DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}
METADATA_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
# What zarr raises on metadata it cannot parse (a missing key, a list where an object belongs,
# an unknown node type or codec): only zarr's parsing runs inside these guards.
_METADATA_ERRORS = (ValueError, KeyError, TypeError, AttributeError, NotImplementedError)
_DAMAGED = "the zarr store is damaged: re-create it, or copy or download it again."


def check_metadata_files(folder: Path) -> None:
    """Each zarr metadata file in ``folder`` must hold a JSON object; say which one does not."""
    for name in METADATA_FILES:
        path = folder / name
        if not path.is_file():
            continue
        text = path.read_bytes()
        if not text.strip():
            raise UserInputError(f"{path} is empty; {_DAMAGED}")
        try:
            meta = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise UserInputError(f"{path} is not valid JSON ({exc}); {_DAMAGED}") from None
        if not isinstance(meta, dict):
            kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(meta), "a number"
            )
            raise UserInputError(f"{path} holds {kind}, not a JSON object; {_DAMAGED}")


def open_store(root_path: Path, store: Any = None) -> Any:
    """The zarr node at ``root_path``, read-only; broken metadata is named, not a traceback.
    ``store``: read through that zarr store instead (a remote one; ``root_path`` then only names
    it)."""
    import zarr

    if store is not None:
        try:
            return zarr.open(store, mode="r")
        except FileNotFoundError:
            raise UserInputError(
                f"{store}: no zarr metadata (zarr.json, .zgroup or .zarray) there; check the path"
            ) from None
        except _METADATA_ERRORS as exc:
            raise UserInputError(
                f"{store}: zarr cannot read its metadata ({type(exc).__name__}: {exc}); {_DAMAGED}"
            ) from None
    check_metadata_files(root_path)
    try:
        return zarr.open(str(root_path), mode="r")
    except _METADATA_ERRORS as exc:
        raise UserInputError(
            f"{root_path}: zarr cannot read its metadata ({type(exc).__name__}: {exc}); {_DAMAGED}"
        ) from None


def _local_folder(group: Any, key: str) -> Path | None:
    """The folder of ``group[key]`` when the store is on the local disk."""
    root = getattr(group.store, "root", None)
    if root is None:
        return None
    return Path(root, group.path, key) if group.path else Path(root, key)


def member(group: Any, key: str, source: str) -> Any | None:
    """``group[key]``, or None when there is no such member; a member whose metadata is broken
    raises a :class:`UserInputError` naming it."""
    key = key.strip("/")
    folder = _local_folder(group, key)
    if folder is not None:
        for depth in range(1, len(key.split("/")) + 1):  # every level of a nested key
            check_metadata_files(_local_folder(group, "/".join(key.split("/")[:depth])))
    try:
        return group[key]
    except KeyError as exc:
        if exc.args == (key,) or exc.args == (key.split("/")[-1],):
            return None  # zarr's "no such member"
        raise UserInputError(
            f"'{key}' in {source}: zarr cannot read its metadata (KeyError: {exc}); {_DAMAGED}"
        ) from None
    except _METADATA_ERRORS as exc:
        raise UserInputError(
            f"'{key}' in {source}: zarr cannot read its metadata ({type(exc).__name__}: {exc}); "
            f"{_DAMAGED}"
        ) from None


_DIGITS = re.compile(r"^\d+$")
_DOTTED = re.compile(r"^\d+(\.\d+)+$")
_C_DOTTED = re.compile(r"^c(\.\d+)+$")


def check_chunk_layout(array: Any, source: str) -> None:
    """Refuse a local array whose chunk files are stored under another key layout than its
    metadata names (chunks ``0/0/0`` beside a ``.zarray`` without ``"dimension_separator": "/"``,
    as zarr-python 2's NestedDirectoryStore wrote them): zarr would read every chunk as missing,
    i.e. the fill value everywhere. Looks at the first entries of the array's folder only."""
    import os

    from zarr.storage import LocalStore

    if not isinstance(array.store, LocalStore) or array.ndim == 0:
        return
    folder = Path(array.store.root, array.path) if array.path else Path(array.store.root)
    try:
        with os.scandir(folder) as it:
            entries = [e for _, e in zip(range(512), it) if not e.name.startswith(".")]
    except OSError:
        return
    ndim = array.ndim
    seen: dict[str, str] = {}  # layout -> an entry showing it
    for e in entries:
        if e.name == "zarr.json":
            continue
        if e.is_dir():
            if e.name == "c":
                seen.setdefault("c/", f"{e.name}/")
            elif _DIGITS.match(e.name) and ndim > 1:
                seen.setdefault("/", f"{e.name}/")
        elif _DOTTED.match(e.name) and e.name.count(".") == ndim - 1:
            seen.setdefault(".", e.name)
        elif _C_DOTTED.match(e.name) and e.name.count(".") == ndim:
            seen.setdefault("c.", e.name)
        elif _DIGITS.match(e.name) and ndim == 1:
            seen.setdefault(".", e.name)
            seen.setdefault("/", e.name)
    if not seen:
        return
    meta = array.metadata
    if meta.zarr_format == 2:
        declared = "/" if getattr(meta, "dimension_separator", ".") == "/" else "."
    else:
        enc = meta.chunk_key_encoding
        sep = getattr(enc, "separator", "/")
        declared = ("c" + sep) if getattr(enc, "name", "default") == "default" else sep
    if declared in seen:
        return
    found, example = next(iter(seen.items()))
    if meta.zarr_format == 2:
        fix = f'set "dimension_separator": "{found}" in {folder / ".zarray"}'
    else:
        fix = f"give {folder / 'zarr.json'} the chunk_key_encoding its chunks were written with"
    raise UserInputError(
        f"{source}: its chunks are stored as {folder}/{example}..., but its metadata names chunk "
        f"keys like '{_key_example(declared, ndim)}', so every chunk would read as missing (the "
        f"fill value everywhere); {fix}."
    )


def _key_example(layout: str, ndim: int) -> str:
    sep = layout[-1]
    return ("c" + sep if layout.startswith("c") else "") + sep.join("0" * ndim)


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


def zyx_order(axes: str) -> list[int] | None:
    """The axis order that puts the array's other axes first, then z, y, x (as our layers and
    writers expect), or None when the axes already are in that order or lack one of z, y, x.
    WebKnossos writes c, x, y, z, for instance."""
    if sorted(a for a in axes if a in "zyx") != ["x", "y", "z"] or len(set(axes)) != len(axes):
        return None
    order = [i for i, a in enumerate(axes) if a not in "zyx"] + [axes.index(a) for a in "zyx"]
    return None if order == list(range(len(axes))) else order


def _permute(values: tuple, order: list[int] | None) -> tuple:
    return tuple(values) if order is None else tuple(values[i] for i in order)


def dask_chunk_bytes(array: Any) -> int:
    """Bytes per dask chunk for a zarr array: what its store asks for (a remote store: one stored
    chunk each, so a view reads only the chunks it crosses even where dask's slice fusion is off,
    as napari turns it off), else the default."""
    return int(getattr(array.store, "dask_chunk_bytes", DASK_CHUNK_BYTES))


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
    levels = [_dataset_array(group, ds, source) for ds in datasets]
    first = levels[0]
    axes, factors = _axes_from_meta(ms.get("axes") or [], first.ndim)
    g_scale, g_trans = _scale_translation(ms.get("coordinateTransformations") or [], first.ndim)
    order = zyx_order(axes)
    if not any(
        t.get("type") == "scale"
        for transforms in [ms.get("coordinateTransformations") or []]
        + [ds.get("coordinateTransformations") or [] for ds in datasets]
        for t in transforms
        if isinstance(t, Mapping)
    ):
        warn_no_voxel_size(
            source,
            "its OME multiscales metadata has no scale transforms",
            fix="give each dataset a 'scale' coordinate transformation",
        )
    for ds, arr in zip(datasets, levels):
        scale, trans = _scale_translation(ds.get("coordinateTransformations") or [], arr.ndim)
        sizes.append(
            _permute(tuple(float(s * g * f) for s, g, f in zip(scale, g_scale, factors)), order)
        )
        offsets.append(
            _permute(
                tuple(
                    float((t * g + gt) * f) for t, g, gt, f in zip(trans, g_scale, g_trans, factors)
                ),
                order,
            )
        )
        chunk_shapes.append(_permute(tuple(arr.chunks), order))
        check_chunk_layout(arr, f"{source}/{ds['path']}")
        guarded = GuardedZarrArray(arr, f"{source}/{ds['path']}")
        lazy = to_dask(guarded, target=dask_chunk_bytes(arr))
        arrays.append(lazy if order is None else lazy.transpose(order))
    if order is not None:
        axes = "".join(axes[i] for i in order)
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


def _dataset_array(group: Any, ds: Any, source: str) -> Any:
    """The array a ``multiscales`` dataset entry names, or a message saying what is missing."""
    import zarr

    path = ds.get("path") if isinstance(ds, Mapping) else None
    if not isinstance(path, str) or not path.strip("/"):
        raise UserInputError(
            f"{source} has a multiscales dataset entry without a 'path' ({ds!r}); the OME "
            "metadata is damaged: re-create or re-download it."
        )
    arr = member(group, path, source)
    if arr is None:
        raise UserInputError(
            f"{source} lists dataset '{path}' in its multiscales metadata, but it is "
            "missing; the OME-Zarr is incomplete: re-create or re-download it."
        )
    if not isinstance(arr, zarr.Array):
        raise UserInputError(
            f"{source}: multiscales dataset '{path}' is a group, not an array; the OME "
            "metadata is damaged: re-create or re-download it."
        )
    return arr


def _parent_multiscale(array: Any, root: Any) -> tuple[Any, int] | None:
    """If ``array`` is a level of an OME multiscale group, that group and the level index."""
    path = array.path
    if "/" not in path and root is not None and is_multiscale_group(root):
        parent, leaf = root, path
    elif "/" in path and root is not None:
        parent_path, leaf = path.rsplit("/", 1)
        parent = member(root, parent_path, str(root_path_of(root)))
        if parent is None:
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
    check_chunk_layout(array, source)
    size = voxel_size_from_attrs(attrs, ndim)
    if size is None:
        warn_no_voxel_size(source, f"no attribute {VOXEL_SIZE_KEYS_TEXT}")
        size = (1.0,) * ndim
    offset = offset_from_attrs(attrs, ndim) or (0.0,) * ndim
    data = to_dask(GuardedZarrArray(array, source), target=dask_chunk_bytes(array))
    chunks = tuple(array.chunks)
    order = zyx_order(axes)
    if order is not None:  # e.g. dimension_names x, y, z: presented as z, y, x
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
        size, offset, chunks = (
            _permute(size, order),
            _permute(offset, order),
            _permute(chunks, order),
        )
    return Volume(
        name=name,
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=offset,
        axes=axes,
        is_labels=bool(attrs.get("is_labels", dtype_looks_like_labels(array.dtype, source))),
        source=source,
        level_voxel_sizes=[size],
        format=fmt,
        storage_chunks=chunks,
    )


def zarr_format_name(node: Any, ome: bool) -> str:
    version = node.metadata.zarr_format
    if ome:
        return "ome-zarr-0.5" if version == 3 else "ome-zarr-0.4"
    return f"zarr-v{version}"


def open_zarr_node(
    root_path: Path, inner: str, source: str, *, level: int, store: Any = None
) -> Volume:
    """Open ``inner`` inside the zarr store at ``root_path`` (or read through ``store``): array,
    OME multiscale group or a group holding exactly one array."""
    import zarr

    root = open_store(root_path, store)
    node = _inner_node(root, root_path, inner)
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
    if not arrays and store is None and folder_arrays(root_path / inner):
        # zarr arrays below a group they are no members of (zarr v2 below a zarr v3 group:
        # the stray zarr.json napari-ome-zarr writes above a label image it opens)
        return open_zarr_folder(root_path / inner, source, level=level)
    if len(arrays) == 1:
        return open_zarr_node(
            root_path,
            f"{inner.strip('/')}/{arrays[0]}".strip("/"),
            f"{source.rstrip('/')}/{arrays[0]}"
            if store is not None
            else f"{root_path}/{inner.strip('/')}/{arrays[0]}".replace("//", "/"),
            level=level,
            store=store,
        )
    raise UserInputError(
        f"{source} is a zarr group with {len(arrays)} arrays; name one as {source}/ARRAY. "
        f"Arrays: {', '.join(arrays) or 'none'}."
    )


def root_path_of(node: Any) -> str:
    root = getattr(node.store, "root", None)
    return str(root) if root is not None else str(node.store)


def _inner_node(root: Any, root_path: Path, inner: str) -> Any:
    """``inner`` inside the store ``root``; a path that is not there lists what is."""
    import zarr

    if not inner.strip("/"):
        return root
    if isinstance(root, zarr.Array):
        raise UserInputError(
            f"{root_path} is a single zarr array; it holds no '{inner}': give {root_path} alone."
        )
    node = member(root, inner, str(root_path))
    if node is None:
        raise UserInputError(
            f"'{inner}' does not exist in {root_path}; it holds: "
            f"{', '.join(list_zarr_arrays(root)) or 'no arrays'}."
        )
    return node


def list_zarr_arrays(group: Any, prefix: str = "") -> list[str]:
    """Paths of every array below ``group`` (recursively), multiscale groups listed as one entry."""
    import zarr

    if isinstance(group, zarr.Array):
        return [prefix] if prefix else []
    out = []
    try:
        with warnings.catch_warnings():
            # files and folders of other tools beside the members (datasource-properties.json)
            warnings.filterwarnings("ignore", message=".*not recognized as a component")
            children = sorted(group.members(), key=lambda kv: kv[0])
    except _METADATA_ERRORS as exc:
        for key in _child_folders(group):
            member(group, key, root_path_of(group))  # names the member that is broken
        raise UserInputError(
            f"{root_path_of(group)}: zarr cannot list the members of "
            f"'{group.path or '/'}' ({type(exc).__name__}: {exc}); {_DAMAGED}"
        ) from None
    for key, child in children:
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(child, zarr.Array) or is_multiscale_group(child):
            out.append(path)
        else:
            out.extend(list_zarr_arrays(child, path))
    return out


def _child_folders(group: Any) -> list[str]:
    folder = _local_folder(group, "")
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def discover_zarr(
    root_path: Path, inner: str, source_prefix: str, *, store: Any = None
) -> list[Volume]:
    """Every layer under a zarr path: OME image + its ``labels/``, or every array of >= 3 dims."""
    import zarr

    root = open_store(root_path, store)
    node = _inner_node(root, root_path, inner)
    if isinstance(node, zarr.Array):
        return [open_zarr_node(root_path, inner, source_prefix, level=0, store=store)]
    vols: list[Volume] = []
    if is_multiscale_group(node):
        vols.append(open_zarr_node(root_path, inner, source_prefix, level=0, store=store))
        labels = member(node, "labels", source_prefix)
        if labels is not None and not isinstance(labels, zarr.Array):
            for lname in ome_attrs(labels).get("labels", []) or []:
                if not isinstance(lname, str):
                    continue
                label = member(labels, lname, f"{source_prefix}/labels")
                if label is not None and is_multiscale_group(label):
                    inner_l = f"{inner.strip('/')}/labels/{lname}".strip("/")
                    vol = open_zarr_node(
                        root_path,
                        inner_l,
                        f"{source_prefix}/labels/{lname}",
                        level=0,
                        store=store,
                    )
                    vol.is_labels = True
                    vols.append(vol)
        return vols
    paths = list_zarr_arrays(node)
    if not paths and store is None and folder_arrays(root_path / inner):
        return discover_zarr_folder(root_path / inner)  # as in open_zarr_node
    for path in paths:
        child = member(node, path, source_prefix)
        ndim = child.ndim if isinstance(child, zarr.Array) else 3
        if ndim < 3:
            continue
        inner_c = f"{inner.strip('/')}/{path}".strip("/")
        vols.append(
            open_zarr_node(root_path, inner_c, f"{source_prefix}/{path}", level=0, store=store)
        )
    return vols


def folder_arrays(folder: Path) -> list[tuple[Path, str]]:
    """The arrays (and OME multiscale images) in a folder of zarr stores that has no zarr
    metadata of its own: (store root, path inside it) each, in name order."""
    import zarr

    from napari_connectome.volumes.sources import zarr_nodes_below

    out: list[tuple[Path, str]] = []
    for rel in zarr_nodes_below(folder):
        root = folder / rel
        node = open_store(root)
        if isinstance(node, zarr.Array) or is_multiscale_group(node):
            out.append((root, ""))
        else:
            out.extend((root, inner) for inner in list_zarr_arrays(node))
    return out


def open_zarr_folder(folder: Path, source: str, *, level: int) -> Volume:
    """A folder of zarr arrays without a group around them (tensorstore writes a set of arrays
    so): the one array it holds."""
    arrays = folder_arrays(folder)
    if len(arrays) == 1:
        root, inner = arrays[0]
        text = f"{root}/{inner}" if inner else str(root)
        return open_zarr_node(root, inner, text, level=level)
    names = [f"{r.relative_to(folder).as_posix()}/{i}".rstrip("/") for r, i in arrays]
    raise UserInputError(
        f"{source} is a folder of {len(arrays)} zarr arrays (without zarr metadata of its own); "
        f"name one as {source}/ARRAY. Arrays: {', '.join(names) or 'none'}."
    )


def discover_zarr_folder(folder: Path) -> list[Volume]:
    """Every array of 3 or more dimensions (and OME image with its labels) in such a folder."""
    vols: list[Volume] = []
    for root, inner in folder_arrays(folder):
        text = f"{root}/{inner}" if inner else str(root)
        for vol in discover_zarr(root, inner, text):
            if vol.data.ndim >= 3:
                vols.append(vol)
    return vols
