"""``napari-connectome graph SEG DEST``: the whole-volume statistics and contact graph of a
segmentation, blockwise on Dask (see napari_connectome.graph)."""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from typing import Any

from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.errors import UserInputError

SEG_HELP = (
    "the fragments (supervoxels) or segmentation: store.zarr/array, OME-Zarr (level 0), "
    "file.h5:dataset, ... (any volume `info` opens)"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "graph",
        help="per-fragment counts and boxes, the contact graph and chunk digests of a "
        "segmentation (blockwise, on Dask)",
        description="Compute the region graph of SEG into the folder DEST, block by block on a "
        "Dask LocalCluster on 127.0.0.1 (or an existing scheduler). Rerun the same command to "
        "resume a killed pass; only missing blocks are computed.",
    )
    p.add_argument("segmentation", metavar="SEG", help=SEG_HELP)
    p.add_argument("dest", metavar="DEST", help="folder to create, e.g. seg.ome.zarr/region_graph")
    p.add_argument(
        "--image", metavar="EM", help="EM volume of the same shape: boundary evidence of edges"
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this Dask scheduler (tcp://host:port); DEST must be on a file system its "
        "workers share",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: half the cores)",
    )
    p.add_argument(
        "--block-shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxels per task, a multiple of the stored chunks (default ~256^3)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a region graph in DEST")
    add_progress_flags(p)
    p.set_defaults(func=cmd_graph)


def _client(address: str | None):
    if not address:
        return nullcontext(None)
    import dask
    from dask.distributed import Client

    try:
        return Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except OSError as exc:
        raise UserInputError(f"cannot reach Dask scheduler {address}: {exc}") from None


def cmd_graph(args: argparse.Namespace) -> int:
    from napari_connectome.graph import RegionGraph, compute_region_graph
    from napari_connectome.volumes import open_volume, require_3d

    if args.workers is not None and args.workers < 1:
        raise UserInputError("--workers must be 1 or more")
    labels = require_3d(open_volume(args.segmentation), "the region graph")
    image = require_3d(open_volume(args.image), "the region graph") if args.image else None
    with _client(args.scheduler) as client:
        update, close = cli_progress(args, "region graph")
        try:
            dest = compute_region_graph(
                labels,
                args.dest,
                image=image,
                block_shape=args.block_shape,
                client=client,
                workers=args.workers,
                progress=update,
                overwrite=args.overwrite,
            )
        finally:
            close()
    g = RegionGraph.open(dest)
    keys = ("n_fragments", "n_edges", "fingerprint", "blocks", "blocks_empty", "seconds")
    print(json.dumps({"region_graph": str(dest), **{k: g.meta[k] for k in keys}}))
    return 0
