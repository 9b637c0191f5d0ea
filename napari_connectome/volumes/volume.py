"""The :class:`Volume` record every reader returns, and checks other modules run on it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

SPATIAL_AXES = "zyx"


@dataclass
class Volume:
    """One lazily opened array with the physical placement napari and the writers need.

    ``data`` is a dask array at the opened level; ``multiscale`` lists that level and every coarser
    one (``[data]`` for a single-scale source), so napari can show it as a multiscale layer.
    """

    name: str
    data: Any
    multiscale: list[Any]
    voxel_size_nm: tuple[float, ...]
    offset_nm: tuple[float, ...]
    axes: str
    is_labels: bool
    source: str
    level_voxel_sizes: list[tuple[float, ...]] = field(default_factory=list)
    format: str = ""
    level_offsets_nm: list[tuple[float, ...]] = field(default_factory=list)
    # chunk shape on disk (the dask chunks are whole multiples of it)
    storage_chunks: tuple[int, ...] = ()
    # the highest segment id, where the metadata says it (WebKnossos' largestSegmentId)
    largest_segment_id: int | None = None

    def __post_init__(self) -> None:
        if not self.storage_chunks:
            self.storage_chunks = tuple(int(c[0]) if c else 0 for c in self.data.chunks)
        if not self.level_voxel_sizes:
            self.level_voxel_sizes = [tuple(self.voxel_size_nm)]
        if not self.level_offsets_nm:
            self.level_offsets_nm = [tuple(self.offset_nm)] * len(self.level_voxel_sizes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def spatial_axes(self) -> str:
        """The axes among z, y, x that this volume has, in its own order."""
        return "".join(a for a in self.axes if a in SPATIAL_AXES)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``napari-connectome info`` prints)."""
        out = {
            "source": self.source,
            "name": self.name,
            "format": self.format,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "chunks": [int(c) for c in self.storage_chunks],
            "axes": self.axes,
            "voxel_size_nm": [float(v) for v in self.voxel_size_nm],
            "offset_nm": [float(v) for v in self.offset_nm],
            "is_labels": bool(self.is_labels),
            "scales": [
                {"shape": [int(s) for s in arr.shape], "voxel_size_nm": [float(v) for v in vs]}
                for arr, vs in zip(self.multiscale, self.level_voxel_sizes)
            ],
        }
        if self.largest_segment_id is not None:
            out["largest_segment_id"] = int(self.largest_segment_id)
        return out


IMAGE_WORDS = frozenset({"raw", "em", "image", "img", "gray", "grey", "grayscale", "greyscale"})
LABEL_WORDS = frozenset({"seg", "segmentation", "label", "labels", "ids", "gt", "mask", "neuron"})


def dtype_looks_like_labels(dtype: Any, name: str = "") -> bool:
    """Fallback when metadata is silent: unsigned integers wider than 8 bits are label ids,
    except 16-bit data whose name has an image word in it (``volumes/raw``, ``em_16bit.tif``):
    many microscopes write 16-bit EM, and no segmentation is called raw."""
    dt = np.dtype(dtype)
    if dt.kind != "u" or dt.itemsize == 1:
        return False
    return not (dt.itemsize == 2 and named_as_image(name))


def named_as_image(name: str) -> bool:
    """Whether the last part of ``name`` holds an image word and no label word."""
    last = str(name).replace("\\", "/").rstrip("/").split("/")[-1].lower()
    words = set(re.split(r"[^a-z0-9]+", last))
    return bool(words & IMAGE_WORDS) and not words & LABEL_WORDS


def require_3d(volume: Volume, what: str = "this operation") -> Volume:
    """Refuse a volume without z, y and x axes (a 2D image, a single slice) with a clear message."""
    spatial = volume.spatial_axes
    if len(spatial) != 3 or volume.data.ndim < 3:
        raise UserInputError(
            f"{volume.source} is {volume.data.ndim}D (axes '{volume.axes}', shape {volume.shape}), "
            f"but {what} needs a 3D volume with z, y and x axes; give a 3D dataset or a stack "
            "of slices."
        )
    return volume


def check_label_dtype(dtype: Any, source: str) -> None:
    """Label ids must be unsigned integers: float or signed data is an image, not a segmentation."""
    dt = np.dtype(dtype)
    if dt.kind not in "ub":
        raise UserInputError(
            f"{source} has dtype {dt}, but labels must be unsigned integers (uint8..uint64); "
            "convert it without --labels, or cast the segmentation to an unsigned type first."
        )


def background_to_zero(volume: Volume, value: int) -> Volume:
    """``volume`` with ``value`` read as 0 (unlabelled), lazily, block by block: other labs mark
    voxels without a label with -1 (signed) or 2**64 - 1 (CREMI's -1 as uint64), where we count
    0. A signed volume comes out as the unsigned type of its width; any other negative id is
    refused where it is read."""
    import dataclasses

    dt = volume.dtype
    if dt.kind not in "iu":
        raise UserInputError(
            f"{volume.source} has dtype {dt}: --background maps a label value, so give labels"
        )
    info = np.iinfo(dt)
    if not info.min <= value <= info.max:
        raise UserInputError(
            f"--background {value} cannot occur in {volume.source} ({dt}, {info.min}..{info.max})"
        )
    out = np.dtype(f"u{dt.itemsize}")

    def block(b: np.ndarray) -> np.ndarray:
        b = np.where(b == value, 0, b)
        if dt.kind == "i" and b.size and int(b.min()) < 0:
            raise UserInputError(
                f"{volume.source} holds negative ids ({int(b.min())}) besides the background "
                f"{value}: labels must be 0 (unlabelled) or more"
            )
        return b.astype(out, copy=False)

    data = volume.data.map_blocks(block, dtype=out)
    levels = [
        data if a is volume.data else a.map_blocks(block, dtype=out) for a in volume.multiscale
    ]
    return dataclasses.replace(volume, data=data, multiscale=levels or [data], is_labels=True)
