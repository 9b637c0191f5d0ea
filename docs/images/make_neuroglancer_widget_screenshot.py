"""docs/images/open-in-neuroglancer.png: the plugin's Open in neuroglancer dock after a click, in a
real napari window (FIB-25 EM and bodies as OME-Zarr, opened through the plugin's reader). Runs
headless (a private Xvfb) when there is no display.

    .venv/bin/python docs/images/make_neuroglancer_widget_screenshot.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
H5 = (
    HERE.parents[1]
    / ".."
    / "shared"
    / "data"
    / "fib25-training-sample2"
    / "fib25_training_sample2.h5"
)


def main() -> None:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    os.environ["BROWSER"] = "true"  # no browser window in the picture
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_connectome.cli import main as cli
    from napari_connectome.gui.open_in_neuroglancer import OpenInNeuroglancerWidget

    with tempfile.TemporaryDirectory() as tmp:
        em, seg = Path(tmp) / "fib25-em.ome.zarr", Path(tmp) / "fib25-bodies.ome.zarr"
        assert cli(["convert", f"{H5}:raw", str(em), "--quiet"]) == 0
        assert cli(["convert", f"{H5}:labels", str(seg), "--labels", "--quiet"]) == 0
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1400, 860)
        viewer.open(str(em), plugin="napari-connectome")
        viewer.open(str(seg), plugin="napari-connectome")
        labels = viewer.layers[-1]
        labels.selected_label = int(labels.data[0][125, 125, 125])
        widget = OpenInNeuroglancerWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Open in neuroglancer", area="right")
        viewer.layers.selection = set(viewer.layers)
        widget.open_button.native.click()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.1)
        viewer.screenshot(str(HERE / "open-in-neuroglancer.png"), canvas_only=False)
        widget.stop()
        viewer.close()
    print(HERE / "open-in-neuroglancer.png")


if __name__ == "__main__":
    main()
