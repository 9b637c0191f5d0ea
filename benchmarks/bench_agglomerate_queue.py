"""A scripted oracle proofreader that follows the proofreading queue over the agglomeration of
Google's FIB-25 segmentation, beside the best that edits of the queue's kinds could reach. One
JSON line per figure.

    nice .venv/bin/python benchmarks/bench_agglomerate_queue.py [--agglomerated DEST]
        [--threshold 0.65] [--items 200]

Lines:

* ``ceiling``: with the ground truth, the VI reachable by supervoxel-level edits (the kinds the
  queue proposes: merging two touching groups, splitting a group along its supervoxels): every
  supervoxel alone (the merge term no grouping can lower), every supervoxel given to its majority
  body, and a greedy oracle that takes the best such edit 100 times (VI after 10 ... 100 edits);
  plus where the errors sit (the five segments with the largest merge term, the five bodies with
  the largest split term, the voxels the fill gave out).
* ``queue``: per variant (``band`` = the contacts within 0.15 of the threshold ranked by doubt, as
  before; ``ranked`` = every decision ranked by expected VI gain with the default calibration;
  ``cross-fitted`` = the same with each half of the volume (z of the contact) ranked by a
  calibration fitted on the other half, so no item is scored by a model that saw its truth): the
  real-error fraction of the first 40 and 100 items, and VI / ARAND after 10, 20, 40, 60, 100
  edits of an oracle that follows the queue: it rejects the items that are real errors (one edit
  through a ProofreadSession: merge or min-cut split) and accepts the others, until 100 edits or
  --items items.
  ``cross-fitted with the shape rule``: the same with calibrations fitted with the shape rule's
  features too (``fit_calibration(..., shape=True)``; queue.py's module docstring).
* ``fit``: the calibration fitted on the whole volume (the default's source), and the same with
  the shape rule's features (``shape_rule``).

An item is a real error when the rule merged two bodies (the majority bodies of the contact's two
supervoxels differ) or left one body apart (the majority bodies of the two segments now on either
side agree). VI / ARAND after N edits are exact from supervoxel counts (every voxel of a
supervoxel is in its segment); the start and the end are checked against evaluate_segmentation on
the voxels. Without --agglomerated it first runs agglomerate (as bench_agglomerate does).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import GOOGLE, H5, cpu_name, scores

EDITS = (10, 20, 40, 60, 100)


def emit(**kw) -> None:
    print(json.dumps({"bench": "agglomerate_queue", "cpu": cpu_name(), **kw}), flush=True)


class Truth:
    """Per supervoxel its voxels per ground-truth body (GT > 0), and VI / ARAND of any grouping."""

    def __init__(self, sv: np.ndarray, gt: np.ndarray) -> None:
        keep = gt > 0
        pairs, n = np.unique(
            np.stack([sv[keep], gt[keep].astype(np.uint64)]), axis=1, return_counts=True
        )
        self.sv, self.body, self.n = pairs[0], pairs[1], n.astype(float)
        self.majority: dict[int, int] = {}
        order = np.lexsort((-self.n, self.sv))
        first = order[np.r_[True, self.sv[order][1:] != self.sv[order][:-1]]]
        self.majority = dict(zip(self.sv[first].tolist(), self.body[first].tolist()))
        self.fill_voxels = 0

    def body_of_group(self, members: np.ndarray) -> int:
        """The body most of these supervoxels' voxels belong to (0 if none)."""
        m = np.isin(self.sv, members)
        if not m.any():
            return 0
        b, inv = np.unique(self.body[m], return_inverse=True)
        return int(b[np.argmax(np.bincount(inv, weights=self.n[m]))])

    def score(self, group_of: dict[int, int] | np.ndarray) -> dict:
        """VI split / merge / total and ARAND when supervoxel s is in group ``group_of[s]``."""
        if isinstance(group_of, dict):
            seg = np.array([group_of.get(int(s), int(s)) for s in self.sv], np.uint64)
        else:
            seg = np.asarray(group_of, np.uint64)
        _, si = np.unique(seg, return_inverse=True)
        _, bi = np.unique(self.body, return_inverse=True)
        _, pi = np.unique(bi.astype(np.int64) * (si.max() + 1) + si, return_inverse=True)
        nij = np.bincount(pi, weights=self.n)
        ai, bj, n = np.bincount(bi, weights=self.n), np.bincount(si, weights=self.n), self.n.sum()

        def f(x):
            x = x[x > 0]
            return float((x * np.log2(x)).sum())

        split = (f(ai) - f(nij)) / n
        merge = (f(bj) - f(nij)) / n
        sij, sa, sb = (nij**2).sum(), (ai**2).sum(), (bj**2).sum()
        prec, rec = sij / sb, sij / sa
        return {
            "vi_split": round(split, 4),
            "vi_merge": round(merge, 4),
            "vi": round(split + merge, 4),
            "arand": round(float(1 - 2 * prec * rec / (prec + rec)), 4),
        }


