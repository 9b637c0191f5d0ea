"""The plugin's Open in neuroglancer widget, driven as a user does: open OME-Zarr volumes through
the plugin, pick a label, click Open, read the link it shows, click Stop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_connectome.volumes import write_ome_zarr

pytestmark = pytest.mark.gui
BIG = 2**60 + 5


@pytest.fixture
def volumes(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (16, 32, 32), dtype=np.uint8)
    seg = np.zeros(img.shape, np.uint64)
    seg[2:10, 4:20, 4:20] = BIG
    write_ome_zarr(img, tmp_path / "em.ome.zarr", voxel_size_nm=(40, 8, 8), chunks=16)
    write_ome_zarr(seg, tmp_path / "seg.ome.zarr", voxel_size_nm=(40, 8, 8), labels=True, chunks=16)
    return tmp_path


def test_open_in_neuroglancer_serves_the_selected_layers(
    make_napari_viewer, qtbot, volumes, monkeypatch
):
    pytest.importorskip("neuroglancer")
    monkeypatch.setenv("BROWSER", "true")  # the web browser "opens" as a no-op command
    from napari_connectome.gui.open_in_neuroglancer import OpenInNeuroglancerWidget

    viewer = make_napari_viewer()
    viewer.open(str(volumes / "em.ome.zarr"), plugin="napari-connectome")
    viewer.open(str(volumes / "seg.ome.zarr"), plugin="napari-connectome")
    labels = viewer.layers["seg"]
    labels.selected_label = BIG
    widget = OpenInNeuroglancerWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Open in neuroglancer")
    viewer.layers.selection = {viewer.layers["em"], labels}
    qtbot.mouseClick(widget.open_button.native, Qt.MouseButton.LeftButton)
    url = widget.url.value
    assert url.startswith("http://127.0.0.1:")
    assert widget.stop_button.enabled
    assert "serving 2 layer(s)" in widget.status.value
    assert urllib.request.urlopen(url, timeout=20).status == 200
    state = widget.link.state
    by_name = {lay["name"]: lay for lay in state["layers"]}
    assert by_name["em"]["type"] == "image"
    assert by_name["seg"]["type"] == "segmentation"
    assert by_name["seg"]["segments"] == [str(BIG)]
    data = by_name["seg"]["source"].removeprefix("zarr3://")
    assert json.loads(urllib.request.urlopen(data + "zarr.json", timeout=10).read())["attributes"]
    qtbot.mouseClick(widget.stop_button.native, Qt.MouseButton.LeftButton)
    assert widget.link is None
    assert widget.status.value == "stopped serving"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(data + "zarr.json", timeout=5)


def test_layers_not_from_files_are_refused_with_a_message(make_napari_viewer, qtbot):
    from napari_connectome.gui.open_in_neuroglancer import OpenInNeuroglancerWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8, 8), np.uint8), name="in memory")
    widget = OpenInNeuroglancerWidget(viewer)
    qtbot.mouseClick(widget.open_button.native, Qt.MouseButton.LeftButton)
    assert widget.link is None
    assert "no layer opened from a file" in widget.status.value
    assert not widget.stop_button.enabled
