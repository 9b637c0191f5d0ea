"""Screenshot of the Agglomerate panel in a real napari window, for docs/agglomeration.md.

  nice .venv/bin/python docs/images/make_agglomerate_screenshot.py

Writes a 96^3 crop of FIB-25 training_sample2 (../shared/data) with Google's published
segmentation to a temporary HDF5 file, opens it in napari as a user would (File > Open), runs the
panel on the segmentation and the EM at the default threshold, waits for the result layer and
saves the window to docs/images/agglomerate-panel.png. Runs headless (a private Xvfb) when there
is no display.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
CROP = (slice(40, 136), slice(40, 136), slice(40, 136))


def main() -> None:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui.agglomerate_widget import AgglomerateWidget
    from napari_connectome.gui.demo import dismiss_toasts

    with tempfile.TemporaryDirectory() as tmp:
        crop = Path(tmp) / "crop.h5"
        seg = np.load(SHARED / "google-ffn-fib25" / "sample-training2.npz")["segmentation"]
        h5 = SHARED / "fib25-training-sample2" / "fib25_training_sample2.h5"
        with h5py.File(h5, "r") as f, h5py.File(crop, "w") as out:
            for name, data in (("em", f["raw"][CROP]), ("google", seg[CROP].astype(np.uint64))):
                out.create_dataset(name, data=data, chunks=(32, 32, 32))
                out[name].attrs["resolution_nm_zyx"] = [10, 10, 10]
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