def ceiling(truth: Truth, ids, seg_of, u, v, fill_from: int) -> None:
    """The ``ceiling`` lines: what supervoxel-level edits could reach at best (see the module)."""
    start = dict(zip(ids.tolist(), seg_of.tolist()))
    emit(what="ceiling", kind="start", **truth.score(start))
    emit(what="ceiling", kind="every supervoxel alone", **truth.score({}))
    emit(
        what="ceiling", kind="every supervoxel to its majority body", **truth.score(truth.majority)
    )
    # where the errors sit
    groups: dict[int, dict[int, float]] = {}
    for s, b, c in zip(truth.sv.tolist(), truth.body.tolist(), truth.n.tolist()):
        d = groups.setdefault(start.get(s, s), {})
        d[b] = d.get(b, 0) + c
    n = truth.n.sum()

    def cond(values) -> float:  # n_i log n_i - sum n_ij log n_ij, over n
        x = np.asarray(list(values), float)
        return float(x.sum() * np.log2(x.sum()) - (x * np.log2(x)).sum()) / n

    merge = sorted(
        ((cond(d.values()), k, sum(d.values())) for k, d in groups.items()), reverse=True
    )
    by_body: dict[int, list[float]] = {}
    for d in groups.values():
        for b, c in d.items():
            by_body.setdefault(b, []).append(c)
    split = sorted(((cond(c), b, len(c)) for b, c in by_body.items()), reverse=True)
    fill = truth.sv >= fill_from
    emit(
        what="ceiling",
        kind="where",
        segments=len(groups),
        bodies=len(by_body),
        merge_top5=[{"segment": k, "bits": round(m, 4), "voxels": int(c)} for m, k, c in merge[:5]],
        merge_top5_share=round(sum(m for m, _, _ in merge[:5]) / sum(m for m, _, _ in merge), 3),
        split_top5=[{"body": b, "bits": round(s, 4), "segments": c} for s, b, c in split[:5]],
        split_top5_share=round(sum(s for s, _, _ in split[:5]) / sum(s for s, _, _ in split), 3),
        fill_supervoxels=len(np.unique(truth.sv[fill])),
        fill_voxels_in_gt=int(truth.n[fill].sum()),
    )
    greedy_edits(truth, start, u, v)


def greedy_edits(truth: Truth, start: dict[int, int], u, v, steps: int = 100) -> None:
    """The best supervoxel-level edit, ``steps`` times: merge two touching groups or split off a
    group's supervoxels of one body, whichever lowers VI the most (computed from counts)."""
    svc: dict[int, dict[int, float]] = {}
    for s, b, c in zip(truth.sv.tolist(), truth.body.tolist(), truth.n.tolist()):
        svc.setdefault(s, {})[b] = c
    n = truth.n.sum()

    def f(x: float) -> float:
        return x * np.log2(x) if x > 0 else 0.0

    def ff(d: dict) -> float:
        return sum(f(c) for c in d.values())

    def join(da: dict, db: dict) -> dict:
        j = dict(da)
        for b, c in db.items():
            j[b] = j.get(b, 0) + c
        return j

    def d_merge(da: dict, db: dict) -> float:  # change of VI when two groups join
        j = join(da, db)
        ta, tb = sum(da.values()), sum(db.values())
        return (-2 * (ff(j) - ff(da) - ff(db)) + f(ta + tb) - f(ta) - f(tb)) / n

    assign = dict(start)
    edges = list(zip(u.tolist(), v.tolist()))
    for step in range(1, steps + 1):
        groups: dict[int, dict] = {}
        members: dict[int, list[int]] = {}
        for s, d in svc.items():
            g = assign.get(s, s)
            groups[g] = join(groups.get(g, {}), d)
            members.setdefault(g, []).append(s)
        best, edit = 0.0, None
        seen = set()
        for a, b in edges:
            ga, gb = assign.get(a, a), assign.get(b, b)
            if ga == gb or (ga, gb) in seen or ga not in groups or gb not in groups:
                continue
            seen.update({(ga, gb), (gb, ga)})
            d = d_merge(groups[ga], groups[gb])
            if d < best:
                best, edit = d, ("merge", ga, gb)
        for g, ms in members.items():
            for body in {truth.majority[s] for s in ms} if len(ms) > 1 else ():
                side = [s for s in ms if truth.majority[s] == body]
                if len(side) == len(ms):
                    continue
                db: dict = {}
                for s in side:
                    db = join(db, svc[s])
                da = {k: c - db.get(k, 0) for k, c in groups[g].items() if c - db.get(k, 0) > 0}
                d = -d_merge(da, db)
                if d < best:
                    best, edit = d, ("split", g, side)
        if edit is None:
            break
        if edit[0] == "merge":
            for s in svc:
                if assign.get(s, s) == edit[2]:
                    assign[s] = edit[1]
        else:
            new = max(max(assign.values(), default=0), max(svc)) + step
            for s in edit[2]:
                assign[s] = new
        if step in EDITS:
            emit(what="ceiling", kind="greedy oracle", edits=step, **truth.score(assign))


