"""Re-reconcile a finished job's stored blocks with other matching rules, against a reference.

Segmenting is the expensive part of a job; matching is cheap. This reads the blocks a job stored
(``OUT/_job/blocks``), matches every face again with each rule and slab given, assembles the write
regions through the new lookup table in memory (the job's output is not touched), with ``--fill``
fills holes from face neighbours as the job's relabel does (``match.fill_holes``), and prints one
JSON line per variant: adapted Rand error and VI against ``--reference`` (a .npy of the ROI, e.g.
the single canvas ``ffn_full_volume.py --out`` saved) and against ``--gt`` (``file.h5:dataset``).

    .venv/bin/python benchmarks/reconcile_rules.py JOB.ome.zarr --reference canvas.npy \\
        --gt ../shared/data/fib25-training-sample2/fib25_training_sample2.h5:labels
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reconcile(
    layout, grid, rule: str, min_fraction: float, slab: int, min_voxels: int = 10, fill=False
):
    """The job's labels over the ROI, reconciled with these settings (same code as the job)."""
    from napari_connectome.jobs.grid import seam_region
    from napari_connectome.jobs.reconcile import (
        block_offsets,
        fill_holes,
        global_lut,
        match_overlap,
        owned_ids,
    )

    blocks = list(grid)
    counts = [int(layout.read_block_info(b)["n_segments"]) for b in blocks]
    offsets = block_offsets(counts)
    cache = {b.flat: layout.load_block(b) for b in blocks}
    edges = []
    for a, b, axis in grid.faces():
        seam = seam_region(a, b, axis, slab)

        def crop(block, seam=seam):
            return cache[block.flat][seam.slices_in(block.read)]

        p = match_overlap(crop(a), crop(b), min_fraction, min_voxels, rule).astype(np.uint64)
        if len(p):
            edges.append(np.stack([p[:, 0] + offsets[a.flat], p[:, 1] + offsets[b.flat]], 1))
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.uint64)
    lut = global_lut(int(sum(counts)), edges)

    def table(blk):
        n = counts[blk.flat]
        t = np.array(lut[offsets[blk.flat] : offsets[blk.flat] + n + 1], np.uint64)
        t[0] = 0
        return t

    out = np.zeros(grid.roi_shape, np.uint64)
    for blk in blocks:
        final = table(blk)[cache[blk.flat][blk.write_slices_in_read]]
        if fill:
            nbs = grid.face_neighbours(blk)
            others = [(n.read.start, cache[n.flat], table(n)) for n in nbs]
            owned = [table(n)[cache[n.flat][n.write_slices_in_read]] for n in nbs]
            fill_holes(final, blk.write.start, others, owned_ids(final, owned))
        out[blk.output_slices(grid.roi_start)] = final
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="a finished job's output folder")
    ap.add_argument("--reference", required=True, help=".npy labels of the ROI (e.g. one canvas)")
    ap.add_argument("--gt", help="ground truth as file.h5:dataset (cropped to the ROI)")
    ap.add_argument("--rules", nargs="+", default=["contained:0.7", "mutual:0.6", "mutual:0.5"])
    ap.add_argument("--slabs", nargs="+", type=int, default=[8, 10**6])
    ap.add_argument("--fill", action="store_true", help="fill holes from face neighbours")
    args = ap.parse_args()

    from skimage.metrics import adapted_rand_error, variation_of_information

    from napari_connectome.jobs.layout import JobLayout
    from napari_connectome.jobs.pipeline import make_grid
    from napari_connectome.jobs.spec import load_spec

    layout = JobLayout(args.job)
    spec = load_spec(layout.spec)
    grid = make_grid(spec)
    roi = grid.roi.slices
    ref = np.load(args.reference, allow_pickle=False).astype(np.int64)
    gt = None
    if args.gt:
        import h5py

        path, _, dataset = args.gt.rpartition(":")
        with h5py.File(path) as f:
            gt = f[dataset][roi].astype(np.int64)
    for rule_frac in args.rules:
        rule, frac = rule_frac.split(":")
        for slab in args.slabs:
            out = reconcile(layout, grid, rule, float(frac), slab, fill=args.fill)
            out = out.astype(np.int64)
            row = {
                "figure": "reconcile_rule",
                "job": str(args.job),
                "overlap": list(spec.overlap),
                "rule": rule,
                "min_fraction": float(frac),
                "slab": slab if slab < 10**6 else "whole shared region",
                "fill_holes": args.fill,
                "arand_vs_reference": round(float(adapted_rand_error(ref, out)[0]), 4),
                "vi_split_merge_vs_reference": [
                    round(float(v), 3)
                    for v in variation_of_information(ref, out, ignore_labels=(0,))
                ],
            }
            if gt is not None:
                row["arand_vs_gt"] = round(float(adapted_rand_error(gt, out)[0]), 4)
                row["vi_vs_gt"] = round(
                    float(sum(variation_of_information(gt, out, ignore_labels=(0,)))), 3
                )
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
