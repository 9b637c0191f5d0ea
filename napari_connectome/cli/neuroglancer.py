"""``napari-connectome neuroglancer SOURCE...``: show volumes (and a proofreading project's current
merges) in neuroglancer, served from 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from napari_connectome.cli._args import nonnegative_int

MAX_SEGMENT_ID = 2**64 - 1


def segment_id(text: str) -> int:
    """A segment id: 1 .. 2^64-1 (0 is background)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a segment id (an integer)") from None
    if not 1 <= value <= MAX_SEGMENT_ID:
        raise argparse.ArgumentTypeError(
            f"{value} is not a segment id: ids are 1 to 2^64-1 (0 is background)"
        )
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "neuroglancer",
        help="show volumes in neuroglancer, served from 127.0.0.1 (until Ctrl-C)",
        description="Serve SOURCE volumes (OME-Zarr, zarr, N5 and precomputed as files; other "
        "formats through the neuroglancer package) on 127.0.0.1 and print a neuroglancer link: "
        "EM as image layers, segmentations as segmentation layers, with the voxel size and the "
        "selected segments. With --project, the project's fragments and image, and its current "
        "merges as the segmentation's equivalences. Ctrl-C stops serving.",
    )
    p.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="volumes to show (any volume `info` opens)"
    )
    p.add_argument("--project", help="a proofreading project: its data and current merges")
    p.add_argument(
        "--segments",
        type=segment_id,
        nargs="+",
        default=[],
        metavar="ID",
        help="segments to select (with --project: the project's segment ids)",
    )
    p.add_argument(
        "--meshes",
        metavar="DIR",
        help="a precomputed mesh folder (napari-connectome export-meshes) for the segmentation",
    )
    p.add_argument(
        "--no-browser", action="store_true", help="print the link only, do not open a browser"
    )
    p.add_argument(
        "--port",
        type=nonnegative_int,
        default=0,
        help="port of the data server on 127.0.0.1 (default 0: any free port)",
    )
    p.add_argument(
        "--client",
        default="auto",
        metavar="auto|public|URL",
        help="the neuroglancer client: auto (the neuroglancer package's, offline, if installed; "
        "else public), public, or the URL of a neuroglancer deployment",
    )
    p.set_defaults(func=cmd_neuroglancer)


def cmd_neuroglancer(args: argparse.Namespace) -> int:
    from napari_connectome.viewers.neuroglancer_link import make_link

    if args.port > 65535:
        from napari_connectome.errors import UserInputError

        raise UserInputError(f"--port {args.port}: ports are 0 to 65535")
    link = make_link(
        args.sources,
        project=args.project,
        segments=args.segments,
        port=args.port,
        client=args.client,
        meshes=args.meshes,
    )
    stop = threading.Event()
    try:
        link.start()
        for sv in link.volumes:
            where = sv.folder if sv.folder is not None else f"{sv.volume.source} (read by us)"
            kind = "segmentation" if sv.layer.segmentation else "image"
            print(f"serving {kind} layer '{sv.layer.name}': {where}")
            if sv.layer.meshes:
                print(f"  with meshes from {args.meshes}")
        print(f"neuroglancer: {link.url}", flush=True)
        print("press Ctrl-C to stop serving", file=sys.stderr, flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(link.url)
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    print("stopped serving", file=sys.stderr)
    return 0
