"""Mesh time of one selected segment of about 10^6 voxels (issue 13 item 5), and the 3D screenshot.

Writes the FIB-25 training_sample2 supervoxels as an OME-Zarr pyramid (10 nm, chunks 64), makes a
proofreading project referring to it, merges the supervoxels of the ground-truth bodies named
below into segments, then meshes each body the way the 3D view does (a fresh build: no cache),
at the level the rule picks and at level 0. One JSON line per figure:

    .venv/bin/python benchmarks/bench_meshes.py [--repeat 3] [--screenshot docs/images/proofreading-3d-meshes.png]

``--screenshot`` opens the proofreading tool in a real napari window (a private Xvfb when there is
no display), selects the bodies, switches to 3D and saves the canvas.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
H5 = ROOT.parent / "shared" / "data" / "fib25-training-sample2" / "fib25_training_sample2.h5"
BODIES = (24720, 2491, 60683)  # ground-truth bodies of 1.13 M, 0.98 M and 0.86 M voxels


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def make_session(tmp: Path):
    import h5py

    from napari_connectome.proofread import ProofreadSession
    from napari_connectome.volumes import write_ome_zarr

    with h5py.File(H5, "r") as f:
        frags, labels = f["fragments"][:], f["labels"][:]
    write_ome_zarr(frags, tmp / "fib25.ome.zarr", labels=True, chunks=64, voxel_size_nm=(10,) * 3)
    t = time.perf_counter()
    session = ProofreadSession.create(tmp / "project", str(tmp / "fib25.ome.zarr"))
    opened = time.perf_counter() - t
    segments = {}
    for body in BODIES:
        members = np.unique(frags[labels == body])
        members = [int(m) for m in members[members != 0]]
        session.merge(members)
        segments[body] = members[0]
    return session, segments, opened


def time_mesh(session, segment: int, repeat: int, **options):
    from napari_connectome.proofread.meshes import segment_mesh

    times, mesh = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        mesh = segment_mesh(session, segment, cache=None, **options)
        times.append(time.perf_counter() - t)
    return statistics.median(times), mesh


def screenshot(session, segments: list[int], out: Path) -> None:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import napari
    from imageio.v3 import imwrite
    from qtpy.QtWidgets import QApplication

    from napari_connectome.gui._camera import camera
    from napari_connectome.gui.proofread import ProofreadWidget

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1900, 1000)
    widget = ProofreadWidget(viewer, session)
    viewer.window.add_dock_widget(widget, name="Proofreading")
    tool = widget.tool
    tool.select(segments[0])
    tool.selected = list(segments)  # several neurons in one picture
    viewer.dims.ndisplay = 3
    t0 = time.perf_counter()
    while (tool.meshes.pending or not tool.meshes.meshes) and time.perf_counter() - t0 < 120:
        app.processEvents()
        time.sleep(0.02)
    viewer.reset_view()
    camera(viewer).angles = (15, -35, 130)
    camera(viewer).zoom *= 0.7
    viewer.scale_bar.visible = True
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    imwrite(out, viewer.screenshot(canvas_only=True, flash=False))
    print(json.dumps({"screenshot": str(out), "segments": segments}), flush=True)
    widget.tool.close()
    viewer.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="builds per figure (median reported)")
    ap.add_argument("--screenshot", type=Path, help="save the 3D view of the bodies here")
    args = ap.parse_args()
    if not H5.is_file():
        print(f"FIB-25 data not found at {H5}", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmpdir:
        session, segments, opened = make_session(Path(tmpdir))
        print(json.dumps({"figure": "open project", "seconds": round(opened, 3)}), flush=True)
        for body, seg in segments.items():
            info = session.segment_info(seg)
            base = {
                "figure": "mesh one segment",
                "body": body,
                "segment": seg,
                "voxels": info.size,
                "bbox": [int(h - lo) for lo, h in zip(info.bbox_lo, info.bbox_hi)],
                "levels": len(session.fragment_levels),
                "cpu": cpu_name(),
            }
            for name, options in (("chosen", {}), ("level 0", {"level": 0})):
                seconds, mesh = time_mesh(session, seg, args.repeat, **options)
                line = {
                    **base,
                    "level": name if name == "level 0" else f"chosen ({mesh.level})",
                    "factors": list(mesh.factors),
                    "seconds": round(seconds, 3),
                    "vertices": len(mesh.vertices),
                    "faces": len(mesh.faces),
                    "area_um2": round(mesh.area() / 1e6, 2),
                    "volume_um3": round(mesh.volume() / 1e9, 3),
                }
                print(json.dumps(line), flush=True)
        if args.screenshot:
            screenshot(session, list(segments.values()), args.screenshot)
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
