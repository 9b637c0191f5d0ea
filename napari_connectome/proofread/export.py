"""Export: the table applied blockwise to the fragments, written to a NEW OME-Zarr (never over an
input).

The work is a dask ``map_blocks`` over the fragment chunks with a frozen copy of the table, so
memory stays at a few chunks whatever the volume size. The shared writer
``napari_connectome.volumes.write_ome_zarr`` is used when present; otherwise a single-scale
OME-Zarr 0.5 labels image is written here, through a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connectome.errors import UserInputError

if TYPE_CHECKING:
    from napari_connectome.proofread.session import ProofreadSession


def segmentation_dask(session: ProofreadSession) -> Any:
    """A lazy dask array of segment ids (a snapshot of the table, so later edits do not leak in)."""
    import dask.array as da

    from napari_connectome.volumes.lazy import dask_chunks

    table = session.table.copy()
    table._rebuild_lut()
    src = session.fragments
    chunks = dask_chunks(tuple(src.shape), tuple(src.chunks), 8, target=16 * 2**20)
    frags = da.from_array(src, chunks=chunks, asarray=False, lock=False)
    return frags.map_blocks(table.apply, dtype=np.uint64)


def _check_dest(session: ProofreadSession, dest: Path, overwrite: bool) -> None:
    """Never into (or around) the project or what it refers to (the fragments, the image, a region
    graph elsewhere), never over something napari-connectome did not write."""
    from napari_connectome.proofread.reference import project_inputs
    from napari_connectome.volumes.atomic import check_destination
    from napari_connectome.volumes.output_safety import refuse_overlap

    project = session.project.resolve()
    d = dest.resolve()
    if d == project or project in d.parents or d in project.parents:
        raise UserInputError(
            f"{dest} is inside (or contains) the proofreading project; choose another folder"
        )
    # the same with links resolved, and the sources the project refers to
    refuse_overlap(dest, [str(session.project), *project_inputs(session.project, session.meta)])
    check_destination(dest, overwrite)


def _write_minimal_ome_zarr(data: Any, dest: Path, voxel_size_nm, progress) -> None:
    import dask.array as da
    import zarr

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [
                {
                    "name": dest.stem,
                    "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [float(v) for v in voxel_size_nm]}
                            ],
                        }
                    ],
                }
            ],
            "image-label": {"version": "0.5"},
        }
        from napari_connectome.volumes.output_safety import ownership_marker

        root.attrs.update(ownership_marker("proofread export"))
        chunks = tuple(c[0] for c in data.chunks)
        arr = root.create_array(
            "0", shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0
        )
        blocks = list(np.ndindex(*data.numblocks))
        for i, idx in enumerate(blocks):
            sl = tuple(slice(sum(c[:j]), sum(c[: j + 1])) for c, j in zip(data.chunks, idx))
            arr[sl] = data.blocks[idx].compute(scheduler="synchronous")
            if progress:
                progress(i + 1, len(blocks), "exporting")
        del da
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_segmentation(
    session: ProofreadSession,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: Any = None,
) -> Path:
    """Write the current segmentation to ``dest`` (a new OME-Zarr); returns the path."""
    dest = Path(dest)
    _check_dest(session, dest, overwrite)
    data = segmentation_dask(session)
    try:
        from napari_connectome.volumes import write_ome_zarr
    except ImportError:
        write_ome_zarr = None
    if write_ome_zarr is not None:
        write_ome_zarr(
            data,
            dest,
            voxel_size_nm=session.voxel_size_nm,
            labels=True,
            overwrite=overwrite,
            progress=progress,
        )
    else:
        _write_minimal_ome_zarr(data, dest, session.voxel_size_nm, progress)
    return dest
