"""TIFF: one multi-page file or a folder of 2D slices, read lazily one page per chunk."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.volumes.lazy import first_bad_chunk, to_dask
from napari_connectome.volumes.read_zarr import default_axes, zyx_order
from napari_connectome.volumes.sources import TIFF_SUFFIXES
from napari_connectome.volumes.units import known_unit_to_nm, unit_to_nm, warn_no_voxel_size
from napari_connectome.volumes.volume import Volume, dtype_looks_like_labels

# TIFF ResolutionUnit tag: 2 = inch, 3 = centimetre (1 = none)
_RES_UNIT_NM = {2: 2.54e7, 3: 1e7}


def _natural_key(path: Path) -> list[Any]:
    """slice_2.tif sorts before slice_10.tif."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def slice_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES),
        key=_natural_key,
    )


def _pixel_size_nm(page: Any, imagej: dict | None) -> tuple[float | None, float | None]:
    """(y, x) pixel size in nm from the X/YResolution tags (pixels per unit), if present."""
    tags = page.tags
    unit_nm = None
    if imagej and imagej.get("unit"):
        unit_nm = unit_to_nm(imagej["unit"])
    elif "ResolutionUnit" in tags:
        unit_nm = _RES_UNIT_NM.get(int(tags["ResolutionUnit"].value))
    if unit_nm is None:
        return None, None
    sizes = []
    for name in ("YResolution", "XResolution"):
        if name not in tags:
            sizes.append(None)
            continue
        num, den = tags[name].value
        sizes.append(unit_nm * den / num if num else None)
    return sizes[0], sizes[1]


def _ome_pixels(xml: str | None) -> Any:
    """The first ``Image/Pixels`` element of OME-XML, or None."""
    import xml.etree.ElementTree as ET

    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            return el
    return None


def _ome_physical_sizes(pixels: Any, source: Path) -> dict[str, float]:
    """``{"x": nm, "y": nm, "z": nm}`` from OME ``PhysicalSizeX/Y/Z`` and their units (OME's
    default unit is the micrometre); a size in a unit we cannot turn into nm is left out, with a
    warning."""
    out: dict[str, float] = {}
    if pixels is None:
        return out
    for axis in "XYZ":
        raw = pixels.get(f"PhysicalSize{axis}")
        if raw is None:
            continue
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        factor = known_unit_to_nm(unit)
        try:
            value = float(raw)
        except ValueError:
            continue
        if factor is None:
            warnings.warn(
                f"{source}: OME PhysicalSize{axis} is given in '{unit}', which is no length "
                "unit napari-connectome knows; it is not used.",
                DataWarning,
                stacklevel=4,
            )
            continue
        if value > 0:
            out[axis.lower()] = value * factor
    return out


def _tags_are_a_default(page: Any) -> bool:
    """72 or 96 pixels per inch: what image editors write when they know no pixel size."""
    tags = page.tags
    if "ResolutionUnit" not in tags or int(tags["ResolutionUnit"].value) != 2:
        return False
    values = []
    for name in ("XResolution", "YResolution"):
        if name in tags:
            num, den = tags[name].value
            values.append(num / den if den else 0)
    return bool(values) and all(v in (72.0, 96.0) for v in values)


def _voxel_size(first: Path, ndim: int, source: Path) -> tuple[float, ...]:
    """Voxel size in nm (z, y, x): OME-XML PhysicalSizeX/Y/Z first, then ImageJ's ``spacing``
    and the X/YResolution tags; what none of them gives is 1 nm, with a warning."""
    import tifffile

    with tifffile.TiffFile(first) as tif:
        imagej = tif.imagej_metadata
        ome = _ome_physical_sizes(_ome_pixels(tif.ome_metadata), first) if tif.is_ome else {}
        default_tags = _tags_are_a_default(tif.pages[0])
        y, x = (None, None) if default_tags else _pixel_size_nm(tif.pages[0], imagej)
    x, y = ome.get("x", x), ome.get("y", y)
    z = ome.get("z")
    if z is None and imagej and imagej.get("spacing"):
        z = float(imagej["spacing"]) * unit_to_nm(imagej.get("unit"))
    looked = "OME-XML PhysicalSize, ImageJ spacing/unit or the X/YResolution tags"
    if default_tags:
        looked += " (the 72 or 96 pixels per inch there is an image editor's default)"
    fix = (
        "write it into the TIFF (OME-TIFF PhysicalSizeX/Y/Z, e.g. tifffile's metadata="
        "{'PhysicalSizeX': ...}, or ImageJ's resolution and spacing)"
    )
    if x is None and y is None:
        warn_no_voxel_size(str(source), f"no {looked}", fix=fix, stacklevel=4)
    elif z is None and ndim >= 3:
        warnings.warn(
            f"{source}: no z spacing found (no OME PhysicalSizeZ or ImageJ spacing); the pixel "
            f"size in x ({x or y} nm) is used for z too. To place it right, {fix}.",
            DataWarning,
            stacklevel=3,
        )
    spatial = (z or x or y or 1.0, y or x or 1.0, x or y or 1.0)
    size = spatial[-ndim:] if ndim <= 3 else (1.0,) * (ndim - 3) + spatial
    return tuple(float(v) for v in size)


