"""Objects grown from many of Google's recorded FIB-25 seeds vs Google's segments: median IoU.

A larger sample than the CI test (tests/test_ffn_inference_google.py uses the three cheapest seeds in
the 20..300 step range; this benchmark skips those and spreads ``--count`` seeds evenly over the
rest, up to ``--max-iters`` Google steps). Same fair comparison as the test: Google's earlier
segments are the existing segmentation, and Google's other ids are removed from ours before IoU.
Prints one JSON line per seed and a summary line.

    .venv/bin/python benchmarks/bench_ffn_seeds.py --count 10 --threads 1
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
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE = DATA / "google-ffn-fib25"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--max-iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()

    import h5py
    import torch

    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
    from napari_connectome.ffn.inference import grow_object
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(tmp.name) / "google-fib25"
    import_google_checkpoint(GOOGLE / "model.ckpt-27465036", model_dir)
    model, config = load_model(model_dir)
    runner = LockstepRunner(model, device=args.device, precision=args.precision)
    options = options_for_model(config)
    with h5py.File(H5, "r") as f:
        raw = f["raw"][:]
    google = np.load(GOOGLE / "sample-training2.npz", allow_pickle=False)["segmentation"]
    origins = json.loads((GOOGLE / "sample-training2.origins.json").read_text())
    eligible = sorted((o["iters"], int(k)) for k, o in origins.items() if 20 <= o["iters"] <= 300)
    rest = [
        (it, sid) for it, sid in eligible[3:] if args.min_iters <= it <= args.max_iters
    ]  # the CI test's three are eligible[:3]
    idx = np.linspace(0, len(rest) - 1, min(args.count, len(rest))).round().astype(int)
    chosen = [rest[i][1] for i in sorted(set(idx))]
    ious = []
    for sid in chosen:
        t0 = time.perf_counter()
        earlier = np.where((google > 0) & (google < sid), google, 0)
        *_, final = grow_object(
            raw, origins[str(sid)]["start_zyx"], model, config, options,
            segmentation=earlier, every=0, runner=runner,
        )  # fmt: skip
        ours = np.zeros(raw.shape, bool)
        z, y, x = final.offset
        dz, dy, dx = final.mask.shape
        ours[z : z + dz, y : y + dy, x : x + dx] = final.mask
        ours &= (google == 0) | (google == sid)
        theirs = google == sid
        iou = float((ours & theirs).sum() / (ours | theirs).sum())
        ious.append(iou)
        print(
            json.dumps(
                {
                    "figure": "ffn_google_seed",
                    "segment_id": sid,
                    "iou": round(iou, 4),
                    "steps": final.outcome.steps,
                    "google_steps": origins[str(sid)]["iters"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "figure": "ffn_google_seeds_median_iou",
                "seeds": len(ious),
                "median_iou": round(float(np.median(ious)), 4),
                "min_iou": round(float(np.min(ious)), 4),
                "precision": args.precision,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
