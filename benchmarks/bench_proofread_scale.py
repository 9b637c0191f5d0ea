"""Proofreading at any size: open, edit, view and mesh at 10^8, 10^9 and 10^11 voxels.

    nice .venv/bin/python benchmarks/bench_proofread_scale.py                 # 1e8 1e9 1e11
    nice .venv/bin/python benchmarks/bench_proofread_scale.py --sizes 1e8 1e9 --no-check

The volumes (benchmarks/_tiled_graph.py): one FIB-25 training_sample2 tile (Google's published FFN
segmentation of it, the output a segmentation job gives: 254 segments, 89% of voxels segmented;
``--tile fragments``: the ground truth's 21,316 dense supervoxels), reflected to 256^3 (2^3 chunks
of 128^3), repeated as a virtual tiled volume (``tiled.json``, volumes/read_tiled.py: chunks made on
demand, ids offset per copy, uint64) with the EM tiled alike: 1 x 2 x 3 copies = 1.0e8 voxels,
4 x 4 x 4 = 1.07e9, 18 x 18 x 19 = 1.03e11. Each folder holds ``region_graph/`` beside the
segmentation, as a finished job leaves it, composed from the tile's own graph (the library's
blockwise pass), the faces between copies (its face kernel) and the digest of every chunk of the
volume (cached under --root; the first run hashes ~49k chunks at 10^11). At 10^9 the real pass
(``compute_region_graph`` over every voxel, LocalCluster of 2 workers) runs too and must equal
the composed store column for column; its seconds per gigavoxel are reported.

Each size is measured in a fresh process (so peak RSS is per size), through the public API the
GUI calls: make a project from the output (``create_project``: reuses the graph beside it), open
it (``ProofreadSession.open``: fragment table, 9 chunks verified), mesh a segment of ~10^6 voxels
(cold pyramid reads), merge two touching segments and undo (median of 10), split preview by
min-cut (seeds in two fragments of a merged segment) and by watershed (two seeds in one fragment,
its first run reads and verifies the chunks of its box), the watershed commit and its undo, and
one plane at level 0 through the GUI's ``SegmentView`` (cold: chunks read and verified; redraw:
after a merge or undo, as napari asks again) of 512 x 768 voxels at every size and 1024 x 1024
where the volume is that wide. The edited fragments are the same tile-local ones at every size,
in the copy at the centre of the volume. One JSON line per figure, then the ratio of each figure
at the largest size to its figure at 1e8.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tiled_graph as tg

SIZES = {"1e8": (1, 2, 3), "1e9": (4, 4, 4), "1e11": (18, 18, 19)}
GOALS_MS = {  # the goals on this CPU
    "merge": 100,
    "undo_merge": 100,
    "split_preview_mincut": 1000,
    "split_preview_watershed": 1000,
    "plane_redraw_512x768": 100,
    "plane_redraw_1024x1024": 100,
    "mesh_1e6": 2000,
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


CPU = cpu_model()


def emit(size: str, figure: str, **fields) -> dict:
    rec = {"bench": "proofread_scale", "size": size, "figure": figure, **fields, "cpu": CPU}
    rec["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(rec), flush=True)
    return rec


def rss_mb() -> float:
    """Peak RSS of this process (VmHWM). getrusage's ru_maxrss is printed beside it, but Linux
    carries the forking parent's peak into an exec'd child's ru_maxrss, so it cannot go below
    the driver's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---- what to edit: chosen once in the tile ----------------------------------------------------


