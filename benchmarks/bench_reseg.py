"""FFN resegmentation on our own FFN's over-segmentation: does it tell one neuron from two, and
what does it give and cost beside the EM and the FFN claim?

    nice .venv/bin/python benchmarks/bench_reseg.py [--crops 125:189,0:128,122:250 ...]
        [--model DIR] [--threads 1] [--bands 0.1,1] [--max-reseg 200,100000]

Per held-out crop of FIB-25 training_sample2 (the shipped model trained on z < 125): the forward
and reverse runs (``segment_region``, with the claim) and their split consensus, written as
``segment --oversegment`` writes it; then ``agglomerate`` at the default threshold without a
model (the default: EM and claim) and with the same model's resegmentation for each (band,
max_reseg) pair. Lines (one JSON each): ``run`` (FFN steps and seconds of the two runs),
``agglomerate`` (VI / ARAND, merges, contacts resegmented, seconds of the resegmentation) and
``evidence`` (on the contacts resegmented with the widest band: the area-weighted and plain AUC
of the affinity before resegmentation, of the resegmentation score, and of the rule's mix of the
two, against the ground truth's majority body per supervoxel). Writes only under a temporary
folder.
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
from bench_ffn_claim import parse_crop, same_body, weighted_auc

CROPS = ["125:189,0:128,122:250", "186:250,122:250,0:128"]


def emit(**kw) -> None:
    print(json.dumps({"bench": "reseg", "cpu": cpu_name(), **kw}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", nargs="+", default=CROPS)
    ap.add_argument("--model", default=None, help="model dir (default: the zoo's default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bands", default="0.1,1", help="comma-separated bands around the threshold")
    ap.add_argument("--max-reseg", default="200,100000", help="one limit per band")
    ap.add_argument(
        "--rooms",
        default="1",
        help="comma-separated moves of room around the FOV in each box (reseg.ROOM); each "
        "(band, max_reseg) variant runs with each",
    )
    ap.add_argument(
        "--keep",
        metavar="DIR",
        help="keep each crop (crop-N.h5: raw, labels) and its agglomerate outputs in DIR (new)",
    )
    args = ap.parse_args(argv)
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True)
    import h5py
    import torch
    import zarr

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate import reseg as reseg_module
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.consensus import consensus_claim, split_consensus
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.segment_volume import write_claim
    from napari_connectome.ffn.zoo import default_model
    from napari_connectome.volumes import open_volume, write_ome_zarr

    torch.set_num_threads(args.threads)
    bands = [float(b) for b in args.bands.split(",")]
    limits = [int(m) for m in args.max_reseg.split(",")]
    if len(bands) != len(limits):
        ap.error("--bands and --max-reseg need one value each per variant")
    model_dir = args.model or str(default_model())
    model, config = load_model(model_dir)
    options = options_for_model(config)
    for n, text in enumerate(args.crops):
        box = parse_crop(text)
        with h5py.File(H5, "r") as f:
            raw, gt = f["raw"][box], f["labels"][box]
        if keep is not None:
            with h5py.File(keep / f"crop-{n}.h5", "w") as f:
                f["raw"], f["labels"] = raw, gt
        common = {"crop": text, "model": Path(model_dir).name, "threads": args.threads}
        runs = {}
        for order in ("forward", "reverse"):
            runs[order] = segment_region(raw, model, config, options.updated(seed_order=order))
        ffn_seconds = sum(float(r.counters["seconds"]) for r in runs.values())
        labels, _ = split_consensus(runs["forward"].labels, runs["reverse"].labels)
        claim = consensus_claim([runs["forward"].claim, runs["reverse"].claim], labels)
        emit(
            **common,
            what="run",
            steps=int(sum(r.counters["steps"] for r in runs.values())),
            ffn_seconds=round(ffn_seconds, 1),
            **scores(labels, gt),
        )
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp) if keep is None else keep / f"crop-{n}"
            tmp.mkdir(exist_ok=True)
            write_ome_zarr(raw, tmp / "em.ome.zarr", voxel_size_nm=(10,) * 3)
            src = tmp / "cons.ome.zarr"
            write_ome_zarr(labels.astype(np.uint64), src, voxel_size_nm=(10,) * 3, labels=True)
            write_claim(src, claim)
            em = open_volume(str(tmp / "em.ome.zarr"))
            rooms = [int(r) for r in args.rooms.split(",")]
            variants = [("claim", None, 0.0, 0, 1)] + [
                (f"reseg band {b} max {m} room {r}", (model, config), b, m, r)
                for r in rooms
                for b, m in zip(bands, limits)
            ]
            widest = None
            for index, (name, mdl, band, limit, room) in enumerate(variants):
                reseg_module.ROOM = room
                dest = tmp / f"agg-{index}.ome.zarr"
                t0 = time.perf_counter()
                agglomerate(
                    open_volume(str(src)),
                    em,
                    dest,
                    model=mdl,
                    model_name=Path(model_dir).name if mdl else None,
                    band=band if mdl else 0.1,
                    max_reseg=limit if mdl else 200,
                )
                wall = time.perf_counter() - t0
                if mdl is None:
                    base_wall = wall
                meta = json.loads((dest / "agglomeration.json").read_text())
                out = np.asarray(open_volume(str(dest)).data)
                emit(
                    **common,
                    what="agglomerate",
                    variant=name,
                    dest=str(dest) if keep is not None else None,
                    n_merges=meta["n_merges"],
                    n_resegmented=meta.get("n_resegmented", 0),
                    reseg_seconds=round(float(meta.get("seconds", {}).get("resegmentation", 0)), 1),
                    extra_seconds=round(wall - base_wall, 1) if mdl else 0.0,
                    seconds=round(wall, 1),
                    ratio_vs_ffn=round(wall / ffn_seconds, 3),
                    **scores(out, gt),
                )
                if mdl is not None and (widest is None or band > widest[1]):
                    widest = (dest, band)
            reseg_module.ROOM = 1
            if widest is not None:
                dest = widest[0]
                sc = zarr.open_group(str(dest / "scores"), mode="r")
                reseg = np.asarray(sc["reseg"][:])
                affinity = np.asarray(sc["affinity"][:])
                area = np.asarray(sc["area"][:]).astype(np.float64)
                have = np.isfinite(reseg)
                before = np.where(have, 2 * affinity - np.nan_to_num(reseg), affinity)
                same = same_body(dest, gt)
                row = {}
                for key, score in (
                    ("before", before),
                    ("reseg", reseg),
                    ("mix", affinity),
                ):
                    s, y, w = score[have], same[have], area[have]
                    row[f"auc_{key}"] = round(weighted_auc(y, s, w), 3)
                    row[f"auc_{key}_unweighted"] = round(weighted_auc(y, s, np.ones_like(w)), 3)
                emit(
                    **common,
                    what="evidence",
                    band=widest[1],
                    edges=len(same),
                    resegmented=int(have.sum()),
                    resegmented_same_body=int(same[have].sum()),
                    **row,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
