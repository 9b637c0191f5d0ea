"""``napari-connectome evaluate SEG GT``: VI and adapted Rand error as one JSON line."""

from __future__ import annotations

import argparse
import json

from napari_connectome.cli._progress import add_progress_flags, cli_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a segmentation against ground truth (variation of information, adapted Rand)",
        description=(
            "Print JSON {vi_split, vi_merge, vi, arand, n_voxels, ...} over voxels where GT > 0. "
            "vi_split = H(SEG|GT) (over-segmentation), vi_merge = H(GT|SEG) (false merges), "
            "in bits. "
            "SEG and GT are volume sources: file.h5:dataset, a zarr array path, a TIFF..."
        ),
    )
    p.add_argument("seg", metavar="SEG", help="the segmentation to score")
    p.add_argument("gt", metavar="GT", help="the ground truth (0 = unlabelled, ignored)")
    p.add_argument(
        "--mask-zero",
        action="store_true",
        help="also ignore voxels where SEG is 0 (unsegmented) instead of scoring them as a segment",
    )
    add_progress_flags(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from napari_connectome.evaluate import evaluate_segmentation

    progress, close = cli_progress(args, "evaluate", unit="slab")
    try:
        scores = evaluate_segmentation(
            args.seg, args.gt, mask_zero=args.mask_zero, progress=progress
        )
    finally:
        close()
    print(json.dumps(scores))
    return 0
