"""``napari-connectome proofread ...``: make a project from a segmentation, inspect it, export
it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from napari_connectome.cli._args import chunk_edge, nonnegative_int, positive_finite_float
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.errors import UserInputError


def open_array(spec: str) -> tuple[Any, Any]:
    """Open ``PATH[:DATASET]`` (HDF5, zarr, npz, npy) lazily; returns (array, closer)."""
    import numpy as np

    path, _, inner = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"{path} does not exist")
    if not (p.is_file() or p.is_dir()):  # a FIFO would block the reader for ever
        raise UserInputError(
            f"{path} is not a regular file (a FIFO, socket or device): give the file holding "
            "the ids"
        )
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        import h5py

        try:
            f = h5py.File(p, "r")
        except OSError as exc:
            raise UserInputError(
                f"{path} cannot be opened as HDF5 ({exc}); check that it is a complete .h5 file"
            ) from None
        if not inner or inner not in f:
            names = [k for k in f if hasattr(f[k], "shape")]
            f.close()
            raise UserInputError(f"name the dataset: {path}:DATASET, one of {names}")
        return f[inner], f.close
    if suffix == ".npz":
        z = _load_numpy(p, np.load, allow_pickle=False)
        if inner not in z.files:
            raise UserInputError(f"name the array: {path}:NAME, one of {z.files}")
        return _load_numpy(p, z.__getitem__, inner), z.close
    if suffix == ".npy":
        return _load_numpy(p, np.load, mmap_mode="r", allow_pickle=False), lambda: None
    import zarr

    try:
        node = zarr.open(p, mode="r")
        if inner:
            node = node[inner]
        elif hasattr(node, "keys") and "0" in node:
            node = node["0"]  # OME-Zarr: the full-resolution level
    except (OSError, KeyError, ValueError) as exc:  # zarr's own errors are ValueErrors
        raise UserInputError(f"cannot open {spec} as HDF5, npz, npy or zarr: {exc}") from None
    if not hasattr(node, "shape"):
        raise UserInputError(f"{spec} is a zarr group; name the array as {path}:ARRAY")
    return node, lambda: None


def _load_numpy(path: Path, load: Any, *args: Any, **kwargs: Any) -> Any:
    """``load(*args)``, with what numpy says about a damaged or pickled file as a message
    (object arrays are pickles: never loaded, see docs/architecture.md, trust boundaries)."""
    import zipfile

    try:
        return load(*args, **kwargs) if args else load(path, **kwargs)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(
            f"{path} cannot be read as a numpy array ({exc}); save the ids as a plain integer "
            "array (np.save) or give an HDF5/zarr volume"
        ) from None


def _import_input(spec: str | None) -> tuple[Any, Any]:
    """What a project refers to: the SOURCE text for volumes we read lazily (HDF5, zarr, OME-Zarr,
    N5, TIFF, ``ssh://``), or an in-memory array for npy/npz files (copied into the project)."""
    if spec is None:
        return None, lambda: None
    if Path(spec.partition(":")[0]).suffix.lower() in (".npy", ".npz") or spec.endswith(".npy"):
        return open_array(spec)
    return spec, lambda: None


def cmd_import(args: argparse.Namespace) -> int:
    from napari_connectome.proofread import create_project
    from napari_connectome.volumes.output_safety import refuse_overlap

    refuse_overlap(args.project, [args.segmentation, args.image])  # the project is a new folder
    seg, close_seg = _import_input(args.segmentation)
    image, close_img = _import_input(args.image)
    progress, done = cli_progress(args, "import", unit="block")
    client = None
    try:
        if args.scheduler:
            from dask.distributed import Client

            client = Client(args.scheduler, timeout="20s")
        dest = create_project(
            args.project, seg, image=image, voxel_size_nm=args.voxel_size, chunks=args.chunks,
            region_graph=args.region_graph, client=client, progress=progress,
        )  # fmt: skip
    finally:
        done()
        if client is not None:
            client.close()
        close_seg()
        close_img()
    print(f"proofreading project ready: {dest}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from napari_connectome.proofread import ProofreadSession

    with ProofreadSession.open(args.project, read_only=True) as s:
        table = s.segment_table()
        n_frag = len(s.table.frag_ids)
        print(f"{args.project}: shape {s.shape}, {n_frag} fragments, {len(table)} segments")
        print(f"{len(s.undo_stack)} edits applied, {len(s.redo_stack)} undone")
        for h in s.history()[-args.last :]:
            print(f"  #{h.seq:<6} {'   ' if h.applied else '(undone) '}{h.description}")
        for info in sorted(table, key=lambda i: -i.size)[: args.top]:
            when = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(info.last_edit))
                if info.last_edit
                else ""
            )
            flags = ("locked " if info.locked else "") + ("done" if info.done else "")
            print(f"  segment {info.id:<10} {info.size:>12} voxels  {flags:<12} {when}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from napari_connectome.proofread import ProofreadSession

    progress, done = cli_progress(args, "export", unit="chunk")
    try:
        with ProofreadSession.open(args.project, read_only=True) as s:
            dest = s.export(args.dest, overwrite=args.overwrite, progress=progress)
    finally:
        done()
    print(f"segmentation written to {dest}")
    return 0


def cmd_mesh(args: argparse.Namespace) -> int:
    from napari_connectome.proofread import ProofreadSession
    from napari_connectome.proofread.meshes import export_segment_meshes

    options = {} if args.level is None else {"level": args.level}
    with ProofreadSession.open(args.project, read_only=True) as s:
        dest = export_segment_meshes(
            s, args.segments, args.dest, args.format, overwrite=args.overwrite, **options
        )
    print(f"{len(args.segments)} segment mesh(es) written to {dest} ({args.format})")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("proofread", help="proofreading projects: import, info, export, mesh")
    sub = p.add_subparsers(dest="proofread_command", metavar="ACTION", required=True)

    imp = sub.add_parser(
        "import",
        help="make a proofreading project that refers to a segmentation (fragments = segments)",
    )
    imp.add_argument(
        "segmentation", help="PATH[:DATASET] of the ids (HDF5, zarr, OME-Zarr, npz, npy)"
    )
    imp.add_argument("project", help="new project folder to create")
    imp.add_argument(
        "--image", help="PATH[:DATASET] of the EM image (boundary evidence for splits)"
    )
    imp.add_argument(
        "--voxel-size",
        type=positive_finite_float,
        nargs=3,
        default=None,
        metavar=("Z", "Y", "X"),
        help="voxel size in nm, each > 0 (default: the segmentation's own metadata)",
    )
    imp.add_argument(
        "--chunks",
        type=chunk_edge,
        default=64,
        help="chunk edge when an npy/npz array is copied into the project, 8 to 4096 (default 64)",
    )
    imp.add_argument(
        "--region-graph",
        help="an existing region-graph folder of this segmentation (default: the one beside it, "
        "e.g. a job's OUTPUT/region_graph, else computed blockwise into the project)",
    )
    imp.add_argument(
        "--scheduler",
        help="Dask scheduler address for the region-graph pass (default: a local cluster)",
    )
    add_progress_flags(imp)
    imp.set_defaults(func=cmd_import)

    info = sub.add_parser("info", help="segments and edit history of a project (read-only)")
    info.add_argument("project")
    info.add_argument("--top", type=nonnegative_int, default=10, help="largest segments to list")
    info.add_argument("--last", type=nonnegative_int, default=10, help="last edits to list")
    info.set_defaults(func=cmd_info)

    exp = sub.add_parser("export", help="apply the segment table and write a new OME-Zarr")
    exp.add_argument("project")
    exp.add_argument("dest", help="new OME-Zarr folder (never the input)")
    exp.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    add_progress_flags(exp)
    exp.set_defaults(func=cmd_export)

    mesh = sub.add_parser(
        "mesh", help="write meshes of segments (PLY, OBJ or neuroglancer precomputed)"
    )
    mesh.add_argument("project")
    mesh.add_argument("segments", type=int, nargs="+", metavar="SEGMENT", help="segment ids")
    mesh.add_argument("dest", help="new folder for the mesh files")
    mesh.add_argument("--format", choices=("ply", "obj", "precomputed"), default="ply")
    mesh.add_argument(
        "--level", type=nonnegative_int, default=None,
        help="pyramid level to mesh (default: the coarsest that keeps each segment's shape)",
    )  # fmt: skip
    mesh.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    mesh.set_defaults(func=cmd_mesh)