def truth_of_candidates(cand, truth: Truth, ids, seg_of) -> np.ndarray:
    """Per candidate: are its two sides one body? (apart: the two segments' majority bodies;
    merged: the contact's two supervoxels' majority bodies)."""
    seg = dict(zip(ids.tolist(), seg_of.tolist()))
    members: dict[int, list[int]] = {}
    for s, g in seg.items():
        members.setdefault(g, []).append(s)
    body_of_seg = {g: truth.body_of_group(np.array(m, np.uint64)) for g, m in members.items()}
    out = []
    for merged, a, b in zip(cand.merged.tolist(), cand.a.tolist(), cand.b.tolist()):
        if merged:
            ba, bb = truth.majority.get(a, 0), truth.majority.get(b, 0)
        else:
            ba, bb = body_of_seg[seg[a]], body_of_seg[seg[b]]
        out.append(ba == bb and ba != 0)
    return np.array(out, bool)


def follow(queue, session, truth: Truth, variant: str, items: int) -> dict:
    """The oracle follows ``queue``; emits the ``queue`` lines and returns the end scores."""
    table = session.table

    def now() -> dict:
        return truth.score(dict(zip(table.frag_ids.tolist(), table.seg.tolist())))

    def body_now(segment: int) -> int:
        return truth.body_of_group(table.frag_ids[table.rows_of(segment)])

    real = edits = seen = 0
    real_at: dict[int, int] = {}
    done_at: set[int] = set()
    i = queue.next_index()
    while i is not None and seen < items and edits < max(EDITS):
        it = queue.items[i]
        if it.kind == "merged":
            wrong = truth.majority.get(it.a, 0) != truth.majority.get(it.b, 0)
        else:
            pa, pb = queue.sides(session, it)
            sa, sb = session.segment_at(pa), session.segment_at(pb)
            ba = body_now(sa)
            wrong = sa != sb and ba != 0 and ba == body_now(sb)
        real += wrong
        op = queue.decide(session, i, "reject" if wrong else "accept")
        edits += op is not None
        seen += 1
        if seen in (40, 100):
            real_at[seen] = real
        if op is not None and edits in EDITS and edits not in done_at:
            done_at.add(edits)
            emit(what="queue", variant=variant, edits=edits, items_seen=seen, **now())
        i = queue.next_index(i)
    end = now()
    emit(
        what="queue",
        variant=variant,
        kind="summary",
        items=len(queue.items),
        items_seen=seen,
        edits=edits,
        real_errors_first_40=round(real_at.get(40, real) / min(40, max(seen, 1)), 3),
        real_errors_first_100=round(real_at.get(100, real) / min(100, max(seen, 1)), 3),
        **end,
    )
    return end


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agglomerated")
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--items", type=int, default=600, help="most items the oracle looks at")
    ap.add_argument("--no-ceiling", action="store_true")
    args = ap.parse_args(argv)
    import h5py
    import zarr

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.queue import (
        ProofreadQueue,
        apply_agglomeration,
        fit_calibration,
        read_candidates,
    )
    from napari_connectome.proofread.reference import create_project
    from napari_connectome.proofread.session import ProofreadSession
    from napari_connectome.volumes import open_volume, write_ome_zarr

    with h5py.File(H5, "r") as f:
        gt = f["labels"][:]
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(args.agglomerated) if args.agglomerated else Path(tmp) / "agg.ome.zarr"
        google = np.load(GOOGLE / "sample-training2.npz")["segmentation"]
        if not args.agglomerated:
            seg_path = Path(tmp) / "google.ome.zarr"
            write_ome_zarr(google.astype(np.uint64), seg_path, voxel_size_nm=(10,) * 3, labels=True)
            agglomerate(
                open_volume(str(seg_path)), open_volume(f"{H5}:raw"), dest, threshold=args.threshold
            )
        sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
        truth = Truth(sv, gt)
        sc = zarr.open_group(str(dest / "scores"), mode="r")
        ids, seg_of = np.asarray(sc["segment_ids"][:]), np.asarray(sc["segment_of"][:])
        eg = zarr.open_group(str(dest / "region_graph" / "edges"), mode="r")
        u, v = np.asarray(eg["u"][:]), np.asarray(eg["v"][:])
        if not args.no_ceiling:
            ceiling(truth, ids, seg_of, u, v, int(google.max()) + 1)
        cand = read_candidates(dest)
        same = truth_of_candidates(cand, truth, ids, seg_of)
        threshold = ProofreadQueue(dest, limit=1).threshold
        whole = fit_calibration(cand, same, threshold)
        emit(what="fit", candidates=len(same), one_body=int(same.sum()), **whole.as_dict())
        half = cand.point[:, 0] < sv.shape[0] // 2  # as _make_queue splits the items
        low = fit_calibration(_subset(cand, half), same[half], threshold)
        high = fit_calibration(_subset(cand, ~half), same[~half], threshold)
        shaped = fit_calibration(cand, same, threshold, shape=True)
        emit(what="fit", shape_rule=True, candidates=len(same), **shaped.as_dict())
        low_s = fit_calibration(_subset(cand, half), same[half], threshold, shape=True)
        high_s = fit_calibration(_subset(cand, ~half), same[~half], threshold, shape=True)
        variants = {
            "band": {"band": 0.15, "by_doubt": True},
            "cross-fitted, gain_weight 0.25 (default)": {"split": (high, low), "gain_weight": 0.25},
            "cross-fitted with the shape rule, gain_weight 0.25": {
                "split": (high_s, low_s),
                "gain_weight": 0.25,
            },
            "cross-fitted with the shape rule, gain_weight 1": {
                "split": (high_s, low_s),
                "gain_weight": 1.0,
            },
            "cross-fitted, gain_weight 1 (expected VI gain)": {
                "split": (high, low),
                "gain_weight": 1.0,
            },
            "cross-fitted, gain_weight 0 (chance of an error)": {
                "split": (high, low),
                "gain_weight": 0.0,
            },
            "default calibration (fitted on this volume), gain_weight 0.25": {},
        }
        for name, how in variants.items():
            queue = _make_queue(ProofreadQueue, dest, how)
            project = create_project(
                Path(tmp) / f"project-{name}",
                str(dest / "supervoxels"),
                image=f"{H5}:raw",
                region_graph=dest / "region_graph",
            )
            with ProofreadSession.open(project) as session:
                apply_agglomeration(session, dest)
                if name == "band":
                    emit(what="queue", variant="start", check=scores(session.labels(), gt))
                end = follow(queue, session, truth, name, args.items)
                emit(
                    what="queue",
                    variant=name,
                    kind="end check (evaluate_segmentation on the voxels)",
                    **scores(session.labels(), gt),
                    counts=end,
                )
    return 0


