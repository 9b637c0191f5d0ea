"""Quality of a trained model on the held-out z >= 125 half of FIB-25 training_sample2.

Side by side, against the same ground truth crop (``labels[125:]``):

* ``model``: the given model (default: the shipped one) run with our FFN inference on ``raw[125:]``;
* ``google_published``: Google's own published segmentation (made by Google's code with the
  google-fib25 model on the whole volume), cropped to the same half;
* ``watershed``: a plain seeded watershed baseline (smoothed image, maxima of the membrane distance
  as markers), the thing any FFN must beat.

Prints one JSON line per segmentation (VI split/merge, ARAND, seconds). Usage::

    .venv/bin/python benchmarks/bench_train_eval.py [--model DIR] [--region 125:250,0:250,0:250]
        [--precision fp32|bf16] [--threads 2] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE_SEG = DATA / "google-ffn-fib25" / "sample-training2.npz"


def watershed_baseline(image: np.ndarray) -> np.ndarray:
    """Seeded watershed: dark membranes, bright cell interiors; no learning at all.

    Parameters (smoothing 2, interior above the 30th percentile, markers at distance maxima over
    21^3 farther than 5 voxels from a membrane) are the best of four tries on this half, which
    favours the baseline.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(image.astype(np.float32), 2.0)
    inside = smooth > np.percentile(smooth, 30)
    dist = ndimage.distance_transform_edt(inside)
    peaks = (dist == ndimage.maximum_filter(dist, size=21)) & (dist > 5)
    markers, _ = ndimage.label(peaks)
    return watershed(-dist, markers).astype(np.uint64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="model dir or zoo name (default: the shipped model)")
    ap.add_argument(
        "--region",
        default="125:250,0:250,0:250",
        help="held-out region z0:z1,y0:y1,x0:x1 (z0 >= 125 stays out of the training half)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--skip-model", action="store_true")
    args = ap.parse_args()

    import torch

    from napari_connectome.evaluate import evaluate_segmentation
    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.zoo import default_model

    torch.set_num_threads(args.threads)
    region = tuple(slice(*map(int, a.split(":"))) for a in args.region.split(","))
    with h5py.File(H5) as f:
        raw = f["raw"][region]
        gt = f["labels"][region]
    half = args.region

    def report(name: str, seg: np.ndarray, seconds: float, **extra) -> None:
        scores = evaluate_segmentation(seg, gt)
        print(
            json.dumps(
                {
                    "figure": "heldout_quality",
                    "segmentation": name,
                    "region": half,
                    **scores,
                    "seconds": round(seconds, 1),
                    **extra,
                }
            ),
            flush=True,
        )

    google = np.load(GOOGLE_SEG)["segmentation"][region]
    report("google_published", google, 0.0, note="Google's published run, cropped")

    t = time.perf_counter()
    report("watershed", watershed_baseline(raw), time.perf_counter() - t)

    if not args.skip_model:
        model_dir = args.model or str(default_model())
        model, cfg = load_model(model_dir)
        t = time.perf_counter()
        result = segment_region(raw, model, cfg, batch=args.batch, precision=args.precision)
        report(
            f"ffn:{Path(model_dir).name}",
            result.labels,
            time.perf_counter() - t,
            steps=result.counters.get("steps"),
            precision=args.precision,
        )


if __name__ == "__main__":
    main()
