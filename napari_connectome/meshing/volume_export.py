"""Meshes of selected or all segments of a segmentation volume, for other viewers, on Dask.

One pass finds each segment's box and voxel count (:mod:`.blockwise`; a region graph is used when
there is one); then one task per group of segments meshes each from the pyramid level that keeps
its shape (:func:`napari_connectome.meshing.mesh_segment`) and writes its files straight into the
new folder, so no task holds more than its own segments' meshes and the driver none.

Where vertices land: neuroglancer and WebKnossos put voxel ``i`` at ``[i, i + 1) * voxel size``
(plus the volume's offset), so precomputed meshes are shifted by half a voxel from napari's
convention (voxel centre ``i`` at ``i * voxel size``), which PLY and OBJ keep.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.meshing.blockwise import level_factors, run_tasks, stats_for
from napari_connectome.meshing.build import Mesh, mesh_segment
from napari_connectome.meshing.formats import (
    FORMATS,
    check_mesh_dest,
    commit_mesh_folder,
    new_mesh_folder,
    write_obj,
    write_ply,
    write_precomputed_info,
    write_precomputed_segment,
)
from napari_connectome.progress import ProgressCallback

SEGMENTS_PER_TASK = 32


@dataclass(frozen=True)
class ExportSummary:
    dest: Path
    segments: int
    empty: int  # segments whose mesh had no faces (none at the levels read)
    vertices: int
    faces: int
    too_large: tuple[int, ...] = ()  # segments whose box no level fits the read budget of


def spatial_placement(volume: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(voxel size, offset) in nm of a 3D volume's z, y, x axes."""
    idx = [i for i, a in enumerate(volume.axes) if a in "zyx"]
    return (
        tuple(float(volume.voxel_size_nm[i]) for i in idx),
        tuple(float(volume.offset_nm[i]) for i in idx),
    )


def volume_levels(volume: Any) -> list[tuple[Any, tuple[int, int, int]]]:
    """The segmentation's pyramid as ``(array, factors vs level 0)``."""
    from napari_connectome.meshing.blockwise import Lazy

    shape0 = volume.multiscale[0].shape
    # wrapped: a task reads only its segments' boxes (see blockwise.Lazy)
    return [(Lazy(arr), level_factors(shape0, arr.shape)) for arr in volume.multiscale]


def _mesh_group(
    levels: list,
    rows: dict[str, np.ndarray],
    voxel_size: tuple[float, ...],
    shift: np.ndarray,
    folder: str,
    fmt: str,
    options: dict[str, Any],
) -> tuple[int, int, int, int, list[int]]:
    """Mesh and write a group of segments; returns (segments, empty, vertices, faces, too large
    ids): a segment no pyramid level can read within the budget is left out, not the export."""
    out = Path(folder)
    empty = nv = nf = 0
    too_large: list[int] = []
    for sid, count, lo, hi in zip(rows["id"], rows["count"], rows["lo"], rows["hi"]):
        try:
            m = mesh_segment(
                levels, [int(sid)], lo, hi, voxel_size, voxels=int(count), segment=int(sid),
                **options,
            )  # fmt: skip
        except UserInputError:
            if "too large to mesh" not in str(sys.exc_info()[1]):
                raise
            too_large.append(int(sid))
            continue
        if len(m.faces) == 0:
            empty += 1
            continue
        m = Mesh((m.vertices + shift).astype(np.float32), m.faces, m.segment, m.level, m.factors)
        if fmt == "precomputed":
            write_precomputed_segment(out, m)
        else:
            (write_ply if fmt == "ply" else write_obj)(out / f"{m.segment}.{fmt}", m)
        nv, nf = nv + len(m.vertices), nf + len(m.faces)
    return len(rows["id"]) - len(too_large), empty, nv, nf, too_large


