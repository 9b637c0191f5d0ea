"""Agglomerating Google's published FFN segmentation of FIB-25 training_sample2, scored against
the ground truth, and what it costs beside the FFN run it refines. One JSON line per figure.

    nice .venv/bin/python benchmarks/bench_agglomerate.py [--thresholds 0.6,0.65,0.7]
        [--model google-ffn-fib25-dir] [--max-reseg 100] [--threads 1] [--seed-distances 8,12]

Lines: ``google`` (the published segmentation as it is), ``agglomerate`` per threshold and
variant (fill on/off, with/without FFN resegmentation): VI split/merge/total, ARAND, seconds per
pass; ``cost`` (scores+agglomeration seconds over the FFN run's seconds: Google's own counters on
one P100, and our FFN's rate on this CPU times Google's number of predict calls, measured here in
the same run). Uses ../shared/data (see its README); writes only under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE = DATA / "google-ffn-fib25"
GOOGLE_PREDICT_CALLS = 25_799  # sample-training2.counters.txt
GOOGLE_SECONDS = 393.8  # the whole run on one P100, same file


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(**kw) -> None:
    print(json.dumps({"cpu": cpu_name(), **kw}), flush=True)


def scores(seg: np.ndarray, gt: np.ndarray) -> dict:
    from napari_connectome.evaluate import evaluate_segmentation

    r = evaluate_segmentation(seg, gt)
    return {k: round(float(r[k]), 4) for k in ("vi_split", "vi_merge", "vi", "arand")}


def ffn_rate(model_dir: Path, seconds: float = 20.0) -> float:
    """FOV predictions per second of our FFN on this CPU, batch 1 (as Google's run)."""
    import torch

    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.runner import LockstepRunner

    model, config = load_model(model_dir)
    run = LockstepRunner(model, device="cpu", precision="auto", batch=1)  # the precision auto picks
    x = torch.zeros((1, 1, *config.fov_size))  # image and logits, one FOV
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, run.precision == "bf16"):
        model(x, x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x, x)
            n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thresholds", default="0.6,0.65,0.7")
    ap.add_argument("--model", help="model dir (imported Google checkpoint) for resegmentation")
    ap.add_argument("--max-reseg", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-fill-variant", action="store_true", help="also run without fill")
    ap.add_argument(
        "--seed-distances", default="8", help="fill seed distances to try (comma-separated)"
    )
    args = ap.parse_args(argv)
    import h5py
    import torch

    torch.set_num_threads(args.threads)
    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.reuse import reagglomerate
    from napari_connectome.volumes import open_volume, write_ome_zarr

    with h5py.File(H5, "r") as f:
        gt = f["labels"][:]
    google = np.load(GOOGLE / "sample-training2.npz")["segmentation"]
    emit(bench="agglomerate", what="google", **scores(google, gt))
    model = None
    if args.model:
        from napari_connectome.ffn.checkpoint import load_model

        model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        seg_path = Path(tmp) / "google.ome.zarr"
        write_ome_zarr(google.astype(np.uint64), seg_path, voxel_size_nm=(10, 10, 10), labels=True)
        seg = open_volume(str(seg_path))
        em = open_volume(f"{H5}:raw")
        distances = [float(d) for d in args.seed_distances.split(",")]
        variants = [(True, None, d) for d in distances]
        if args.no_fill_variant:
            variants.append((False, None, distances[0]))
        if model is not None:
            variants.append((True, model, distances[0]))
        spent = None
        for fill, mdl, dist in variants:
            first = None  # later thresholds reuse the first one's passes (agglomerate --reuse)
            for th in [float(t) for t in args.thresholds.split(",")]:
                dest = Path(tmp) / f"agg-{fill}-{mdl is not None}-{dist}-{th}.ome.zarr"
                t0 = time.perf_counter()
                if first is None or mdl is not None:
                    agglomerate(
                        seg,
                        em,
                        dest,
                        threshold=th,
                        fill=fill,
                        model=mdl,
                        max_reseg=args.max_reseg,
                        seed_distance=dist,
                    )
                    first = dest
                else:
                    reagglomerate(seg, em, dest, first, threshold=th)
                wall = time.perf_counter() - t0
                meta = json.loads((dest / "agglomeration.json").read_text())
                out = np.asarray(open_volume(str(dest)).data)
                emit(
                    bench="agglomerate",
                    what="agglomerate",
                    threshold=th,
                    fill=fill,
                    seed_distance=dist,
                    reused=first != dest,
                    reseg=mdl is not None,
                    n_resegmented=meta["n_resegmented"],
                    n_supervoxels=meta["n_supervoxels"],
                    n_segments=meta["n_segments"],
                    seconds=round(wall, 2),
                    passes=meta["seconds"],
                    threads=args.threads,
                    **scores(out, gt),
                )
                if fill and mdl is None and spent is None and first == dest:
                    spent = wall
    if args.model and spent is not None:
        rate = ffn_rate(Path(args.model))
        ours = GOOGLE_PREDICT_CALLS / rate
        emit(
            bench="agglomerate",
            what="cost",
            agglomerate_seconds=round(spent, 2),
            ffn_google_p100_seconds=GOOGLE_SECONDS,
            ffn_here_fov_per_s=round(rate, 2),
            ffn_here_seconds_estimated=round(ours, 1),
            ratio_vs_ffn_here=round(spent / ours, 4),
            threads=args.threads,
            note="FFN here = Google's 25,799 predict calls at the rate measured in this run",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
