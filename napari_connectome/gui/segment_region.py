"""The "Segment region" dock widget: FFN on a region of an image layer, objects shown as they end.

The widget only gathers inputs (image layer, model, region, device, precision, optional seed points)
and shows results; the segmentation runs in a napari thread worker over
:func:`~napari_connectome.gui._ffn_tasks.iter_segment_region`, so the viewer stays responsive and
Cancel stops the run after the current FFN step, keeping the objects finished so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, create_widget

from napari_connectome.errors import UserInputError
from napari_connectome.gui._ffn_tasks import (
    PRECISION_CHOICES,
    PRECISION_TIP,
    Box,
    RegionUpdate,
    clip_box,
    iter_segment_region,
)
from napari_connectome.gui._models import ModelPicker, device_names, load
from napari_connectome.gui._notify import report_error

if TYPE_CHECKING:
    import napari

CURRENT_VIEW = "current view"
SHAPES_BOX = "box from a Shapes layer"
WHOLE = "whole volume"
#: Interactive regions are read into memory; larger ones belong in a job (napari-connectome submit).
MAX_REGION_VOXELS = 2**25


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


def region_box(choice: str, layer: Any, fov: tuple[int, ...], shapes: Any = None) -> Box:
    """The region, as voxel slices of ``layer``'s full-resolution data, for a region choice."""
    shape = image_level0(layer).shape
    context = np.maximum(np.asarray(fov), 48)
    if choice == WHOLE:
        return clip_box((0, 0, 0), shape, shape, fov)
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
    lo = np.where(flat, lo - context / 2, lo)
    hi = np.where(flat, hi + context / 2, hi + 1)
    return clip_box(lo, hi, shape, fov)


