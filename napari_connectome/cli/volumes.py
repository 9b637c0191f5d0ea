"""``napari-connectome info`` and ``convert``: inspect any volume, make an OME-Zarr 0.5 pyramid."""

from __future__ import annotations

import argparse
import json

from napari_connectome.cli._args import check_chunk_grid, chunk_edge, positive_int
from napari_connectome.cli._progress import add_progress_flags, cli_progress
from napari_connectome.errors import UserInputError

SOURCE_HELP = (
    "a volume: file.h5:dataset, store.zarr or store.zarr/group/array, OME-Zarr, data.n5/dataset, "
    "neuroglancer precomputed folder, stack.tif or a folder of .tif slices"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info",
        help="print shape, dtype, chunks, voxel size and scales of a volume as JSON",
        description="Print what napari-connectome sees in SOURCE as JSON: one object, or a list "
        "when SOURCE holds several arrays (an HDF5 file without :dataset, an OME-Zarr image with "
        "labels).",
    )
    info.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    info.set_defaults(func=run_info)

    conv = subparsers.add_parser(
        "convert",
        help="copy a volume into a multiscale OME-Zarr 0.5 (zarr v3), block by block",
        description="Convert SOURCE into DEST.ome.zarr with a multiscale pyramid (mean for images, "
        "mode for labels). The output appears only when complete.",
    )
    conv.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    conv.add_argument("dest", metavar="DEST", help="output path, e.g. volume.ome.zarr")
    kind = conv.add_mutually_exclusive_group()
    kind.add_argument(
        "--labels",
        action="store_true",
        help="write a label image (image-label metadata, mode downsampling); needs unsigned ints. "
        "Default: as detected from SOURCE (see `info`: is_labels)",
    )
    kind.add_argument(
        "--image", action="store_true", help="write an image even if SOURCE looks like labels"
    )
    conv.add_argument(
        "--background",
        type=int,
        default=None,
        metavar="VALUE",
        help="with labels: voxels of VALUE become 0 (unlabelled), e.g. -1 or 18446744073709551615 "
        "(-1 as uint64, CREMI's 'no label'); a signed SOURCE is written as the unsigned type of "
        "its width",
    )
    conv.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    conv.add_argument(
        "--chunks",
        type=chunk_edge,
        default=None,
        metavar="N",
        help="chunk edge in voxels, 8 to 4096 (default 64)",
    )
    conv.add_argument(
        "--levels",
        type=positive_int,
        default=None,
        metavar="N",
        help="number of resolution levels including full resolution (default: until one chunk)",
    )
    add_progress_flags(conv)
    conv.set_defaults(func=run_convert)


def run_info(args: argparse.Namespace) -> int:
    from napari_connectome.volumes import discover_volumes, open_volume

    try:
        # every layer SOURCE holds: an OME-Zarr image and its labels, each 3D dataset of a file
        volumes = discover_volumes(args.source)
    except UserInputError as exc:
        try:
            volumes = [open_volume(args.source)]  # e.g. a file holding only a 2D image
        except UserInputError:
            raise exc from None  # what went wrong in the layers, not "name one of them"
    described = [v.describe() for v in volumes]
    print(json.dumps(described[0] if len(described) == 1 else described, indent=2))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_connectome.volumes import check_label_dtype, open_volume, require_3d, write_ome_zarr
    from napari_connectome.volumes.atomic import check_destination
    from napari_connectome.volumes.output_safety import refuse_overlap
    from napari_connectome.volumes.volume import background_to_zero

    dest = Path(args.dest).expanduser()
    refuse_overlap(dest, [args.source])  # DEST is not SOURCE, not inside it, does not contain it
    check_destination(dest, args.overwrite)  # before opening anything large
    volume = require_3d(open_volume(args.source), "convert")
    labels = args.labels or (volume.is_labels and not args.image)
    if args.background is not None:
        if not labels:
            raise UserInputError("--background maps a label value: give --labels too")
        volume = background_to_zero(volume, args.background)
    if labels:
        check_label_dtype(volume.dtype, volume.source)
    if args.chunks is not None:
        spatial = tuple(s for a, s in zip(volume.axes, volume.shape) if a in "zyx")
        check_chunk_grid(spatial, volume.dtype.itemsize, args.chunks, f"--chunks {args.chunks}")
    progress, close = cli_progress(args, f"convert {Path(args.source).name}")
    try:
        out = write_ome_zarr(
            volume,
            dest,
            labels=labels,
            chunks=args.chunks,
            levels=args.levels,
            overwrite=args.overwrite,
            progress=progress,
        )
    finally:
        close()
    kind = "labels" if labels else "image"
    print(f"wrote {kind} {out} ({'x'.join(map(str, volume.shape))} {volume.dtype})")
    return 0