def _seed(labels: np.ndarray, frag: int) -> list[int]:
    pts = np.argwhere(labels == frag)
    return [int(v) for v in pts[len(pts) // 2]]


def choose_targets(root: Path, kind: str) -> dict:
    """Tile-local fragments and seeds (the same in every size's centre copy)."""
    _, _, graph = tg.ensure_tile(root, kind)
    g = tg.read_graph(graph)
    labels = np.asarray(tg._tile_voxels(*tg.ensure_tile(root, kind)[:2])[0])
    ids, count = g["fragments/id"], g["fragments/count"]
    lo, hi = g["fragments/lo"], g["fragments/hi"]
    u, v, area = g["edges/u"], g["edges/v"], g["edges/area"]
    size_of = dict(zip(ids.tolist(), count.tolist()))
    # the mesh: the fragment nearest 1e6 voxels, grown by its largest-contact neighbours (a merged
    # segment) while it is under 0.7e6 voxels (small supervoxels: the dense ``fragments`` tile)
    mesh = [int(ids[np.argmin(np.abs(count - 1e6))])]
    while sum(size_of[x] for x in mesh) < 0.7e6:
        sel = np.isin(u, mesh) ^ np.isin(v, mesh)
        if not sel.any():
            break
        cand_e = np.flatnonzero(sel)[np.argsort(-area[sel])]
        k = cand_e[0]
        mesh.append(int(v[k]) if int(u[k]) in mesh else int(u[k]))
    k = int(np.argmax(area))
    merge = [int(u[k]), int(v[k])]
    # min-cut: a fragment of ~3e5 voxels and up to 5 of its neighbours below 1e6 voxels
    best = None
    for f in ids[np.argsort(np.abs(count - 3e5))].tolist():
        sel = (u == f) | (v == f)
        nb = np.where(u[sel] == f, v[sel], u[sel])
        order = np.argsort(-area[sel])
        nbrs = [int(n) for n in nb[order] if size_of[int(n)] < 1e6 and int(n) not in mesh][:5]
        if len(nbrs) >= 3 and f not in mesh:
            best = [int(f), *nbrs]
            break
    group = best
    # watershed: a fragment of ~2e5 voxels at least 16 voxels thick along every axis, seeds at
    # a quarter and three quarters of its extent along its longest axis
    thick = (hi - lo).min(1) >= 16
    free = ~np.isin(ids, [*mesh, *merge, *group])
    cand = np.flatnonzero((count > 3e4) & (count < 5e5) & thick & free)
    w_row = int(cand[np.argmin(np.abs(count[cand] - 2e5))])
    w = int(ids[w_row])
    pts = np.argwhere(labels == w)
    ax = int(np.argmax(hi[w_row] - lo[w_row]))

    def at(q: float) -> np.ndarray:
        line = pts[pts[:, ax] == int(np.quantile(pts[:, ax], q))]
        return line[len(line) // 2]

    pa, pb = at(0.25), at(0.75)
    return {
        "stride": int(ids.max()) + 1,
        "mesh": mesh,
        "mesh_voxels": int(sum(size_of[x] for x in mesh)),
        "merge": merge,
        "merge_voxels": [int(size_of[x]) for x in merge],
        "group": group,
        "group_voxels": int(sum(size_of[x] for x in group)),
        "seed_a": _seed(labels, group[0]),
        "seed_b": _seed(labels, group[-1]),
        "watershed": w,
        "watershed_voxels": int(size_of[w]),
        "ws_a": [int(x) for x in pa],
        "ws_b": [int(x) for x in pb],
    }


# ---- one size, in its own process ----------------------------------------------------------


def _ms(t0: float) -> float:
    return round(1000 * (time.perf_counter() - t0), 2)


def _warm_imports() -> None:
    """What a running desk has imported already, so figures time the data, not imports."""
    import dask.array  # noqa: F401
    import distributed  # noqa: F401  (dask looks for a client on its first compute)
    import scipy.sparse.csgraph  # noqa: F401
    import skimage.segmentation  # noqa: F401
    import zarr  # noqa: F401
    import zmesh  # noqa: F401
    from scipy import ndimage  # noqa: F401

    import napari_connectome.graph
    import napari_connectome.gui.proofread.views
    import napari_connectome.volumes.read_tiled  # noqa: F401


def measure(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _warm_imports()
    import_s = round(time.perf_counter() - t0, 3)
    from napari_connectome.proofread import ProofreadSession
    from napari_connectome.proofread.meshes import segment_mesh
    from napari_connectome.proofread.reference import create_project

    size, reps, tgt = args.size, tuple(args.reps), json.loads(args.targets)
    seg, em = Path(args.seg), Path(args.em)
    voxels = math.prod(reps) * tg.TILE**3
    centre = tuple(r // 2 for r in reps)
    t_c = (centre[0] * reps[1] + centre[1]) * reps[2] + centre[2]
    off = t_c * tgt["stride"]
    origin = np.array(centre) * tg.TILE

    def gid(local: int) -> int:
        return int(local) + off

    def gpt(p) -> tuple[int, int, int]:
        return tuple(int(x) for x in np.asarray(p) + origin)

    project = Path(args.root) / "projects" / f"{size}-{os.getpid()}"
    project.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(project, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        create_project(project, str(seg), image=str(em))
        emit(size, "create_project", s=round(time.perf_counter() - t0, 3), voxels=voxels,
             imports_s_before=import_s,
             note="from a job-like output with region_graph/ beside it")  # fmt: skip
        t0 = time.perf_counter()
        s = ProofreadSession.open(project)
        open_s = round(time.perf_counter() - t0, 3)
        t = s.table
        table_bytes = sum(a.nbytes for a in (t.frag_ids, t.seg, t.counts, t.lo, t.hi)) + (
            t._lut.nbytes if t._lut is not None else 0
        )
        emit(size, "open", s=open_s, voxels=voxels, shape=list(s.shape),
             fragments=len(t.frag_ids), edges=s.region_graph.n_edges,
             table_mb=round(table_bytes / 2**20, 1),
             table_bytes_per_fragment=round(table_bytes / max(len(t.frag_ids), 1), 1),
             rss_mb_after_open=rss_mb())  # fmt: skip

        # mesh of one segment of ~1e6 voxels (cold: its box read at a coarse level)
        times, mesh, members = [], None, [gid(x) for x in tgt["mesh"]]
        if len(members) > 1:
            s.merge(members)  # not timed: the segment to mesh is made of several fragments
        for _ in range(3):
            t0 = time.perf_counter()
            mesh = segment_mesh(s, members[0], cache=None)
            times.append(_ms(t0))
        emit(size, "mesh_1e6", ms=statistics.median(times), first_ms=times[0],
             segment_voxels=tgt["mesh_voxels"], fragments=len(members), level=mesh.level,
             factors=list(mesh.factors), vertices=len(mesh.vertices))  # fmt: skip
        if len(members) > 1:
            s.undo()

        a, b = (gid(x) for x in tgt["merge"])
        merge_ms, undo_ms = [], []
        for _ in range(10):
            t0 = time.perf_counter()
            s.merge([a, b])
            merge_ms.append(_ms(t0))
            t0 = time.perf_counter()
            s.undo()
            undo_ms.append(_ms(t0))
        emit(size, "merge", ms=statistics.median(merge_ms), max_ms=max(merge_ms),
             segment_voxels=tgt["merge_voxels"])  # fmt: skip
        emit(size, "undo_merge", ms=statistics.median(undo_ms), max_ms=max(undo_ms))

        from napari_connectome.gui.proofread.views import SegmentView

        view = SegmentView(s)  # what the napari segments layer reads at level 0
        z = int(origin[0]) + 100
        planes = [(512, 768)] + ([(1024, 1024)] if min(s.shape[1:]) >= 1024 else [])
        for h, w in planes:
            y0 = min(int(origin[1]), s.shape[1] - h)
            x0 = min(int(origin[2]), s.shape[2] - w)
            key = (z, slice(y0, y0 + h), slice(x0, x0 + w))
            s.chunk_cache.clear()  # as the first view of this plane in a session
            s.fragments.verified.clear()
            reads = s.fragments.reads
            t0 = time.perf_counter()
            plane = view[key]
            cold = _ms(t0)
            assert plane.shape == (h, w)
            redraw = []
            for i in range(10):
                if i % 2 == 0:
                    s.merge([a, b])
                else:
                    s.undo()
                t0 = time.perf_counter()
                view[key]
                redraw.append(_ms(t0))
            if len(s.undo_stack):
                s.undo()
            emit(size, f"plane_cold_{h}x{w}", ms=cold, chunks_read=s.fragments.reads - reads,
                 note="first view: level-0 chunks read and verified")  # fmt: skip
            emit(size, f"plane_redraw_{h}x{w}", ms=statistics.median(redraw), max_ms=max(redraw),
                 note="after a merge/undo: fragment plane cached, table applied")  # fmt: skip

        # min-cut preview: seeds in two fragments of one merged segment
        group = [gid(x) for x in tgt["group"]]
        s.merge(group)
        times, plan = [], None
        for _ in range(5):
            t0 = time.perf_counter()
            plan = s.preview_split(group[0], [gpt(tgt["seed_a"])], [gpt(tgt["seed_b"])])
            times.append(_ms(t0))
        assert plan.method == "mincut"
        emit(size, "split_preview_mincut", ms=statistics.median(times), first_ms=times[0],
             segment_voxels=tgt["group_voxels"], fragments=len(group),
             side_b_voxels=plan.voxels_b)  # fmt: skip
        s.undo()

        # watershed preview: two seeds inside one fragment
        wid = gid(tgt["watershed"])
        reads = s.fragments.reads
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            plan = s.preview_split(wid, [gpt(tgt["ws_a"])], [gpt(tgt["ws_b"])])
            times.append(_ms(t0))
        assert plan.method == "watershed"
        box = np.subtract(plan.bbox_hi, plan.bbox_lo)
        emit(size, "split_preview_watershed", ms=statistics.median(times), first_ms=times[0],
             fragment_voxels=tgt["watershed_voxels"], box=box.tolist(),
             chunks_read=s.fragments.reads - reads, side_b_voxels=plan.voxels_b)  # fmt: skip
        t0 = time.perf_counter()
        s.commit_split(plan)
        emit(size, "split_commit_watershed", ms=_ms(t0))
        t0 = time.perf_counter()
        s.undo()
        emit(size, "undo_split_watershed", ms=_ms(t0))
        s.close()
        emit(size, "peak_rss", mb=rss_mb(), ru_maxrss_mb=ru_maxrss_mb(), voxels=voxels)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return 0


# ---- the driver -------------------------------------------------------------------------------


def check_real_pass(root: Path, kind: str, reps, seg: Path, em: Path, workers: int) -> None:
    """The real blockwise pass over every voxel equals the composed store."""
    from napari_connectome.graph import compute_region_graph
    from napari_connectome.volumes import open_volume

    dest = root / f"check-{tg.tiled_name(kind, reps)}"
    shutil.rmtree(dest, ignore_errors=True)
    vol = open_volume(seg)
    t0 = time.perf_counter()
    compute_region_graph(vol, dest, image=open_volume(em), workers=workers)
    secs = time.perf_counter() - t0
    cmp = tg.compare_stores(seg / "region_graph", dest)
    gv = math.prod(vol.shape) / 1e9
    emit("1e9", "real_pass_equals_composed", equal=cmp["equal"], differs=cmp["differs"],
         weight_max_abs_diff=cmp.get("weight_max_abs_diff"), fragments=cmp["fragments"],
         edges=cmp["edges"], fingerprint=cmp["fingerprint"])  # fmt: skip
    emit("1e9", "blockwise_pass", s=round(secs, 1), s_per_gvoxel=round(secs / gv, 1),
         workers=workers, gvoxels=round(gv, 3),
         note="compute_region_graph on a LocalCluster (started inside the clock), tiled source "
              "made on demand from the tile's zarr, EM as boundary evidence")  # fmt: skip
    shutil.rmtree(dest, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--tile", default="ffn", choices=["ffn", "fragments"])
    ap.add_argument("--root", default="/tmp/nc-scale", help="cache of volumes and region graphs")
    ap.add_argument("--processes", type=int, default=2, help="for hashing chunks")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers of the real pass")
    ap.add_argument("--no-check", action="store_true", help="skip the real pass at 1e9")
    ap.add_argument("--rounds", type=int, default=2, help="measurements of each size")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--seg", help=argparse.SUPPRESS)
    ap.add_argument("--em", help=argparse.SUPPRESS)
    ap.add_argument("--targets", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in SIZES if s in args.sizes]
    made = {}
    for size in sizes:
        seg, em, info = tg.ensure_tiled(root, args.tile, SIZES[size], args.processes)
        made[size] = (seg, em)
        emit(size, "prepare", reps=list(SIZES[size]), tile=args.tile,
             composed_s=info["composed_s"], digest_s=info["digest_s"],
             made_in_s=info.get("made_in_s"),
             note="composed_s, digest_s null: an earlier run's store reused")  # fmt: skip
    if "1e9" in made and not args.no_check:
        check_real_pass(root, args.tile, SIZES["1e9"], *made["1e9"], args.workers)
    targets = choose_targets(root, args.tile)
    emit(
        "tile", "targets", **{k: v for k, v in targets.items() if not k.startswith(("seed", "ws"))}
    )
    figures: dict[str, dict[str, list[dict]]] = {}
    for rnd in range(args.rounds):  # sizes alternate, so a busy spell of the machine hits all
        for size in sizes:
            seg, em = made[size]
            cmd = [sys.executable, __file__, "--measure", "--size", size, "--root", str(root),
                   "--reps", *map(str, SIZES[size]), "--seg", str(seg), "--em", str(em),
                   "--targets", json.dumps(targets)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            for line in proc.stdout.splitlines():
                rec = {**json.loads(line), "round": rnd}
                print(json.dumps(rec), flush=True)
                figures.setdefault(rec["figure"], {}).setdefault(size, []).append(rec)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                emit(size, "failed", rc=proc.returncode, stderr=proc.stderr[-2000:])
    base, top = sizes[0], sizes[-1]
    if base == top:
        return 0
    for fig, by in figures.items():
        if base not in by or top not in by:
            continue
        key = next((k for k in ("ms", "s", "mb") if k in by[base][0]), None)
        if key is None:
            continue
        x = min(r[key] for r in by[base])  # the best round of each size
        y = min(r[key] for r in by[top])
        rec = {"value_" + base: x, "value_" + top: y, "unit": key, "rounds": args.rounds,
               "ratio": round(y / x, 2) if x else None}  # fmt: skip
        if fig in GOALS_MS:
            rec["goal_ms"] = GOALS_MS[fig]
            rec["within_2x"] = bool(x and y <= 2 * x)
            rec["under_goal"] = y < GOALS_MS[fig]
        elif fig in ("open", "create_project"):
            rec["under_goal"] = y < 10
        elif fig == "peak_rss":
            rec["under_goal"] = y < 2048
        emit(f"{top}/{base}", f"ratio_{fig}", **rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
