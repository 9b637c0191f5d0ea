"""``napari-connectome skeletonize SEG DEST``: SWC skeletons of selected or all segments
(kimimaro's TEASAR), blockwise on Dask with stitched block borders."""

from __future__ import annotations

import argparse
import json
from typing import Any

from napari_connectome.cli._args import finite_float
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.cli.meshes import SEG_HELP, add_dask_flags
from napari_connectome.cli.neuroglancer import segment_id

# kimimaro's TEASAR defaults, as napari_connectome.meshing.skeletons.TEASAR has them (not imported
# here: the command line starts without numpy)
TEASAR = {"scale": 1.5, "const": 300.0}


def _nonnegative_nm(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more (nm)")
    return value


def _block_edge(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 8 <= value <= 4096:
        raise argparse.ArgumentTypeError(
            f"{value}: a block edge is 8 to 4096 voxels (smaller blocks are mostly borders; "
            "larger ones do not fit in memory)"
        )
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "skeletonize",
        help="SWC skeletons of selected or all segments (kimimaro), blockwise on Dask",
        description="Skeletonize SEG block by block (kimimaro's TEASAR, borders stitched) and "
        "write one <id>.swc per segment into the new folder DEST (x y z in nm).",
    )
    p.add_argument("segmentation", metavar="SEG", help=SEG_HELP)
    p.add_argument("dest", metavar="DEST", help="new folder for the SWC files")
    p.add_argument(
        "--segments", type=segment_id, nargs="+", metavar="ID", help="segments (default: all)"
    )
    p.add_argument(
        "--block-shape", type=_block_edge, nargs=3, metavar=("Z", "Y", "X"),
        help="voxels per task (default ~256^3, whole storage chunks)",
    )  # fmt: skip
    p.add_argument(
        "--dust", type=_nonnegative_nm, default=0.0, metavar="NM",
        help="drop skeleton pieces with less cable length (nm; default 0: keep all)",
    )  # fmt: skip
    p.add_argument(
        "--tick", type=_nonnegative_nm, default=0.0, metavar="NM",
        help="trim side branches shorter than this (nm; default 0: keep all)",
    )  # fmt: skip
    p.add_argument(
        "--const", type=_nonnegative_nm, default=TEASAR["const"], metavar="NM",
        help="TEASAR: a path invalidates a ball of radius scale * (distance to the boundary) + "
        f"const around it (nm; default {TEASAR['const']}); lower keeps short ends and branches",
    )  # fmt: skip
    p.add_argument(
        "--scale", type=_nonnegative_nm, default=TEASAR["scale"],
        help=f"TEASAR: see --const (default {TEASAR['scale']})",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it holds skeletons")
    add_dask_flags(p)
    add_progress_flags(p)
    p.set_defaults(func=cmd_skeletonize)


def cmd_skeletonize(args: argparse.Namespace) -> int:
    from napari_connectome.cli.graph import _client
    from napari_connectome.meshing.skeletons import skeletonize_volume
    from napari_connectome.volumes import open_volume, require_3d

    volume = require_3d(open_volume(args.segmentation), "skeletons")
    with _client(args.scheduler) as client:
        update, close = cli_progress(args, "skeletons", unit="block")
        try:
            summary = skeletonize_volume(
                volume, args.dest, segments=args.segments, overwrite=args.overwrite,
                block_shape=args.block_shape, dust_nm=args.dust, tick_nm=args.tick,
                teasar={"const": args.const, "scale": args.scale},
                client=client, workers=args.workers, progress=update,
            )  # fmt: skip
        finally:
            close()
    print(json.dumps({"skeletons": str(summary.dest), "segments": summary.segments,
                      "nodes": summary.nodes}))  # fmt: skip
    return 0
