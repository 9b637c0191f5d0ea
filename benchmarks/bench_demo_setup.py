"""What the demo spends before and after its FFN run: one JSON line per step of its set-up.

The demo's own ``--screenshot`` run prints its wall time and FFN steps; this splits the rest (napari's
window, the two layers and their first draw, docking every tool, loading the model, the screenshot),
the part of the minute that does not depend on the CPU's vector units.

    .venv/bin/python benchmarks/bench_demo_setup.py
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    marks = [("start", time.perf_counter())]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    import napari
    from qtpy.QtWidgets import QApplication

    mark("import_napari")
    viewer = napari.Viewer(title="napari-connectome demo")
    viewer.window.resize(1600, 1000)
    mark("viewer")
    from napari_connectome.gui.demo import DemoRequest, dock_every_tool, sample_layers

    for data, meta, kind in sample_layers(DemoRequest()):
        getattr(viewer, f"add_{kind}")(data, **meta)
    for _ in range(20):
        QApplication.processEvents()
    mark("layers_drawn")
    dock_every_tool(viewer)
    for _ in range(20):
        QApplication.processEvents()
    mark("docks")
    from napari_connectome.gui._models import DEFAULT, load

    load(DEFAULT, None, "cpu")
    mark("model_loaded")
    with tempfile.TemporaryDirectory() as tmp:
        viewer.screenshot(str(Path(tmp) / "shot.png"), canvas_only=False)
    mark("screenshot")
    viewer.close()
    for (_, t0), (name, t1) in itertools.pairwise(marks):
        print(json.dumps({"figure": "demo_setup", "step": name, "seconds": round(t1 - t0, 2)}))
    print(
        json.dumps({"figure": "demo_setup_total", "seconds": round(marks[-1][1] - marks[0][1], 2)})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
