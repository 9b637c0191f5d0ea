"""The "Click to segment" dock widget: click a neuron, watch FFN grow it, then Accept or Reject.

A tool mode in neuroglancer's sense: while "active" is on, a plain click (no drag) on the canvas
grows one object from the clicked voxel in a box of context around it; the growing probability
map is drawn in a preview layer as it changes, and Accept writes the object as a new segment into
the chosen labels layer through napari's undoable ``data_setitem`` (Reject drops it). Voxels that
already belong to a segment are never claimed, as in google/ffn. The click is marked with a point;
Stop (or Esc on the canvas) ends a growth after the current FFN step and keeps what grew so far
for Accept or Reject; an object that reaches the edge of its context box is flagged as cut off.
The growth itself is the core's :func:`~napari_connectome.ffn.inference.grow_object`, run by
:func:`~._ffn_tasks.run_grow` on a typed :class:`~._ffn_tasks.GrowRequest`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_connectome.errors import UserInputError
from napari_connectome.gui._ffn_tasks import (
    PRECISION_CHOICES,
    PRECISION_TIP,
    GrowRequest,
    GrowUpdate,
    ModelChoice,
    box_around,
    outcome_sentence,
    run_grow,
)
from napari_connectome.gui._models import ModelPicker, device_names
from napari_connectome.gui._notify import report_error
from napari_connectome.gui.segment_region import image_level0
from napari_connectome.volumes.box import Box

if TYPE_CHECKING:
    import napari

PREVIEW = "FFN preview"
CLICK = "FFN click"  # a Points layer marking where the last click was


def clicked_voxel(layer: Any, event: Any) -> np.ndarray | None:
    """The data voxel (z, y, x) under a click, in 2D (the slice) or 3D (along the view ray).

    In 3D the ray is sampled through the volume and the brightest voxel is taken, which is what a
    maximum-intensity rendering shows at that pixel and lies inside a neurite rather than on a
    dark membrane; with a plane depiction the ray's crossing with the plane is used.
    """
    shape = np.asarray(image_level0(layer).shape)
    dims = list(event.dims_displayed)
    if len(dims) == 2:
        point = np.asarray(layer.world_to_data(event.position))
        inside = np.all(point >= -0.5) and np.all(point < shape - 0.5)
        return np.round(point).astype(int) if inside else None
    near, far = layer.get_ray_intersections(
        event.position, event.view_direction, event.dims_displayed, world=True
    )
    if near is None or far is None:
        return None
    near, far = np.asarray(near, float), np.asarray(far, float)
    if getattr(layer, "depiction", "volume") == "plane":
        hit = layer.plane.intersect_with_line(line_position=near, line_direction=far - near)
        return np.clip(np.round(hit), 0, shape - 1).astype(int)
    n = int(np.ceil(np.linalg.norm(far - near))) + 1
    along = near + np.linspace(0, 1, n)[:, None] * (far - near)
    voxels = np.unique(np.clip(np.round(along), 0, shape - 1).astype(int), axis=0)
    data = image_level0(layer)
    values = np.asarray([data[tuple(v)] for v in voxels])
    return voxels[int(np.argmax(values))]


def _helper_layer_kwargs(layer: Any) -> dict[str, Any]:
    """The image's scale, translate and units for a helper layer (``gui/_layers.py``'s helper)."""
    try:
        from napari_connectome.gui._layers import helper_layer_kwargs
    except ImportError:  # (the shared helper is newer than this widget)
        return {"scale": layer.scale, "translate": layer.translate, "units": layer.units}
    return helper_layer_kwargs(layer)


class ClickToSegmentWidget(Container):
    """Click a neuron to grow it with FFN; Accept adds it as a new segment of a labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image, Labels

        self._viewer = viewer
        self.image = create_widget(label="image", annotation=Image)
        self.segments = create_widget(label="segments", annotation=Labels | None, value=None)
        self.segments.tooltip = "accepted objects go here; empty = a new '<image> segments' layer"
        self.model = ModelPicker()
        self.device = ComboBox(label="device", choices=device_names())
        self.precision = ComboBox(label="precision", choices=list(PRECISION_CHOICES))
        self.precision.tooltip = PRECISION_TIP
        self.precision_note = Label(value="")  # what runs and why, from the growth's updates
        self.precision_note.native.setWordWrap(True)
        self.context = SpinBox(label="context (voxels)", min=33, max=512, value=96, step=8)
        self.active = CheckBox(text="active: click a neuron to segment it", value=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.stop_button.tooltip = "stop the growing object (Esc on the canvas); keep what grew"
        self.accept_button = PushButton(text="Accept", enabled=False)
        self.reject_button = PushButton(text="Reject", enabled=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long messages must not widen the dock
        super().__init__(
            widgets=[
                self.image,
                self.segments,
                self.model,
                self.device,
                self.precision,
                self.precision_note,
                self.context,
                self.active,
                Container(
                    widgets=[self.stop_button, self.accept_button, self.reject_button],
                    layout="horizontal",
                ),
                self.status,
            ]
        )
        self.active.changed.connect(self._on_active)
        self.stop_button.changed.connect(self.stop)
        self.accept_button.changed.connect(self.accept)
        self.reject_button.changed.connect(self.reject)
        self.worker: Any = None
        self.pending: dict[str, Any] | None = None  # the grown object awaiting Accept/Reject
        self.every = 2  # FFN steps between preview updates
        self._escape_before: Any = None  # the viewer's Esc binding while the tool is active

    # -- tool mode -----------------------------------------------------------------------------
    def _on_active(self, on: bool) -> None:
        callbacks = self._viewer.mouse_drag_callbacks
        if on and self._on_click not in callbacks:
            callbacks.append(self._on_click)
            self._escape_before = self._viewer.bind_key("Escape", self._on_escape, overwrite=True)
            self.status.value = "click a neuron"
        elif not on and self._on_click in callbacks:
            callbacks.remove(self._on_click)
            self._viewer.bind_key("Escape", self._escape_before, overwrite=True)
            self._escape_before = None
            self.stop()  # switching the tool off also stops a growth
            if self.pending is None:
                self.status.value = ""

    def _on_escape(self, viewer: Any = None) -> None:
        """Esc on the canvas stops a growing object; otherwise it does what it did before."""
        if self.worker is not None:
            self.stop()
        elif callable(self._escape_before):
            self._escape_before(viewer)

    def _on_click(self, viewer: Any, event: Any):
        """A press-release without moving is a click; a drag still pans and rotates."""
        if event.button != 1 or event.modifiers:
            return
        yield
        if event.type == "mouse_move":
            return  # dragging: leave it to the camera
        layer = self.image.value
        if layer is None:
            return
        try:
            point = clicked_voxel(layer, event)
        except UserInputError as exc:
            self.status.value = report_error(exc, "Click to segment")
            return
        if point is not None:
            self.grow_at(point)

    # -- growing -------------------------------------------------------------------------------
    def grow_at(self, point: Any) -> None:
        """Grow one object from ``point`` (z, y, x voxel of the image layer) in a worker."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            self.worker.quit()  # a new click replaces a growth still running
            self.worker = None
        self._clear_preview()
        try:
            layer = self.image.value
            if layer is None:
                raise UserInputError("open an EM volume first: there is no image layer")
            data = image_level0(layer)
            target = self._target_layer(layer, data.shape)
            size = np.minimum(self.context.value, data.shape)
            box = box_around(point, size, data.shape)
        except UserInputError as exc:
            self.status.value = report_error(exc, "Click to segment")
            return
        start = np.array(box.start)
        request = GrowRequest(
            data=data,
            box=box,
            seed=tuple(int(v) for v in np.asarray(point, int) - start),
            existing=target.data,
            model=ModelChoice(
                self.model.choice.value,
                self.model.path_value(),
                self.device.value,
                self.precision.value,
            ),
            every=self.every,
        )
        self._mark_click(layer, point)
        self.pending = {"layer": layer, "box": box, "target": target, "done": False, "last": None}
        self.accept_button.enabled = self.reject_button.enabled = False
        self.status.value = f"growing from {tuple(int(v) for v in point)}… (Stop or Esc to stop)"
        worker = create_worker(run_grow, request, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_update)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda w=worker: self._on_stopped(w))
        worker.finished.connect(lambda w=worker: self._on_finished(w))
        self.worker = worker
        self.stop_button.enabled = True
        worker.start()

    def stop(self) -> None:
        """Stop the growing object after the current FFN step; what grew stays for a decision."""
        worker = self.worker
        if worker is None:
            return
        worker.quit()
        self._on_stopped(worker)

    def _on_update(self, update: GrowUpdate) -> None:
        pending = self.pending
        if pending is None or pending.get("stopped"):
            return
        layer = pending["layer"]
        start = np.array(pending["box"].start) + np.asarray(update.offset)
        translate = np.asarray(layer.translate) + start * np.asarray(layer.scale)
        shown = update.mask.astype(np.float32) if update.done else update.probability
        preview = self._preview(layer)
        preview.data = np.nan_to_num(shown, nan=0.0)
        preview.translate = translate
        preview.contrast_limits = (0.0, 1.0)
        pending["last"] = (update, start)
        if update.precision_reason:
            self.precision_note.value = update.precision_reason
        self.status.value = f"growing: step {update.steps} (Stop or Esc to stop)"
        if update.done:
            self.stop_button.enabled = False
            pending.update(done=True, start=start, mask=update.mask)
            if update.status == "ok" and update.mask is not None and update.mask.any():
                self.status.value = (
                    f"grown in {update.steps} steps, {int(update.mask.sum()):,} voxels: "
                    "Accept or Reject" + self._cut_off_note(update.edges, pending["box"], layer)
                )
                self.accept_button.enabled = self.reject_button.enabled = True
            else:
                reason = outcome_sentence(update.status, update.voxels, update.min_segment_size)
                self.status.value = f"no object here: {reason}"
                self._clear_preview()
                self.pending = None

    def _on_stopped(self, worker: Any) -> None:
        """Stop or Esc: keep the voxels grown so far (at the model's segment threshold)."""
        if self.worker is not worker:
            return
        self.worker = None
        self.stop_button.enabled = False
        pending = self.pending
        if pending is None or pending.get("done") or pending.get("stopped"):
            return
        pending["stopped"] = True
        last = pending.get("last")
        if last is None:
            self.status.value = "stopped before the first FFN step; click again"
            self._clear_preview()
            self.pending = None
            return
        update, start = last
        grown = Box.from_shape(update.probability.shape, start)  # where the object's box lies
        mask = (update.probability >= update.segment_threshold) & (
            np.asarray(pending["target"].data[grown.slices]) == 0
        )
        pending.update(done=True, start=start, mask=mask)
        n = int(mask.sum())
        if not n:
            self.status.value = f"stopped after {update.steps} steps: no voxel grown yet"
            self._clear_preview()
            self.pending = None
            return
        self._preview(pending["layer"]).data = mask.astype(np.float32)
        self.status.value = (
            f"stopped after {update.steps} steps: {n:,} voxels so far; Accept keeps them, "
            "Reject drops them"
        )
        self.accept_button.enabled = self.reject_button.enabled = True

    def _cut_off_note(self, edges: tuple[str, ...], box: Box, layer: Any) -> str:
        """Flag an object that reaches a face of its context box inside the volume."""
        shape = image_level0(layer).shape
        cut = []
        for face in edges:
            axis = "zyx".index(face[0])
            at_volume_edge = (
                box.start[axis] == 0 if face[1] == "-" else box.stop[axis] == shape[axis]
            )
            if not at_volume_edge:
                cut.append(face[0])
        if not cut:
            return ""
        axes = ", ".join(dict.fromkeys(cut))
        return (
            f". CUT OFF: it reaches the edge of the {self.context.value}-voxel context box "
            f"({axes}), so it probably goes on: raise 'context' and click again"
        )

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = report_error(exc, "Click to segment")
        self._clear_preview()
        self.pending = None

    def _on_finished(self, worker: Any) -> None:
        if self.worker is worker:
            self.worker = None
            self.stop_button.enabled = False

    # -- decisions -----------------------------------------------------------------------------
    def accept(self) -> int:
        """Write the grown object as a new segment (undo with Ctrl+Z on the labels layer)."""
        pending = self.pending
        if pending is None or not pending.get("done"):
            return 0
        target = pending["target"]
        mask = pending["mask"]
        box = pending["box"]
        region = np.asarray(target.data[box.slices])
        new_id = int(np.max(target.data)) + 1
        offset = pending["start"] - np.array(box.start)
        z, y, x = np.nonzero(mask)
        z, y, x = z + offset[0], y + offset[1], x + offset[2]
        free = region[z, y, x] == 0  # never overwrite an existing segment
        idx = tuple(arr[free] + a for arr, a in zip((z, y, x), box.start))
        target.data_setitem(idx, new_id)
        target.selected_label = new_id
        self._finish_decision(f"accepted as segment {new_id} in {target.name!r}")
        return new_id

    def reject(self) -> None:
        """Drop the grown object."""
        self._finish_decision("rejected")

    def _finish_decision(self, message: str) -> None:
        self.pending = None
        self._clear_preview()
        self.accept_button.enabled = self.reject_button.enabled = False
        self.status.value = message

    # -- layers --------------------------------------------------------------------------------
    def _target_layer(self, layer: Any, shape: tuple[int, ...]) -> Any:
        if self.segments.value is not None:
            target = self.segments.value
            if tuple(target.data.shape) != tuple(shape):
                raise UserInputError(
                    f"labels layer {target.name!r} has shape {tuple(target.data.shape)}, the image "
                    f"{tuple(shape)}; choose a labels layer covering the whole image"
                )
            return target
        name = f"{layer.name} segments"
        if name in self._viewer.layers:
            return self._viewer.layers[name]
        if int(np.prod(shape)) > 2**30:
            raise UserInputError(
                "the image is too large for an in-memory segments layer; choose a labels layer"
            )
        target = self._viewer.add_labels(
            np.zeros(shape, np.uint32),
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            units=layer.units,
        )
        self.segments.reset_choices()
        self.segments.value = target
        return target

    def _preview(self, layer: Any) -> Any:
        if PREVIEW in self._viewer.layers:
            return self._viewer.layers[PREVIEW]
        return self._viewer.add_image(
            np.zeros((1, 1, 1), np.float32),
            name=PREVIEW,
            translate=layer.translate,
            scale=layer.scale,
            units=layer.units,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, 1.0),
            opacity=0.7,
        )

    def _mark_click(self, layer: Any, point: Any) -> None:
        """A point where the click was, in the image's scale and units (replaced on each click)."""
        if CLICK in self._viewer.layers:
            marker = self._viewer.layers[CLICK]
            marker.data = np.asarray([point], float)
            return
        self._viewer.add_points(
            np.asarray([point], float),
            name=CLICK,
            **_helper_layer_kwargs(layer),
            symbol="cross",
            size=5,
            face_color="cyan",
            border_width=0,
            out_of_slice_display=True,
        )
        self._viewer.layers.selection.active = layer  # keep the image the active layer

    def _clear_preview(self) -> None:
        if PREVIEW in self._viewer.layers:
            self._viewer.layers.remove(PREVIEW)
