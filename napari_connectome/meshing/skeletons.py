"""Skeletons of selected or all segments, as SWC files, blockwise on Dask with kimimaro (TEASAR).

How blocks are stitched (kimimaro's own recipe, as igneous runs it): each block is read with one
voxel of overlap on its high faces and skeletonized with ``fix_borders=True``, which puts a vertex
at the centre of every place a segment crosses a block face. Neighbouring blocks therefore share
those vertices exactly; a segment's pieces are merged (``Skeleton.simple_merge``), duplicate
vertices fused, and ``kimimaro.postprocess`` removes dust and loops, joins what lies closer than
the pieces' radii, and trims ticks. Coordinates are x, y, z in nm, with voxel ``i`` at
``(i + 0.5) * voxel size`` plus the volume's offset (neuroglancer's and WebKnossos' convention).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.meshing.blockwise import Lazy, run_tasks
from napari_connectome.meshing.formats import check_mesh_dest, commit_mesh_folder, new_mesh_folder
from napari_connectome.progress import ProgressCallback

DEFAULT_BLOCK = 256
# kimimaro's TEASAR defaults for neurons at ~nm scale (scale/const in nm of invalidation radius)
TEASAR = {"scale": 1.5, "const": 300, "pdrf_scale": 100000, "pdrf_exponent": 4}


@dataclass(frozen=True)
class SkeletonSummary:
    dest: Path
    segments: int  # SWC files written
    nodes: int


def block_grid(
    shape: Sequence[int], block: Sequence[int]
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(lo, hi) of the blocks covering ``shape`` (z, y, x), hi exclusive, without the overlap."""
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    return [
        (tuple(lo), tuple(min(a + b, s) for a, b, s in zip(lo, block, shape)))
        for lo in itertools.product(*ranges)
    ]


def default_block(storage_chunks: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """About 256 voxels an edge, a whole number of storage chunks."""
    out = []
    for c, s in zip(storage_chunks, shape):
        c = max(1, int(c))
        out.append(min(max(c, (DEFAULT_BLOCK // c) * c), int(s)))
    return tuple(out)  # type: ignore[return-value]


def _skeletonize_block(
    data: Any,
    lo: Sequence[int],
    hi: Sequence[int],
    ids: np.ndarray | None,
    anisotropy_xyz: tuple[float, float, float],
    origin_xyz: np.ndarray,
    teasar: dict[str, Any],
) -> dict[int, Any]:
    """Skeletons of the segments in one block (plus one voxel on its high faces), in nm."""
    import kimimaro

    shape = data.shape
    read_hi = [min(h + 1, s) for h, s in zip(hi, shape)]
    region = tuple(slice(a, b) for a, b in zip(lo, read_hi))
    block = np.asarray(data[region])
    if not block.any():
        return {}
    labels_xyz = np.asfortranarray(block.T)  # kimimaro's order: x, y, z
    skels = kimimaro.skeletonize(
        labels_xyz,
        teasar_params=teasar,
        anisotropy=anisotropy_xyz,
        object_ids=None if ids is None else [int(i) for i in ids],
        dust_threshold=0,  # a piece of a segment may be small in one block
        progress=False,
        fix_branching=True,
        fix_borders=True,
        parallel=1,
    )
    shift = origin_xyz + np.asarray(lo[::-1], np.float64) * np.asarray(anisotropy_xyz)
    for s in skels.values():
        s.vertices = (s.vertices + shift).astype(np.float32)
    return {int(k): v for k, v in skels.items()}


def merge_pieces(pieces: list[Any], segment: int, dust_nm: float, tick_nm: float) -> Any:
    """One skeleton from a segment's block pieces (see the module docstring)."""
    import kimimaro
    from osteoid import Skeleton

    skel = Skeleton.simple_merge(pieces).consolidate()
    skel.id = int(segment)
    return kimimaro.postprocess(skel, dust_threshold=dust_nm, tick_threshold=tick_nm)


def skeletonize_volume(
    volume: Any,
    dest: str | os.PathLike,
    *,
    segments: Sequence[int] | None = None,
    overwrite: bool = False,
    block_shape: Sequence[int] | None = None,
    dust_nm: float = 0.0,
    tick_nm: float = 0.0,
    teasar: dict[str, Any] | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> SkeletonSummary:
    """Write ``<id>.swc`` for ``segments`` (None: every segment) of a 3D segmentation into the new
    folder ``dest``. ``dust_nm``: drop pieces of less cable length; ``tick_nm``: trim side
    branches shorter than this."""
    import dask

    from napari_connectome.meshing.volume_export import spatial_placement
    from napari_connectome.volumes import require_3d
    from napari_connectome.volumes.output_safety import refuse_overlap

    require_3d(volume, "skeletons")
    if len(volume.axes) != 3:
        raise UserInputError(f"{volume.source} has channels ({volume.axes}); give one label volume")
    dest = Path(dest)
    refuse_overlap(dest, [str(volume.source)])
    check_mesh_dest(dest, overwrite)
    data = volume.data
    shape = tuple(int(s) for s in data.shape)
    if block_shape is None:
        block_shape = default_block(volume.storage_chunks or shape, shape)
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != 3 or min(block_shape) < 8:
        raise UserInputError(f"block shape {block_shape}: give three edges of 8 voxels or more")
    voxel_size, offset = spatial_placement(volume)
    anis = tuple(float(v) for v in voxel_size[::-1])
    origin = np.asarray(offset[::-1], np.float64) + 0.5 * np.asarray(anis)
    ids = None if segments is None else np.unique(np.asarray(segments, np.uint64))
    params = {**TEASAR, **(teasar or {})}
    lazy = Lazy(data)  # each task reads its own block only
    tasks = [
        dask.delayed(_skeletonize_block, pure=False)(lazy, lo, hi, ids, anis, origin, params)
        for lo, hi in block_grid(shape, block_shape)
    ]
    parts = run_tasks(tasks, client=client, workers=workers, progress=progress, message="blocks")
    pieces: dict[int, list[Any]] = {}
    for part in parts:
        for sid, skel in part.items():
            pieces.setdefault(sid, []).append(skel)
    if ids is not None:
        missing = [int(i) for i in ids if int(i) not in pieces]
        if missing:
            raise UserInputError(
                f"segment(s) {', '.join(map(str, missing[:10]))} do not occur in the segmentation"
            )
    tmp = new_mesh_folder(dest)
    nodes = written = 0
    try:
        for sid in sorted(pieces):
            skel = merge_pieces(pieces[sid], sid, dust_nm, tick_nm)
            if len(skel.vertices) == 0:
                continue
            (tmp / f"{sid}.swc").write_text(skel.to_swc())
            nodes += len(skel.vertices)
            written += 1
        commit_mesh_folder(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SkeletonSummary(dest, written, nodes)


def read_swc(path: str | os.PathLike) -> np.ndarray:
    """The nodes of an SWC file as a structured array (id, type, x, y, z, radius, parent)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 7:
            raise UserInputError(f"{path}: an SWC line has 7 fields, not {len(f)}: {line!r}")
        rows.append((int(f[0]), int(f[1]), *map(float, f[2:6]), int(f[6])))
    dt = [("id", "i8"), ("type", "i4"), ("x", "f8"), ("y", "f8"), ("z", "f8"), ("radius", "f8"),
          ("parent", "i8")]  # fmt: skip
    return np.array(rows, dt)
