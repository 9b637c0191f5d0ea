"""Surface meshes of segments: built from the coarsest pyramid level that keeps a segment's shape,
cached, and written as PLY, OBJ or neuroglancer precomputed. No napari or Qt in here.

Start with :func:`mesh_segment` (plain arrays and ids) or, for a proofreading project,
:func:`napari_connectome.proofread.meshes.segment_mesh`. Whole segmentations for other viewers:
:func:`~.volume_export.export_volume_meshes` (meshes of selected or all segments, on Dask) and
:func:`~.skeletons.skeletonize_volume` (SWC skeletons with kimimaro, blocks stitched).
"""

from napari_connectome.meshing.build import Mesh, empty_mesh, mesh_segment, normalise_levels
from napari_connectome.meshing.cache import MeshCache, ids_digest
from napari_connectome.meshing.formats import (
    FORMATS,
    read_ply,
    write_meshes,
    write_obj,
    write_ply,
    write_precomputed,
)

__all__ = [
    "FORMATS",
    "Mesh",
    "MeshCache",
    "empty_mesh",
    "ids_digest",
    "mesh_segment",
    "normalise_levels",
    "read_ply",
    "write_meshes",
    "write_obj",
    "write_ply",
    "write_precomputed",
]
