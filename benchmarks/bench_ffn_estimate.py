"""How good the desk's run estimate is (napari_connectome.ffn.estimate), on real FIB-25.

For each box: the estimate made before the run (expected steps x measured step time) and the run's
real steps and time, with their ratios side by side. One JSON line per box. The steps-per-cell
figure of the shipped model is what ``STEPS_PER_CELL`` documents.

    .venv/bin/python benchmarks/bench_ffn_estimate.py [--model DIR] [--size 48] [--at 100,100,100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

H5 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fib25-training-sample2"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder or zoo name (default: shipped)")
    ap.add_argument("--size", type=int, action="append", help="box edge (voxels); repeatable")
    ap.add_argument("--at", default="100,100,100", help="box corner z,y,x")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()

    from napari_connectome.ffn.checkpoint import load_model
    from napari_connectome.ffn.estimate import STEPS_PER_CELL, estimate_run, interior_voxels
    from napari_connectome.ffn.inference import segment_region
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.zoo import default_model, get_model
    from napari_connectome.volumes import open_volume

    folder = get_model(args.model) if args.model else default_model()
    model, config = load_model(folder)
    vol = open_volume(f"{H5 / 'fib25_training_sample2.h5'}:raw")
    z, y, x = (int(v) for v in args.at.split(","))
    for n in args.size or [48]:
        image = np.asarray(vol.data[z : z + n, y : y + n, x : x + n])
        runner = LockstepRunner(model, precision=args.precision)
        est = estimate_run(image.shape, runner, config, key=str(folder))
        t0 = time.perf_counter()
        result = segment_region(image, model, config, runner=runner)
        seconds = time.perf_counter() - t0
        cells = interior_voxels(image.shape, config.fov_size) / float(np.prod(config.deltas))
        steps = int(result.counters["steps"])
        print(
            json.dumps(
                {
                    "figure": "ffn_estimate",
                    "model": folder.name,
                    "box": [z, y, x, n],
                    "cells": cells,
                    "steps": steps,
                    "steps_per_cell": round(steps / cells, 3),
                    "rule_steps_per_cell": STEPS_PER_CELL,
                    "estimated_steps": est.steps,
                    "estimated_seconds": round(est.seconds, 2),
                    "seconds": round(seconds, 2),
                    "steps_ratio_real_over_estimate": round(steps / est.steps, 3),
                    "seconds_ratio_real_over_estimate": round(seconds / est.seconds, 3),
                    "step_seconds_measured": round(est.step_seconds, 5),
                    "step_seconds_in_run": round(seconds / max(steps, 1), 5),
                    "segments": int(result.counters.get("segments", 0)),
                    "precision": runner.precision,
                    "cpu": platform.processor() or platform.machine(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
