"""The Agglomerate panel in a real napari viewer: layers opened from files in, a worker thread
with progress and Cancel (nothing left behind), the result as a layer, then its queue."""

from __future__ import annotations

import json

import pytest

from tests.test_agglomerate import write_crop

pytestmark = pytest.mark.gui


def test_agglomerate_from_the_viewer_then_open_its_queue(
    make_napari_viewer, google_ffn_dir, fib25_h5, tmp_path, qtbot
):
    from qtpy.QtCore import Qt

    from napari_connectome.gui.agglomerate_widget import AgglomerateWidget

    crop = write_crop(tmp_path / "crop.h5", google_ffn_dir, fib25_h5)  # raw, gt, seg
    viewer = make_napari_viewer(show=True)
    widget = AgglomerateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Agglomerate")
    assert widget.status.value == ""
    widget.run()  # nothing open yet: a message, no worker
    assert widget.worker is None
    assert "no segmentation" in widget.status.value
    viewer.open(str(crop), plugin="napari-connectome")  # gt (uint64) opens as labels
    # the layers opened from files are offered: labels first as the segmentation, then images
    # (Google's uint8 segmentation opens as one); images as the EM
    assert set(widget.seg.choices) == {f"{crop}:gt", f"{crop}:raw", f"{crop}:seg"}
    assert widget.seg.value == f"{crop}:gt"
    assert set(widget.em.choices) == {f"{crop}:raw", f"{crop}:seg"}
    widget.seg.value = f"{crop}:seg"
    assert widget.output.value == tmp_path / "crop-agglomerated.ome.zarr"  # beside SEG's file
    other = tmp_path / "other.h5"
    other.write_bytes(crop.read_bytes())
    viewer.open(str(other), plugin="napari-connectome")
    widget.seg.value = f"{other}:seg"  # the suggestion follows the choice...
    assert widget.output.value == tmp_path / "other-agglomerated.ome.zarr"
    out = tmp_path / "out"
    out.mkdir()
    widget.output.value = out / "agg.ome.zarr"  # ...until the user types one of their own
    widget.seg.value = f"{crop}:seg"
    assert widget.output.value == out / "agg.ome.zarr"
    widget.em.value = f"{crop}:raw"
    widget.threshold.value = 0.4
    # Cancel: the worker stops at its next progress report and leaves nothing behind
    widget.run()
    assert widget.worker is not None  # the Qt thread is free while it runs
    assert widget.cancel_button.visible
    qtbot.mouseClick(widget.cancel_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "cancelled" in widget.status.value
    assert list(out.iterdir()) == []  # no output, no hidden half-built one
    # run to the end: progress through the passes, the result opens as a layer
    seen = []
    widget._relay.reported.connect(lambda n, total, what: seen.append(what))
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.result == out / "agg.ome.zarr", widget.status.value
    assert "agglomerate: contact evidence" in seen
    meta = json.loads((widget.result / "agglomeration.json").read_text())
    assert meta["threshold"] == 0.4
    assert f"{meta['n_segments']} segments" in widget.status.value
    assert any(str(widget.result) in str(lay.metadata.get("source")) for lay in viewer.layers)
    assert widget.queue_button.enabled
    # a second run into the same output is refused at once (never replaced from here)
    widget.run()
    assert widget.worker is None
    assert "already exists: choose a new output folder" in widget.status.value
    assert widget.queue_button.enabled  # the output made here still opens
    # the queue of the new output, with a new project
    panel = widget.open_queue(tmp_path / "project")
    qtbot.waitUntil(lambda: panel.queue is not None, timeout=120_000)
    assert panel.index is not None
    panel.close_session()


def test_the_panel_offers_the_model_that_made_the_segmentation(make_napari_viewer, tmp_path, qtbot):
    from napari_connectome.cli import main
    from napari_connectome.ffn.checkpoint import save_model
    from napari_connectome.ffn.config import ModelConfig
    from napari_connectome.gui.agglomerate_widget import AgglomerateWidget
    from tests.test_ffn_claim import write_em
    from tests.test_ffn_inference import bright_painter
    from tests.test_segment_cli import ARCH

    painter = tmp_path / "models" / "painter"
    painter.parent.mkdir()
    save_model(painter, bright_painter(), ModelConfig(architecture=ARCH))
    em = write_em(tmp_path)
    seg = tmp_path / "seg.ome.zarr"
    assert main(["segment", f"{em}:raw", str(seg), "--model", str(painter), "--oversegment"]) == 0
    viewer = make_napari_viewer(show=True)
    widget = AgglomerateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Agglomerate")
    viewer.open(str(em), plugin="napari-connectome")
    viewer.open(str(seg), plugin="napari-connectome")
    labels = [src for src in widget.seg.choices if "seg.ome.zarr" in src]
    assert labels, widget.seg.choices
    widget.seg.value = labels[0]
    assert widget.model.value == str(painter.resolve())  # what SEG records
    widget.seg.value = f"{em}:raw"  # records no model: the suggestion goes...
    assert widget.model.value == ""
    widget.seg.value = labels[0]  # ...and comes back
    assert widget.model.value == str(painter.resolve())
    widget.model.value = "fib25-small"  # typed by the user: kept
    widget.seg.value = f"{em}:raw"
    assert widget.model.value == "fib25-small"
    widget.model.value = str(painter)
    widget.seg.value = labels[0]
    widget.em.value = f"{em}:raw"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.result is not None, widget.status.value
    meta = json.loads((widget.result / "agglomeration.json").read_text())
    assert meta["model_made_seg"] is True
    assert meta["band"] == 1.0  # every contact, with SEG's own model
    assert "contacts resegmented" in widget.status.value
