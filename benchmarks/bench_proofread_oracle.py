"""How many proofreading edits does it take to fix an automated segmentation? A scripted oracle.

Start: the FIB-25 training_sample2 supervoxels (`fragments`) grouped by Google's published FFN
segmentation (each supervoxel joins the FFN segment covering most of it; supervoxels FFN left
unsegmented stay single segments). The oracle sees the ground truth and, like a proofreader,
issues one edit at a time through the same ProofreadSession API the napari tool uses:
  * merge  the two largest segments of the body that is most split, or
  * split  the segment with the largest wrongly merged part, with seed clicks (up to 3 a side) on
           the largest supervoxels of its two biggest bodies (the min-cut decides the rest).
Every edit is the one fixing the most voxels. VI / adapted Rand error are printed (one JSON line)
after every N edits; they are computed exactly from supervoxel counts (every supervoxel lies in
one body) and cross-checked against napari_connectome.evaluate on the full voxels at start and end.

    .venv/bin/python benchmarks/bench_proofread_oracle.py --every 25 --max-edits 600
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def scores(seg_of_frag: np.ndarray, body: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """VI split/merge and adapted Rand error over voxels with GT > 0, from supervoxel counts."""
    keep = body != 0
    b, s, w = body[keep], seg_of_frag[keep], counts[keep].astype(float)
    _, bi = np.unique(b, return_inverse=True)
    _, si = np.unique(s, return_inverse=True)
    pairs = bi.astype(np.int64) * (si.max() + 1) + si
    _, pi = np.unique(pairs, return_inverse=True)
    nij = np.bincount(pi, weights=w)
    ai = np.bincount(bi, weights=w)
    bj = np.bincount(si, weights=w)
    n = w.sum()

    def h(x: np.ndarray) -> float:
        p = x[x > 0] / n
        return float(-(p * np.log2(p)).sum())

    hj, hg, hs = h(nij), h(ai), h(bj)
    sum_ij, sum_a, sum_b = (nij**2).sum(), (ai**2).sum(), (bj**2).sum()
    prec, rec = sum_ij / sum_b, sum_ij / sum_a
    return {
        "vi": hj - hg + hj - hs,
        "vi_split": hj - hg,
        "vi_merge": hj - hs,
        "arand": float(1 - 2 * prec * rec / (prec + rec)),
    }


def voxel_in(session, frag: int) -> tuple[int, int, int]:
    """A voxel of a supervoxel (what a proofreader's click lands on)."""
    t = session.table
    row = t.index_of(np.array([frag]))[0]
    lo, hi = t.lo[row], t.hi[row]
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    hit = np.argwhere(np.asarray(session.fragments[box]) == frag)
    mid = hit[len(hit) // 2]
    return tuple(int(v) for v in mid + lo)


def purity(session, frags: np.ndarray, body: int) -> float:
    """Fraction of the voxels of these supervoxels that belong to ``body``."""
    t = session.table
    known = frags[np.isin(frags, t.frag_ids)]
    counts = t.counts[t.index_of(known)]
    hit = np.array([body_of_global.get(int(f), 0) == body for f in known])
    return float(counts[hit].sum() / max(counts.sum(), 1))


body_of_global: dict[int, int] = {}


def next_edit(session, body_of: dict[int, int], tried: set, separated: set):
    """The edit fixing the most voxels: ('merge', [a, b]) or ('split', seg, frags_a, frags_b)."""
    t = session.table
    body = np.array([body_of.get(int(f), 0) for f in t.frag_ids], np.uint64)
    keep = (t.seg != 0) & (body != 0)
    seg, bod, cnt, frag = t.seg[keep], body[keep], t.counts[keep], t.frag_ids[keep]
    key = np.stack([seg, bod], 1)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    over = np.bincount(inv.ravel(), weights=cnt)
    best = None
    # majority body of every segment
    order = np.lexsort((-over, uniq[:, 0]))
    seg_sorted = uniq[order, 0]
    first = np.r_[True, seg_sorted[1:] != seg_sorted[:-1]]
    major = dict(zip(seg_sorted[first].tolist(), uniq[order][first][:, 1].tolist()))
    # splits: the second-largest body inside a segment
    for i in np.flatnonzero(~first):
        if i > 0 and first[i - 1]:  # the runner-up in its segment
            s, b2 = int(seg_sorted[i]), int(uniq[order][i, 1])
            gain = float(over[order][i])
            if ("split", s, b2) not in tried and (best is None or gain > best[0]):
                best = (gain, ("split", s, major[s], b2))
    # merges: the two largest segments whose majority is the same body
    cand = [(b, s, o) for (s, b), o in zip(uniq.tolist(), over.tolist()) if major.get(s) == b]
    by_body: dict[int, list[tuple[float, int]]] = {}
    for b, s, o in cand:
        by_body.setdefault(b, []).append((o, s))
    for lst in by_body.values():
        lst.sort(reverse=True)
        pairs = [(lst[0], o) for o in lst[1:] if frozenset((lst[0][1], o[1])) not in separated]
        if pairs:
            (_, s1), (gain, s2) = pairs[0]
            if best is None or gain > best[0]:
                best = (gain, ("merge", [s1, s2]))
    if best is None:
        return None
    edit = best[1]
    if edit[0] == "split":
        _, s, b1, b2 = edit
        in_seg = seg == s
        fa = frag[in_seg & (bod == b1)][np.argsort(-cnt[in_seg & (bod == b1)])]
        fb = frag[in_seg & (bod == b2)][np.argsort(-cnt[in_seg & (bod == b2)])]
        return ("split", s, b1, b2, fa, fb)
    return edit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--every", type=int, default=25, help="print scores every N edits")
    ap.add_argument("--max-edits", type=int, default=600)
    ap.add_argument("--target-vi", type=float, default=0.5)
    args = ap.parse_args()
    import h5py

    from napari_connectome.evaluate import evaluate_segmentation
    from napari_connectome.proofread import EditRefused, ProofreadSession

    h5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
    npz = DATA / "google-ffn-fib25" / "sample-training2.npz"
    with h5py.File(h5, "r") as f:
        frags, labels, raw = f["fragments"][:], f["labels"][:], f["raw"][:]
    with np.load(npz, allow_pickle=False) as z:
        ffn = z["segmentation"].astype(np.uint64)
    tmp = Path(tempfile.mkdtemp(prefix="oracle-"))
    s = ProofreadSession.create(tmp / "proj", frags, image=raw, voxel_size_nm=(10, 10, 10))
    # body and FFN majority of every supervoxel
    t = s.table

    def majority(other: np.ndarray) -> dict[int, int]:
        pairs, n = np.unique(
            np.stack([frags.ravel(), other.ravel()], 1), axis=0, return_counts=True
        )
        order = np.lexsort((-n, pairs[:, 0]))
        p = pairs[order]
        first = np.r_[True, p[1:, 0] != p[:-1, 0]]
        return dict(zip(p[first, 0].tolist(), p[first, 1].tolist()))

    body_of = majority(labels)
    body_of_global.update(body_of)
    ffn_of = majority(ffn)
    groups: dict[int, list[int]] = {}
    for fr in t.frag_ids.tolist():
        if ffn_of.get(fr, 0):
            groups.setdefault(ffn_of[fr], []).append(fr)
    for members in groups.values():
        if len(members) > 1:
            s.merge(members)
    setup_ops = len(s.undo_stack)
    body = np.array([body_of.get(int(f), 0) for f in t.frag_ids], np.uint64)
    start = scores(t.seg, body, t.counts)
    full = evaluate_segmentation(s.labels(), labels)
    print(json.dumps({"figure": "oracle_start", "segments": len(s.segment_ids()),
                      "supervoxels": len(t.frag_ids), **{k: round(v, 4) for k, v in start.items()},
                      "check_evaluate_vi": round(full["vi"], 4),
                      "check_evaluate_arand": round(full["arand"], 4)}), flush=True)  # fmt: skip
    tried: set = set()
    separated: set = set()  # pairs this proofreader split apart: never merged back
    edits = merges = splits = refused = rejected = 0
    reached = None
    t0 = time.perf_counter()
    split_time = merge_time = 0.0
    while edits < args.max_edits:
        edit = next_edit(s, body_of, tried, separated)
        if edit is None:
            break
        try:
            a = time.perf_counter()
            if edit[0] == "merge":
                s.merge(edit[1])
                merges += 1
                merge_time += time.perf_counter() - a
            else:
                _, seg, _b1, b2, fa, fb = edit
                tried.add(("split", seg, b2))
                # like a proofreader: a few seed clicks, look at the preview, add seeds if the
                # preview cuts the wrong way; give up on this error after 10 a side
                plan = None
                for n in (3, 10):
                    seeds_a = [voxel_in(s, int(f)) for f in fa[:n]]
                    seeds_b = [voxel_in(s, int(f)) for f in fb[:n]]
                    cand = s.preview_split(seg, seeds_a, seeds_b)
                    # accept when most of side B's voxels are body b2 and most of side A's are not
                    if purity(s, cand.side_b, b2) > 0.5 and purity(s, cand.side_a, b2) < 0.5:
                        plan = cand
                        break
                if plan is None:
                    rejected += 1
                    continue
                s.commit_split(plan)
                separated.add(frozenset((plan.segment, plan.new_segment)))
                splits += 1
                split_time += time.perf_counter() - a
        except EditRefused:
            refused += 1
            continue
        edits += 1
        sc = scores(s.table.seg, np.array([body_of.get(int(f), 0) for f in s.table.frag_ids]),
                    s.table.counts)  # fmt: skip
        if reached is None and sc["vi"] <= args.target_vi:
            reached = edits
        if edits % args.every == 0 or (reached == edits):
            print(json.dumps({"figure": "oracle_progress", "edits": edits, "merges": merges,
                              "splits": splits, **{k: round(v, 4) for k, v in sc.items()},
                              "elapsed_s": round(time.perf_counter() - t0, 1)}), flush=True)  # fmt: skip
        if reached is not None:
            break
    end = scores(s.table.seg, np.array([body_of.get(int(f), 0) for f in s.table.frag_ids]),
                 s.table.counts)  # fmt: skip
    full = evaluate_segmentation(s.labels(), labels)
    print(json.dumps({"figure": "oracle_result", "edits_to_vi_target": reached,
                      "target_vi": args.target_vi, "edits": edits, "merges": merges,
                      "splits": splits, "refused": refused, "previews_rejected": rejected, "setup_merges": setup_ops,
                      **{k: round(v, 4) for k, v in end.items()},
                      "check_evaluate_vi": round(full["vi"], 4),
                      "check_evaluate_arand": round(full["arand"], 4),
                      "mean_merge_ms": round(1000 * merge_time / max(merges, 1), 1),
                      "mean_split_ms": round(1000 * split_time / max(splits, 1), 1)}), flush=True)  # fmt: skip
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
