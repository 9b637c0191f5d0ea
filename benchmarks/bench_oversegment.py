"""The over-segmentation (split consensus of forward and reverse seed order) on held-out FIB-25
crops: what it costs and what it gives, alone and refined by ``agglomerate``. One JSON line per
figure.

    nice .venv/bin/python benchmarks/bench_oversegment.py [--model fib25-small] [--threads 1]
        [--crops 125:189,77:173,77:173 186:250,0:96,154:250] [--min-sizes 100]

The default model was trained on z < 125 of training_sample2, so the crops lie at z >= 125
(docs/training.md). Per crop: ``run`` lines for the forward and the reverse run (FFN steps,
seconds, segments, VI split/merge, ARAND), ``consensus`` lines for each rule for voxels one run
left at 0 (drop / keep / first) and minimum size (segments, seconds, scores, the cost of both runs
and the consensus over the forward run alone, in FFN steps and seconds), and ``agglomerate`` lines
for each run and each consensus followed by agglomerate (with its fill, the default threshold). Scores: napari_connectome.evaluate (voxels where
the ground truth > 0; segmentation 0 counts as one segment). Uses ../shared/data; writes only
under a temporary folder.
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
from _data import H5


def cpu() -> dict:
    """The CPU's name and the instruction-set flags that decide the FFN's kernels."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"cpu": name, "cpu_flags": [f for f in wanted if f in flags]}


CPU = cpu()


def emit(**kw) -> None:
    print(json.dumps({**kw, **CPU}), flush=True)


def scores(seg: np.ndarray, gt: np.ndarray) -> dict:
    from napari_connectome.evaluate import evaluate_segmentation

    r = evaluate_segmentation(seg, gt)
    out = {k: round(float(r[k]), 4) for k in ("vi_split", "vi_merge", "vi", "arand")}
    out["segments"] = int(np.unique(seg[seg > 0]).size)
    return out


def crop(text: str) -> tuple[slice, ...]:
    return tuple(slice(*(int(v) for v in part.split(":"))) for part in text.split(","))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model dir or zoo name (default: the default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crops", nargs="+", default=["125:189,77:173,77:173", "186:250,0:96,154:250"])
    ap.add_argument("--min-sizes", default="100", help="comma-separated consensus min sizes")
    ap.add_argument("--threshold", type=float, default=0.65, help="agglomerate's threshold")
    args = ap.parse_args(argv)
    import h5py
    import torch

    torch.set_num_threads(args.threads)
    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.consensus import UNMATCHED, split_consensus
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.zoo import default_model
    from napari_connectome.volumes import open_volume, write_ome_zarr

    model_dir = args.model or default_model()
    model, config = load_model(model_dir)
    options = options_for_model(config)
    runner = LockstepRunner(model, device="cpu", precision="auto", batch=1)
    min_sizes = [int(v) for v in args.min_sizes.split(",")]
    for text in args.crops:
        box = crop(text)
        with h5py.File(H5, "r") as f:
            raw = f["raw"][box]
            gt = f["labels"][box]
        common = {"bench": "oversegment", "crop": text, "model": Path(model_dir).name}
        common["threads"] = args.threads
        runs, seconds, steps = {}, {}, {}
        for order in ("forward", "reverse"):
            res = segment_region(
                raw, model, config, options.updated(seed_order=order), runner=runner
            )
            runs[order] = res.labels
            seconds[order] = float(res.counters["seconds"])
            steps[order] = int(res.counters["steps"])
            emit(
                **common,
                what="run",
                seed_order=order,
                steps=int(res.counters["steps"]),
                seconds=round(seconds[order], 2),
                precision=res.counters.get("precision"),
                **scores(res.labels, gt),
            )
        variants = {"forward": runs["forward"], "reverse": runs["reverse"]}
        for unmatched in UNMATCHED:
            for min_size in min_sizes:
                t0 = time.perf_counter()
                labels, stats = split_consensus(
                    runs["forward"], runs["reverse"], min_size=min_size, unmatched=unmatched
                )
                spent = time.perf_counter() - t0
                both = seconds["forward"] + seconds["reverse"] + spent
                emit(
                    **common,
                    what="consensus",
                    unmatched=unmatched,
                    min_size=min_size,
                    consensus_seconds=round(spent, 3),
                    seconds_vs_forward=round(both / seconds["forward"], 2),
                    steps_vs_forward=round(sum(steps.values()) / steps["forward"], 2),
                    voxels_dropped_unmatched=stats.voxels_dropped_unmatched,
                    voxels_dropped_small=stats.voxels_dropped_small,
                    **scores(labels, gt),
                )
                variants[f"consensus {unmatched} {min_size}"] = labels
        with tempfile.TemporaryDirectory() as tmp:
            h5_em = Path(tmp) / "em.ome.zarr"
            write_ome_zarr(raw, h5_em, voxel_size_nm=(10, 10, 10))
            em = open_volume(str(h5_em))
            for k, (name, seg) in enumerate(variants.items()):
                src = Path(tmp) / f"seg{k}.ome.zarr"
                write_ome_zarr(seg.astype(np.uint64), src, voxel_size_nm=(10, 10, 10), labels=True)
                dest = Path(tmp) / f"agg{k}.ome.zarr"
                t0 = time.perf_counter()
                agglomerate(open_volume(str(src)), em, dest, threshold=args.threshold)
                wall = time.perf_counter() - t0
                meta = json.loads((dest / "agglomeration.json").read_text())
                out = np.asarray(open_volume(str(dest)).data)
                emit(
                    **common,
                    what="agglomerate",
                    input=name,
                    threshold=args.threshold,
                    n_supervoxels=meta["n_supervoxels"],
                    agglomerate_seconds=round(wall, 2),
                    **scores(out, gt),
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
