"""The desk widgets (Segment region, Click to segment) driven in a real napari viewer.

Most tests use a tiny "flood" FFN saved as a local model folder: its weights are zero and its output
bias is large, so every FOV it sees is filled and it moves everywhere. That makes runs fast and
their outcome known (objects fill the region) while exercising the real canvas, seed policy,
runner, worker threads and layers. The ``realdata`` tests use Google's published FIB-25 model.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_connectome.gui._camera import camera
from napari_connectome.gui._models import LOCAL, NOT_DOWNLOADED
from napari_connectome.gui.click_segment import CLICK, PREVIEW, ClickToSegmentWidget
from napari_connectome.gui.segment_region import (
    CURRENT_VIEW,
    SHAPES_BOX,
    WHOLE,
    SegmentRegionWidget,
)
from napari_connectome.samples import synthetic_em

pytestmark = pytest.mark.gui


def _flood_model(path, deltas: int, min_segment_size: int = 1000):
    import torch

    from napari_connectome.ffn.checkpoint import save_model
    from napari_connectome.ffn.config import ModelConfig
    from napari_connectome.ffn.model import FFNArchitecture, build_model
    from napari_connectome.ffn.options import InferenceOptions

    arch = FFNArchitecture(depth=1, features=4, fov_size=(9, 9, 9), deltas=(deltas,) * 3)
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.conv_lom.bias.fill_(8.0)  # every voxel of every FOV becomes "object"
    options = InferenceOptions(min_segment_size=min_segment_size)
    return save_model(path, model, ModelConfig(architecture=arch, inference=options))


@pytest.fixture(scope="module")
def flood_model(tmp_path_factory):
    return _flood_model(tmp_path_factory.mktemp("models") / "flood", deltas=4)


@pytest.fixture(scope="module")
def slow_flood_model(tmp_path_factory):
    """Moves one voxel at a time, so a region takes long enough to cancel."""
    return _flood_model(tmp_path_factory.mktemp("models") / "flood-slow", deltas=1)


@pytest.fixture(scope="module")
def picky_flood_model(tmp_path_factory):
    """Fills everything but keeps no object smaller than a million voxels."""
    return _flood_model(tmp_path_factory.mktemp("models") / "flood-picky", 4, 10**6)


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    vol = synthetic_em((48, 48, 48), seed=0)
    viewer.add_image(vol.image, name="em", scale=(10, 10, 10))
    return viewer


def _region_widget(viewer, model_dir) -> SegmentRegionWidget:
    widget = SegmentRegionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment region")
    widget.model.choice.value = LOCAL
    widget.model.path.value = model_dir
    # Only the test of the question asks it: on a busy machine any run's estimate may be long.
    widget.confirm_above_s = 1e9
    return widget


def test_segment_region_shows_objects_while_it_runs(viewer, flood_model, qtbot):
    widget = _region_widget(viewer, flood_model)
    assert widget.region.value == CURRENT_VIEW  # never the whole volume by default
    widget.region.value = WHOLE
    widget.update_interval_s = 0.0
    seen: list[tuple[int, int]] = []  # (objects, voxels) drawn at each layer update
    viewer.layers.events.inserted.connect(
        lambda e: e.value.events.data.connect(
            lambda _: seen.append(
                (len(np.unique(e.value.data)) - 1, int(e.value.data.astype(bool).sum()))
            )
        )
    )

    statuses: list[str] = []  # the status line whenever the layer was redrawn
    viewer.layers.events.inserted.connect(
        lambda e: e.value.events.data.connect(lambda _: statuses.append(widget.status.value))
    )
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)

    out = viewer.layers["em FFN"]
    assert widget.status.value.startswith("done:")
    assert "FFN steps" in widget.status.value
    n_objects = len(np.unique(out.data)) - 1
    assert n_objects == widget.last_counters["segments"] >= 2
    # Objects arrived one after another, not only at the end, and grew while they were growing:
    # the first object was drawn at more than one size before the second appeared.
    assert seen[0][0] < n_objects
    assert seen[-1][0] == n_objects
    first = [v for n, v in seen if n == 1]
    assert len(set(first)) >= 2
    # Before the run: its size and estimated time; during it: FFN steps and time left.
    assert "48 x 48 x 48 = 110,592 voxels" in widget.estimate.value
    assert "FFN steps" in widget.estimate.value
    assert "steps/s measured" in widget.estimate.value
    # while it ran: FFN steps done of those expected, and the time left
    assert any(" FFN steps, " in t and " left (seed " in t for t in statuses)
    assert widget.progress.max > widget.last_counters["seeds_tried"]  # steps, not seeds
    assert out.data.shape == (48, 48, 48)
    assert tuple(out.scale) == (10, 10, 10)
    assert widget.progress.value == widget.progress.max
    assert widget.run_button.enabled
    # precision auto by default; what ran and why is shown and kept with the counters
    assert widget.precision.value == "auto"
    assert widget.last_counters["precision"] in ("fp32", "bf16")
    assert widget.precision_note.value == widget.last_counters["precision_reason"]
    assert "native bf16" in widget.precision_note.value


def test_region_updates_are_paced_not_one_per_ffn_step(slow_flood_model):
    """Each update repaints the window on the Qt thread (with software OpenGL, holding the GIL):
    the worker sends at most one per interval, each with the labels so far, and a consumer that
    stops iterating stops the run."""
    from napari_connectome.gui._ffn_tasks import ModelChoice, RegionInputs, plan_region, run_region

    image = synthetic_em((48, 48, 48), seed=0).image
    model = ModelChoice(LOCAL, slow_flood_model, "cpu", "fp32")
    plan = plan_region(RegionInputs(image, (0, 0, 0), (48, 48, 48), None, model))
    t0, updates = time.perf_counter(), []
    for update in run_region(plan, min_interval_s=0.25):
        updates.append(update)
        if time.perf_counter() - t0 > 2.0:
            break  # what a Cancel does: the generator is closed after this update
    elapsed = time.perf_counter() - t0
    assert not updates[-1].finished  # deltas 1 on 48^3 takes far longer than 2 s
    assert updates[0].steps == 0
    assert updates[0].counters  # what runs, at once
    assert len(updates) <= elapsed / 0.25 + 2
    assert updates[-1].steps > 3 * len(updates)  # many FFN steps per update, not one each
    assert all(u.labels is not None and u.labels.shape == (48, 48, 48) for u in updates)
    assert np.count_nonzero(updates[-1].labels) > 0  # the object growing is drawn


def test_segment_region_in_a_shapes_box(viewer, flood_model, qtbot):
    viewer.dims.set_point(0, 200)  # slice z = 20 (world 200 nm)
    box = np.array([[200, 50, 60], [200, 50, 400], [200, 420, 400], [200, 420, 60]])
    shapes = viewer.add_shapes([box], shape_type="rectangle", name="box")
    widget = _region_widget(viewer, flood_model)
    widget.region.value = SHAPES_BOX
    widget.shapes.value = shapes

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)

    out = viewer.layers["em FFN"]
    # y/x from the rectangle (5..42 voxels), z: 48 slices of context clipped to the volume
    assert out.metadata["region_zyx"] == [[0, 44], [5, 43], [6, 41]]
    assert tuple(out.translate) == (0, 50, 60)
    assert out.data.any()


def test_seed_points_grow_one_object_each_and_border_points_are_skipped(viewer, flood_model, qtbot):
    points = viewer.add_points(np.array([[240, 240, 240], [10, 240, 240]]), name="seeds")
    widget = _region_widget(viewer, flood_model)
    widget.region.value = WHOLE
    widget.seeds.value = points

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)

    out = viewer.layers["em FFN"]
    assert widget.status.value.startswith("done: 1 objects")
    assert set(np.unique(out.data)) == {0, 1}
    assert out.data[24, 24, 24] == 1


def test_long_runs_ask_first_and_no_means_nothing_runs(viewer, flood_model, qtbot):
    from qtpy.QtWidgets import QMessageBox

    widget = _region_widget(viewer, flood_model)
    widget.region.value = WHOLE
    widget.confirm_above_s = 0.0  # every run counts as long here

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.confirm_box is not None, timeout=60_000)
    box = widget.confirm_box
    assert box.isVisible()
    assert "estimated to take" in box.text()
    assert "110,592 voxels" in box.informativeText()
    qtbot.mouseClick(box.button(QMessageBox.No), Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    assert "em FFN" not in viewer.layers
    assert widget.status.value.startswith("not started")

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.confirm_box is not None, timeout=60_000)
    qtbot.mouseClick(widget.confirm_box.button(QMessageBox.Yes), Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.enabled, timeout=120_000)
    assert widget.status.value.startswith("done:")
    assert viewer.layers["em FFN"].data.any()


def test_a_box_outside_the_volume_is_refused_and_a_clamped_one_said(viewer, flood_model, qtbot):
    viewer.dims.set_point(0, 200)
    outside = np.array([[200, 600, 600], [200, 600, 900], [200, 900, 900], [200, 900, 600]])
    shapes = viewer.add_shapes([outside], shape_type="rectangle", name="box")
    widget = _region_widget(viewer, flood_model)
    widget.region.value = SHAPES_BOX
    widget.shapes.value = shapes

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.enabled, timeout=60_000)
    assert "lies outside the volume" in widget.status.value
    assert "em FFN" not in viewer.layers

    partly = np.array([[200, -100, 50], [200, -100, 300], [200, 300, 300], [200, 300, 50]])
    shapes.data = [partly]
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.enabled, timeout=120_000)
    out = viewer.layers["em FFN"]
    assert out.metadata["region_zyx"][1] == [0, 31]
    messages = [n.message for n in _notifications()]
    assert any("box clamped from" in m and "y -10:31" in m and "y 0:31" in m for m in messages)
    assert widget.status.value.startswith("done:")


def _notifications():
    from napari.utils.notifications import notification_manager

    return list(notification_manager.records)


def test_cancel_stops_the_run_and_keeps_the_ui_usable(viewer, slow_flood_model, qtbot):
    widget = _region_widget(viewer, slow_flood_model)
    widget.region.value = WHOLE

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: "FFN steps" in widget.status.value, timeout=60_000)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)

    assert widget.status.value == "cancelled"
    assert widget.run_button.enabled
    assert not widget.cancel_button.enabled
    assert widget.progress.value < widget.progress.max


def test_bad_inputs_are_notified(make_napari_viewer, flood_model, qtbot):
    viewer = make_napari_viewer()
    widget = _region_widget(viewer, flood_model)

    widget.run_button.clicked.emit()  # no image layer at all
    assert "no image layer" in widget.status.value

    viewer.add_image(np.zeros((64, 64), np.uint8), name="flat")
    widget.image.reset_choices()
    widget.run_button.clicked.emit()
    assert "3D" in widget.status.value

    viewer.add_image(np.zeros((6, 64, 64), np.uint8), name="thin")
    widget.image.reset_choices()
    widget.image.value = viewer.layers["thin"]
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "field of view" in widget.status.value
    assert widget.run_button.enabled

    widget.model.path.value = flood_model.parent / "missing"
    widget.image.value = viewer.layers["thin"]
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "model folder" in widget.status.value


def test_the_model_menu_says_what_each_model_is_and_which_needs_internet(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path / "empty-cache"))
    # offline: the zoo's files are nowhere to be had
    monkeypatch.setenv("NAPARI_CONNECTOME_ZOO_URL", (tmp_path / "no-mirror").as_uri())
    viewer = make_napari_viewer(show=True)
    viewer.add_image(synthetic_em((48, 48, 48), seed=0).image, name="em")
    widget = SegmentRegionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment region")
    widget.confirm_above_s = 1e9
    combo = widget.model.choice.native
    labels = [combo.itemText(i) for i in range(combo.count())]

    assert labels[0].startswith("fib25-small (default): quick, rough")
    assert "ARAND 0.48" in labels[0]
    assert widget.model.note.native.isHidden()
    google = next(t for t in labels if t.startswith("google-fib25"))
    assert NOT_DOWNLOADED in google
    combo.setCurrentIndex(labels.index(google))  # as a user picks it
    assert widget.model.choice.value == "google-fib25"
    assert not widget.model.note.native.isHidden()
    assert NOT_DOWNLOADED in widget.model.note.value

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None and widget.run_button.enabled, timeout=60_000)
    text = widget.status.value
    assert "google-fib25 is not downloaded and could not be downloaded now" in text
    assert "use the default fib25-small" in text.lower()
    assert "://" not in text
    assert "Error" not in text


def _click_canvas_centre(viewer, qtbot, world_zyx):
    """A real left click on the canvas, on the world point ``world_zyx``."""
    from qtpy.QtCore import QPoint, Qt

    if viewer.dims.ndisplay == 2:
        viewer.dims.set_point(0, world_zyx[0])
        camera(viewer).center = world_zyx[1:]
    else:
        camera(viewer).center = world_zyx
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.mouseClick(
        canvas, Qt.LeftButton, Qt.NoModifier, QPoint(canvas.width() // 2, canvas.height() // 2)
    )


def _click_widget(viewer, model_dir) -> ClickToSegmentWidget:
    widget = ClickToSegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Click to segment")
    widget.model.choice.value = LOCAL
    widget.model.path.value = model_dir
    widget.context.value = 40
    widget.active.value = True
    return widget


def test_click_grows_an_object_live_then_accept_and_undo(viewer, flood_model, qtbot):
    widget = _click_widget(viewer, flood_model)
    updates: list[int] = []
    viewer.layers.events.inserted.connect(
        lambda e: (
            e.value.name == PREVIEW
            and e.value.events.data.connect(lambda _: updates.append(int(e.value.data.size)))
        )
    )

    _click_canvas_centre(viewer, qtbot, (240, 240, 240))
    qtbot.waitUntil(lambda: widget.accept_button.enabled, timeout=60_000)

    assert len(updates) >= 2  # the preview showed the object growing, then the result
    # The click is marked, in the image's world and units.
    marker = viewer.layers[CLICK]
    assert marker.data.tolist() == [[24, 24, 24]]
    assert tuple(marker.scale) == (10, 10, 10)
    assert tuple(marker.units) == tuple(viewer.layers["em"].units)
    # The flood fills the whole 40-voxel context box (4..44 of a 48-voxel volume): flagged.
    assert "CUT OFF" in widget.status.value
    assert "raise 'context'" in widget.status.value
    assert widget.precision.value == "auto"
    assert "native bf16" in widget.precision_note.value  # what runs and why
    segments = viewer.layers["em segments"]
    assert not segments.data.any()
    new_id = widget.accept()
    assert new_id == 1
    grown = segments.data == 1
    assert grown[24, 24, 24]  # the clicked voxel is in the object
    assert grown.sum() > 1000
    assert PREVIEW not in viewer.layers
    segments.undo()
    assert not segments.data.any()


def test_click_never_claims_an_existing_segment_and_reject(viewer, flood_model, qtbot):
    widget = _click_widget(viewer, flood_model)
    existing = np.zeros((48, 48, 48), np.uint32)
    existing[:, :, :20] = 7
    viewer.add_labels(existing, name="proofread", scale=(10, 10, 10))
    widget.segments.reset_choices()
    widget.segments.value = viewer.layers["proofread"]
    widget.active.value = True

    _click_canvas_centre(viewer, qtbot, (240, 240, 300))
    qtbot.waitUntil(lambda: widget.accept_button.enabled, timeout=60_000)
    widget.accept()
    data = viewer.layers["proofread"].data
    assert (data[:, :, :20] == 7).all()
    assert (data == 8).sum() > 1000

    _click_canvas_centre(viewer, qtbot, (240, 100, 400))
    qtbot.waitUntil(lambda: widget.accept_button.enabled, timeout=60_000)
    widget.reject()
    assert set(np.unique(viewer.layers["proofread"].data)) == {0, 7, 8}
    assert widget.status.value == "rejected"


def test_click_in_the_3d_view(viewer, flood_model, qtbot):
    widget = _click_widget(viewer, flood_model)
    viewer.dims.ndisplay = 3
    camera(viewer).angles = (0, 0, 90)

    _click_canvas_centre(viewer, qtbot, (240, 240, 240))
    qtbot.waitUntil(lambda: widget.accept_button.enabled, timeout=60_000)

    assert widget.accept() == 1
    assert (viewer.layers["em segments"].data == 1).sum() > 1000


@pytest.mark.parametrize("how", ["Stop button", "Esc"])
def test_stop_ends_a_growing_object_within_a_second(viewer, slow_flood_model, qtbot, how):
    from qtpy.QtWidgets import QApplication

    widget = _click_widget(viewer, slow_flood_model)  # one voxel per step: minutes to fill
    widget.context.value = 48

    _click_canvas_centre(viewer, qtbot, (240, 240, 240))
    qtbot.waitUntil(lambda: _growth_step(widget.status.value) >= 10, timeout=60_000)
    assert widget.stop_button.enabled
    worker = widget.worker
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=1_000):  # the thread itself has ended
        if how == "Esc":
            canvas = viewer.window._qt_viewer.canvas.native
            canvas.setFocus()
            qtbot.keyClick(canvas, Qt.Key_Escape)
        else:
            qtbot.mouseClick(widget.stop_button.native, Qt.LeftButton)
    assert time.perf_counter() - t0 < 1.0
    assert widget.worker is None
    steps = widget.status.value
    assert steps.startswith("stopped after")
    assert "Accept keeps them" in steps
    qtbot.wait(500)
    QApplication.processEvents()
    assert widget.status.value == steps  # no further growth reported after Stop
    assert not widget.stop_button.enabled
    assert widget.accept_button.enabled
    new_id = widget.accept()
    grown = viewer.layers["em segments"].data == new_id
    assert grown[24, 24, 24]
    assert 0 < grown.sum() < 48**3


def _growth_step(status: str) -> int:
    import re

    match = re.search(r"step (\d+)", status)
    return int(match.group(1)) if match else -1


def test_no_object_is_said_in_words(viewer, picky_flood_model, qtbot):
    widget = _click_widget(viewer, picky_flood_model)

    _click_canvas_centre(viewer, qtbot, (240, 240, 240))
    qtbot.waitUntil(lambda: widget.status.value.startswith("no object here"), timeout=60_000)

    text = widget.status.value
    assert "fewer than the model's minimum of 1,000,000" in text
    assert "too_small" not in text
    assert "_" not in text.split(":", 1)[1]
    assert not widget.accept_button.enabled


def test_tool_off_means_clicks_do_nothing(viewer, flood_model, qtbot):
    widget = _click_widget(viewer, flood_model)
    widget.active.value = False

    _click_canvas_centre(viewer, qtbot, (240, 240, 240))
    qtbot.wait(300)

    assert widget.worker is None
    assert PREVIEW not in viewer.layers


# --------------------------------------------------------------------------------------------------
# With Google's published FIB-25 model on the real FIB-25 volume
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def google_default_model(google_ffn_dir, tmp_path_factory, monkeypatch):
    """Google's model, offline: the zoo's google-fib25 entry served from the shared copy."""
    monkeypatch.setenv("NAPARI_CONNECTOME_ZOO_URL", google_ffn_dir.as_uri())
    monkeypatch.setenv("NAPARI_CONNECTOME_CACHE", str(tmp_path_factory.mktemp("zoo-cache")))
    return google_ffn_dir


def _google_segment(google_ffn_dir, segment_id: str):
    import json

    origins = json.loads((google_ffn_dir / "sample-training2.origins.json").read_text())
    with np.load(google_ffn_dir / "sample-training2.npz", allow_pickle=False) as npz:
        seg = npz["segmentation"]
    return tuple(origins[segment_id]["start_zyx"]), seg, int(segment_id)


def _iou_vs_google(ours: np.ndarray, google: np.ndarray, gid: int) -> float:
    """Google's segment could not claim voxels of earlier segments: leave those out of ours."""
    ours = ours & ((google == gid) | (google == 0))
    theirs = google == gid
    return float((ours & theirs).sum() / (ours | theirs).sum())


