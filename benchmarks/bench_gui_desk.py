"""Desk figures in a real napari window, one JSON line each (see docs/benchmarks.md, "Desk").

  .venv/bin/python benchmarks/bench_gui_desk.py [--clicks 5] [--size 96] [--precision fp32]

* click_latency: seconds from a real mouse click on the canvas (Click to segment active) to the
  first growth drawn in the preview layer, with the model already loaded (the first click of a
  session also loads the model; that one is reported separately as click_latency_cold).
* forward_one_fov: the same model's raw forward of one FOV, measured in the same run, so the
  ratio click_latency / forward_one_fov says how much the desk adds around the network.
* event_loop_stall: while "Segment region" runs FFN in its worker thread, a 10 ms Qt timer records
  the gaps between its ticks; the same timer idle, side by side, is the baseline. Max and p99 gap.

The model is the default one (shipped or the google-fib25 zoo model). Offline, point the zoo at a
mirror: NAPARI_CONNECTOME_ZOO_URL=file:///path/to/google-ffn-fib25/ (the script does this for
../shared/data when it exists and the variable is unset).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from _qt_timing import run_events, tick_gaps

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "google-ffn-fib25"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--stall-seconds", type=float, default=20.0)
    args = ap.parse_args()
    if "NAPARI_CONNECTOME_ZOO_URL" not in os.environ and SHARED.is_dir():
        os.environ["NAPARI_CONNECTOME_ZOO_URL"] = SHARED.as_uri()

    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    import torch
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui._camera import camera
    from napari_connectome.gui._models import DEFAULT, load
    from napari_connectome.gui.click_segment import PREVIEW, ClickToSegmentWidget
    from napari_connectome.gui.segment_region import WHOLE, SegmentRegionWidget
    from napari_connectome.samples import synthetic_em

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    vol = synthetic_em((args.size,) * 3, seed=0)
    viewer.add_image(vol.image, name="em", scale=(10, 10, 10))
    click = ClickToSegmentWidget(viewer)
    viewer.window.add_dock_widget(click, name="Click to segment")
    click.model.choice.value = DEFAULT
    click.precision.value = args.precision
    click.every = 1
    click.active.value = True
    canvas = viewer.window._qt_viewer.canvas.native

    def wait(cond, timeout=300.0) -> None:
        run_events(app, cond, timeout)

    # Click targets: centres of ground-truth objects far from the volume border.
    from scipy import ndimage

    inner = np.zeros(vol.labels.shape, bool)
    m = args.size // 4
    inner[m:-m, m:-m, m:-m] = True
    from skimage.segmentation import find_boundaries

    depth = ndimage.distance_transform_edt(~find_boundaries(vol.labels))
    depth[~inner] = 0
    order = np.argsort(depth.ravel())[::-1]
    targets, used = [], set()
    for flat in order:
        p = np.unravel_index(flat, vol.labels.shape)
        if vol.labels[p] not in used:
            used.add(vol.labels[p])
            targets.append(p)
        if len(targets) == args.clicks + 1:
            break

    latencies = []
    for i, p in enumerate(targets):
        viewer.dims.set_point(0, p[0] * 10)
        camera(viewer).center = (p[1] * 10, p[2] * 10)
        app.processEvents()
        shown: list[float] = []
        hook = viewer.layers.events.inserted.connect(
            lambda e, s=shown: e.value.name == PREVIEW and s.append(time.perf_counter())
        )
        t0 = time.perf_counter()
        QTest.mouseClick(
            canvas, Qt.LeftButton, Qt.NoModifier, QPoint(canvas.width() // 2, canvas.height() // 2)
        )
        wait(lambda s=shown: bool(s))
        viewer.layers.events.inserted.disconnect(hook)
        if not shown:
            raise SystemExit("no preview appeared")
        latency = shown[0] - t0
        if i == 0:
            emit(figure="click_latency_cold", seconds=round(latency, 3), note="includes model load")
        else:
            latencies.append(latency)
        if click.worker is not None:  # only the first growth matters here: stop the rest
            click.worker.quit()
        wait(lambda: click.worker is None, timeout=60)
        click.reject()
    model, config, _ = load(DEFAULT, None, "cpu")
    fov = config.fov_size
    x = torch.zeros((1, 1, *fov))
    with torch.inference_mode():
        from napari_connectome.ffn.runner import LockstepRunner

        runner = LockstepRunner(model, precision=args.precision)
        runner.predict(x[:, 0], x[:, 0])
        t0 = time.perf_counter()
        for _ in range(5):
            runner.predict(x[:, 0], x[:, 0])
        forward = (time.perf_counter() - t0) / 5
    med = statistics.median(latencies)
    emit(
        figure="click_latency",
        median_s=round(med, 3),
        max_s=round(max(latencies), 3),
        clicks=len(latencies),
        forward_one_fov_s=round(forward, 3),
        ratio_latency_over_forward=round(med / forward, 2),
        precision=args.precision,
        torch_threads=torch.get_num_threads(),
    )

    # Event-loop stall: a 10 ms timer idle, then while Segment region runs.
    idle = tick_gaps(app, min(5.0, args.stall_seconds))
    region = SegmentRegionWidget(viewer)
    viewer.window.add_dock_widget(region, name="Segment region")
    region.model.choice.value = DEFAULT
    region.precision.value = args.precision
    region.region.value = WHOLE
    region.confirm_above_s = float("inf")  # no question: this measures the running desk
    region.start()
    wait(lambda: region.output is not None)
    busy = tick_gaps(app, args.stall_seconds, until=lambda: region.worker is None)
    region.cancel()
    wait(lambda: region.worker is None)

    def summary(g):
        a = np.asarray(g)
        return {"max_s": round(float(a.max()), 3), "p99_s": round(float(np.percentile(a, 99)), 3)}

    emit(
        figure="event_loop_stall",
        idle=summary(idle),
        during_inference=summary(busy),
        ticks_during_inference=len(busy),
        seconds=args.stall_seconds,
        ratio_p99_busy_over_idle=round(float(np.percentile(busy, 99) / np.percentile(idle, 99)), 2),
    )
    viewer.close()


if __name__ == "__main__":
    main()
