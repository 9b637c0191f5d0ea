"""Would the FFN claim rank the proofreading queue better as a feature of its calibration?

    nice .venv/bin/python benchmarks/bench_queue_claim.py AGG:GT [AGG:GT ...]

Each AGG is an agglomerate output of our FFN's segmentation (with its ``ffn_claim``), GT the
ground truth over the same region (``crop.h5:labels``). With at least two outputs the figures are
cross-fitted: each output's candidates are ranked by a calibration fitted on all the others, so
no item is scored by a model that saw its truth. Variants: the default calibration (fitted on
Google's segmentation, which has no claim), one refitted on our outputs with the queue's features,
and one refitted with two more: the widest edge's claim (0 where it does not apply) and whether it
applies. Lines: per output and variant the real-error fraction of the first 20 / 40 items (ranked
as the queue ranks), and the AUC of the chance the rule is wrong; ``summary`` pools the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import cpu_name
from bench_agglomerate_queue import Truth, truth_of_candidates

from napari_connectome.agglomerate.calibrate import auc  # the AUC calibrate-queue reports
from napari_connectome.agglomerate.queue import fit_features as logistic  # the queue's fit

FIRST = (20, 40)


def emit(**kw) -> None:
    print(json.dumps({"bench": "queue_claim", "cpu": cpu_name(), **kw}), flush=True)


def load(agg: str, gt_source: str) -> dict:
    import zarr

    from napari_connectome.agglomerate.queue import read_candidates
    from napari_connectome.volumes import open_volume

    dest = Path(agg)
    meta = json.loads((dest / "agglomeration.json").read_text())
    threshold = float(meta["threshold"])
    cand = read_candidates(dest)
    sv = np.asarray(open_volume(str(dest / "supervoxels")).data)
    gt = np.asarray(open_volume(gt_source).data)
    scores = zarr.open_group(str(dest / "scores"), mode="r")
    ids, seg_of = np.asarray(scores["segment_ids"][:]), np.asarray(scores["segment_of"][:])
    same = truth_of_candidates(cand, Truth(sv, gt), ids, seg_of)
    base = cand.features(threshold)
    claim = np.full(len(base), np.nan) if cand.claim is None else cand.claim
    with_claim = np.c_[base, np.nan_to_num(claim), np.isfinite(claim).astype(float)]
    return {
        "name": agg,
        "same": same,
        "merged": cand.merged,
        "gain": cand.gain(),
        "x": {"queue features": base, "with the claim": with_claim},
        "claimed": float(np.isfinite(claim).mean()),
    }


def judge(out: dict, p_same: np.ndarray, gain_weight: float = 0.25) -> dict:
    """Real-error fraction of the first items ranked as the queue ranks, and the AUC."""
    wrong = np.where(out["merged"], ~out["same"], out["same"])
    p_wrong = np.where(out["merged"], 1 - p_same, p_same)
    order = np.argsort(-(p_wrong * out["gain"] ** gain_weight), kind="stable")
    first = {f"real_errors_first_{n}": round(float(wrong[order[:n]].mean()), 3) for n in FIRST}
    return {**first, "auc": round(auc(p_wrong, wrong), 3), "errors": int(wrong.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="+", help="AGG:GT (GT: a SOURCE, e.g. crop.h5:labels)")
    args = ap.parse_args(argv)
    from napari_connectome.agglomerate.queue import Calibration

    outs = []
    for pair in args.pairs:
        agg, _, gt = pair.partition(":")
        outs.append(load(agg, gt))
    default = Calibration()
    pooled: dict[str, list] = {}
    for k, out in enumerate(outs):
        others = [o for i, o in enumerate(outs) if i != k] or [out]
        variants = {"default calibration": default.p_same(out["x"]["queue features"])}
        for name in ("queue features", "with the claim"):
            x = np.concatenate([o["x"][name] for o in others])
            y = np.concatenate([o["same"] for o in others]).astype(float)
            w = logistic(x, y)
            variants[f"refitted, {name}"] = 1 / (1 + np.exp(-(w[0] + out["x"][name] @ w[1:])))
        for variant, p_same in variants.items():
            pooled.setdefault(variant, []).append(p_same)
            emit(
                what="output",
                output=out["name"],
                variant=variant,
                candidates=len(p_same),
                claimed=round(out["claimed"], 3),
                cross_fitted=len(outs) > 1,
                **judge(out, p_same),
            )
    merged = {key: np.concatenate([o[key] for o in outs]) for key in ("same", "merged", "gain")}
    for variant, parts in pooled.items():
        emit(
            what="summary",
            variant=variant,
            outputs=len(outs),
            **judge(merged, np.concatenate(parts)),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
