"""``napari-connectome segment SOURCE DEST``: FFN segmentation of a volume (or a region of it).

Only argument handling lives here: the flags become a
:class:`~napari_connectome.ffn.segment_volume.SegmentVolumeRequest` and
:func:`~napari_connectome.ffn.segment_volume.segment_volume` does the checks, the run and the
write (the same function a script or a widget calls), with its messages on stderr and the progress
bar of :mod:`napari_connectome.cli._progress`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from napari_connectome.cli._args import nonnegative_int, positive_int, probability, thread_count
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.ffn.consensus import DEFAULT_MIN_SIZE
from napari_connectome.ffn.segment_volume import COUNTERS_FILE, parse_roi, parse_seed
from napari_connectome.progress import ProgressCallback

__all__ = ["COUNTERS_FILE", "parse_roi", "parse_seed", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a flood-filling network (OME-Zarr labels out)",
        description=(
            "Run FFN inference with google/ffn's rules on SOURCE (or its --roi) and write uint64 "
            "OME-Zarr labels (0 = background) to DEST, plus DEST/" + COUNTERS_FILE + " with the "
            "run's counters. Without --seed, objects start at the seed policy's points "
            "(default: google's PolicyPeaks); with --seed, segment k grows from the k-th seed."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="EM volume: file.h5:raw, a zarr array, TIFF...")
    p.add_argument("dest", metavar="DEST", help="output OME-Zarr (e.g. seg.ome.zarr)")
    p.add_argument("--model", help="model directory or zoo name (default: the default model)")
    p.add_argument("--roi", help="region z0:z1,y0:y1,x0:x1 in voxels (default: whole volume)")
    p.add_argument(
        "--seed",
        action="append",
        default=None,
        metavar="Z,Y,X",
        help="seed point in volume voxel coordinates; repeat for several objects",
    )
    p.add_argument("--mask", help="exclusion mask source (nonzero = never segment), same shape")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default auto: bf16 where the CPU or GPU has native bf16, "
        "fp32 otherwise; fp16 is GPU only)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="max FOVs per forward pass (concurrent canvases)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument(
        "--threads", type=thread_count, default=None, help="CPU threads for torch (default: all)"
    )
    p.add_argument("--seed-policy", choices=["peaks", "grid"], help="seed policy without --seed")
    p.add_argument(
        "--seed-order",
        choices=["forward", "reverse"],
        help="order the seed policy's points are tried in (default forward; reverse: last first)",
    )
    p.add_argument(
        "--oversegment",
        action="store_true",
        help="supervoxels for agglomerate: run the seed policy forward and reversed and write "
        "their split consensus (voxels share an id only where both runs agree); twice the FFN "
        "time (docs/agglomeration.md)",
    )
    p.add_argument(
        "--consensus-min-size",
        type=nonnegative_int,
        default=DEFAULT_MIN_SIZE,
        help="with --oversegment: consensus pieces smaller than this become 0 (voxels; "
        f"agglomerate's fill gives them to a neighbour; default {DEFAULT_MIN_SIZE})",
    )
    p.add_argument(
        "--consensus-unmatched",
        choices=["drop", "keep", "first"],
        default="drop",
        help="with --oversegment: voxels only one run segmented become 0 (drop, default), get "
        "supervoxels of their own (keep), or are kept from the forward run only (first, as "
        "google/ffn)",
    )
    for name, what in (
        ("init-activation", "probability at the seed"),
        ("pad-value", "probability of unexplored voxels"),
        ("move-threshold", "probability needed to move the FOV"),
        ("segment-threshold", "probability for a voxel to join the object"),
    ):
        p.add_argument(f"--{name}", type=probability, help=f"{what} (default: the model's)")
    p.add_argument("--min-segment-size", type=nonnegative_int, help="drop smaller objects (voxels)")
    p.add_argument(
        "--max-steps", type=positive_int, help="stop an object after this many FFN steps"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    add_progress_flags(p)
    p.set_defaults(func=_segment)


OPTION_FLAGS = (
    "init_activation",
    "pad_value",
    "move_threshold",
    "segment_threshold",
    "min_segment_size",
    "max_steps",
    "seed_policy",
    "seed_order",
)
"""The flags that override the model's inference options (same names as the options' fields)."""


def _lazy_bar(
    args: argparse.Namespace,
) -> tuple[ProgressCallback, Callable[[], None], Callable[[str], None]]:
    """A progress callback whose bar is made at its first call, i.e. once the FFN runs, so the
    bar follows the device and estimate lines on stderr; ``close`` is always safe; ``log``
    writes a line on stderr above the bar, not into it."""
    bar: list = []

    def update(done: int, total: int, message: str = "") -> None:
        if not bar:
            bar.append(cli_progress(args, "segment", unit="seed"))
        callback = bar[0][0]
        if callback is not None:
            callback(done, total, message)

    def close() -> None:
        if bar:
            bar[0][1]()

    def log(line: str) -> None:
        if bar and bar[0][0] is not None:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    return update, close, log


def _segment(args: argparse.Namespace) -> int:
    from napari_connectome.ffn.segment_volume import SegmentVolumeRequest, segment_volume

    request = SegmentVolumeRequest(
        source=args.source,
        dest=args.dest,
        model=args.model,
        roi=args.roi,
        seeds=args.seed,
        mask=args.mask,
        device=args.device,
        precision=args.precision,
        batch=args.batch,
        compile=args.compile,
        threads=args.threads,
        overrides={name: getattr(args, name) for name in OPTION_FLAGS},
        overwrite=args.overwrite,
        oversegment=args.oversegment,
        consensus_min_size=args.consensus_min_size,
        consensus_unmatched=args.consensus_unmatched,
    )
    progress, close, log = _lazy_bar(args)
    try:
        segment_volume(request, progress=progress, log=log)
    finally:
        close()
    return 0
