"""WebKnossos datasets: a folder with ``datasource-properties.json`` and a folder per layer.

The properties file is the truth, as WebKnossos reads it (https://docs.webknossos.org/webknossos/
data/): each entry of ``dataLayers`` is a layer (``category`` ``color`` -> an image,
``segmentation`` -> labels, with ``largestSegmentId``), its ``boundingBox`` (``topLeft``, ``width``,
``height``, ``depth`` in voxels of mag 1, x-first) is the volume (the arrays themselves are padded
to whole shards: webknossos-py writes 1024^3 zarr3 shards), ``scale`` is the voxel size of mag 1
(``[x, y, z]`` in nm, or ``{"factor": [x, y, z], "unit": "nanometer"}`` since 2023), and each of
``mags`` is a resolution level (``mag`` ``[x, y, z]``, ``path``, ``axisOrder`` ``{"c": 0, "x": 1,
"y": 2, "z": 3}``). Arrays are stored x-first; layers are presented ``z, y, x`` (``c, z, y, x``
with several channels), as for N5.

``dataFormat`` ``zarr3`` and ``zarr`` are read with zarr, ``wkw`` with the ``wkw`` package
(``pip install wkw``), which is optional.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.lazy import DASK_CHUNK_BYTES, GuardedZarrArray, _normalise, to_dask
from napari_connectome.volumes.sources import WEBKNOSSOS_PROPERTIES
from napari_connectome.volumes.units import known_unit_to_nm, warn_no_voxel_size
from napari_connectome.volumes.volume import Volume

_SPATIAL = "xyz"


def read_properties(root: Path) -> dict[str, Any]:
    path = root / WEBKNOSSOS_PROPERTIES
    try:
        props = json.loads(path.read_bytes())
    except OSError as exc:
        raise UserInputError(f"{path} cannot be read ({exc}).") from exc
    except ValueError as exc:
        raise UserInputError(
            f"{path} is not valid JSON ({exc}); the WebKnossos dataset is damaged: re-create or "
            "re-download it."
        ) from None
    if not isinstance(props, dict) or not isinstance(props.get("dataLayers"), list):
        raise UserInputError(
            f"{path} has no 'dataLayers' list; it is not a WebKnossos datasource-properties "
            "file, or it is damaged."
        )
    return props


def _layers(props: dict, root: Path) -> list[dict[str, Any]]:
    layers = [lay for lay in props["dataLayers"] if isinstance(lay, dict) and lay.get("name")]
    if not layers:
        raise UserInputError(f"{root / WEBKNOSSOS_PROPERTIES} lists no data layers.")
    return layers


def _damaged(root: Path, what: str) -> UserInputError:
    return UserInputError(
        f"{root / WEBKNOSSOS_PROPERTIES}: {what}; the WebKnossos dataset is damaged: fix the "
        "properties file or re-create the dataset."
    )


def voxel_size_xyz(props: dict, root: Path) -> tuple[float, float, float]:
    """Voxel size of mag 1 in nm, x-first; 1 nm (with a warning) when the file gives none."""
    scale = props.get("scale")
    unit: Any = "nanometer"
    if isinstance(scale, dict):
        unit = scale.get("unit", "nanometer")
        scale = scale.get("factor")
    try:
        values = [float(v) for v in scale]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = []
    factor = known_unit_to_nm(unit)
    if len(values) != 3 or not all(v > 0 for v in values) or factor is None:
        why = (
            f"its scale unit '{unit}' is no length unit napari-connectome knows"
            if factor is None and len(values) == 3
            else f"no valid 'scale' in {WEBKNOSSOS_PROPERTIES}"
        )
        warn_no_voxel_size(
            str(root),
            why,
            fix=f'set "scale": {{"factor": [x, y, z], "unit": "nanometer"}} in '
            f"{WEBKNOSSOS_PROPERTIES}",
            stacklevel=4,
        )
        return (1.0, 1.0, 1.0)
    return tuple(v * factor for v in values)  # type: ignore[return-value]


def _bounding_box(layer: dict, root: Path) -> tuple[list[int], list[int]]:
    """(topLeft, size) in mag-1 voxels, x-first."""
    box = layer.get("boundingBox")
    try:
        top = [int(v) for v in box["topLeft"]]
        size = [int(box["width"]), int(box["height"]), int(box["depth"])]
    except (TypeError, KeyError, ValueError):
        raise _damaged(root, f"layer '{layer['name']}' has no valid boundingBox") from None
    if len(top) != 3 or any(s < 0 for s in size):
        raise _damaged(root, f"layer '{layer['name']}' has no valid boundingBox")
    return top, size


def _mag_vector(raw: Any) -> tuple[int, int, int] | None:
    if isinstance(raw, int):
        return (raw, raw, raw)
    if isinstance(raw, str):
        raw = raw.split("-")
        if len(raw) == 1:
            raw = raw * 3
    try:
        mag = tuple(int(v) for v in raw)
    except (TypeError, ValueError):
        return None
    return mag if len(mag) == 3 and all(m >= 1 for m in mag) else None  # type: ignore[return-value]


def _mag_name(mag: tuple[int, int, int]) -> str:
    return str(mag[0]) if len(set(mag)) == 1 else "-".join(str(m) for m in mag)


def _mags(layer: dict, root: Path) -> list[dict[str, Any]]:
    """The layer's mags, finest first: ``mag`` (x, y, z), ``path`` (a local folder),
    ``axis_order`` (axis names by array dimension, or None: the format's default)."""
    name = layer["name"]
    entries = layer.get("mags")
    if entries is None:  # wkw datasets before 2022: wkwResolutions
        entries = [
            {"mag": r.get("resolution"), "cubeLength": r.get("cubeLength")}
            for r in layer.get("wkwResolutions") or []
            if isinstance(r, dict)
        ]
    out = []
    for entry in entries or []:
        mag = _mag_vector(entry.get("mag") if isinstance(entry, dict) else None)
        if mag is None:
            raise _damaged(root, f"layer '{name}' lists a mag without a valid 'mag' ({entry!r})")
        path_text = entry.get("path")
        if isinstance(path_text, str) and "://" in path_text:
            raise UserInputError(
                f"{root}: layer '{name}' mag {_mag_name(mag)} lies at {path_text}, not on this "
                "machine; napari-connectome reads local WebKnossos datasets only (download it, "
                "or open the mag where it is stored)."
            )
        if isinstance(path_text, str) and path_text:
            path = Path(path_text) if Path(path_text).is_absolute() else root / path_text
        else:  # the default folders: LAYER/1, LAYER/2-2-1 (older datasets: LAYER/2 for 2-2-2)
            candidates = [root / name / _mag_name(mag), root / name / "-".join(map(str, mag))]
            path = next((p for p in candidates if p.exists()), candidates[0])
        order = entry.get("axisOrder")
        axis_order = None
        if isinstance(order, dict):
            try:
                by_index = sorted((int(i), str(a)) for a, i in order.items() if i is not None)
            except (TypeError, ValueError):
                raise _damaged(root, f"layer '{name}' has an invalid axisOrder {order!r}") from None
            axis_order = "".join(a for _, a in by_index)
        out.append({"mag": mag, "path": path, "axis_order": axis_order})
    if not out:
        raise _damaged(root, f"layer '{name}' lists no mags")
    return sorted(out, key=lambda m: (max(m["mag"]), m["mag"]))


def largest_segment_id(layer: dict) -> int | None:
    """``largestSegmentId``: a number, or (ids above 2^53) ``{"customJsonEncoding": "bigint",
    "value": "..."}`` as webknossos-py writes it."""
    raw = layer.get("largestSegmentId")
    if isinstance(raw, dict):
        raw = raw.get("value")
    try:
        return None if raw is None else int(raw)
    except (TypeError, ValueError):
        return None


class WkwArray:
    """A wkw mag as an array (c, x, y, z) from the origin to ``stop`` (x, y, z); reopened by path
    in each process (wkw handles cannot be pickled)."""

    def __init__(self, path: Path, stop: tuple[int, int, int]) -> None:
        ds = self._open_path(path)
        header = ds.header
        self.path = path
        self.dtype = np.dtype(header.voxel_type)
        channels = int(header.num_channels)
        self.shape = (channels, *stop)
        self.ndim = 4
        block = int(header.block_len)
        self.chunks = (channels, block, block, block)
        self._ds: Any = ds

    @staticmethod
    def _open_path(path: Path) -> Any:
        try:
            import wkw
        except ImportError:
            raise UserInputError(
                f"{path} is a WebKnossos wkw layer; reading it needs the wkw package: pip install "
                "wkw (or convert the dataset to zarr3 with the webknossos library)."
            ) from None
        try:
            return wkw.Dataset.open(str(path))
        except wkw.wkw.WKWException as exc:  # no header.wkw, a damaged header
            raise UserInputError(
                f"{path} cannot be opened as a wkw mag ({exc}); the WebKnossos dataset is "
                "damaged or incomplete: re-create or re-download it."
            ) from None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._ds is None:
            self._ds = self._open_path(self.path)
        region = _normalise(key, self.shape)
        off = [s.start for s in region[1:]]
        size = [max(0, s.stop - s.start) for s in region[1:]]
        import wkw  # imported by _open_path already

        try:
            block = self._ds.read(off, size)
        except (wkw.wkw.WKWException, OSError) as exc:
            raise UserInputError(
                f"wkw mag {self.path} cannot be read at x, y, z {off} (size {size}): {exc}; the "
                "file is damaged: re-copy it."
            ) from None
        block = np.asarray(block)[region[0]]
        squeeze = tuple(
            i for i, k in enumerate(key if isinstance(key, tuple) else (key,)) if isinstance(k, int)
        )
        return block.squeeze(axis=squeeze) if squeeze else block


def _mag_array(layer: dict, mag: dict, stop: tuple[int, int, int], root: Path) -> tuple[Any, tuple]:
    """The mag as a dask array with axes (c, x, y, z), and its storage chunk shape."""
    import zarr

    fmt = str(layer.get("dataFormat", "wkw"))
    path: Path = mag["path"]
    if fmt == "wkw":
        array = WkwArray(path, stop)
        return to_dask(array), array.chunks
    if fmt not in ("zarr", "zarr3"):
        raise UserInputError(
            f"{root}: layer '{layer['name']}' is stored as {fmt}, which napari-connectome does "
            f"not read inside a WebKnossos dataset (it reads wkw, zarr and zarr3); open "
            f"{path} on its own instead."
        )
    if not path.is_dir():
        raise UserInputError(
            f"{root}: layer '{layer['name']}' mag {_mag_name(mag['mag'])} is missing ({path} "
            "does not exist); the WebKnossos dataset is incomplete: re-create or re-download it."
        )
    from napari_connectome.volumes.read_zarr import check_chunk_layout, open_store

    array = open_store(path)
    if not isinstance(array, zarr.Array):
        raise UserInputError(
            f"{path} is a zarr group, not the array of layer '{layer['name']}' mag "
            f"{_mag_name(mag['mag'])}; the WebKnossos dataset is damaged."
        )
    order = mag["axis_order"] or ("cxyz" if array.ndim == 4 else "xyz")
    if sorted(order) != sorted("cxyz"[4 - array.ndim :]) or len(order) != array.ndim:
        raise UserInputError(
            f"{path}: axes '{order}' of layer '{layer['name']}' are not c, x, y, z; "
            "napari-connectome reads WebKnossos layers without additional axes only."
        )
    check_chunk_layout(array, str(path))
    data = to_dask(GuardedZarrArray(array, str(path)), target=DASK_CHUNK_BYTES)
    chunks = tuple(array.chunks)
    if "c" not in order:
        data, chunks, order = data[None], (1, *chunks), "c" + order
    perm = [order.index(a) for a in "cxyz"]
    return data.transpose(perm), tuple(chunks[i] for i in perm)


def _crop(data: Any, start: list[int], stop: list[int]) -> Any:
    """data[:, start:stop] along x, y, z; what lies beyond the stored array reads 0 (as in
    WebKnossos)."""
    import dask.array as da

    have = data.shape[1:]
    pads = [(0, max(0, e - h)) for e, h in zip(stop, have)]
    if any(p[1] for p in pads):
        data = da.pad(data, [(0, 0), *pads], mode="constant", constant_values=0)
    return data[(slice(None), *(slice(s, e) for s, e in zip(start, stop)))]


def open_layer(root: Path, layer: dict, props: dict, *, level: int = 0) -> Volume:
    name = layer["name"]
    source = f"{root}/{name}"
    top, size = _bounding_box(layer, root)
    mags = _mags(layer, root)
    if not 0 <= level < len(mags):
        raise UserInputError(
            f"{source} has {len(mags)} mags (levels 0..{len(mags) - 1}); level {level} does "
            "not exist."
        )
    vs1 = voxel_size_xyz(props, root)
    channels = int(layer.get("numChannels") or 1)
    arrays, sizes, offsets, chunk_shapes = [], [], [], []
    for mag in mags:
        m = mag["mag"]
        start = [t // f for t, f in zip(top, m)]
        stop = [-(-(t + s) // f) for t, s, f in zip(top, size, m)]
        data, chunks = _mag_array(layer, mag, tuple(stop), root)  # type: ignore[arg-type]
        data = _crop(data, start, stop)
        channels = int(data.shape[0])
        # (c, x, y, z) -> (c, z, y, x)
        data = data.transpose(0, 3, 2, 1)
        chunks = (chunks[0], chunks[3], chunks[2], chunks[1])
        level_size = tuple(v * f for v, f in zip(vs1, m))[::-1]
        # the centre of the first voxel, in the frame where mag 1 voxel i is centred at i * size
        level_offset = tuple((s * f + (f - 1) / 2) * v for s, f, v in zip(start, m, vs1))[::-1]
        if channels == 1:
            data, chunks = data[0], chunks[1:]
        else:
            level_size, level_offset = (1.0, *level_size), (0.0, *level_offset)
        arrays.append(data)
        sizes.append(tuple(float(v) for v in level_size))
        offsets.append(tuple(float(v) for v in level_offset))
        chunk_shapes.append(tuple(int(c) for c in chunks))
    category = str(layer.get("category", "color"))
    return Volume(
        name=name,
        data=arrays[level],
        multiscale=arrays[level:],
        voxel_size_nm=sizes[level],
        offset_nm=offsets[level],
        axes="zyx" if channels == 1 else "czyx",
        is_labels=category == "segmentation",
        source=source,
        level_voxel_sizes=sizes[level:],
        format="webknossos",
        storage_chunks=chunk_shapes[level],
        level_offsets_nm=offsets[level:],
        largest_segment_id=largest_segment_id(layer) if category == "segmentation" else None,
    )


def _find(root: Path, inner: str, props: dict) -> tuple[dict, int]:
    """The layer (and mag level) ``inner`` names: ``LAYER`` or ``LAYER/MAG``."""
    layers = _layers(props, root)
    head, _, rest = inner.strip("/").partition("/")
    by_name = {lay["name"]: lay for lay in layers}
    if head not in by_name:
        raise UserInputError(
            f"layer '{head}' does not exist in the WebKnossos dataset {root}; its layers: "
            f"{', '.join(by_name)}."
        )
    layer = by_name[head]
    if not rest:
        return layer, 0
    mags = _mags(layer, root)
    target = (root / head / rest).resolve()
    for i, mag in enumerate(mags):
        if Path(mag["path"]).resolve() == target or _mag_name(mag["mag"]) == rest:
            return layer, i
    raise UserInputError(
        f"'{rest}' is no mag of layer '{head}' in {root}; its mags: "
        f"{', '.join(_mag_name(m['mag']) for m in mags)}."
    )


def open_webknossos(root: Path, inner: str, *, level: int = 0) -> Volume:
    """One layer of a WebKnossos dataset (``DATASET/LAYER``, or ``DATASET/LAYER/MAG`` for that
    mag and coarser); the dataset alone when it has a single layer."""
    props = read_properties(root)
    if not inner.strip("/"):
        layers = _layers(props, root)
        if len(layers) != 1:
            raise UserInputError(
                f"{root} is a WebKnossos dataset with {len(layers)} layers; name one as "
                f"{root}/LAYER (layers: {', '.join(lay['name'] for lay in layers)})."
            )
        return open_layer(root, layers[0], props, level=level)
    layer, mag_level = _find(root, inner, props)
    if mag_level and level:
        raise UserInputError(f"{root}/{inner} names one mag; give no level with it.")
    return open_layer(root, layer, props, level=mag_level or level)


def discover_webknossos(root: Path, inner: str) -> list[Volume]:
    """Every layer of the dataset (color layers as images, segmentation layers as labels)."""
    props = read_properties(root)
    if inner.strip("/"):
        return [open_webknossos(root, inner)]
    return [open_layer(root, layer, props) for layer in _layers(props, root)]
