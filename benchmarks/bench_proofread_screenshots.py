"""Screenshots of the proofreading tool in use on FIB-25 (for docs/proofreading.md).

Drives the real tool the way a user does: selects a segment, shift+click merges a neighbour,
ctrl+click / ctrl+alt+click split seeds, Enter for the preview; then the 3D view of the selection.

    .venv/bin/python benchmarks/bench_proofread_screenshots.py docs/images
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def dismiss_toasts() -> None:
    """Close napari's pop-up notifications (its PyQt5 notice) so they do not hide the canvas."""
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if type(widget).__name__ == "NapariQtNotification":
            with contextlib.suppress(RuntimeError):  # already deleted by Qt
                widget.close()


H5 = ROOT.parent / "shared" / "data" / "fib25-training-sample2" / "fib25_training_sample2.h5"


def main(out: Path) -> int:
    from napari_connectome.gui._headless import ensure_display

    ensure_display()
    import h5py
    import napari
    from imageio.v3 import imwrite

    from napari_connectome.gui._camera import camera
    from napari_connectome.gui.proofread import ProofreadWidget
    from napari_connectome.proofread import ProofreadSession

    with h5py.File(H5, "r") as f:
        frags, labels, raw = f["fragments"][:], f["labels"][:], f["raw"][:]
    s = ProofreadSession.create(
        Path(tempfile.mkdtemp()) / "fib25", frags, image=raw, voxel_size_nm=(10, 10, 10)
    )
    # a nearly-proofread state: bodies assembled from supervoxels, except body `keep_split`
    pairs = np.unique(np.stack([frags.ravel(), labels.ravel()], 1), axis=0)
    bodies: dict[int, list[int]] = {}
    for fr, body in pairs.tolist():
        if fr and body:
            bodies.setdefault(body, []).append(fr)
    sizes = {b: int((labels == b).sum()) for b in list(bodies)[:60]}
    big = sorted(sizes, key=sizes.get)[-6:]
    for members in bodies.values():
        if len(members) > 1:
            s.merge(members)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1700, 980)
    widget = ProofreadWidget(viewer, s)
    viewer.window.add_dock_widget(widget, name="Proofreading", area="right")
    tool = widget.tool
    z = 125
    viewer.dims.set_point(0, z * 10)
    seg_plane = s.labels((slice(z, z + 1), slice(None), slice(None)))[0]
    ids, counts = np.unique(seg_plane[seg_plane > 0], return_counts=True)
    a, b = ids[np.argsort(-counts)][:2]
    pa = np.argwhere(seg_plane == a)[len(np.argwhere(seg_plane == a)) // 2]
    pb = np.argwhere(seg_plane == b)[len(np.argwhere(seg_plane == b)) // 2]
    tool.click((z, *pa), "select")
    tool.click((z, *pb), "merge")
    rows = s.table.rows_of(int(a))
    fr = s.table.frag_ids[rows]
    pts = [np.argwhere(seg_plane == a)[0], np.argwhere(seg_plane == a)[-1]]
    tool.click((z, *pts[0]), "seed_a")
    tool.click((z, *pts[1]), "seed_b")
    tool.split_key()
    del fr, big
    napari.qt.get_qapp().processEvents()
    dismiss_toasts()
    napari.qt.get_qapp().processEvents()
    imwrite(out / "proofreading-2d.png", viewer.screenshot(canvas_only=False, flash=False))
    tool.cancel_split()
    # 3D: the selected segments (two mid-sized neurites) among hidden others
    table = s.segment_table()
    mid = [i.id for i in sorted(table, key=lambda i: -i.size) if 150_000 < i.size < 600_000][:2]
    tool.select(mid[0])
    tool.selected = mid
    tool.refresh("selection")
    viewer.dims.ndisplay = 3  # the selection is drawn as meshes, built in a worker thread
    while tool.meshes.pending:
        napari.qt.get_qapp().processEvents()
    viewer.reset_view()
    camera(viewer).angles = (0, -35, 60)
    camera(viewer).zoom *= 0.8  # the whole of both neurites, not cut at the canvas edge
    if tool.image_layer is not None:
        tool.image_layer.visible = False
    napari.qt.get_qapp().processEvents()
    dismiss_toasts()
    napari.qt.get_qapp().processEvents()
    imwrite(out / "proofreading-3d.png", viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {out / 'proofreading-2d.png'} and {out / 'proofreading-3d.png'}")
    viewer.close()
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")))
