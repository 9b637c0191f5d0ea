"""``napari-connectome consensus A B DEST``: the split consensus of two segmentations.

Only argument handling lives here; the work is
:func:`~napari_connectome.ffn.consensus_volume.consensus_volumes`.
"""

from __future__ import annotations

import argparse
import sys

from napari_connectome.cli._args import nonnegative_int
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.ffn.consensus import DEFAULT_MIN_SIZE, UNMATCHED


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "consensus",
        help="split consensus of two segmentations (supervoxels for agglomerate)",
        description=(
            "Write to DEST (OME-Zarr labels) the split consensus of A and B, two segmentations "
            "of the same region (e.g. FFN runs with seed orders forward and reverse): two voxels "
            "share a supervoxel only where both A and B put them in one object and they connect. "
            "`segment --oversegment` runs both FFN passes and this in one command."
        ),
    )
    p.add_argument("a", metavar="A", help="first segmentation (any source info opens)")
    p.add_argument("b", metavar="B", help="second segmentation, same shape, voxel size, offset")
    p.add_argument("dest", metavar="DEST", help="output OME-Zarr (e.g. supervoxels.ome.zarr)")
    p.add_argument(
        "--min-size",
        type=nonnegative_int,
        default=DEFAULT_MIN_SIZE,
        help=f"pieces smaller than this become 0 (voxels; default {DEFAULT_MIN_SIZE})",
    )
    p.add_argument(
        "--unmatched",
        choices=UNMATCHED,
        default="drop",
        help="voxels only one input segmented: 0 (drop, default), supervoxels of their own "
        "(keep), or kept from A only (first, as google/ffn)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    add_progress_flags(p)
    p.set_defaults(func=_consensus)


def _consensus(args: argparse.Namespace) -> int:
    from napari_connectome.ffn.consensus_volume import consensus_volumes

    progress, close = cli_progress(args, "consensus", unit="step")
    try:
        dest, stats = consensus_volumes(
            args.a,
            args.b,
            args.dest,
            min_size=args.min_size,
            unmatched=args.unmatched,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        close()
    print(
        f"wrote {dest}: {stats.segments} supervoxels from {stats.segments_a} and "
        f"{stats.segments_b} segments; {stats.voxels_dropped_unmatched} voxels segmented by one "
        f"input only and {stats.voxels_dropped_small} in pieces under {stats.min_size} voxels "
        "left at 0",
        file=sys.stderr,
    )
    return 0
