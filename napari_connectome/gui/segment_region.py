"""The "Segment region" dock widget: FFN on a region of an image layer, objects drawn as they grow.

The widget gathers inputs on the Qt thread into a :class:`~._ffn_tasks.RegionInputs`; a worker
plans the run (model loaded, box clipped, time estimated from this machine's measured step rate:
:mod:`napari_connectome.ffn.estimate`), the widget shows the voxel count and the estimate and asks
before a long run, and a second worker runs the core's
:func:`~napari_connectome.ffn.inference.iter_segment_region`. Progress and ETA count FFN steps;
Cancel stops after the current step, keeping the objects finished so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, create_widget

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.estimate import format_duration
from napari_connectome.gui._ffn_tasks import (
    PRECISION_CHOICES,
    PRECISION_TIP,
    Box,
    ModelChoice,
    RegionInputs,
    RegionPlan,
    RegionUpdate,
    plan_region,
    run_region,
)
from napari_connectome.gui._models import ModelPicker, device_names
from napari_connectome.gui._notify import report_error

if TYPE_CHECKING:
    import napari

CURRENT_VIEW = "current view"
SHAPES_BOX = "box from a Shapes layer"
WHOLE = "whole volume"
#: Runs estimated longer than this ask before they start (seconds).
CONFIRM_ABOVE_S = 60.0
#: Depth given to a flat box or a 2D view (voxels each side of the slice, in total).
FLAT_CONTEXT = 48


def image_level0(layer: Any) -> Any:
    """The full-resolution array of an image layer (first level of a multiscale layer)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if layer.rgb or data.ndim != 3:
        raise UserInputError(
            f"layer {layer.name!r} has shape {tuple(data.shape)}; FFN needs a 3D grayscale volume "
            "(z, y, x): open a 3D EM stack"
        )
    return data


def _world_to_data(layer: Any, points: np.ndarray) -> np.ndarray:
    return np.array([layer.world_to_data(p) for p in points])


