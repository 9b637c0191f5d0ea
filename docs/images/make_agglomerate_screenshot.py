"""Screenshot of the Agglomerate panel in a real napari window, for docs/agglomeration.md.

  nice .venv/bin/python docs/images/make_agglomerate_screenshot.py

Writes a 96^3 crop of FIB-25 training_sample2 (../shared/data) with Google's published
segmentation to a temporary HDF5 file, opens it in napari as a user would (File > Open), runs the
panel on the segmentation and the EM at the default threshold, waits for the result layer and
saves the window to docs/images/agglomerate-panel.png. Runs headless (a private Xvfb) when there
is no display.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_queue_screenshot import HERE, write_google_crop  # the same 96^3 crop


def main() -> None:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui.agglomerate_widget import AgglomerateWidget
    from napari_connectome.gui.demo import dismiss_toasts

    with tempfile.TemporaryDirectory() as tmp:
        crop = write_google_crop(Path(tmp) / "crop.h5", "em", "google", np.uint64)
        app = QApplication.instance() or QApplication([])
        viewer = napari.Viewer(title="napari-connectome: agglomerate")
        viewer.window.resize(1500, 950)
        viewer.open(str(crop), plugin="napari-connectome")
        widget = AgglomerateWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Agglomerate")
        widget.seg.value, widget.em.value = f"{crop}:google", f"{crop}:em"
        widget.output.value = Path(tmp) / "google-agglomerated.ome.zarr"
        widget.run()  # in a worker, as a click on Agglomerate does
        deadline = time.monotonic() + 600
        while widget.worker is not None:
            if time.monotonic() > deadline:
                raise SystemExit(f"agglomerate did not finish: {widget.status.value}")
            app.processEvents()
            time.sleep(0.05)
        if widget.result is None:
            raise SystemExit(f"agglomerate failed: {widget.status.value}")
        for layer in viewer.layers:  # the result over the EM; the input segmentation hidden
            layer.visible = layer.name == "em" or str(widget.result) in str(
                layer.metadata.get("source")
            )
        viewer.dims.set_point(0, viewer.dims.range[0].stop / 2)
        for _ in range(50):
            app.processEvents()
            time.sleep(0.02)
        dismiss_toasts()
        app.processEvents()
        viewer.window.screenshot(str(HERE / "agglomerate-panel.png"), canvas_only=False)
        viewer.close()


if __name__ == "__main__":
    main()
