"""TIFF: one multi-page file or a folder of 2D slices, read lazily one page per chunk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.lazy import first_bad_chunk, to_dask
from napari_connectome.volumes.read_zarr import default_axes
from napari_connectome.volumes.sources import TIFF_SUFFIXES
from napari_connectome.volumes.units import unit_to_nm
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


def _voxel_size(first: Path, ndim: int) -> tuple[float, ...]:
    import tifffile

    with tifffile.TiffFile(first) as tif:
        imagej = tif.imagej_metadata
        y, x = _pixel_size_nm(tif.pages[0], imagej)
    z = None
    if imagej and imagej.get("spacing"):
        z = float(imagej["spacing"]) * unit_to_nm(imagej.get("unit"))
    spatial = (z or x or 1.0, y or x or 1.0, x or y or 1.0)
    size = spatial[-ndim:] if ndim <= 3 else (1.0,) * (ndim - 3) + spatial
    return tuple(float(v) for v in size)


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
    size = _voxel_size(first, ndim)
    data = to_dask(array)
    return Volume(
        name=path.name.split(".")[0],
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=(0.0,) * ndim,
        axes=default_axes(ndim),
        is_labels=dtype_looks_like_labels(array.dtype),
        source=str(path),
        level_voxel_sizes=[size],
        format=fmt,
        storage_chunks=array.chunks,
    )