def _subset(cand, mask):
    from dataclasses import replace

    cols = (
        "merged",
        "a",
        "b",
        "point",
        "affinity",
        "area",
        "n_a",
        "n_b",
        "p90",
        "inside",
        "reach",
        "seam",
        "claim",
    )
    return replace(
        cand,
        **{k: getattr(cand, k)[mask] for k in cols if getattr(cand, k, None) is not None},
    )


def _make_queue(cls, dest, how: dict):
    """The queue of one variant: the band queue ordered by doubt as before, the ranked queue, or
    the ranked queue with each half scored by the other half's calibration."""
    if how.get("by_doubt"):
        q = cls(dest, band=how["band"])
        doubt = [1 - abs(it.affinity - q.threshold) / how["band"] for it in q.items]
        q.items = [
            q.items[k] for k in np.lexsort(([-it.area for it in q.items], [-d for d in doubt]))
        ]
        return q
    if "split" not in how:
        return cls(dest)
    w = how["gain_weight"]
    for_low, for_high = how["split"]
    ql = cls(dest, calibration=for_low, gain_weight=w)
    qh = cls(dest, calibration=for_high, gain_weight=w)
    mid = int(ql.meta["shape"][0]) // 2
    items = [it for it in ql.items if it.point[0] < mid]
    items += [it for it in qh.items if it.point[0] >= mid]
    ql.items = sorted(items, key=lambda it: (-it.p_wrong * it.gain**w, -it.p_wrong, -it.area))
    return ql


if __name__ == "__main__":
    sys.exit(main())
