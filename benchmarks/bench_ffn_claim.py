"""The FFN claim as merge evidence: our FFN, its claim, and ``agglomerate`` with and without it.

    nice .venv/bin/python benchmarks/bench_ffn_claim.py [--crops 125:250,0:250,0:250]
        [--weights 0,0.5,1] [--thresholds 0.5,0.65,0.8] [--model DIR] [--threads 2]
    nice .venv/bin/python benchmarks/bench_ffn_claim.py --overhead 125:189,0:96,0:96

Per held-out crop of FIB-25 training_sample2 (the shipped model trained on z < 125): the
forward and reverse runs (``segment_region``, which records the claim) and their split
consensus; for each input (the forward run, the consensus) the agglomeration at each claim
weight and threshold (weight 0 is the EM evidence alone, as before the claim existed; the other
thresholds reuse the first one's scores). Lines (one JSON each): ``run``, ``evidence`` (how well
each edge's EM rank and FFN claim tell same-body pairs from the others: the area-weighted AUC
against the ground truth's majority body per supervoxel) and ``agglomerate`` (VI / ARAND,
merges, seconds). With ``--overhead`` only what recording the claim costs the FFN, side by
side in one run (an ``overhead`` line). Writes only under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agglomerate import H5, cpu_name, scores


def emit(**kw) -> None:
    print(json.dumps({"bench": "ffn_claim", "cpu": cpu_name(), **kw}), flush=True)


def parse_crop(text: str) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in (p.split(":") for p in text.split(",")))


def weighted_auc(positive: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    """Chance that a random positive (by weight) scores above a random negative; ties half."""
    order = np.argsort(score, kind="stable")
    s, y, w = score[order], positive[order], weight[order].astype(np.float64)
    _, first = np.unique(s, return_index=True)
    pos = np.add.reduceat(w * y, first)
    neg = np.add.reduceat(w * ~y, first)
    below = np.cumsum(neg) - neg
    denom = pos.sum() * neg.sum()
    return float((pos * (below + 0.5 * neg)).sum() / denom) if denom else float("nan")


def same_body(dest: Path, gt: np.ndarray) -> np.ndarray:
    """Per edge of ``dest``'s region graph: do both supervoxels' majority GT bodies agree?"""
    import zarr

    from napari_connectome.graph import RegionGraph

    sv = np.asarray(zarr.open_array(str(dest / "supervoxels" / "0"), mode="r")[...])
    m = gt > 0
    pairs, counts = np.unique(np.stack([sv[m], gt[m]]), axis=1, return_counts=True)
    order = np.lexsort((-counts, pairs[0]))
    first = np.r_[True, pairs[0][order][1:] != pairs[0][order][:-1]]
    body = dict(zip(pairs[0][order][first].tolist(), pairs[1][order][first].tolist()))
    graph = RegionGraph.open(dest / "region_graph")
    u = np.asarray(graph._array("edges/u")[:]).tolist()
    v = np.asarray(graph._array("edges/v")[:]).tolist()
    return np.array([body.get(a, -1) == body.get(b, -2) for a, b in zip(u, v)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", nargs="+", default=["125:250,0:250,0:250"])
    ap.add_argument("--weights", default="0,0.5,1")
    ap.add_argument("--thresholds", default="0.5,0.65,0.8")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--overhead",
        metavar="CROP",
        help="only time segment_region on CROP with and without recording the claim, "
        "alternating, 2 runs each (labels compared)",
    )
    args = ap.parse_args(argv)
    import h5py
    import torch
    import zarr

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.reuse import reagglomerate
    from napari_connectome.agglomerate.run import claim_applies
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.consensus import consensus_claim, split_consensus
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.segment_volume import write_claim
    from napari_connectome.ffn.zoo import default_model
    from napari_connectome.volumes import open_volume, write_ome_zarr

    torch.set_num_threads(args.threads)
    weights = [float(w) for w in args.weights.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    model_dir = args.model or str(default_model())
    model, config = load_model(model_dir)
    options = options_for_model(config)
    if args.overhead:
        return overhead(args, model, config, options, Path(model_dir).name)
    for text in args.crops:
        box = parse_crop(text)
        with h5py.File(H5, "r") as f:
            raw, gt = f["raw"][box], f["labels"][box]
        common = {"crop": text, "model": Path(model_dir).name, "threads": args.threads}
        runs = {}
        for order in ("forward", "reverse"):
            res = segment_region(raw, model, config, options.updated(seed_order=order))
            runs[order] = res
            emit(
                **common,
                what="run",
                seed_order=order,
                steps=int(res.counters["steps"]),
                seconds=round(float(res.counters["seconds"]), 1),
                precision=res.counters.get("precision"),
                claimed_voxels=int((res.claim >= 128).sum()),
                **scores(res.labels, gt),
            )
        labels, _ = split_consensus(runs["forward"].labels, runs["reverse"].labels)
        claim = consensus_claim([runs["forward"].claim, runs["reverse"].claim], labels)
        inputs = {
            "forward": (runs["forward"].labels, runs["forward"].claim),
            "consensus": (labels, claim),
        }
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_ome_zarr(raw, tmp / "em.ome.zarr", voxel_size_nm=(10,) * 3)
            em = open_volume(str(tmp / "em.ome.zarr"))
            for name, (seg, seg_claim) in inputs.items():
                src = tmp / f"{name}.ome.zarr"
                write_ome_zarr(seg.astype(np.uint64), src, voxel_size_nm=(10,) * 3, labels=True)
                write_claim(src, seg_claim)
                for w in weights:
                    first = None
                    for th in thresholds:
                        dest = tmp / f"{name}-{w}-{th}.ome.zarr"
                        t0 = time.perf_counter()
                        if first is None:
                            agglomerate(
                                open_volume(str(src)), em, dest, threshold=th, claim_weight=w
                            )
                            first = dest
                        else:
                            reagglomerate(open_volume(str(src)), em, dest, first, threshold=th)
                        wall = time.perf_counter() - t0
                        meta = json.loads((dest / "agglomeration.json").read_text())
                        out = np.asarray(open_volume(str(dest)).data)
                        emit(
                            **common,
                            what="agglomerate",
                            input=name,
                            claim_weight=w,
                            threshold=th,
                            n_merges=meta["n_merges"],
                            seconds=round(wall, 1),
                            **scores(out, gt),
                        )
                    if w == weights[0]:
                        sc = zarr.open_group(str(first / "scores"), mode="r")
                        same = same_body(first, gt)
                        area = np.asarray(sc["area"][:])
                        faces = np.asarray(sc["claim_faces"][:])
                        claim_col = np.asarray(sc["claim"][:])
                        has = claim_applies(claim_col, faces, area)
                        rank = np.asarray(sc["mean_rank"][:])
                        emit(
                            **common,
                            what="evidence",
                            input=name,
                            edges=len(same),
                            same_body=int(same.sum()),
                            edges_with_claim=int(has.sum()),
                            auc_em_rank=round(weighted_auc(same, rank, area), 3),
                            auc_em_rank_where_claim=round(
                                weighted_auc(same[has], rank[has], area[has]), 3
                            ),
                            auc_claim_where_claim=round(
                                weighted_auc(same[has], claim_col[has], area[has]), 3
                            ),
                        )
    return 0


def overhead(args, model, config, options, name) -> int:
    """Seconds of segment_region with the claim recorded and with it switched off."""
    import h5py

    from napari_connectome.ffn import canvas
    from napari_connectome.ffn.inference import segment_region

    with h5py.File(H5, "r") as f:
        raw = f["raw"][parse_crop(args.overhead)]
    record = canvas._record_claim
    seconds: dict[str, list[float]] = {"claim": [], "no_claim": []}
    labels = {}
    for _ in range(2):
        for variant in ("claim", "no_claim"):
            canvas._record_claim = record if variant == "claim" else (lambda *a: None)
            t0 = time.perf_counter()
            labels[variant] = segment_region(raw, model, config, options).labels
            seconds[variant].append(time.perf_counter() - t0)
    canvas._record_claim = record
    emit(
        what="overhead",
        crop=args.overhead,
        model=name,
        threads=args.threads,
        seconds_claim=[round(x, 1) for x in seconds["claim"]],
        seconds_no_claim=[round(x, 1) for x in seconds["no_claim"]],
        ratio=round(sum(seconds["claim"]) / sum(seconds["no_claim"]), 3),
        same_labels=bool(np.array_equal(labels["claim"], labels["no_claim"])),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
