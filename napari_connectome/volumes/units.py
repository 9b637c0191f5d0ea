"""Voxel size and offset from the many metadata conventions in the field, always returned in nm."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from napari_connectome.errors import NoVoxelSizeWarning

# Length units as spelled by OME-NGFF, N5/BigDataViewer, ImageJ and friends, to nanometres.
_UNIT_TO_NM = {
    "angstrom": 0.1,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nm": 1.0,
    "micrometer": 1000.0,
    "micrometre": 1000.0,
    "micron": 1000.0,
    "um": 1000.0,
    "µm": 1000.0,
    "\\u00b5m": 1000.0,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "cm": 1e7,
    "meter": 1e9,
    "m": 1e9,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "pm": 1e-3,
    # the rest of OME's UnitsLength and WebKnossos' LengthUnit
    "femtometer": 1e-6,
    "fm": 1e-6,
    "decimeter": 1e8,
    "dm": 1e8,
    "kilometer": 1e12,
    "km": 1e12,
    "inch": 2.54e7,
    "in": 2.54e7,
    "foot": 3.048e8,
    "ft": 3.048e8,
    "yard": 9.144e8,
    "yd": 9.144e8,
    "mile": 1.609344e12,
    "mi": 1.609344e12,
    "å": 0.1,  # OME's symbol Å, lower-cased
    "μm": 1000.0,  # GREEK SMALL LETTER MU, as some writers spell micro
}


def known_unit_to_nm(unit: str | None) -> float | None:
    """Factor that turns a length in ``unit`` into nm, or None for a unit we do not know."""
    if unit is None:
        return None
    return _UNIT_TO_NM.get(str(unit).strip().lower())


def unit_to_nm(unit: str | None) -> float:
    """Factor that turns a length in ``unit`` into nm; unknown or missing units count as nm."""
    if not unit:
        return 1.0
    return _UNIT_TO_NM.get(str(unit).strip().lower(), 1.0)


# What the attribute readers below look for, for messages.
VOXEL_SIZE_KEYS_TEXT = (
    "resolution_nm_zyx, voxel_size_nm, voxel_size, resolution, element_size_um or pixelResolution"
)


_ADD_ATTRIBUTE = "add the attribute resolution_nm_zyx = [z, y, x] (in nm) to it"


def warn_no_voxel_size(
    source: str, why: str, *, fix: str = _ADD_ATTRIBUTE, stacklevel: int = 3
) -> None:
    """Say that ``source`` gives no voxel size (``why``) and that 1 nm per axis is assumed:
    a voxel size we could not find is never a silent 1 nm."""
    warnings.warn(
        f"{source}: no voxel size found ({why}); 1 nm per axis is assumed, so layer scales and "
        f"distances count voxels. To place it right, {fix} (see docs/file-formats.md).",
        NoVoxelSizeWarning,
        stacklevel=stacklevel,
    )


# Attribute names that hold a per-axis voxel size, with the factor to nm and whether the order is
# x-first (N5/BigDataViewer convention) rather than the array's own (z, y, x) order.
_SIZE_KEYS: tuple[tuple[str, float, bool], ...] = (
    ("resolution_nm_zyx", 1.0, False),
    ("voxel_size_nm", 1.0, False),
    ("voxel_size", 1.0, False),
    ("resolution", 1.0, False),
    ("element_size_um", 1000.0, False),
    ("pixelResolution", 1.0, True),
)
_OFFSET_KEYS: tuple[tuple[str, float], ...] = (
    ("offset_nm_zyx", 1.0),
    ("offset_nm", 1.0),
    ("offset", 1.0),
    ("translation", 1.0),
)


def _as_floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        if isinstance(value, (int, float)):
            return (float(value),) * n
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _fit(values: tuple[float, ...] | None, ndim: int, fill: float) -> tuple[float, ...] | None:
    """Match a spatial-only list (3 values) to an array with leading non-spatial axes."""
    if values is None:
        return None
    if len(values) == ndim:
        return values
    if len(values) < ndim:
        return (fill,) * (ndim - len(values)) + values
    return None


def voxel_size_from_attrs(attrs: Mapping[str, Any], ndim: int) -> tuple[float, ...] | None:
    """Voxel size in nm from HDF5/zarr/N5 attributes, or ``None`` when no known key is set."""
    for key, factor, reversed_order in _SIZE_KEYS:
        if key not in attrs:
            continue
        raw = attrs[key]
        unit_factor = factor
        if isinstance(raw, Mapping):  # N5 pixelResolution: {"dimensions": [...], "unit": "nm"}
            unit_factor = unit_to_nm(raw.get("unit"))
            raw = raw.get("dimensions")
        seq = raw if isinstance(raw, (int, float)) else list(raw) if raw is not None else None
        if seq is None:
            continue
        n = len(seq) if not isinstance(seq, (int, float)) else ndim
        values = _as_floats(seq, n)
        if values is None:
            continue
        if reversed_order:
            values = tuple(reversed(values))
        if "unit" in attrs and key in ("resolution", "voxel_size"):
            unit_factor = unit_to_nm(attrs.get("unit"))
        fitted = _fit(tuple(v * unit_factor for v in values), ndim, 1.0)
        if fitted is not None and all(v > 0 for v in fitted):
            return fitted
    return None


def offset_from_attrs(attrs: Mapping[str, Any], ndim: int) -> tuple[float, ...] | None:
    """Offset (world position of voxel 0) in nm from attributes, or ``None``."""
    for key, factor in _OFFSET_KEYS:
        if key in attrs:
            raw = attrs[key]
            seq = [raw] * ndim if isinstance(raw, (int, float)) else raw
            try:
                values = _as_floats(list(seq), len(seq))
            except TypeError:
                continue
            fitted = _fit(tuple(v * factor for v in values) if values else None, ndim, 0.0)
            if fitted is not None:
                return fitted
    return None


def relative_spacing(voxel_size_nm: Any) -> tuple[float, float, float]:
    """Each axis's voxel size over the finest axis's (1 everywhere for isotropic data).

    Why: distances and smoothing in the fill, the contact evidence and the split's watershed
    count the finest axis's voxels, so serial-section EM (e.g. 40 x 8 x 8 nm) is neither blurred
    across sections nor measured in section counts. Anything but three positive sizes gives 1s.
    """
    try:
        v = [float(x) for x in voxel_size_nm]
    except (TypeError, ValueError):
        return (1.0, 1.0, 1.0)
    if len(v) != 3 or not all(0 < x < float("inf") for x in v):
        return (1.0, 1.0, 1.0)
    return (v[0] / min(v), v[1] / min(v), v[2] / min(v))
