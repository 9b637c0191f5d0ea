"""Screenshots of the desk widgets in a real napari window, for docs/tutorial.md.

  .venv/bin/python docs/images/make_desk_screenshots.py [--model NAME_OR_DIR]

Opens the FIB-25 training_sample2 volume (fetched with pooch, or ../shared/data) through the
plugin's reader, then drives "Segment region" and "Click to segment" as a user would and saves the
whole window to docs/images/{open-fib25,segment-region,click-to-segment,click-to-segment-3d}.png.
Runs headless (a private Xvfb) when there is no display.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model", default=None, help="zoo name or model folder (default model if unset)"
    )
    ap.add_argument("--only-click", action="store_true", help="skip the first two screenshots")
    args = ap.parse_args()
    if "NAPARI_CONNECTOME_ZOO_URL" not in os.environ and (SHARED / "google-ffn-fib25").is_dir():
        os.environ["NAPARI_CONNECTOME_ZOO_URL"] = (SHARED / "google-ffn-fib25").as_uri()
    h5 = SHARED / "fib25-training-sample2" / "fib25_training_sample2.h5"
    if not h5.is_file():
        from napari_connectome.samples import fetch_fib25

        h5 = fetch_fib25()

    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui._models import DEFAULT, LOCAL
    from napari_connectome.gui.click_segment import PREVIEW, ClickToSegmentWidget

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(title="napari-connectome")
    viewer.window.resize(1500, 950)

    def wait(cond, timeout=900.0) -> None:
        t0 = time.perf_counter()
        while not cond() and time.perf_counter() - t0 < timeout:
            app.processEvents()
            time.sleep(0.01)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)

    from napari_connectome.gui.demo import dismiss_toasts

    def shot(name: str) -> None:
        wait(lambda: True, 0)
        dismiss_toasts()
        viewer.screenshot(str(HERE / name), canvas_only=False)
        print("saved", HERE / name, flush=True)

    def choose_model(picker) -> None:
        if args.model and Path(args.model).is_dir():
            picker.choice.value = LOCAL
            picker.path.value = args.model
        else:
            picker.choice.value = args.model or DEFAULT

    viewer.open(str(h5), plugin="napari-connectome")
    viewer.layers["fragments"].visible = False
    viewer.dims.set_point(0, 1250)
    if not args.only_click:
        shot("open-fib25.png")
    viewer.layers["labels"].visible = False
    origins = json.loads(
        (SHARED / "google-ffn-fib25" / "sample-training2.origins.json").read_text()
    )
    if not args.only_click:
        segment_region_shot(viewer, origins, choose_model, wait, shot)

    # Click to segment: click one of Google's seeds outside the box, screenshot before Accept.
    click = ClickToSegmentWidget(viewer)
    viewer.window.add_dock_widget(click, name="Click to segment", tabify=True)
    choose_model(click.model)
    click.image.value = viewer.layers["raw"]
    click.active.value = True
    target = next(
        v["start_zyx"]
        for v in origins.values()
        if 40 <= v["iters"] <= 120
        and all(50 <= c <= 200 for c in v["start_zyx"])
        and not (60 <= v["start_zyx"][1] <= 190 and 60 <= v["start_zyx"][2] <= 190)
    )
    print("click target", target, flush=True)
    viewer.dims.set_point(0, target[0] * 10)
    viewer.camera.center = (target[1] * 10, target[2] * 10)
    viewer.camera.zoom = viewer.camera.zoom * 1.6
    canvas = viewer.window._qt_viewer.canvas.native
    app.processEvents()
    QTest.mouseClick(
        canvas, Qt.LeftButton, Qt.NoModifier, QPoint(canvas.width() // 2, canvas.height() // 2)
    )
    wait(lambda: click.accept_button.enabled or (click.worker is None and click.pending is None))
    print("click:", click.status.value, flush=True)
    shot("click-to-segment.png")
    click.accept()
    viewer.layers[PREVIEW if PREVIEW in viewer.layers else "raw"].visible = True

    # 3D: the accepted neuron and the region's objects, the EM as a plane behind them.
    ids = np.argwhere(viewer.layers["raw segments"].data == 1)
    centre = (ids.min(0) + ids.max(0)) / 2 * 10.0 if len(ids) else np.array(target) * 10.0
    raw = viewer.layers["raw"]
    raw.depiction = "plane"
    raw.plane.position = (target[0], 125, 125)
    raw.plane.normal = (1, 0, 0)
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (-15, 30, 120)
    viewer.camera.center = tuple(centre)
    viewer.camera.zoom = 2.5
    shot("click-to-segment-3d.png")
    viewer.close()


def segment_region_shot(viewer, origins, choose_model, wait, shot) -> None:
    from napari_connectome.gui.segment_region import SHAPES_BOX, SegmentRegionWidget

    # Segment region: a box around the middle of slice 125, seeds at four of Google's seeds.
    origins = json.loads(
        (SHARED / "google-ffn-fib25" / "sample-training2.origins.json").read_text()
    )
    z0 = 125
    box = np.array([[z0, 60, 60], [z0, 60, 190], [z0, 190, 190], [z0, 190, 60]]) * 10.0
    shapes = viewer.add_shapes(
        [box],
        shape_type="rectangle",
        name="box",
        edge_color="yellow",
        face_color="transparent",
        edge_width=20,
        units="nm",
    )
    seeds = [
        v["start_zyx"]
        for v in origins.values()
        if abs(v["start_zyx"][0] - z0) < 12 and all(80 <= c <= 170 for c in v["start_zyx"][1:])
    ]
    points = viewer.add_points(
        np.array(seeds[:6]) * 10.0, name="seeds", size=60, face_color="cyan", units="nm"
    )
    region = SegmentRegionWidget(viewer)
    viewer.window.add_dock_widget(region, name="Segment region")
    choose_model(region.model)
    region.region.value = SHAPES_BOX
    region.shapes.value = shapes
    region.seeds.value = points
    region.confirm_above_s = 1e9  # the question would cover the window; its test is in tests/
    region.start()
    wait(lambda: region.worker is None)
    print("segment region:", region.status.value, flush=True)
    shot("segment-region.png")
    for layer in ("box", "seeds"):
        viewer.layers[layer].visible = False


if __name__ == "__main__":
    main()
