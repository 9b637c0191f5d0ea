"""A scripted oracle proofreader that follows the proofreading queue over the agglomeration of
Google's FIB-25 segmentation: how many of the queue's first items are real errors, and VI /
ARAND after N edits. One JSON line per figure.

    nice .venv/bin/python benchmarks/bench_agglomerate_queue.py [--agglomerated DEST]
        [--threshold 0.65] [--band 0.15] [--items 100]

The oracle knows the ground truth only to answer each item: a supervoxel's body is the ground
truth label most of its voxels carry; an item is a real error when the rule merged two bodies or
left one body apart. It rejects real errors (one edit through a ProofreadSession each: merge or
min-cut split) and accepts the rest, in queue order. Without --agglomerated it first runs
agglomerate (as bench_agglomerate does).
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


def body_of(sv: np.ndarray, gt: np.ndarray) -> dict[int, int]:
    """Each supervoxel's majority ground-truth label (0 counts only if nothing else is there)."""
    pairs, counts = np.unique(
        np.stack([sv.ravel(), gt.ravel().astype(np.uint64)]), axis=1, return_counts=True
    )
    best: dict[int, tuple[int, int]] = {}
    for (s, g), n in zip(pairs.T.tolist(), counts.tolist()):
        n = n if g else 0
        if s not in best or n > best[s][1]:
            best[s] = (g, n)
    return {s: g for s, (g, _) in best.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agglomerated")
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--band", type=float, default=0.15)
    ap.add_argument("--items", type=int, default=100)
    args = ap.parse_args(argv)
    import h5py

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.queue import ProofreadQueue, apply_agglomeration
    from napari_connectome.proofread.reference import create_project
    from napari_connectome.proofread.session import ProofreadSession
    from napari_connectome.volumes import open_volume, write_ome_zarr

    with h5py.File(H5, "r") as f:
        gt = f["labels"][:]
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(args.agglomerated) if args.agglomerated else Path(tmp) / "agg.ome.zarr"
        if not args.agglomerated:
            seg_path = Path(tmp) / "google.ome.zarr"
            google = np.load(GOOGLE / "sample-training2.npz")["segmentation"]
            write_ome_zarr(google.astype(np.uint64), seg_path, voxel_size_nm=(10,) * 3, labels=True)
            agglomerate(
                open_volume(str(seg_path)), open_volume(f"{H5}:raw"), dest, threshold=args.threshold
            )
        sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
        body = body_of(sv, gt)
        queue = ProofreadQueue(dest, band=args.band)
        project = create_project(
            Path(tmp) / "project",
            str(dest / "supervoxels"),
            image=f"{H5}:raw",
            region_graph=dest / "region_graph",
        )
        with ProofreadSession.open(project) as session:
            apply_agglomeration(session, dest)
            start = scores(session.labels(), gt)
            base = {"bench": "agglomerate_queue", "cpu": cpu_name(), "band": args.band}
            print(json.dumps({**base, "what": "start", "items": len(queue.items), **start}))
            real, edits, i = 0, 0, queue.next_index()
            checkpoints = {10, 20, 40, 60, 100}
            seen = 0
            while i is not None and seen < args.items:
                it = queue.items[i]
                same = body[it.a] == body[it.b] and body[it.a] != 0
                wrong = (it.kind == "merged") != same
                real += wrong
                op = queue.decide(session, i, "reject" if wrong else "accept")
                edits += op is not None
                seen += 1
                if seen in checkpoints:
                    print(
                        json.dumps(
                            {
                                **base,
                                "what": "after",
                                "items_seen": seen,
                                "real_errors": real,
                                "edits": edits,
                                "expected_gain_left": round(queue.expected_gain(), 2),
                                **scores(session.labels(), gt),
                            }
                        ),
                        flush=True,
                    )
                i = queue.next_index(i)
            if seen not in checkpoints:  # the queue ended between checkpoints
                end = scores(session.labels(), gt)
                print(
                    json.dumps(
                        {
                            **base,
                            "what": "end",
                            "items_seen": seen,
                            "real_errors": real,
                            "edits": edits,
                            **end,
                        }
                    )
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
