"""Volume I/O: open any EM volume lazily with its voxel size, and write OME-Zarr 0.5 pyramids."""

from napari_connectome.volumes.ome_zarr_writer import (
    OmeZarrWriter,
    build_pyramid,
    create_ome_zarr,
    iter_blocks,
    write_ome_zarr,
)
from napari_connectome.volumes.opening import discover_volumes, open_volume
from napari_connectome.volumes.sources import parse_source
from napari_connectome.volumes.volume import (
    Volume,
    check_label_dtype,
    dtype_looks_like_labels,
    require_3d,
)

__all__ = [
    "OmeZarrWriter",
    "Volume",
    "build_pyramid",
    "check_label_dtype",
    "create_ome_zarr",
    "discover_volumes",
    "dtype_looks_like_labels",
    "iter_blocks",
    "open_volume",
    "parse_source",
    "require_3d",
    "write_ome_zarr",
]
