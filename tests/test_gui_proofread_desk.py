"""Issue 19, the proofreading panel as a user meets it, in a real napari viewer with real Qt events:
feedback that states what the table states, napari's brush that cannot corrupt the segments, keys
in the jump field that stay there, a first look where the EM stays readable, a project made and
exported from the panel, and 3D that draws meshes, never the label volume."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_connectome.gui._camera import camera
from napari_connectome.proofread import ProofreadSession
from tests.test_gui_proofread import click, cube_fragments, membrane_image, press, shown

pytestmark = pytest.mark.gui


@pytest.fixture
def desk(make_napari_viewer, tmp_path, qtbot):
    from napari_connectome.gui.proofread import ProofreadWidget

    viewer = make_napari_viewer(show=True)
    session = ProofreadSession.create(
        tmp_path / "proj", cube_fragments(), image=membrane_image(), chunks=8
    )
    widget = ProofreadWidget(viewer, session)
    viewer.window.add_dock_widget(widget, name="Proofreading")
    yield viewer, widget, widget.tool
    if widget.tool is not None:
        widget.tool.close()


def table_size(widget, segment: int) -> str:
    row = widget.model.row_of(segment)
    assert row is not None, f"segment {segment} is not in the table"
    return widget.model.data(widget.model.index(row, 1))


def hover(viewer, qtbot, xy=(40, 40)) -> None:
    """A real mouse move over the canvas, then napari's status update from the cursor (what its
    status thread does a moment later)."""
    from qtpy.QtCore import QPoint
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas.native
    QTest.mouseMove(canvas, QPoint(*xy))
    qtbot.wait(20)
    viewer.update_status_from_cursor()


def assert_one_story(viewer, widget, tool, qtbot) -> str:
    """Panel, status bar and tool agree, also after the mouse moved over the canvas."""
    text = widget.message.text()
    assert text == tool.last_message
    assert viewer.status == text
    hover(viewer, qtbot)
    assert widget.message.text() == text
    assert viewer.help == text  # the status bar's help field, which the hover readout keeps
    status_bar = viewer.window._qt_window.statusBar()
    assert status_bar._help.text() == text
    return text


def test_the_message_after_merge_undo_redo_split_delete_equals_the_table(desk, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget, tool = desk
    click(tool, (2, 2, 2))
    assert assert_one_story(viewer, widget, tool, qtbot) == "segment 1: 512 voxels"
    assert table_size(widget, 1) == "512"
    click(tool, (2, 2, 10), ["Shift"])  # merge 2 into 1
    text = assert_one_story(viewer, widget, tool, qtbot)
    assert table_size(widget, 1) == "1,024"
    assert text == "merged 2 into 1; segment 1: 1,024 voxels"
    press(viewer, Qt.Key_Z, ["Control"])
    text = assert_one_story(viewer, widget, tool, qtbot)
    assert text == "undone: merge 2 into 1; segment 1: 512 voxels"
    assert table_size(widget, 1) == "512"
    assert table_size(widget, 2) == "512"
    press(viewer, Qt.Key_Z, ["Control", "Shift"])
    text = assert_one_story(viewer, widget, tool, qtbot)
    assert text == "redone: merge 2 into 1; segment 1: 1,024 voxels"
    assert table_size(widget, 1) == "1,024"
    assert "(undone)" not in widget.history.item(0).text()

    # a split: both sides' sizes in the message are the table's
    click(tool, (2, 2, 2), ["Control"])
    click(tool, (2, 2, 10), ["Control", "Alt"])
    press(viewer, Qt.Key_Return)
    press(viewer, Qt.Key_Return)
    new = shown(tool, (2, 2, 10))
    text = assert_one_story(viewer, widget, tool, qtbot)
    assert text == (
        f"split 1: segment 1: {table_size(widget, 1)} voxels; new segment {new}: "
        f"{table_size(widget, new)} voxels"
    )
    assert table_size(widget, 1) == table_size(widget, new) == "512"

    click(tool, (2, 2, 10))
    press(viewer, Qt.Key_Delete)
    assert assert_one_story(viewer, widget, tool, qtbot) == f"deleted segment {new}"
    assert widget.model.row_of(new) is None
    press(viewer, Qt.Key_Z, ["Control"])
    assert assert_one_story(viewer, widget, tool, qtbot) == f"undone: delete {new}"
    assert table_size(widget, new) == "512"


def test_an_edit_made_through_the_session_updates_the_panel(desk):
    """Scripts and notebooks edit through the session; the panel hears of it after it applied."""
    _viewer, widget, tool = desk
    tool.session.merge([3, 4])
    assert table_size(widget, 3) == "1,024"
    assert shown(tool, (2, 2, 26)) == 3


def test_napari_paint_fill_and_erase_cannot_write_into_segments(desk, qtbot):
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    from napari_connectome.errors import UserInputError

    viewer, _widget, tool = desk
    before = tool.session.labels().copy()
    history = len(tool.session.history())
    controls = viewer.window._qt_viewer.controls.widgets[tool.layer]
    for name in ("paint_button", "fill_button", "erase_button", "polygon_button"):
        button = getattr(controls, name)
        assert not button.isEnabled(), name
        assert "edit log" in button.toolTip()
        assert "undoable" in button.toolTip()
        qtbot.mouseClick(button, Qt.LeftButton)
    for mode in ("paint", "fill", "erase", "polygon"):
        tool.layer.mode = mode  # as a script or napari's own shortcut would
        assert tool.layer.mode == "pan_zoom"
    for key in (Qt.Key_P, Qt.Key_F, Qt.Key_E, Qt.Key_2, Qt.Key_3, Qt.Key_1):
        press(viewer, key)  # napari's keyboard shortcuts for its labels tools
        assert tool.layer.mode == "pan_zoom"
    # a real brush stroke across the canvas: pans, writes nothing
    canvas = viewer.window._qt_viewer.canvas.native
    start = QPoint(canvas.width() // 2, canvas.height() // 2)
    QTest.mousePress(canvas, Qt.LeftButton, Qt.NoModifier, start)
    for dx in range(5, 60, 5):
        QTest.mouseMove(canvas, start + QPoint(dx, dx // 2))
        qtbot.wait(5)
    QTest.mouseRelease(canvas, Qt.LeftButton, Qt.NoModifier, start + QPoint(60, 30))
    qtbot.wait(50)
    # napari's paint call itself (what its brush runs) is refused with a message, not a TypeError
    with pytest.raises(UserInputError, match="cannot be painted"):
        tool.layer.paint((2, 2, 2), 7)
    assert np.array_equal(tool.session.labels(), before)
    assert len(tool.session.history()) == history
    # the split seeds layer is filled by ctrl+click only
    tool.seed_layer.mode = "add"
    assert tool.seed_layer.mode == "pan_zoom"
    click(tool, (2, 2, 2))
    click(tool, (2, 2, 2), ["Control"])  # napari resets a points layer's editability on new data
    tool.seed_layer.mode = "add"
    assert tool.seed_layer.mode == "pan_zoom"


def l_shaped_segment(tool) -> int:
    """Merge fragments along two edges of the z=0 slab of the 2x4x4 fragment grid: an L whose
    bounding box centre is not in it."""
    ids = np.arange(1, 33).reshape(2, 4, 4)
    members = [int(i) for i in ids[0, 0, :]] + [int(i) for i in ids[0, 1:, 0]]
    tool.session.merge(members)
    return members[0]


def test_enter_and_escape_in_the_jump_field_stay_there_and_the_jump_lands_on_the_segment(
    desk, qtbot
):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer, widget, tool = desk
    seg = l_shaped_segment(tool)
    info = tool.session.segment_info(seg)
    centre = np.round((np.asarray(info.bbox_lo) + np.asarray(info.bbox_hi) - 1) / 2).astype(int)
    assert tool.session.segment_at(tuple(centre)) != seg  # the box centre is another segment
    # seeds on both sides of segment 27 (fragments 27 and 28): an Enter reaching the layer would
    # preview a split, an Escape reaching it would drop the seeds
    tool.session.merge([27, 28])
    click(tool, (12, 20, 20))
    click(tool, (12, 20, 20), ["Control"])
    click(tool, (12, 20, 28), ["Control", "Alt"])
    assert tool.active == 27
    press(viewer, Qt.Key_J)  # J on the canvas puts the cursor in the jump field
    assert widget.window().focusWidget() is widget.jump_edit
    QTest.keyClicks(widget.jump_edit, f"{seg}x")
    QTest.keyClick(widget.jump_edit, Qt.Key_Backspace)
    QTest.keyClick(widget.jump_edit, Qt.Key_Escape)
    assert len(tool.seeds["a"]) == len(tool.seeds["b"]) == 1
    QTest.keyClick(widget.jump_edit, Qt.Key_Return)
    assert tool.plan is None
    assert not tool.preview_layer.visible
    assert "split" not in widget.message.text()
    assert tool.active == seg
    assert widget.message.text().startswith(f"segment {seg}: {table_size(widget, seg)} voxels")
    # the view: the plane shown and the camera centre are a voxel of the segment
    voxel = np.asarray(tool.session.voxel_size_nm)
    z = viewer.dims.point[0] / voxel[0]
    y, x = np.asarray(camera(viewer).center[-2:]) / voxel[1:]
    assert tool.session.segment_at((z, y, x)) == seg
    # the same field refuses what is not an id, without touching the layer
    widget.jump_edit.setText("abc")
    QTest.keyClick(widget.jump_edit, Qt.Key_Return)
    assert "not a segment id" in widget.message.text()
    assert tool.plan is None


def test_jump_target_is_a_segment_voxel_near_the_box_centre(desk):
    _viewer, _widget, tool = desk
    seg = l_shaped_segment(tool)
    target = tool.jump_target(seg)
    assert tool.session.segment_at(target) == seg
    info = tool.session.segment_info(seg)
    centre = (np.asarray(info.bbox_lo) + np.asarray(info.bbox_hi) - 1) / 2
    labels = tool.session.labels()
    vox = np.argwhere(labels == seg)
    best = np.min(((vox - centre) ** 2).sum(1))
    assert ((np.asarray(target) - centre) ** 2).sum() == best


def write_h5(path, resolution=(8.0, 8.0, 8.0)):
    import h5py

    frags = cube_fragments()
    with h5py.File(path, "w") as f:
        for name, data in (
            ("raw", membrane_image()),
            ("labels", frags),
            ("fragments", frags),
        ):
            f[name] = data
            f[name].attrs["resolution_nm_zyx"] = list(resolution)
    return frags


def test_first_look_em_readable_axes_named_helper_layers_share_units(
    make_napari_viewer, tmp_path, desk
):
    from napari_connectome.gui._layers import helper_layer_kwargs

    write_h5(tmp_path / "vol.h5")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "vol.h5"), plugin="napari-connectome")
    by_name = {lyr.name: lyr for lyr in layers}
    assert by_name["labels"].visible
    assert not by_name["fragments"].visible
    assert by_name["labels"].opacity <= 0.4
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    box = viewer.add_shapes(name="region", **helper_layer_kwargs(by_name["raw"]))
    seeds = viewer.add_points(name="seeds", **helper_layer_kwargs(by_name["raw"]))
    assert viewer.layers.extent.units is not None  # no "Inconsistent units"
    assert tuple(box.scale) == tuple(by_name["raw"].scale) == (8.0, 8.0, 8.0)
    assert seeds.ndim == 3
    viewer.add_points(name="plain points", ndim=3)  # what the widgets did before
    assert viewer.layers.extent.units is None  # the check can fail

    proof_viewer, _widget, tool = desk
    assert tuple(proof_viewer.dims.axis_labels) == ("z", "y", "x")
    assert tool.layer.opacity <= 0.4
    assert proof_viewer.layers.extent.units is not None
    _widget.outlines.click()
    assert tool.layer.contour == 1


def test_new_project_from_a_layer_then_edit_and_export_from_the_panel(
    make_napari_viewer, tmp_path, qtbot, monkeypatch
):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFileDialog

    from napari_connectome.gui.proofread import ProofreadWidget
    from napari_connectome.volumes import open_volume

    frags = write_h5(tmp_path / "vol.h5")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(tmp_path / "vol.h5"), plugin="napari-connectome")
    widget = ProofreadWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading")
    tasks = widget.tasks
    assert not tasks.export_button.isEnabled()  # nothing to export before a project is open
    tasks.labels_combo.setCurrentText("fragments")
    tasks.image_combo.setCurrentText("raw")
    answer = {"path": str(tmp_path / "proj")}
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (answer["path"], ""))

    # Cancel right after the start: nothing is left behind
    qtbot.mouseClick(tasks.new_button, Qt.LeftButton)
    assert not tasks.cancel_button.isHidden()
    qtbot.mouseClick(tasks.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not tasks.running, timeout=60000)
    assert "cancelled" in tasks.status.text()
    assert not (tmp_path / "proj").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".proj")]

    qtbot.mouseClick(tasks.new_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.tool is not None, timeout=120000)
    tool = widget.tool
    assert "project created" in tasks.status.text()
    assert not viewer.layers["fragments"].visible  # the project's segments layer shows them
    assert tool.session.meta["fragments"]["source"].endswith("vol.h5:fragments")  # referred to
    assert tool.image_layer is not None
    assert tool.session.voxel_size_nm == (8.0, 8.0, 8.0)
    click(tool, (2, 2, 2))
    click(tool, (2, 2, 10), ["Shift"])
    assert shown(tool, (2, 2, 10)) == 1

    answer["path"] = str(tmp_path / "proofread.ome.zarr")
    # The real export runs, held at its start until the edit below has been tried: a small volume
    # exports faster than the click, so without the gate the test would race the worker.
    gate = threading.Event()
    real_export = tool.session.export

    def export_after_the_gate(*args, **kwargs):
        assert gate.wait(60), "the test never opened the gate"
        return real_export(*args, **kwargs)

    monkeypatch.setattr(tool.session, "export", export_after_the_gate)
    qtbot.mouseClick(tasks.export_button, Qt.LeftButton)
    assert tool.busy
    click(tool, (2, 2, 26), ["Shift"])  # edits wait while the export reads the table
    assert "export" in widget.message.text()
    assert shown(tool, (2, 2, 26)) == 4
    gate.set()
    qtbot.waitUntil(lambda: not tasks.running, timeout=120000)
    assert "exported" in tasks.status.text(), tasks.status.text()
    exported = np.asarray(open_volume(str(tmp_path / "proofread.ome.zarr")).data)
    expected = frags.copy()
    expected[expected == 2] = 1
    assert np.array_equal(exported, expected)
    assert not tool.busy
    widget.tool.close()


def test_switching_to_3d_with_the_viewer_button_draws_meshes_not_the_label_volume(desk, qtbot):
    from qtpy.QtCore import Qt

    from napari_connectome.gui.proofread.meshes_layer import LAYER_NAME, labels_views

    viewer, widget, tool = desk
    click(tool, (2, 2, 2))
    views = labels_views(tool.layer) + labels_views(tool.selection_layer)
    for v in views:
        v.volume_reads = 0
    button = viewer.window._qt_viewer.viewerButtons.ndisplayButton
    qtbot.mouseClick(button, Qt.LeftButton)
    assert viewer.dims.ndisplay == 3
    qtbot.waitUntil(lambda: tool.meshes.pending == 0, timeout=20000)
    qtbot.wait(100)  # let vispy draw a frame of what is visible
    assert not tool.layer.visible
    assert not tool.selection_layer.visible
    assert viewer.layers[LAYER_NAME].visible
    assert [m.segment for m in tool.meshes.meshes] == [1]
    assert sum(v.volume_reads for v in views) == 0  # the label volume was never read for 3D
    hover(viewer, qtbot)
    assert viewer.help == widget.message.text() == "segment 1: 512 voxels"  # 3D keeps it too
    qtbot.mouseClick(button, Qt.LeftButton)
    assert viewer.dims.ndisplay == 2
    assert tool.layer.visible
    assert not viewer.layers[LAYER_NAME].visible
