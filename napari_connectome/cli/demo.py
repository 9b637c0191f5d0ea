"""``napari-connectome demo``: the whole desk in one command.

Opens napari on the synthetic EM sample, docks every tool of the plugin, and segments the volume
with the default FFN model, objects appearing as they finish. ``--screenshot PNG`` saves the whole
window once the segmentation is done and exits 0, so the demo can be checked (and the docs'
pictures made) on a machine without a display.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from napari_connectome.cli._args import positive_finite_float
from napari_connectome.errors import UserInputError

PLUGIN = "napari-connectome"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari on the synthetic sample, segment it with FFN, dock every tool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--screenshot", metavar="PNG", help="save the window when done, then exit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing screenshot file")
    p.add_argument("--model", help="model folder or zoo name (default: the default model)")
    p.add_argument("--size", type=int, default=64, help="edge of the synthetic volume (voxels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--timeout",
        type=positive_finite_float,
        default=900.0,
        help="with --screenshot: fail after this many s",
    )
    p.set_defaults(func=run_demo)


def _check_args(args: argparse.Namespace) -> Path | None:
    """Refuse bad input before any window opens or anything is written."""
    if args.size < 33:
        raise UserInputError(f"--size {args.size} is smaller than the FFN field of view; use >= 48")
    if args.size > 256:
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
    shot = _check_args(args)
    if shot is not None:
        from napari_connectome.gui._headless import ensure_display

        ensure_display()
    import napari
    from qtpy.QtCore import QTimer

    from napari_connectome.gui._models import DEFAULT, LOCAL
    from napari_connectome.gui._sample_data import synthetic_sample
    from napari_connectome.gui.segment_region import WHOLE, SegmentRegionWidget

    viewer = napari.Viewer(title="napari-connectome demo")
    viewer.window.resize(1600, 1000)
    for data, meta, kind in synthetic_sample((args.size,) * 3, args.seed):
        layer = getattr(viewer, f"add_{kind}")(data, **meta)
        if kind == "labels":
            layer.visible = False  # the ground truth, for comparing by eye
    widgets = dock_every_tool(viewer)
    region = next(w for w in widgets if isinstance(w, SegmentRegionWidget))
    if args.model and Path(args.model).is_dir():
        region.model.choice.value = LOCAL
        region.model.path.value = args.model
    else:
        region.model.choice.value = args.model or DEFAULT
    region.region.value = WHOLE
    region.device.value = args.device if args.device in region.device.choices else "cpu"
    region.precision.value = args.precision
    state: dict[str, Any] = {"rc": None, "error": None}

    def finished() -> None:
        if region.last_counters and state["rc"] is None:  # the run reached its end
            viewer.layers.selection.active = region.output
            if shot is not None:
                QTimer.singleShot(800, save_and_quit)
        elif state["rc"] is None or state["error"]:
            state["rc"] = 1
            if shot is not None:
                QTimer.singleShot(0, viewer.close)

    def failed(exc: BaseException) -> None:
        state["error"] = str(exc)

    def save_and_quit() -> None:
        dismiss_toasts(viewer)
        tmp = shot.with_name(f".{shot.stem}.tmp.png")
        viewer.screenshot(str(tmp), canvas_only=False)
        os.replace(tmp, shot)
        state["rc"] = 0
        viewer.close()

    def give_up() -> None:
        if state["rc"] is None:
            state["rc"] = 1
            state["error"] = f"segmentation did not finish within {args.timeout:.0f} s"
            if region.worker is not None:
                region.cancel()  # the window closes when the worker has stopped
            else:
                viewer.close()

    def start() -> None:
        region.start()
        if region.worker is None:  # refused before starting
            state["error"] = region.status.value
            state["rc"] = 1
            if shot is not None:
                viewer.close()
            return
        region.worker.finished.connect(finished)
        region.worker.errored.connect(failed)

    QTimer.singleShot(300, start)
    if shot is not None:
        QTimer.singleShot(int(args.timeout * 1000), give_up)
    napari.run()
    if state["error"]:
        print(f"napari-connectome demo: error: {state['error']}", file=sys.stderr)
    if shot is not None and state["rc"] == 0:
        print(f"saved {shot}")
    return 0 if state["rc"] in (None, 0) and not state["error"] else 1


def dock_every_tool(viewer: Any) -> list[Any]:
    """Dock each widget the plugin's manifest contributes (tabbed); return the widgets."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    widgets, docks = [], []
    contributions = manifest.contributions.widgets or []
    for i, contribution in enumerate(contributions):
        dock, widget = viewer.window.add_plugin_dock_widget(
            PLUGIN, contribution.display_name, tabify=i > 0
        )
        widgets.append(widget)
        docks.append(dock)
    if docks:  # show the first tool (Segment region) in front once the window is up
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, docks[0].raise_)
    return widgets


def dismiss_toasts(viewer: Any) -> None:
    """Close napari's pop-up notifications (e.g. its PyQt5 notice) before a screenshot."""
    from qtpy.QtWidgets import QWidget

    for widget in viewer.window._qt_window.findChildren(QWidget):
        if type(widget).__name__ == "NapariQtNotification":
            widget.close()
