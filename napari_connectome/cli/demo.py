"""``napari-connectome demo``: the whole desk in one command.

Opens napari on real FIB-25 EM shipped with the package (a crop the default model never saw, with
its ground truth), docks every tool of the plugin, and segments the crop with the default FFN
model, objects appearing as they finish and a line on the canvas saying what runs and about how
long it takes. ``--screenshot PNG`` saves the whole window once the segmentation is done, prints
the wall time and FFN steps, and exits 0, so the demo can be checked (and the docs' pictures made)
on a machine without a display. ``--sample synthetic`` runs it on the synthetic volume instead.

This module only handles the arguments; the app is :mod:`napari_connectome.gui.demo`, imported
when napari is installed (``napari-connectome[napari]``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from napari_connectome.cli._args import positive_finite_float
from napari_connectome.errors import UserInputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari on real FIB-25 EM, segment it with FFN, dock every tool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--screenshot", metavar="PNG", help="save the window when done, then exit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing screenshot file")
    p.add_argument("--model", help="model folder or zoo name (default: the default model)")
    p.add_argument(
        "--sample",
        choices=["fib25", "synthetic"],
        default="fib25",
        help="the shipped FIB-25 crop (default) or the synthetic volume",
    )
    p.add_argument(
        "--size", type=int, help="with --sample synthetic: edge of the volume (voxels, 64)"
    )
    p.add_argument("--seed", type=int, default=0, help="with --sample synthetic: its seed")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 where the CPU or GPU has native bf16, fp32 otherwise",
    )
    p.add_argument(
        "--timeout",
        type=positive_finite_float,
        default=900.0,
        help="with --screenshot: fail after this many s",
    )
    p.set_defaults(func=run_demo)


def _check_args(args: argparse.Namespace) -> Path | None:
    """Refuse bad input before any window opens or anything is written."""
    if args.size is not None and args.sample != "synthetic":
        raise UserInputError("--size is the edge of the synthetic volume; add --sample synthetic")
    if args.size is not None and args.size < 33:
        raise UserInputError(f"--size {args.size} is smaller than the FFN field of view; use >= 48")
    if args.size is not None and args.size > 256:
        raise UserInputError(f"--size {args.size} is too large for a demo; use <= 256")
    if args.model and not Path(args.model).is_dir():
        from napari_connectome.ffn import zoo

        known = {p.name for p in zoo.shipped_models()} | set(zoo.ZOO)
        if args.model not in known:
            raise UserInputError(
                f"--model {args.model!r} is neither a model folder nor a known model "
                f"({', '.join(sorted(known))})"
            )
    if not args.screenshot:
        return None
    shot = Path(args.screenshot)
    if shot.suffix.lower() != ".png":
        raise UserInputError(f"--screenshot {shot} must be a .png file")
    if not shot.parent.is_dir():
        raise UserInputError(f"the folder of --screenshot {shot} does not exist; create it first")
    if shot.exists() and not args.overwrite:
        raise UserInputError(f"{shot} already exists; choose a new name or add --overwrite")
    check_writable_folder(shot.parent, f"--screenshot {shot}")
    return shot


def check_writable_folder(folder: Path, what: str) -> None:
    """Write and remove a probe file in ``folder`` now, so that a read-only or full folder is
    found before minutes of segmenting, not when the screenshot is saved (permission bits do not
    tell: root ignores them, and a read-only mount or a full disk has none)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".napari-connectome-probe-") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise UserInputError(
            f"{what}: cannot write into {folder} ({exc.strerror}); choose a writable folder"
        ) from None


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    shot = _check_args(args)
    try:
        import napari  # noqa: F401  (the GUI app needs it; the core does not)
    except ImportError as exc:
        raise UserInputError(
            f"the demo is a napari app and napari cannot be imported ({exc}); "
            'install napari-connectome[napari] (pip install "napari-connectome[napari]")'
        ) from None
    if shot is not None:
        from napari_connectome.gui._headless import ensure_display

        ensure_display()
    from napari_connectome.gui.demo import DemoRequest
    from napari_connectome.gui.demo import run_demo as run_app

    request = DemoRequest(
        sample=args.sample,
        size=args.size if args.size is not None else 64,
        seed=args.seed,
        model=args.model,
        device=args.device,
        precision=args.precision,
        screenshot=shot,
        timeout_s=args.timeout,
        started=started,
    )
    return run_app(request)