class SegmentRegionWidget(Container):
    """Run FFN on a region of an image layer; results go to a labels layer as objects finish."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image, Points, Shapes

        self._viewer = viewer
        self.image = create_widget(label="image", annotation=Image)
        self.model = ModelPicker()
        self.region = ComboBox(label="region", choices=[CURRENT_VIEW, SHAPES_BOX, WHOLE])
        self.region.value = WHOLE
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
        self.progress = ProgressBar(label="seeds", min=0, max=1, value=0)
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
                self.progress,
                self.status,
            ]
        )
        self.region.changed.connect(lambda v: setattr(self.shapes, "visible", v == SHAPES_BOX))
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.worker: Any = None
        self.output: Any = None  # the labels layer of the current / last run
        self.last_counters: dict[str, Any] = {}
        self._napari_progress: Any = None
        self.update_interval_s = 0.25  # at most this often the labels layer is refreshed
        self._cancelled = False

    # -- inputs --------------------------------------------------------------------------------
    def _inputs(self) -> dict[str, Any]:
        layer = self.image.value
        if layer is None:
            raise UserInputError("open an EM volume first: there is no image layer to segment")
        image_level0(layer)
        seeds_layer = self.seeds.value
        return {
            "layer": layer,
            "choice": self.model.choice.value,
            "path": self.model.path_value(),
            "device": self.device.value,
            "precision": self.precision.value,
            "region": self.region.value,
            "shapes": self.shapes.value,
            "seed_points": None
            if seeds_layer is None
            else _world_to_data(
                layer, np.array([seeds_layer.data_to_world(p) for p in seeds_layer.data])
            ),
        }

    # -- run -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check inputs, then segment the region in a worker thread."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        try:
            args = self._inputs()
        except UserInputError as exc:
            self.status.value = report_error(exc, "Segment region")
            return
        self.worker = create_worker(self._work, args, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_update)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._cancelled = False
        self.status.value = "loading model…"
        self.worker.start()

    def _work(self, args: dict[str, Any]):
        """Worker thread: load the model, read the region, then stream the segmentation."""
        model, config, _ = load(args["choice"], args["path"], args["device"])
        layer = args["layer"]
        box = region_box(args["region"], layer, config.fov_size, args["shapes"])
        size = int(np.prod([s.stop - s.start for s in box]))
        if size > MAX_REGION_VOXELS:
            raise UserInputError(
                f"the region has {size:,} voxels, more than the {MAX_REGION_VOXELS:,} segmented "
                "interactively; draw a smaller box or run a job (napari-connectome submit)"
            )
        image = np.asarray(image_level0(layer)[box])
        seeds = None
        skipped = 0
        if args["seed_points"] is not None and len(args["seed_points"]):
            # Points where the model's FOV does not fit inside the region cannot start an object.
            start = np.array([s.start for s in box])
            points = np.round(args["seed_points"]).astype(int) - start
            margin = np.asarray(config.fov_size) // 2
            usable = np.all((points >= margin) & (points < np.asarray(image.shape) - margin), 1)
            seeds, skipped = points[usable], int((~usable).sum())
            if not len(seeds):
                raise UserInputError(
                    f"none of the {len(points)} seed points lies inside the region with room for "
                    f"the model's field of view {tuple(config.fov_size)}; move them or the region"
                )
        yield ("region", box, skipped)
        yield from iter_segment_region(
            image,
            model,
            config,
            seeds=seeds,
            device=args["device"],
            precision=args["precision"],
            min_interval_s=self.update_interval_s,
        )

    def _on_update(self, update: Any) -> None:
        if self._cancelled:
            return  # updates already queued when Cancel was pressed
        if isinstance(update, tuple):  # the region is known: make its output layer
            self._make_output(update[1])
            if update[2]:
                from napari.utils.notifications import show_warning

                show_warning(f"{update[2]} seed point(s) too close to the region's border skipped")
            return
        assert isinstance(update, RegionUpdate)
        if "precision_reason" in update.counters:
            self.precision_note.value = update.counters["precision_reason"]
        self.progress.max = max(update.seeds_total, 1)
        self.progress.value = update.seeds_done
        self.status.value = (
            f"{update.segments} objects, seed {update.seeds_done}/{update.seeds_total}"
        )
        if update.labels is not None and self.output is not None:
            self.output.data = update.labels
        if update.finished:
            self.last_counters = update.counters
            seconds = update.counters.get("seconds", 0)
            how = update.counters.get("precision", "")
            self.status.value = f"done: {update.segments} objects in {seconds:.1f} s ({how})"
        # Last: napari's progress bar processes Qt events when it redraws, so later updates may
        # run inside this call; nothing above must be written after them.
        pbar = self._napari_progress
        if pbar is not None and update.seeds_done > pbar.n:
            pbar.total = max(update.seeds_total, 1)
            pbar.set_description(f"FFN: {update.segments} objects")
            pbar.update(update.seeds_done - pbar.n)

    def _make_output(self, box: Box) -> None:
        from napari.utils import progress

        layer = self.image.value
        start = np.array([s.start for s in box])
        shape = tuple(s.stop - s.start for s in box)
        translate = np.asarray(layer.translate) + start * np.asarray(layer.scale)
        self.output = self._viewer.add_labels(
            np.zeros(shape, np.uint32),
            name=f"{layer.name} FFN",
            scale=layer.scale,
            translate=translate,
            units=layer.units,
            metadata={"region_zyx": [[int(s.start), int(s.stop)] for s in box]},
        )
        self.status.value = f"segmenting region {[(s.start, s.stop) for s in box]}…"
        self._napari_progress = progress(total=1, desc="FFN")  # (processes pending Qt events)

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = report_error(exc, "Segment region")

    def _on_finished(self) -> None:
        self.worker = None
        try:
            self.run_button.enabled, self.cancel_button.enabled = True, False
        except RuntimeError:  # the window was closed while the worker ran
            return
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None

    def cancel(self) -> None:
        """Stop after the current FFN step; finished objects stay in the layer."""
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self.status.value = "cancelled"
