"""The demo app: napari on real FIB-25 EM with its ground truth, every tool docked, FFN running.

A new user's first minute: the shipped FIB-25 crop (never seen by the default model) opens with its
ground truth, the plugin's tools dock as tabs, and *Segment region* segments the crop with the
default model while a line on the canvas says what runs, on what, and about how long it will take
(the rate is measured on this machine before the run starts). At the end the same line gives the
result's scores against the ground truth, so the user sees what the model got right at a glance.
``napari_connectome.cli.demo`` only parses arguments and imports this module when napari is there.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-connectome"
SAMPLES = ("fib25", "synthetic")


@dataclass(frozen=True)
class DemoRequest:
    """What the user asked for (``napari-connectome demo`` options, checked by the CLI)."""

    sample: str = "fib25"  # the shipped FIB-25 crop, or "synthetic"
    size: int = 64  # edge of the synthetic volume
    seed: int = 0  # seed of the synthetic volume
    model: str | None = None  # model folder or zoo name; None = the default model
    device: str = "cpu"
    precision: str = "auto"
    screenshot: Path | None = None  # save the window when done, then quit
    timeout_s: float = 900.0  # with a screenshot: give up after this long
    started: float | None = None  # time.perf_counter() when the command started


def sample_layers(request: DemoRequest) -> list[tuple[Any, dict[str, Any], str]]:
    """The demo's image and ground-truth layers (napari LayerData tuples)."""
    from napari_connectome.gui._sample_data import fib25_demo_sample, synthetic_sample

    if request.sample == "synthetic":
        return synthetic_sample((request.size,) * 3, request.seed)
    return fib25_demo_sample()


def _text_overlay(viewer: Any) -> Any:
    """The canvas text overlay (``viewer.canvas.overlays.text`` from napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    return overlays.text if overlays is not None else viewer.text_overlay


def _model_name(request: DemoRequest) -> str:
    if request.model:
        return Path(request.model).name
    from napari_connectome.ffn import zoo

    return zoo.default_model().name


class DemoSession:
    """Sets up a viewer as the demo and runs the segmentation; :attr:`result` when it ended.

    The run is the *Segment region* widget's own (its plan measures this machine's FFN step rate
    and estimates the run); the session only presses Segment and repeats what the widget says on
    the canvas, where a new user looks. ``result`` holds ``rc`` (0 = segmented, 1 = failed or
    timed out), ``error``, ``steps``, ``objects``, ``ffn_s`` and the scores against the ground
    truth when there is one.
    """

    def __init__(self, viewer: napari.viewer.Viewer, request: DemoRequest) -> None:
        from napari.layers import Image
        from qtpy.QtCore import QTimer

        from napari_connectome.gui.segment_region import WHOLE, SegmentRegionWidget

        self.viewer = viewer
        self.request = request
        self.result: dict[str, Any] | None = None
        self.summary = ""  # what happened, once it has
        self.ground_truth: Any = None
        self._t_run: float | None = None
        self._idle_ticks = 0
        for data, meta, kind in sample_layers(request):
            layer = getattr(viewer, f"add_{kind}")(data, **meta)
            if kind == "labels":
                layer.visible = False  # the ground truth, to compare by eye or by the scores
                self.ground_truth = layer
        self.image_layer = next(layer for layer in viewer.layers if isinstance(layer, Image))
        self.widgets = dock_every_tool(viewer)
        self.region = next(w for w in self.widgets if isinstance(w, SegmentRegionWidget))
        self._configure_region(WHOLE)
        self.overlay = _text_overlay(viewer)
        self.overlay.visible = True
        self.overlay.position = "top_left"
        self.overlay.font_size = 10
        self.overlay.color = "white"
        self._say(f"{self._what_runs()}: loading the model and timing it on this machine…")
        self._ticker = QTimer()
        self._ticker.setInterval(500)
        self._ticker.timeout.connect(self._tick)

    # -- set-up ----------------------------------------------------------------------------------
    def _configure_region(self, whole: str) -> None:
        from napari_connectome.gui._models import DEFAULT, LOCAL

        region, request = self.region, self.request
        region.image.value = self.image_layer
        if request.model and Path(request.model).is_dir():
            region.model.choice.value = LOCAL
            region.model.path.value = request.model
        else:
            region.model.choice.value = request.model or DEFAULT
        region.region.value = whole
        region.device.value = request.device if request.device in region.device.choices else "cpu"
        region.precision.value = request.precision
        # The user asked for this run by starting the demo: no "this will take long" question.
        region.confirm_above_s = float("inf")
        # The canvas line says what runs; napari's activity dock as well would halve the speed
        # on a 2-core CPU without a GPU (docs/benchmarks.md, "The demo").
        region.activity_progress = False

    def _say(self, text: str) -> None:
        """Show ``text`` on the canvas, its lines wrapped to fit beside the docked tools."""
        import textwrap

        self.overlay.text = "\n".join(textwrap.fill(line, 66) for line in text.split("\n"))

    def _what_runs(self) -> str:
        layer, device = self.image_layer, self.region.device.value
        shape = "x".join(str(s) for s in layer.data.shape)
        if device == "cpu":
            import torch

            threads = max(1, torch.get_num_threads() - 1)  # GUI runs leave Qt a core
            device = f"{threads} CPU thread{'s' if threads > 1 else ''}"
        return (
            f"Segmenting {layer.name} ({shape} voxels) with the FFN model "
            f"{_model_name(self.request)} on {device}"
        )

    # -- run -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Press Segment (whole crop); follow the widget until its run has ended."""
        self._t_run = time.perf_counter()
        self.region.start()
        if self.region.worker is None:  # refused before starting: the widget says why
            self._end(1, self.region.status.value)
            return
        self._ticker.start()

    def _tick(self) -> None:
        if self.result is not None:
            return
        region = self.region
        if region.last_counters:  # the run reached its end
            self._on_finished()
            return
        idle = region.worker is None and getattr(region, "confirm_box", None) is None
        self._idle_ticks = self._idle_ticks + 1 if idle else 0
        if self._idle_ticks >= 2:  # no worker for two ticks: stopped early (the plan hands
            self._on_finished()  # over to the run within one tick)
            return
        elapsed = time.perf_counter() - (self._t_run or time.perf_counter())
        estimate = getattr(region, "estimate", None)
        lines = [self._what_runs()]
        if estimate is not None and estimate.value:
            lines.append(f"{estimate.value}; {elapsed:.0f} s so far")
        lines.append(region.status.value)
        self._say("\n".join(line for line in lines if line))

    def _on_finished(self) -> None:
        counters = self.region.last_counters
        if not counters:  # stopped early: cancelled or failed (the widget's status says which)
            self._end(1, self.region.status.value or "the segmentation stopped early")
            return
        self.viewer.layers.selection.active = self.region.output
        self._end(0, None, counters)

    def _end(self, rc: int, error: str | None, counters: dict[str, Any] | None = None) -> None:
        if self.result is not None:
            return
        self._ticker.stop()
        counters = counters or {}
        result: dict[str, Any] = {
            "rc": rc,
            "error": error,
            "steps": int(counters.get("steps", 0)),
            "ffn_s": float(counters.get("seconds", 0.0)),
        }
        output = self.region.output
        if rc == 0 and output is not None:
            labels = np.asarray(output.data)
            result["objects"] = len(np.unique(labels[labels > 0]))
            if self.ground_truth is not None:
                from napari_connectome.evaluate import evaluate_segmentation

                scores = evaluate_segmentation(labels, np.asarray(self.ground_truth.data))
                result.update({k: scores[k] for k in ("vi", "vi_split", "vi_merge", "arand")})
        self.result = result
        self.summary = self._summary()
        self._say(self.summary)

    def _summary(self) -> str:
        """What happened, for the canvas and the terminal (kept: the window may close next)."""
        r = self.result or {}
        if r.get("rc") != 0:
            return f"Demo stopped: {r.get('error')}"
        text = (
            f"{self._what_runs()}: done, {r['objects']} objects, {r['steps']:,} FFN steps in "
            f"{r['ffn_s']:.0f} s"
        )
        plan = getattr(self.region, "plan", None)
        if plan is not None:
            text += f" (estimated {plan.estimate.seconds:.0f} s)"
        if "vi" in r:
            text += (
                f"\nagainst the ground truth (layer '{self.ground_truth.name}', hidden): "
                f"VI {r['vi']:.2f} (split {r['vi_split']:.2f}, merge {r['vi_merge']:.2f}), "
                f"adapted Rand error {r['arand']:.2f}"
            )
        return text

    def give_up(self) -> None:
        """Time limit: stop the run (its worker ends after the current step)."""
        if self.result is None:
            seconds = self.request.timeout_s
            self._end(1, f"segmentation did not finish within {seconds:.0f} s")
            if self.region.worker is not None:
                self.region.cancel()


