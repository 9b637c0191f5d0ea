"""``napari-connectome export-meshes SEG DEST``: meshes of selected or all segments of a
segmentation for other viewers (neuroglancer precomputed, PLY, OBJ), blockwise on Dask."""

from __future__ import annotations

import argparse
import json
from typing import Any

from napari_connectome.cli._args import nonnegative_int, positive_int
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.cli.neuroglancer import segment_id

SEG_HELP = (
    "the segmentation: OME-Zarr, zarr, N5, HDF5 (file.h5:dataset), ... (any volume `info` opens)"
)


def add_dask_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this Dask scheduler (tcp://host:port); DEST must be on a file system its "
        "workers share (default: threads in this process)",
    )
    p.add_argument("--workers", type=positive_int, metavar="N", help="threads (default: up to 4)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-meshes",
        help="meshes of selected or all segments for neuroglancer/WebKnossos (precomputed), "
        "PLY or OBJ, blockwise on Dask",
        description="Mesh each segment of SEG from the pyramid level that keeps its shape and "
        "write the meshes into the new folder DEST. Default: neuroglancer's precomputed legacy "
        "mesh format (info, <id>:0 manifests, <id>:0:mesh fragments; x y z in nm). Segment boxes "
        "come from SEG/region_graph when it exists, else from a blockwise pass.",
    )
    p.add_argument("segmentation", metavar="SEG", help=SEG_HELP)
    p.add_argument("dest", metavar="DEST", help="new folder for the meshes")
    p.add_argument(
        "--segments", type=segment_id, nargs="+", metavar="ID", help="segments (default: all)"
    )
    p.add_argument("--format", choices=("precomputed", "ply", "obj"), default="precomputed")
    p.add_argument(
        "--level", type=nonnegative_int, default=None,
        help="pyramid level to mesh (default: the coarsest that keeps each segment's shape)",
    )  # fmt: skip
    p.add_argument(
        "--max-vertices", type=positive_int, default=None, metavar="N",
        help="simplify each mesh to about N vertices",
    )  # fmt: skip
    p.add_argument("--region-graph", metavar="DIR", help="a region graph of SEG (segment boxes)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it holds meshes")
    add_dask_flags(p)
    add_progress_flags(p)
    p.set_defaults(func=cmd_export_meshes)


def cmd_export_meshes(args: argparse.Namespace) -> int:
    from napari_connectome.cli.graph import _client
    from napari_connectome.meshing.volume_export import export_volume_meshes
    from napari_connectome.volumes import open_volume, require_3d

    volume = require_3d(open_volume(args.segmentation), "meshing")
    options: dict[str, Any] = {}
    if args.level is not None:
        options["level"] = args.level
    if args.max_vertices is not None:
        options["max_vertices"] = args.max_vertices
    with _client(args.scheduler) as client:
        update, close = cli_progress(args, "meshes", unit="task")
        try:
            summary = export_volume_meshes(
                volume, args.dest, segments=args.segments, fmt=args.format,
                overwrite=args.overwrite, region_graph=args.region_graph, client=client,
                workers=args.workers, progress=update, **options,
            )  # fmt: skip
        finally:
            close()
    print(json.dumps({
        "meshes": str(summary.dest), "format": args.format, "segments": summary.segments,
        "empty": summary.empty, "vertices": summary.vertices, "faces": summary.faces,
        "too_large": list(summary.too_large),
    }))  # fmt: skip
    return 0