def _ome_axes(path: Path, ndim: int) -> str | None:
    """Axis letters of an OME-TIFF's first series (tifffile's ``axes``: e.g. ``ZCYX``), or None
    for other TIFFs (their page order is read as z)."""
    import tifffile

    if path.is_dir():
        return None
    with tifffile.TiffFile(path) as tif:
        if not tif.is_ome or not tif.series:
            return None
        letters = tif.series[0].axes
    axes = "".join({"S": "c", "Q": "z", "I": "z"}.get(a, a.lower()) for a in letters)
    return axes if len(axes) == ndim and len(set(axes)) == ndim else None


def _open_as_zarr(path: Path) -> Any:
    """The TIFF pages as a read-only zarr array (tifffile's zarr store, one page per chunk)."""
    import tifffile
    import zarr

    try:
        if path.is_dir():
            store = tifffile.TiffSequence([str(f) for f in slice_files(path)]).aszarr()
        else:
            store = tifffile.imread(str(path), aszarr=True)
        array = zarr.open(store, mode="r")
    except (OSError, ValueError, tifffile.TiffFileError, IndexError, NotImplementedError) as exc:
        # NotImplementedError: a header tifffile parses but cannot map to pixels (no image data)
        raise UserInputError(
            f"{path} cannot be read as a TIFF stack ({exc}); check that every slice is a valid "
            "TIFF with the same shape and dtype."
        ) from exc
    if isinstance(array, zarr.Group):  # pyramidal TIFF: take full resolution
        array = array["0"]
    return array


class TiffArray:
    """TIFF pages for dask: reopened by path in each process (tifffile handles cannot be pickled),
    and a page that fails to decode is named in the error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._array: Any = _open_as_zarr(path)
        self.shape = tuple(self._array.shape)
        self.dtype = self._array.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(self._array.chunks)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __getitem__(self, key: Any) -> Any:
        if self._array is None:
            self._array = _open_as_zarr(self.path)
        try:
            return self._array[key]
        except (UserInputError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            bad = first_bad_chunk(self._array.__getitem__, key, self.chunks, self.shape)
            if bad is None:
                raise
            where = f"page {bad[0]}"
            if self.path.is_dir():
                where = f"slice file {slice_files(self.path)[bad[0]].name}"
            raise UserInputError(
                f"{where} of {self.path} cannot be decoded ({type(exc).__name__}: {exc}); "
                "re-export or replace it."
            ) from exc


def open_tiff(path: Path) -> Volume:
    """A multi-page TIFF file or a folder of single-page slices (sorted by natural name order)."""
    array = TiffArray(path)
    first = slice_files(path)[0] if path.is_dir() else path
    fmt = "tiff-folder" if path.is_dir() else "tiff"
    ndim = array.ndim
    data = to_dask(array)
    chunks = tuple(array.chunks)
    axes = _ome_axes(path, ndim) or default_axes(ndim)
    order = zyx_order(axes)
    if order is not None:  # an OME-TIFF stored z, c, y, x: presented as c, z, y, x
        data = data.transpose(order)
        axes = "".join(axes[i] for i in order)
        chunks = tuple(chunks[i] for i in order)
    spatial = _voxel_size(first, len([a for a in axes if a in "zyx"]), path)
    size = tuple(1.0 for a in axes if a not in "zyx") + spatial
    return Volume(
        name=path.name.split(".")[0],
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=(0.0,) * ndim,
        axes=axes,
        is_labels=dtype_looks_like_labels(array.dtype, path.name),
        source=str(path),
        level_voxel_sizes=[size],
        format=fmt,
        storage_chunks=chunks,
    )
