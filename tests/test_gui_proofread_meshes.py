"""The proofreading tool in 3D: the selection drawn as meshes in a real napari viewer, never a
whole-volume read, following edits; mesh export from the dock."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connectome.proofread import ProofreadSession

pytestmark = pytest.mark.gui

VOXEL = (8.0, 6.0, 6.0)


def two_blobs(shape=(32, 48, 72)) -> np.ndarray:
    """Two touching ellipsoids side by side along x: fragments 1, 2 (segment 1) and 3."""
    g = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    frag = np.zeros(shape, np.uint64)
    for fid, cx in ((1, 20.0), (3, 50.0)):
        d = ((g[0] - 16) / 12) ** 2 + ((g[1] - 24) / 18) ** 2 + ((g[2] - cx) / 16) ** 2
        frag[(d <= 1) & (frag == 0)] = fid
    frag[(frag == 1) & (g[0] >= 16)] = 2
    return frag


def world_box(info) -> tuple[np.ndarray, np.ndarray]:
    vs = np.asarray(VOXEL)
    return (np.asarray(info.bbox_lo) - 0.75) * vs, (np.asarray(info.bbox_hi) - 0.25) * vs


@pytest.fixture
def tool3d(make_napari_viewer, tmp_path, qtbot):
    from napari_connectome.gui.proofread import ProofreadWidget

    viewer = make_napari_viewer(show=True)
    session = ProofreadSession.create(
        tmp_path / "proj", two_blobs(), voxel_size_nm=VOXEL, chunks=16
    )
    widget = ProofreadWidget(viewer, session)
    viewer.window.add_dock_widget(widget, name="Proofreading")
    yield viewer, widget, widget.tool
    widget.tool.close()


def wait_meshes(qtbot, tool) -> None:
    qtbot.waitUntil(lambda: tool.meshes.pending == 0, timeout=20000)
    assert not tool.meshes.last_error


def test_3d_draws_the_selection_as_meshes_and_follows_merge_and_undo(tool3d, qtbot):
    from napari.layers import Surface
    from qtpy.QtCore import Qt

    from napari_connectome.gui.proofread.meshes_layer import labels_views
    from tests.test_gui_proofread import press

    viewer, _widget, tool = tool3d
    tool.select(1)
    views = labels_views(tool.layer) + labels_views(tool.selection_layer)
    for v in views:
        v.reads = v.volume_reads = 0
    viewer.dims.ndisplay = 3
    wait_meshes(qtbot, tool)
    layer = viewer.layers["segment meshes"]
    assert isinstance(layer, Surface)
    assert layer.visible
    assert not tool.layer.visible
    assert not tool.selection_layer.visible
    lo, hi = world_box(tool.session.segment_info(1))
    assert np.all(layer.vertices >= lo)
    assert np.all(layer.vertices <= hi)
    assert np.allclose(layer.vertex_colors[0], tool.meshes._color(1))
    assert viewer.layers.selection.active is tool.layer  # the tool's keys still work
    alone = layer.vertices[:, 2].max()

    tool.click((16, 24, 50), "merge")  # the gesture shift+click runs: merge segment 3 into 1
    wait_meshes(qtbot, tool)
    info = tool.session.segment_info(1)
    lo, hi = world_box(info)
    assert info.bbox_hi[2] > 60
    assert np.all(layer.vertices >= lo)
    assert np.all(layer.vertices <= hi)
    assert layer.vertices[:, 2].max() > alone + 20 * VOXEL[2]  # the mesh now reaches segment 3
    assert [m.segment for m in tool.meshes.meshes] == [1]

    press(viewer, Qt.Key_Z, ["Control"])  # undo the merge: the mesh shrinks back
    wait_meshes(qtbot, tool)
    assert layer.vertices[:, 2].max() == pytest.approx(alone)

    tool.select(3)
    wait_meshes(qtbot, tool)
    assert layer.vertices[:, 2].min() > alone - 10 * VOXEL[2]
    # 3D never read the labels volumes (a plane napari asks for, e.g. to check the dtype when the
    # selection changes, may be read on a busy machine; a 3D block never)
    assert all(v.volume_reads == 0 for v in views)

    viewer.dims.ndisplay = 2
    assert not layer.visible
    assert tool.layer.visible
    assert tool.selection_layer.visible


def test_export_meshes_button_writes_the_selection(tool3d, tmp_path):
    from napari_connectome.meshing import read_ply

    _viewer, widget, tool = tool3d
    tool.select(3)
    out = widget.export_meshes(tmp_path / "meshes")
    assert out is not None
    verts, faces = read_ply(out / "3.ply")
    lo, hi = world_box(tool.session.segment_info(3))
    assert np.all(verts[:, ::-1] >= lo)
    assert np.all(verts[:, ::-1] <= hi)
    assert len(faces) > 100
    widget.mesh_format.setCurrentText("precomputed")
    assert widget.export_meshes(tmp_path / "meshes") is None  # exists: refused, with a message
    assert "exists" in widget.message.text()
    widget.export_meshes(tmp_path / "ng")
    assert (tmp_path / "ng" / "3:0:mesh").is_file()


def test_a_project_opened_in_3d_reads_no_labels_volume(make_napari_viewer, tmp_path, qtbot):
    from napari_connectome.gui.proofread import ProofreadWidget
    from napari_connectome.gui.proofread.meshes_layer import labels_views

    viewer = make_napari_viewer(show=True)
    viewer.dims.ndisplay = 3
    session = ProofreadSession.create(tmp_path / "proj", two_blobs(), voxel_size_nm=VOXEL)
    widget = ProofreadWidget(viewer, session)
    tool = widget.tool
    views = labels_views(tool.layer) + labels_views(tool.selection_layer)
    assert all(v.reads <= 1 for v in views)  # a new layer is sliced once, as a plane, when made
    for v in views:
        v.reads = 0
    tool.select(3)
    wait_meshes(qtbot, tool)
    assert not tool.layer.visible
    assert [m.segment for m in tool.meshes.meshes] == [3]
    assert sum(v.reads for v in views) == 0
    viewer.dims.ndisplay = 2
    assert tool.layer.visible
    assert sum(v.reads for v in views) > 0  # 2D reads the plane it shows
    tool.close()
