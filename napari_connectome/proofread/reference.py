"""Projects by reference (format 2): where the supervoxels live, never a copy of their voxels.

A project made from a path (a job's OME-Zarr output, an HDF5 dataset, a zarr on the cluster as
``ssh://PROFILE/path``) stores that path, the segmentation's fingerprint and where its region
graph is: the one a job wrote beside its output (``OUTPUT/region_graph``) is reused as is, else
the blockwise pass (napari_connectome.graph, on Dask) computes it into the project. Making a
project from a finished job's output therefore reads metadata and a few chunks, whatever its
size. Layout::

    PROJECT/project.json     format 2: fragments / image sources, fingerprint, region graph
    PROJECT/edits.sqlite     the durable edit log (see log.py); watershed splits keep their
                             voxel masks here, applied on top of the source when read (overlay.py)
    PROJECT/region_graph/    only when the source had none beside it
    PROJECT/fragments.ome.zarr, PROJECT/image.ome.zarr
                             only for arrays given in memory (numpy, dask), which have no address

The source is only ever opened read-only. An array given in memory is written once into the
project (it has nowhere else to live); everything else is referred to.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress

FORMAT_VERSION = 2
PROJECT_JSON = "project.json"
REGION_GRAPH = "region_graph"
OWN_FRAGMENTS = "fragments.ome.zarr"
OWN_IMAGE = "image.ome.zarr"


def _is_remote(text: str) -> bool:
    return text.startswith("ssh://")


def source_text(source: str | os.PathLike) -> str:
    """The text a project stores for a source: remote URLs as given, local paths absolute (links
    resolved), keeping an HDF5 ``:dataset`` suffix."""
    text = os.fspath(source)
    if _is_remote(text):
        return text
    from napari_connectome.volumes.sources import parse_source

    src = parse_source(text)
    root = Path(os.path.realpath(src.path))
    if src.format == "hdf5":
        return f"{root}:{src.inner}" if src.inner else str(root)
    return f"{root}/{src.inner.strip('/')}" if src.inner else str(root)


def resolve_source(project: Path, entry: dict[str, Any]) -> str:
    """The source text of a ``project.json`` entry; a project-relative one must stay inside."""
    text = str(entry["source"])
    if not entry.get("in_project"):
        return text
    root = Path(os.path.realpath(project))
    path = Path(os.path.realpath(root / text))
    if not path.is_relative_to(root):
        raise UserInputError(
            f"{project / PROJECT_JSON} names a source outside the project ({text}); the file was "
            "edited by hand or damaged: make the project again"
        )
    return str(path)


def open_source_volume(text: str, what: str) -> Any:
    """Open a referenced volume (read-only) with a message that says what to do if it is gone."""
    from napari_connectome.volumes import open_volume

    try:
        return open_volume(text)
    except UserInputError as exc:
        raise UserInputError(
            f"the project's {what} {text} cannot be opened: {exc} A project refers to its data "
            "where it lives: put it back there (or make a new project)."
        ) from None


def region_graph_beside(text: str) -> Path | str | None:
    """Where a job (or an earlier import) keeps the region graph of a zarr segmentation:
    ``ROOT/region_graph`` beside the store, locally or on the cluster (``ssh://``)."""
    if _is_remote(text):
        from napari_connectome.volumes.remote import open_store, parse_ssh_url

        loc = parse_ssh_url(text)
        root = text[: len(text) - len(loc.inner)].rstrip("/") if loc.inner else text.rstrip("/")
        found = open_store(loc).read_file(f"{REGION_GRAPH}/region_graph.json")
        return f"{root}/{REGION_GRAPH}" if found is not None else None
    from napari_connectome.volumes.sources import parse_source

    src = parse_source(text)
    if src.format not in ("zarr", "tiled"):
        return None
    cand = Path(src.path) / REGION_GRAPH
    return cand if (cand / "region_graph.json").is_file() else None


def _check_inputs(fragments: Any, image: Any) -> None:
    shape = tuple(getattr(fragments, "shape", ()))
    if len(shape) != 3:
        raise UserInputError(f"fragments must be a 3D (z, y, x) array, got shape {shape or None}")
    dt = np.dtype(fragments.dtype)
    if not np.issubdtype(dt, np.integer):
        raise UserInputError(f"fragments must hold integer ids, got dtype {dt}")
    if image is not None and tuple(image.shape) != shape:
        raise UserInputError(
            f"image shape {tuple(image.shape)} differs from fragments shape {shape}"
        )


def _write_own_copy(array: Any, dest: Path, labels: bool, voxel_size_nm, chunks) -> None:
    from napari_connectome.volumes import write_ome_zarr

    data = np.asarray(array) if isinstance(array, np.ndarray) else array
    if labels:
        signed = np.issubdtype(np.dtype(data.dtype), np.signedinteger)
        if signed and data.size and int(np.asarray(data).min()) < 0:
            raise UserInputError("fragment ids must not be negative")
        data = data.astype(np.uint64)
    write_ome_zarr(
        data, dest, voxel_size_nm=voxel_size_nm, labels=labels, chunks=chunks, name=dest.stem
    )


def create_project(
    project: str | os.PathLike,
    fragments: Any,
    *,
    image: Any | None = None,
    voxel_size_nm: Sequence[float] | None = None,
    chunks: int | Sequence[int] = 64,
    region_graph: str | os.PathLike | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Make a project that refers to ``fragments`` (and ``image``); returns its folder.

    ``fragments``/``image``: a source text (path, ``file.h5:dataset``, ``ssh://PROFILE/path``) to
    refer to, or an in-memory array (numpy, dask, zarr, h5py) to copy into the project.
    ``region_graph``: an existing region-graph store of this segmentation (default: the one beside
    the source, else computed into the project on ``client``, a Dask client, or a local cluster).
    The folder is built under a hidden name and renamed at the end: a failure leaves nothing
    behind that blocks a rerun.
    """
    from napari_connectome.graph import RegionGraph, compute_region_graph
    from napari_connectome.volumes.output_safety import refuse_overlap

    progress = progress or no_progress
    dest = Path(project)
    given = [g for g in (fragments, image, region_graph) if isinstance(g, (str, os.PathLike))]
    refuse_overlap(dest, [os.fspath(g) for g in given if not _is_remote(os.fspath(g))])
    if dest.is_symlink():
        raise UserInputError(
            f"{dest} is a link (to {os.readlink(dest)}): a project is made as a new folder; "
            "choose a path that does not exist yet"
        )
    if dest.exists() and not overwrite:
        raise UserInputError(
            f"{dest} already exists; choose a new project folder or pass overwrite"
        )
    if not dest.parent.is_dir():
        raise UserInputError(f"folder {dest.parent} does not exist")
    if dest.exists() and not (dest / PROJECT_JSON).is_file():
        raise UserInputError(
            f"{dest} exists and is not a proofreading project: refusing to replace it even with "
            "overwrite; choose a new project folder"
        )
    tmp = dest.parent / f".{dest.name}.creating"
    if tmp.exists() or tmp.is_symlink():
        _remove_stale_build(tmp)
    tmp.mkdir()
    try:
        size = None if voxel_size_nm is None else tuple(float(v) for v in voxel_size_nm)
        entries: dict[str, Any] = {}
        vols: dict[str, Any] = {}
        for what, given, own in (
            ("fragments", fragments, OWN_FRAGMENTS),
            ("image", image, OWN_IMAGE),
        ):
            if given is None:
                continue
            if isinstance(given, (str, os.PathLike)):
                text = source_text(given)
                entries[what] = {"source": text}
                vols[what] = open_source_volume(text, what)
            else:
                if what == "fragments":
                    _check_inputs(given, None)
                _write_own_copy(given, tmp / own, what == "fragments", size or (1.0,) * 3, chunks)
                entries[what] = {"source": own, "in_project": True}
                vols[what] = open_source_volume(str(tmp / own), what)
        frag_vol = vols["fragments"]
        _check_inputs(frag_vol.data, vols["image"].data if "image" in vols else None)
        if size is None:
            size = tuple(float(v) for v in frag_vol.voxel_size_nm)
        graph_path: Path | str | None = None
        if region_graph is not None:
            graph_path = region_graph if _is_remote(str(region_graph)) else Path(region_graph)
        elif not entries["fragments"].get("in_project"):
            graph_path = region_graph_beside(entries["fragments"]["source"])
        if graph_path is None:
            progress(0, 1, "region graph")
            compute_region_graph(
                frag_vol,
                tmp / REGION_GRAPH,
                image=vols.get("image"),
                client=client,
                progress=progress,
            )
            graph_entry = {"path": REGION_GRAPH, "in_project": True}
            graph = RegionGraph.open(tmp / REGION_GRAPH)
        else:
            graph = RegionGraph.open(graph_path)
            remote = _is_remote(str(graph_path))
            graph_entry = {"path": str(graph_path) if remote else os.path.realpath(graph_path)}
        check_graph_matches(graph, frag_vol, graph_path or "the computed region graph")
        meta = {
            "format_version": FORMAT_VERSION,
            "created": time.time(),
            "voxel_size_nm": list(size),
            "shape": list(frag_vol.shape),
            "fragments": entries["fragments"],
            "image": entries.get("image"),
            "region_graph": graph_entry,
            "fingerprint": graph.fingerprint,
            "has_image": "image" in entries,
        }
        (tmp / PROJECT_JSON).write_text(json.dumps(meta, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _remove_stale_build(tmp: Path) -> None:
    """Remove what a killed earlier import left at ``tmp``, and nothing else: a link, a file or a
    folder holding anything but a project's own files is someone else's and is refused."""
    ours = {PROJECT_JSON, REGION_GRAPH, OWN_FRAGMENTS, OWN_IMAGE}
    if tmp.is_symlink() or not tmp.is_dir() or not set(os.listdir(tmp)) <= ours:
        raise UserInputError(
            f"{tmp} is in the way of the project being built there and is not what an earlier "
            "import left behind: move or delete it yourself, or choose another project folder"
        )
    shutil.rmtree(tmp)


def check_graph_matches(graph: Any, volume: Any, where: Any) -> None:
    """A region graph belongs to one segmentation: same shape, dtype and chunk grid."""
    meta = graph.meta
    want = (list(volume.shape), str(volume.dtype), [int(c) for c in volume.storage_chunks])
    have = (list(meta["shape"]), str(meta["dtype"]), [int(c) for c in meta["chunks"]])
    if want != have:
        raise UserInputError(
            f"the region graph {where} belongs to another segmentation (shape, dtype, chunks "
            f"{have} vs {want}); compute it for this one (`napari-connectome graph`) or leave "
            "it out"
        )


def graph_path(project: Path, meta: dict[str, Any]) -> Path | str:
    entry = meta["region_graph"]
    if entry.get("in_project"):
        root = Path(os.path.realpath(project))
        path = Path(os.path.realpath(root / entry["path"]))
        if not path.is_relative_to(root):
            raise UserInputError(
                f"{project / PROJECT_JSON} names a region graph outside the project; make the "
                "project again"
            )
        return path
    return entry["path"] if _is_remote(entry["path"]) else Path(entry["path"])


def project_inputs(project: Path, meta: dict[str, Any]) -> list[str]:
    """What a format-2 project reads on this machine: its fragments and image sources and a region
    graph kept outside it. An export or mesh folder may not be, lie inside or contain any of them
    (see ``volumes.output_safety.refuse_overlap``); sources on a cluster are left out."""
    if int(meta.get("format_version", 1)) < 2:
        return []
    texts = [
        resolve_source(project, meta[what]) for what in ("fragments", "image") if meta.get(what)
    ]
    if meta.get("region_graph"):
        texts.append(str(graph_path(project, meta)))
    return [t for t in texts if not _is_remote(t)]
