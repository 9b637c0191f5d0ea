"""Blockwise FFN with reconciliation vs one canvas over the same region (issue 5's quality bar).

  .venv/bin/python benchmarks/bench_jobs_ffn_arand.py [--crop 250] [--block 128] [--overlap 16]
        [--model DIR] [--precision bf16] [--workers 1]

Segments a crop of the shared FIB-25 training_sample2 with Google's imported FFN model twice: one
canvas over the whole crop (``ffn.segment_region``), and a job of ``block``^3 blocks with
``overlap`` context (local backend). Prints one JSON line: adapted Rand error and VI of the job
against the canvas (target ARAND <= 0.02), both against the ground truth, and wall times.
``--canvas`` reuses a saved whole-volume canvas (``ffn_full_volume.py --out DIR`` writes
``DIR/labels.npy``; same model and precision) instead of computing it again. The full figure
(--crop 250 --block 128) takes about 20 min with 2 workers on 2 CPU cores given the canvas.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crop", type=int, default=250)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--rule", default="contained", choices=["contained", "mutual"])
    ap.add_argument("--slab", type=int, default=8)
    ap.add_argument("--canvas", help="saved canvas labels (.npy) of the same crop")
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    from skimage.metrics import adapted_rand_error, variation_of_information

    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.jobs.pipeline import run_job
    from napari_connectome.jobs.segmenters import _pick_device
    from napari_connectome.jobs.spec import parse_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench-ffn-arand-"))
    model = args.model
    if model is None:
        model = str(tmp / "google-fib25")
        import_google_checkpoint(SHARED / "google-ffn-fib25" / "model.ckpt-27465036", model)
    c = args.crop
    with h5py.File(SHARED / "fib25-training-sample2" / "fib25_training_sample2.h5") as f:
        raw = f["raw"][:c, :c, :c]
        gt = f["labels"][:c, :c, :c]
    vol = tmp / "crop.h5"
    with h5py.File(vol, "w") as f:
        f["raw"] = raw
        f["raw"].attrs["resolution_nm_zyx"] = [10, 10, 10]

    device = _pick_device(args.device)
    net, config = load_model(model, device=device)
    t0 = time.perf_counter()
    if args.canvas:
        canvas = np.load(args.canvas, allow_pickle=False)
        if canvas.shape != raw.shape:
            raise SystemExit(f"--canvas has shape {canvas.shape}, the crop is {raw.shape}")
    else:
        canvas = segment_region(
            raw, net, config, options_for_model(config), device=device, precision=args.precision
        ).labels
    t_canvas = time.perf_counter() - t0

    spec = parse_spec(
        {
            "name": "ffn-arand",
            "input": f"{vol}:raw",
            "output": str(tmp / "job.ome.zarr"),
            "block_shape": [args.block] * 3,
            "overlap": [args.overlap] * 3,
            "segmenter": {
                "kind": "ffn",
                "model": model,
                "precision": args.precision,
                "device": device,
            },
            "backend": {"kind": "local", "workers": args.workers},
            "match": {"rule": args.rule, "slab": args.slab},
            "pyramid_levels": 1,
        }
    )
    t0 = time.perf_counter()
    res = run_job(spec)
    t_job = time.perf_counter() - t0
    import zarr

    job = zarr.open_array(str(tmp / "job.ome.zarr" / "0"))[:]
    a = lambda x: x.astype(np.int64)  # noqa: E731
    arand = adapted_rand_error(a(canvas), a(job))[0]
    vi = variation_of_information(a(canvas), a(job), ignore_labels=(0,))
    print(
        json.dumps(
            {
                "figure": "jobs_ffn_blockwise_vs_canvas",
                "crop": c,
                "block": args.block,
                "overlap": args.overlap,
                "rule": args.rule,
                "slab": args.slab,
                "canvas": args.canvas or "computed",
                "blocks": res.blocks_total,
                "precision": args.precision,
                "device": device,
                "arand_job_vs_canvas": round(float(arand), 4),
                "vi_split_merge_job_vs_canvas": [round(float(v), 4) for v in vi],
                "arand_canvas_vs_gt": round(float(adapted_rand_error(a(gt), a(canvas))[0]), 4),
                "arand_job_vs_gt": round(float(adapted_rand_error(a(gt), a(job))[0]), 4),
                "segments_canvas": int(len(np.unique(canvas)) - 1),
                "segments_job": int(len(np.unique(job)) - 1),
                "canvas_s": round(t_canvas, 1),
                "job_s": round(t_job, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
