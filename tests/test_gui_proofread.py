"""Proofreading in a real napari viewer: clicks on the segments layer and key presses on the
canvas."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connectome.gui._camera import camera
from napari_connectome.proofread import ProofreadSession

pytestmark = pytest.mark.gui


def cube_fragments(shape=(16, 32, 32), size=8) -> np.ndarray:
    grid = [s // size for s in shape]
    ids = np.arange(1, np.prod(grid) + 1, dtype=np.uint64).reshape(grid)
    return np.kron(ids, np.ones((size,) * 3, dtype=np.uint64)).astype(np.uint64)


def membrane_image(shape=(16, 32, 32), x=16) -> np.ndarray:
    img = np.full(shape, 200, np.uint8)
    img[:, :, x - 1 : x + 1] = 15
    return img


@pytest.fixture
def proofreading(make_napari_viewer, tmp_path, qtbot):
    from napari_connectome.gui.proofread import ProofreadWidget

    viewer = make_napari_viewer(show=True)
    session = ProofreadSession.create(
        tmp_path / "proj", cube_fragments(), image=membrane_image(), chunks=8
    )
    widget = ProofreadWidget(viewer, session)
    viewer.window.add_dock_widget(widget, name="Proofreading")
    yield viewer, widget, widget.tool
    widget.tool.close()


def click(tool, zyx, modifiers=()):
    """A left click at voxel (z, y, x), delivered like napari delivers it to the active layer."""
    from napari.utils._test_utils import read_only_mouse_event
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    viewer, layer = tool.viewer, tool.layer
    assert viewer.layers.selection.active is layer
    world = layer.data_to_world(np.asarray(zyx, float))
    if viewer.dims.ndisplay == 2:
        viewer.dims.set_point(0, world[0])
    kw = {
        "modifiers": list(modifiers), "position": tuple(world), "button": 1,
        "view_direction": (
            list(camera(viewer).view_direction) if viewer.dims.ndisplay == 3 else None
        ),
        "dims_displayed": list(viewer.dims.displayed),
    }  # fmt: skip
    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", **kw))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", **kw))


def press(viewer, key, modifiers=()):
    """A real key press on the canvas (Qt event -> vispy -> napari keymap of the active layer)."""
    from napari.utils.interactions import KEY_SYMBOLS  # noqa: F401  (import check: napari keymaps loaded)
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    mods = Qt.NoModifier
    for m in modifiers:
        mods |= {"Control": Qt.ControlModifier, "Shift": Qt.ShiftModifier, "Alt": Qt.AltModifier}[m]
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, key, mods)


def shown(tool, zyx):
    """The label napari displays at a voxel (read back through the layer; a multiscale layer
    answers (level, value))."""
    value = tool.layer.get_value(tool.layer.data_to_world(np.asarray(zyx, float)), world=True)
    return int(value[1] if tool.layer.multiscale else value)


def test_click_select_shift_click_merge_and_ctrl_z_undo(proofreading):
    from qtpy.QtCore import Qt

    viewer, widget, tool = proofreading
    click(tool, (2, 2, 2))
    assert tool.active == 1
    assert widget.model.segment_at_row(widget.table.currentIndex().row()) == 1
    click(tool, (2, 2, 10), ["Shift"])
    assert shown(tool, (2, 2, 10)) == 1
    assert "merge 2 into 1" in widget.history.item(0).text()
    press(viewer, Qt.Key_Z, ["Control"])
    assert shown(tool, (2, 2, 10)) == 2
    assert "(undone)" in widget.history.item(0).text()
    press(viewer, Qt.Key_Z, ["Control", "Shift"])
    assert shown(tool, (2, 2, 10)) == 1


def test_ctrl_click_seeds_enter_preview_enter_commit(proofreading):
    from qtpy.QtCore import Qt

    viewer, _widget, tool = proofreading
    tool.session.merge(list(range(1, 33)))
    tool.refresh()
    click(tool, (4, 4, 4))
    click(tool, (4, 4, 4), ["Control"])
    click(tool, (4, 20, 28), ["Control", "Alt"])
    assert tool.seed_layer.data.shape == (2, 3)
    press(viewer, Qt.Key_Return)
    assert tool.plan is not None
    assert tool.preview_layer.visible
    assert shown(tool, (4, 4, 28)) == 1  # a preview changes nothing
    press(viewer, Qt.Key_Return)
    new = shown(tool, (4, 4, 28))
    assert new not in (0, 1)
    assert shown(tool, (4, 4, 4)) == 1
    assert (tool.session.labels()[:, :, 16:] == new).all()
    press(viewer, Qt.Key_Z, ["Control"])
    assert shown(tool, (4, 4, 28)) == 1


def test_refusals_show_a_message_and_change_nothing(proofreading):
    from qtpy.QtCore import Qt

    viewer, widget, tool = proofreading
    tool.session.delete(32)
    tool.refresh()
    click(tool, (15, 31, 31))
    assert "background" in viewer.status
    click(tool, (2, 2, 2))
    press(viewer, Qt.Key_L)
    assert tool.session.segment_info(1).locked
    assert "locked" in widget.model.data(widget.model.index(widget.model.row_of(1), 2))
    click(tool, (2, 2, 10))
    click(tool, (2, 2, 2), ["Shift"])  # merge into 2: 1 is locked
    assert "locked" in viewer.status
    assert shown(tool, (2, 2, 2)) == 1
    press(viewer, Qt.Key_Escape)
    click(tool, (2, 2, 10))
    click(tool, (2, 2, 10), ["Control"])
    press(viewer, Qt.Key_Return)
    assert "each side" in viewer.status
    assert tool.plan is None


def test_delete_done_jump_and_table_sorting(proofreading):
    from qtpy.QtCore import Qt

    viewer, widget, tool = proofreading
    click(tool, (2, 2, 2))
    press(viewer, Qt.Key_D)
    assert tool.session.segment_info(1).done
    press(viewer, Qt.Key_Delete)
    assert shown(tool, (2, 2, 2)) == 0
    widget.jump_edit.setText("20")
    widget.jump_edit.returnPressed.emit()
    assert tool.active == 20
    info = tool.session.segment_info(20)
    assert info.bbox_lo[0] <= viewer.dims.point[0] < info.bbox_hi[0]  # the view moved to segment 20
    assert widget.model.segment_at_row(widget.table.currentIndex().row()) == 20  # the table follows
    widget.table.sortByColumn(0, Qt.DescendingOrder)
    assert widget.model.data(widget.model.index(0, 0)) == "32"
    press(viewer, Qt.Key_D)
    widget.table.sortByColumn(3, Qt.DescendingOrder)  # last edit first
    assert widget.model.data(widget.model.index(0, 0)) == "20"
    assert "mark done 20" in widget.model.data(widget.model.index(0, 3))
    assert widget.model.data(widget.model.index(0, 2)) == "done"


def test_picking_in_3d_selects_the_first_segment_along_the_ray(proofreading):
    viewer, _widget, tool = proofreading
    viewer.dims.ndisplay = 3
    camera(viewer).angles = (0, 0, 90)
    click(tool, (8, 20, 20))
    assert tool.active is not None
    assert tool.selection_layer.contour == 0


def test_real_mouse_clicks_on_the_canvas_select_and_merge(proofreading, qtbot):
    """Qt mouse events on the canvas widget, through vispy and napari, to the tool."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    viewer, widget, tool = proofreading
    canvas = viewer.window._qt_viewer.canvas.native

    def click_at(zyx, modifiers=Qt.NoModifier):
        centre = QPoint(canvas.width() // 2, canvas.height() // 2)  # after docking resized it
        world = tool.layer.data_to_world(np.asarray(zyx, float))
        viewer.dims.set_point(0, world[0])
        camera(viewer).center = tuple(world[1:])  # the canvas centre now shows this voxel
        qtbot.wait(50)  # let vispy apply the camera (a user clicks after the view moved)
        QTest.mouseClick(canvas, Qt.LeftButton, modifiers, centre)
        qtbot.wait(50)

    click_at((4, 4, 4))
    assert tool.active == 1
    click_at((4, 4, 12), Qt.ShiftModifier)
    assert shown(tool, (4, 4, 12)) == 1
    assert "merge 2 into 1" in widget.history.item(0).text()


def test_plugin_menu_widget_opens_a_project_and_refuses_a_second_session(
    make_napari_viewer, tmp_path
):
    """Plugins > Connectome > Proofreading, then Open project... (the docs' steps)."""
    ProofreadSession.create(tmp_path / "proj", cube_fragments(), chunks=8).close()
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-connectome", "Proofreading")
    widget.open_project(tmp_path / "proj")
    assert widget.tool is not None
    assert "segments" in viewer.layers
    other = make_napari_viewer()
    _, second = other.window.add_plugin_dock_widget("napari-connectome", "Proofreading")
    second.open_project(tmp_path / "proj")  # the first viewer still has it open
    assert second.tool is None
    assert "another session" in second.message.text()
    widget.tool.close()


def test_project_by_reference_shows_as_a_multiscale_layer_and_edits(make_napari_viewer, tmp_path):
    """A project referring to an OME-Zarr pyramid: napari gets one view per level, reads only what
    it shows, and a click-merge shows at once."""
    from napari_connectome.gui.proofread.tool import ProofreadTool
    from napari_connectome.volumes import write_ome_zarr

    frags = cube_fragments((32, 64, 64), size=16)
    write_ome_zarr(frags, tmp_path / "seg.ome.zarr", labels=True, chunks=16)
    session = ProofreadSession.create(tmp_path / "proj", str(tmp_path / "seg.ome.zarr"))
    viewer = make_napari_viewer()
    tool = ProofreadTool(viewer, session, multiscale=True)
    assert tool.layer.multiscale
    assert len(tool.layer.data) == len(session.fragment_levels) >= 2
    # what napari drew (one plane) and the open-time sample, not all 32 chunks of the volume
    assert session.fragments.reads <= 16 + 9
    click(tool, (8, 8, 8))
    click(tool, (8, 8, 24), modifiers=["Shift"])
    assert session.segment_at((8, 8, 24)) == 1
    assert np.asarray(tool.layer.data[1][4]).max() >= 1  # the coarse level shows the table too
    assert (np.asarray(tool.layer.data[0][8])[:16, :32] == 1).all()
    tool.close()
