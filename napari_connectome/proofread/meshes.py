"""Meshes of a proofreading session's segments (the 3D view and mesh export).

:func:`mesh_request` snapshots what a mesh needs from the session (the segment's fragment ids,
box and size, the fragment pyramid, the volume's version) on the calling thread; :func:`build_mesh`
can then run in any thread while the session goes on editing, and caches its result under a key
that changes whenever the segment's fragments or the voxels change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.meshing import Mesh, MeshCache, empty_mesh, ids_digest, mesh_segment
from napari_connectome.meshing.formats import write_meshes

DEFAULT_CACHE = MeshCache()  # shared by every session of the process (keys name the project)


@dataclass(frozen=True)
class MeshRequest:
    """Everything needed to mesh one segment, independent of later edits."""

    segment: int
    ids: np.ndarray
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    voxels: int
    levels: list[tuple[Any, tuple[int, int, int]]] = field(repr=False)
    voxel_size_nm: tuple[float, float, float]
    key: tuple
    options: dict[str, Any] = field(default_factory=dict)


def fragment_levels(session: Any) -> list[tuple[Any, tuple[int, int, int]]]:
    """The session's fragment pyramid, level 0 first (a single level when it has none)."""
    levels = getattr(session, "fragment_levels", None)
    return list(levels) if levels else [(session.fragments, (1, 1, 1))]


def mesh_request(session: Any, segment: int, **options: Any) -> MeshRequest:
    """Snapshot what meshing ``segment`` needs (cheap: a table lookup). ``options`` go to
    :func:`napari_connectome.meshing.mesh_segment` (``level``, ``max_vertices``, ``smooth``...)."""
    seg = int(segment)
    info = session.segment_info(seg)  # refuses a segment that does not exist
    ids = np.sort(session.table.frag_ids[session.table.rows_of(seg)])
    version = (getattr(session, "volume_version", 0), _overlay_version(session))
    source = (str(getattr(session, "project", "")), str(session.meta.get("fingerprint", "")))
    key = (source, version, seg, ids_digest(ids), tuple(sorted(options.items())))
    return MeshRequest(
        seg, ids, info.bbox_lo, info.bbox_hi, int(info.size), fragment_levels(session),
        tuple(float(v) for v in session.voxel_size_nm), key, dict(options),
    )  # fmt: skip


def _overlay_version(session: Any) -> int:
    overlay = getattr(session, "overlay", None)
    return int(getattr(overlay, "version", 0)) if overlay is not None else 0


def build_mesh(request: MeshRequest, cache: MeshCache | None = DEFAULT_CACHE) -> Mesh:
    """The mesh of a request, from the cache when it was made before (safe in a worker thread)."""
    if cache is not None and (hit := cache.get(request.key)) is not None:
        return hit
    if request.voxels == 0 or len(request.ids) == 0:
        mesh = empty_mesh(request.segment)
    else:
        mesh = mesh_segment(
            request.levels, request.ids, request.lo, request.hi, request.voxel_size_nm,
            voxels=request.voxels, segment=request.segment, **request.options,
        )  # fmt: skip
    if cache is not None:
        cache.put(request.key, mesh)
    return mesh


def segment_mesh(
    session: Any, segment: int, *, cache: MeshCache | None = DEFAULT_CACHE, **options: Any
) -> Mesh:
    """The mesh of one segment of an open session (vertices z, y, x in nm)."""
    return build_mesh(mesh_request(session, segment, **options), cache)


def export_segment_meshes(
    session: Any,
    segments: Sequence[int],
    dest: str | os.PathLike,
    fmt: str = "ply",
    *,
    overwrite: bool = False,
    cache: MeshCache | None = DEFAULT_CACHE,
    **options: Any,
) -> Path:
    """Write the meshes of ``segments`` into a new folder (see
    :func:`napari_connectome.meshing.write_meshes`)."""
    from napari_connectome.errors import UserInputError

    if not segments:
        raise UserInputError("no segments to export; select or name at least one")
    from napari_connectome.proofread.reference import project_inputs
    from napari_connectome.volumes.output_safety import refuse_overlap

    # never into (or around) the project or the data it refers to
    refuse_overlap(dest, [str(session.project), *project_inputs(session.project, session.meta)])
    requests = [mesh_request(session, s, **options) for s in segments]  # refuse unknown ids first
    return write_meshes([build_mesh(r, cache) for r in requests], dest, fmt, overwrite=overwrite)
