"""Screenshot of the proofreading queue panel in a real napari window, for docs/agglomeration.md.

  nice .venv/bin/python docs/images/make_queue_screenshot.py

Agglomerates Google's published segmentation over a 96^3 crop of FIB-25 training_sample2
(../shared/data) in a temporary folder, opens the queue panel on it as a user would, skips to
the first interior item left apart with K (the decision to take), and saves the window to
docs/images/proofreading-queue.png. Runs headless (a private Xvfb) when there is no display.
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


def write_google_crop(
    path: Path, em: str = "raw", seg: str = "seg", seg_dtype: type | None = None
) -> Path:
    """CROP of the EM and of Google's published segmentation, as datasets of one HDF5 file."""
    google = np.load(SHARED / "google-ffn-fib25" / "sample-training2.npz")["segmentation"][CROP]
    h5 = SHARED / "fib25-training-sample2" / "fib25_training_sample2.h5"
    with h5py.File(h5, "r") as f, h5py.File(path, "w") as out:
        for name, data in ((em, f["raw"][CROP]), (seg, google.astype(seg_dtype or google.dtype))):
            out.create_dataset(name, data=data, chunks=(32, 32, 32))
            out[name].attrs["resolution_nm_zyx"] = [10, 10, 10]
    return path


def main() -> None:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.gui.demo import dismiss_toasts
    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget
    from napari_connectome.volumes import open_volume

    with tempfile.TemporaryDirectory() as tmp:
        crop = write_google_crop(Path(tmp) / "crop.h5")
        dest = Path(tmp) / "agg.ome.zarr"
        agglomerate(open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw"), dest, threshold=0.4)
        app = QApplication.instance() or QApplication([])
        viewer = napari.Viewer(title="napari-connectome: proofreading queue")
        viewer.window.resize(1500, 950)
        widget = ProofreadQueueWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Proofreading queue")
        widget.open(dest, Path(tmp) / "project")  # opens in a worker, as a click on Open does
        deadline = time.monotonic() + 600
        while widget.worker is not None or widget.queue is None:
            if time.monotonic() > deadline or (widget.worker is None and widget.queue is None):
                raise SystemExit(f"the queue did not open: {widget.message.text()}")
            app.processEvents()
            time.sleep(0.05)
        canvas = viewer.window._qt_viewer.canvas.native
        target = next(  # an item left apart, inside the crop (the box around it is whole)
            i
            for i, it in enumerate(widget.queue.items)
            if it.kind == "apart" and all(24 <= c < 72 for c in it.point)
        )
        for _ in range(target):
            QTest.keyClick(canvas, Qt.Key_K)
        assert widget.index == target
        for _ in range(50):
            app.processEvents()
            time.sleep(0.02)
        dismiss_toasts()  # napari's PyQt5 notice would cover the canvas
        app.processEvents()
        viewer.window.screenshot(str(HERE / "proofreading-queue.png"), canvas_only=False)
        widget.close_session()
        viewer.close()


if __name__ == "__main__":
    main()
