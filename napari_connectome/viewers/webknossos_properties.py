"""WebKnossos' ``datasource-properties.json`` for our OME-Zarr outputs, written beside their data.

WebKnossos ignores OME-Zarr's ``image-label`` (it would add our uint64 labels as a color layer,
and refuses to); its properties file says what each layer is. For an OME-Zarr folder (an image,
its ``labels/``, or a label image of its own) this writes one file in that folder naming every
multiscale group as a layer: ``category`` ``color`` or ``segmentation`` (with
``largestSegmentId``), ``boundingBox`` from level 0's shape, ``elementClass`` from the dtype,
``dataFormat`` ``zarr3`` (``zarr`` for OME-Zarr 0.4), the dataset ``scale`` in nm, and each level
as a mag (``mag`` = its scale over level 0's, x-first; ``path`` relative to the folder;
``axisOrder`` naming which array dimension is x, y, z and c, since our arrays are z, y, x).

The file carries a ``napari_connectome`` entry, so napari-connectome itself keeps reading the
folder as the OME-Zarr it is (with its offsets), while WebKnossos and webknossos-py read it as a
dataset. ``largestSegmentId`` comes from a region graph beside the labels when there is one, else
from a blockwise maximum of level 0 on Dask.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.volumes.sources import WEBKNOSSOS_PROPERTIES

MARKER = "napari_connectome"
_ELEMENT_CLASS = {
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "float32": "float", "float64": "double",
}  # fmt: skip
_MAX_JSON_INT = 2**53


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _group_meta(folder: Path) -> tuple[int, dict[str, Any]] | None:
    """(zarr format, OME attributes) of a zarr group folder, or None."""
    z3 = _read_json(folder / "zarr.json")
    if z3 is not None:
        if z3.get("node_type") != "group":
            return None
        attrs = z3.get("attributes") or {}
        ome = attrs.get("ome")
        return 3, dict(ome) if isinstance(ome, Mapping) else attrs
    if (folder / ".zgroup").is_file():
        return 2, _read_json(folder / ".zattrs") or {}
    return None


def _array_meta(folder: Path, version: int) -> dict[str, Any]:
    meta = _read_json(folder / ("zarr.json" if version == 3 else ".zarray"))
    if meta is None:
        raise UserInputError(f"{folder} is listed as a pyramid level but is no zarr array")
    shape = meta["shape"]
    dtype = meta.get("data_type") if version == 3 else meta.get("dtype")
    return {"shape": [int(s) for s in shape], "dtype": str(np.dtype(dtype))}


def _multiscale_layers(root: Path) -> list[tuple[str, Path, int, dict[str, Any], bool]]:
    """(name, folder, zarr format, OME attributes, is labels) of each multiscale group."""
    meta = _group_meta(root)
    if meta is None or not meta[1].get("multiscales"):
        raise UserInputError(
            f"{root} is not an OME-Zarr image (no multiscales metadata): give the folder of an "
            "OME-Zarr napari-connectome wrote (convert, jobs, proofread export)"
        )
    version, attrs = meta
    name = str(attrs["multiscales"][0].get("name") or root.name.split(".")[0])
    out = [(name, root, version, attrs, "image-label" in attrs)]
    labels = _group_meta(root / "labels")
    for lname in (labels[1].get("labels") or []) if labels else []:
        if not isinstance(lname, str) or "/" in lname or lname in (".", ".."):
            continue
        sub = _group_meta(root / "labels" / lname)
        if sub and sub[1].get("multiscales"):
            out.append((lname, root / "labels" / lname, sub[0], sub[1], True))
    return out


def _scales(ds: Mapping[str, Any], ms: Mapping[str, Any], ndim: int) -> tuple[list, list]:
    scale, trans = [1.0] * ndim, [0.0] * ndim
    for transforms in (ds.get("coordinateTransformations"), ms.get("coordinateTransformations")):
        for t in transforms or []:
            if t.get("type") == "scale":
                scale = [a * float(b) for a, b in zip(scale, t["scale"])]
            elif t.get("type") == "translation":
                trans = [a + float(b) for a, b in zip(trans, t["translation"])]
    return scale, trans


def largest_segment_id(folder: Path, level0: Path) -> int:
    """The largest id of a label image: from a region graph beside it, else the maximum of level
    0, blockwise on Dask (threads)."""
    import dask.array as da
    import zarr

    graph = folder / "region_graph"
    if (graph / "region_graph.json").is_file():
        from napari_connectome.graph import RegionGraph

        ids = RegionGraph.open(graph).fragment_ids
        return int(ids[-1]) if len(ids) else 0
    arr = zarr.open_array(str(level0), mode="r")
    return int(da.from_zarr(arr).max().compute(scheduler="threads"))


def _layer(
    root: Path, name: str, folder: Path, version: int, attrs: Mapping[str, Any], labels: bool
) -> tuple[dict[str, Any], tuple[float, float, float]]:
    from napari_connectome.volumes.units import known_unit_to_nm

    ms = attrs["multiscales"][0]
    axes = [a["name"] if isinstance(a, Mapping) else str(a) for a in ms.get("axes") or []]
    units = [a.get("unit") if isinstance(a, Mapping) else None for a in ms.get("axes") or []]
    if sorted(a for a in axes if a != "c") != ["x", "y", "z"]:
        raise UserInputError(f"{folder}: axes {axes}; WebKnossos layers have x, y, z (and c) only")
    datasets = ms.get("datasets") or []
    levels = []
    for ds in datasets:
        path = str(ds["path"])
        arr = _array_meta(folder / path, version)
        scale, trans = _scales(ds, ms, len(axes))
        levels.append((path, arr, scale, trans))
    if not levels:
        raise UserInputError(f"{folder}: the multiscales metadata lists no datasets")
    xyz = [axes.index(a) for a in "xyz"]
    to_nm = []
    for i in xyz:
        f = known_unit_to_nm(units[i]) if units[i] else 1.0
        if f is None:
            raise UserInputError(f"{folder}: axis {axes[i]} has the unknown unit {units[i]!r}")
        to_nm.append(f)
    _, arr0, scale0, trans0 = levels[0]
    vs = tuple(scale0[i] * f for i, f in zip(xyz, to_nm))
    if any(abs(trans0[i]) > 1e-9 for i in xyz):
        warnings.warn(
            f"{folder} is offset by {[trans0[i] for i in xyz]} (x, y, z); WebKnossos shows the "
            "layer at the dataset's origin",
            DataWarning,
            stacklevel=3,
        )
    mags = []
    for path, _arr, scale, _ in levels:
        mag = [scale[i] / scale0[i] for i in xyz]
        if any(abs(m - round(m)) > 1e-6 or round(m) < 1 for m in mag):
            raise UserInputError(
                f"{folder}/{path}: its scale over level 0 is {mag} (x, y, z); WebKnossos mags "
                "are whole numbers"
            )
        order = {a: i for i, a in enumerate(axes)}
        rel = (folder / path).relative_to(root).as_posix()
        mags.append({"mag": [round(m) for m in mag], "path": f"./{rel}", "axisOrder": order})
    dtype = arr0["dtype"]
    if dtype not in _ELEMENT_CLASS:
        raise UserInputError(f"{folder}: WebKnossos has no layers of dtype {dtype}")
    shape = arr0["shape"]
    layer: dict[str, Any] = {
        "name": name,
        "category": "segmentation" if labels else "color",
        "boundingBox": {
            "topLeft": [0, 0, 0],
            "width": shape[xyz[0]],
            "height": shape[xyz[1]],
            "depth": shape[xyz[2]],
        },
        "elementClass": _ELEMENT_CLASS[dtype],
        "dataFormat": "zarr3" if version == 3 else "zarr",
        "numChannels": shape[axes.index("c")] if "c" in axes else 1,
        "mags": mags,
    }
    if labels:
        if np.dtype(dtype).kind not in "u":
            raise UserInputError(f"{folder}: a segmentation needs unsigned ids, not {dtype}")
        top = largest_segment_id(folder, folder / levels[0][0])
        layer["largestSegmentId"] = (
            top if top < _MAX_JSON_INT else {"customJsonEncoding": "bigint", "value": str(top)}
        )
    return layer, vs  # type: ignore[return-value]


def webknossos_properties(root: str | os.PathLike) -> dict[str, Any]:
    """The properties of an OME-Zarr folder (see the module docstring)."""
    from napari_connectome import __version__

    root = Path(root)
    layers, sizes = [], []
    for name, folder, version, attrs, labels in _multiscale_layers(root):
        layer, vs = _layer(root, name, folder, version, attrs, labels)
        layers.append(layer)
        sizes.append(vs)
    if any(not np.allclose(s, sizes[0]) for s in sizes):
        raise UserInputError(
            f"{root}: its layers have different voxel sizes {sizes} (x, y, z nm); a WebKnossos "
            "dataset has one"
        )
    names = [lay["name"] for lay in layers]
    if len(set(names)) != len(names):
        raise UserInputError(f"{root}: layer names repeat ({names}); WebKnossos needs unique ones")
    return {
        "id": {"name": root.name, "team": ""},
        "scale": {"factor": [float(v) for v in sizes[0]], "unit": "nanometer"},
        "dataLayers": layers,
        MARKER: {"version": __version__, "note": "written beside an OME-Zarr for WebKnossos"},
    }


def write_webknossos_properties(root: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``datasource-properties.json`` into the OME-Zarr folder ``root``; one that
    napari-connectome did not write is never replaced."""
    from napari_connectome.volumes.atomic import atomic_write_bytes

    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise UserInputError(f"{root} is not a folder (or is a link): give the OME-Zarr folder")
    path = root / WEBKNOSSOS_PROPERTIES
    if path.exists() or path.is_symlink():
        old = _read_json(path)
        if path.is_symlink() or old is None or MARKER not in old:
            raise UserInputError(
                f"{path} exists and was not written by napari-connectome; it is left as it is "
                "(move it away yourself to write ours)"
            )
        if not overwrite:
            raise UserInputError(f"{path} exists; pass --overwrite to write it again")
    props = webknossos_properties(root)
    atomic_write_bytes(path, (json.dumps(props, indent=2) + "\n").encode())
    return path