def requested_region(choice: str, layer: Any, shapes: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The region asked for, as (lo, hi) voxels of ``layer``'s full-resolution data (floats, not
    yet clipped to the volume: :func:`~._ffn_tasks.clip_box` says what it clamps)."""
    shape = np.asarray(image_level0(layer).shape, float)
    if choice == WHOLE:
        return np.zeros(3), shape
    if choice == SHAPES_BOX:
        if shapes is None or len(shapes.data) == 0:
            raise UserInputError(
                "draw a rectangle in a Shapes layer and choose it as the box layer"
            )
        chosen = sorted(shapes.selected_data) or list(range(len(shapes.data)))
        verts = np.concatenate([np.asarray(shapes.data[i]) for i in chosen])
        verts = np.array([shapes.data_to_world(v) for v in verts])
        pts = _world_to_data(layer, verts[:, -3:] if verts.shape[1] >= 3 else verts)
    else:  # the part of the image on screen: napari's visible corners, at full resolution
        corners = np.asarray(layer.corner_pixels, dtype=float)
        if layer.multiscale:
            corners = corners * np.asarray(layer.downsample_factors[layer.data_level])
        pts = corners[:, -3:]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    flat = (hi - lo) < 1  # a 2D box or a 2D view: give the flat axis some depth around it
    # (the depth added here is ours, not the user's: keep it inside the volume, so that what
    # clip_box reports as clamped is only what the user drew or viewed outside it)
    lo = np.where(flat, np.clip(lo - FLAT_CONTEXT / 2, 0, shape), lo)
    hi = np.where(flat, np.clip(hi + FLAT_CONTEXT / 2, 0, shape), hi + 1)
    return lo, hi


class SegmentRegionWidget(Container):
    """Run FFN on a region of an image layer; results go to a labels layer as objects grow."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image, Points, Shapes

        self._viewer = viewer
        self.image = create_widget(label="image", annotation=Image)
        self.model = ModelPicker()
        self.region = ComboBox(label="region", choices=[CURRENT_VIEW, SHAPES_BOX, WHOLE])
        # Never the whole volume by default: one press must not start an hours-long run.
        self.region.value = CURRENT_VIEW
        self.region.tooltip = (
            "current view: what is on screen (in 2D: the slice with 48 voxels of depth); "
            "every run shows its size and estimated time first and asks before a long one"
        )
        self.shapes = create_widget(label="box layer", annotation=Shapes | None, value=None)
        self.shapes.visible = False
        self.seeds = create_widget(label="seed points", annotation=Points | None, value=None)
        self.seeds.tooltip = "optional: grow one object per point; empty = Google's seed policy"
        self.device = ComboBox(label="device", choices=device_names())
        self.precision = ComboBox(label="precision", choices=list(PRECISION_CHOICES))
        self.precision.tooltip = PRECISION_TIP
        self.precision_note = Label(value="")  # what runs and why, from the run's first update
        self.precision_note.native.setWordWrap(True)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="FFN steps", min=0, max=1, value=0)
        self.estimate = Label(value="")  # the region's size and estimated time
        self.estimate.native.setWordWrap(True)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long messages must not widen the dock
        super().__init__(
            widgets=[
                self.image,
                self.model,
                self.region,
                self.shapes,
                self.seeds,
                self.device,
                self.precision,
                self.precision_note,
                Container(widgets=[self.run_button, self.cancel_button], layout="horizontal"),
                self.estimate,
                self.progress,
                self.status,
            ]
        )
        self.region.changed.connect(lambda v: setattr(self.shapes, "visible", v == SHAPES_BOX))
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.worker: Any = None  # the planning worker, then the run's
        self.plan: RegionPlan | None = None
        self.confirm_box: Any = None  # the QMessageBox asking before a long run, while open
        self.confirm_above_s = CONFIRM_ABOVE_S
        self.output: Any = None  # the labels layer of the current / last run
        self.last_counters: dict[str, Any] = {}
        self._napari_progress: Any = None
        # Also show the run in napari's activity dock. It processes Qt events at every update:
        # on the shared 2-core CPU (software OpenGL, oneDNN held to AVX2) the demo's 601-step
        # run took 40-45 s with it and 36 s without; the same FFN without a window took 7 s.
        self.activity_progress = True
        self._in_progress_bar = False  # inside napari's progress bar (it processes Qt events)
        self.update_interval_s = 0.5  # at most this often the labels layer is refreshed
        self._cancelled = False

    # -- inputs --------------------------------------------------------------------------------
    def _inputs(self) -> RegionInputs:
        layer = self.image.value
        if layer is None:
            raise UserInputError("open an EM volume first: there is no image layer to segment")
        data = image_level0(layer)
        lo, hi = requested_region(self.region.value, layer, self.shapes.value)
        seeds_layer = self.seeds.value
        points = None
        if seeds_layer is not None:
            world = np.array([seeds_layer.data_to_world(p) for p in seeds_layer.data])
            points = _world_to_data(layer, world) if len(world) else np.zeros((0, 3))
        return RegionInputs(
            data=data,
            lo=tuple(float(v) for v in lo),
            hi=tuple(float(v) for v in hi),
            seed_points=points,
            model=ModelChoice(
                self.model.choice.value,
                self.model.path_value(),
                self.device.value,
                self.precision.value,
            ),
        )

    # -- run -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check inputs, plan the run in a worker (model, box, estimate), then confirm and run."""
        from napari.qt.threading import create_worker

        if self.worker is not None or self.confirm_box is not None:
            return
        try:
            inputs = self._inputs()
        except UserInputError as exc:
            self.status.value = report_error(exc, "Segment region")
            return
        self._cancelled = False
        self.plan = None
        worker = create_worker(plan_region, inputs, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_plan)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda w=worker: self._on_worker_done(w))
        self.worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.estimate.value = ""
        self.status.value = "loading the model and measuring its speed on this machine…"
        worker.start()

    def _on_plan(self, plan: RegionPlan) -> None:
        if self._cancelled:
            return
        self.plan = plan
        notes = [plan.note] if plan.note and self.region.value == SHAPES_BOX else []
        if plan.skipped_seeds:
            notes.append(
                f"{plan.skipped_seeds} seed point(s) too close to the region's border skipped"
            )
        self.estimate.value = plan.estimate.describe()
        self.precision_note.value = plan.runner.precision_reason
        if notes:
            from napari.utils.notifications import show_warning

            show_warning("; ".join(notes))
        self.status.value = "; ".join(notes)
        if plan.estimate.seconds > self.confirm_above_s:
            self._ask(plan)
        else:
            self._run(plan)

    def _ask(self, plan: RegionPlan) -> None:
        """A long run starts only when the user says so (a window-modal question, not blocking)."""
        from qtpy.QtWidgets import QMessageBox

        box = QMessageBox(self.native)
        box.setIcon(QMessageBox.Question)
        box.setWindowTitle("Segment region")
        box.setText(
            f"This run is estimated to take {format_duration(plan.estimate.seconds)}. Start it?"
        )
        box.setInformativeText(
            plan.estimate.describe() + ". Draw a smaller box (region: box from a Shapes layer) "
            "for a quicker look, or run a job (napari-connectome submit) for a large volume."
        )
        box.setStandardButtons(QMessageBox.Yes | QMessageBox.No)
        box.setDefaultButton(QMessageBox.No)
        self.confirm_box = box

        def answered(result: int) -> None:
            self.confirm_box = None
            if result == QMessageBox.Yes and not self._cancelled:
                self._run(plan)
            else:
                self.status.value = (
                    "not started (you answered No): draw a smaller box for a quicker run"
                )
                self._idle()

        box.finished.connect(answered)
        box.open()

    def _run(self, plan: RegionPlan) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(
            run_region, plan, self.update_interval_s, _start_thread=False, _ignore_errors=True
        )
        # The run's worker is ours before _make_output, whose progress bar processes Qt events:
        # the plan worker's finished may run there and must not find the widget idle.
        self.worker = worker
        self._make_output(plan.box)
        worker.yielded.connect(self._on_update)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda w=worker: self._on_worker_done(w))
        self.worker = worker
        self.cancel_button.enabled = True
        worker.start()

    def _on_update(self, update: RegionUpdate) -> None:
        if self._cancelled:
            return  # updates already queued when Cancel was pressed
        if "precision_reason" in update.counters:
            self.precision_note.value = update.counters["precision_reason"]
        self.progress.max = max(update.steps_expected, 1)
        self.progress.value = min(update.steps, self.progress.max)
        self.status.value = (
            f"{update.segments} objects, {update.steps:,} of ~{update.steps_expected:,} FFN steps, "
            f"{format_duration(update.eta_seconds)} left (seed {update.seeds_done}/"
            f"{update.seeds_total})"
        )
        if update.labels is not None and self.output is not None:
            self.output.data = update.labels
        if update.finished:
            self.last_counters = update.counters
            how = update.counters.get("precision", "")
            self.status.value = (
                f"done: {update.segments} objects in {update.seconds:.1f} s, "
                f"{update.steps:,} FFN steps ({how})"
            )
            if not update.segments:
                self.status.value += "; " + _why_no_objects(update.outcomes)
        # Last: napari's progress bar processes Qt events when it redraws, so later updates may
        # run inside this call; nothing above must be written after them.
        # Not re-entered: each later update arriving inside it would nest one call deeper
        # (at tens of steps per second the stack and vispy's GL state broke within a minute).
        pbar = self._napari_progress
        if (
            pbar is not None
            and not self._in_progress_bar
            and (update.steps > pbar.n or update.finished)
        ):
            self._in_progress_bar = True
            try:
                pbar.total = max(update.steps_expected, update.steps, 1)
                pbar.set_description(f"FFN: {update.segments} objects")
                pbar.update(update.steps - pbar.n)
            finally:
                self._in_progress_bar = False

    def _make_output(self, box: Box) -> None:
        from napari.utils import progress

        layer = self.image.value
        start = np.array(box.start)
        shape = box.shape
        translate = np.asarray(layer.translate) + start * np.asarray(layer.scale)
        self.output = self._viewer.add_labels(
            np.zeros(shape, np.uint32),
            name=f"{layer.name} FFN",
            scale=layer.scale,
            translate=translate,
            units=layer.units,
            metadata={"region_zyx": [[a, b] for a, b in zip(box.start, box.stop)]},
        )
        where = ", ".join(f"{n} {a}:{b}" for n, a, b in zip("zyx", box.start, box.stop))
        note = self.status.value
        self.status.value = f"segmenting {where}…" + (f" ({note})" if note else "")
        if self.activity_progress:  # napari's activity dock too (it processes pending Qt events)
            self._napari_progress = progress(total=1, desc="FFN")

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = report_error(exc, "Segment region")

    def _on_worker_done(self, worker: Any) -> None:
        """A worker ended: the plan's hands over to the question or the run; a run's end idles."""
        if self.worker is not worker:
            return
        self.worker = None
        if self.confirm_box is None:
            self._idle()

    def _idle(self) -> None:
        try:
            self.run_button.enabled, self.cancel_button.enabled = True, False
        except RuntimeError:  # the window was closed while the worker ran
            return
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None

    def cancel(self) -> None:
        """Stop after the current FFN step; finished objects stay in the layer."""
        self._cancelled = True
        if self.confirm_box is not None:
            self.confirm_box.reject()
        if self.worker is not None:
            self.worker.quit()
        self.status.value = "cancelled"


def _why_no_objects(outcomes: dict[str, int]) -> str:
    """Why a run kept nothing, from its seeds' outcomes, in words."""
    if not outcomes:
        return "the seed policy found no place to start an object in this region"
    words = {
        "weak_seed": "the FFN was not confident at the seed",
        "too_small": "the object stayed smaller than the model's minimum size",
        "skipped_invalid": "the seed was too close to the region's edge",
        "skipped_near_segment": "the seed was next to an object",
        "skipped_masked": "the seed was masked",
        "no_steps": "the FFN could not take a step",
    }
    parts = [f"{n} seed(s): {words.get(k, k)}" for k, n in sorted(outcomes.items())]
    return "no object was kept (" + "; ".join(parts) + ")"