def run_demo(request: DemoRequest) -> int:
    """Open the demo window and run it; with a screenshot, save it when done and quit."""
    import napari
    from qtpy.QtCore import QTimer

    shot = request.screenshot
    viewer = napari.Viewer(title="napari-connectome demo")
    viewer.window.resize(1600, 1000)
    session = DemoSession(viewer, request)
    state = {"saved": False}

    def save_and_quit() -> None:
        dismiss_toasts()
        tmp = shot.with_name(f".{shot.stem}.tmp.png")
        viewer.screenshot(str(tmp), canvas_only=False)
        os.replace(tmp, shot)
        state["saved"] = True
        viewer.close()

    def watch() -> None:  # with a screenshot: wait for the end, then save or close
        if session.result is None:
            return
        poll.stop()
        if session.result["rc"] == 0:
            QTimer.singleShot(800, save_and_quit)  # let the last labels draw
        else:
            close_when_idle()

    def close_when_idle() -> None:
        if session.region.worker is not None:  # a cancelled worker ends after its step
            QTimer.singleShot(100, close_when_idle)
        else:
            viewer.close()

    QTimer.singleShot(300, session.start)
    poll = QTimer()
    if shot is not None:
        poll.setInterval(100)
        poll.timeout.connect(watch)
        poll.start()
        QTimer.singleShot(int(request.timeout_s * 1000), session.give_up)
    napari.run()
    result = session.result or {"rc": 1, "error": "the window was closed before the end"}
    if result["rc"] != 0 and shot is None and session.result is None:
        return 0  # the user closed the window: nothing failed
    wall = time.perf_counter() - (request.started or 0.0)
    if result["rc"] == 0:
        print(session.summary.replace("\n", "; "))
        if request.started is not None:
            print(f"demo wall time {wall:.1f} s, {result['steps']} FFN steps")
    if result["error"]:
        import sys

        print(f"napari-connectome demo: error: {result['error']}", file=sys.stderr)
    if shot is not None and state["saved"]:
        print(f"saved {shot}")
    return 0 if result["rc"] == 0 else 1


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


def dismiss_toasts() -> None:
    """Close napari's pop-up notifications (e.g. its PyQt5 notice) before a screenshot."""
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            with contextlib.suppress(RuntimeError):  # already deleted by Qt
                widget.close()