@pytest.mark.realdata
def test_click_a_fib25_neuron_with_googles_model(
    make_napari_viewer, fib25_h5, google_default_model, qtbot
):
    from napari_connectome.gui._ffn_tasks import box_around

    seed, google, gid = _google_segment(google_default_model, "12")  # an early, 23-step object
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open(str(fib25_h5), plugin="napari-connectome")
    widget = ClickToSegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Click to segment")
    widget.image.value = viewer.layers["raw"]
    widget.model.choice.value = "google-fib25"  # from the zoo, served offline from the shared copy
    widget.context.value = 96
    widget.active.value = True

    _click_canvas_centre(viewer, qtbot, tuple(10 * v for v in seed))
    qtbot.waitUntil(lambda: PREVIEW in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: widget.accept_button.enabled, timeout=300_000)
    new_id = widget.accept()

    box = box_around(seed, (96, 96, 96), google.shape)
    ours = viewer.layers["raw segments"].data[box.slices] == new_id
    assert viewer.layers["raw segments"].data[seed] == new_id
    assert _iou_vs_google(ours, google[box.slices], gid) > 0.8


@pytest.mark.realdata
def test_segment_a_fib25_box_from_seed_points_with_googles_model(
    make_napari_viewer, fib25_h5, google_default_model, qtbot
):
    seed, google, gid = _google_segment(google_default_model, "60")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(fib25_h5), plugin="napari-connectome")
    z, y, x = (10 * v for v in seed)
    box = [
        [z, y - 500, x - 500],
        [z, y - 500, x + 500],
        [z, y + 500, x + 500],
        [z, y + 500, x - 500],
    ]
    shapes = viewer.add_shapes([np.array(box)], shape_type="rectangle", name="box")
    points = viewer.add_points([[z, y, x]], name="seeds")
    widget = SegmentRegionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment region")
    widget.image.value = viewer.layers["raw"]
    widget.model.choice.value = "google-fib25"
    widget.region.value = SHAPES_BOX
    widget.shapes.value = shapes
    widget.seeds.value = points
    widget.confirm_above_s = 1e9  # (one seed: the region's estimate overstates this run)

    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)

    out = viewer.layers["raw FFN"]
    (z0, z1), (y0, y1), (x0, x1) = out.metadata["region_zyx"]
    assert widget.last_counters["segments"] == 1
    assert _iou_vs_google(out.data == 1, google[z0:z1, y0:y1, x0:x1], gid) > 0.8