def export_volume_meshes(
    volume: Any,
    dest: str | os.PathLike,
    *,
    segments: Sequence[int] | None = None,
    fmt: str = "precomputed",
    overwrite: bool = False,
    region_graph: str | os.PathLike | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> ExportSummary:
    """Write the meshes of ``segments`` (None: every segment) of a 3D segmentation ``volume``
    into the new folder ``dest`` (``precomputed``: neuroglancer's legacy format; ``ply``,
    ``obj``). ``options`` go to :func:`~napari_connectome.meshing.mesh_segment` (``level``,
    ``max_vertices``, ``smooth``)."""
    import dask

    from napari_connectome.volumes import require_3d
    from napari_connectome.volumes.output_safety import refuse_overlap

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UserInputError(f"unknown mesh format {fmt!r}; use one of {', '.join(FORMATS)}")
    require_3d(volume, "meshing")
    if len(volume.axes) != 3:
        raise UserInputError(f"{volume.source} has channels ({volume.axes}); give one label volume")
    dest = Path(dest)
    refuse_overlap(dest, [str(volume.source)])
    check_mesh_dest(dest, overwrite)
    stats = stats_for(
        volume, segments, region_graph=region_graph, client=client, workers=workers,
        progress=progress,
    )  # fmt: skip
    if segments is not None and not len(stats["id"]):
        raise UserInputError("no segments to export; name at least one")
    voxel_size, offset = spatial_placement(volume)
    shift = np.asarray(offset, np.float64)
    if fmt == "precomputed":
        shift = shift + 0.5 * np.asarray(voxel_size)
    levels = volume_levels(volume)
    tmp = new_mesh_folder(dest)
    try:
        if fmt == "precomputed":
            write_precomputed_info(tmp)
        n = len(stats["id"])
        tasks = [
            dask.delayed(_mesh_group, pure=False)(
                levels,
                {k: v[i : i + SEGMENTS_PER_TASK] for k, v in stats.items()},
                voxel_size,
                shift,
                str(tmp),
                fmt,
                dict(options),
            )
            for i in range(0, n, SEGMENTS_PER_TASK)
        ]
        done = run_tasks(tasks, client=client, workers=workers, progress=progress, message="meshes")
        commit_mesh_folder(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = np.asarray([d[:4] for d in done], np.int64).sum(axis=0) if done else np.zeros(4, int)
    too_large = tuple(sorted(i for d in done for i in d[4]))
    if too_large:
        warnings.warn(
            f"{len(too_large)} segment(s) are too large to mesh at any level of "
            f"{volume.source} and were left out ({', '.join(map(str, too_large[:10]))}"
            f"{', ...' if len(too_large) > 10 else ''}); give the segmentation a pyramid "
            "(napari-connectome convert) to mesh them",
            DataWarning,
            stacklevel=2,
        )
    return ExportSummary(
        dest, int(total[0]), int(total[1]), int(total[2]), int(total[3]), too_large
    )


def read_precomputed_mesh(folder: str | os.PathLike, segment: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertices x y z float32 nm, faces uint32) of one segment of a legacy precomputed mesh
    folder, read as neuroglancer does: the manifest ``<id>:0`` names fragment files, each
    ``uint32 n`` + ``n`` float32 x y z + uint32 triangle indices; fragments are concatenated."""
    import json

    folder = Path(folder)
    info = json.loads((folder / "info").read_text())
    if info.get("@type") != "neuroglancer_legacy_mesh":
        raise UserInputError(f"{folder} is not a neuroglancer legacy mesh folder")
    manifest = json.loads((folder / f"{int(segment)}:0").read_text())
    verts, faces, base = [], [], 0
    for name in manifest["fragments"]:
        data = (folder / name).read_bytes()
        nv = int(np.frombuffer(data[:4], "<u4")[0])
        v = np.frombuffer(data[4 : 4 + 12 * nv], "<f4").reshape(nv, 3)
        rest = data[4 + 12 * nv :]
        if len(rest) % 12:
            raise UserInputError(f"{folder / name}: the triangle indices are truncated")
        f = np.frombuffer(rest, "<u4").reshape(-1, 3)
        verts.append(v)
        faces.append(f + base)
        base += nv
    return np.concatenate(verts), np.concatenate(faces).astype(np.uint32)
