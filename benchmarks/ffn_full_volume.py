"""Whole FIB-25 training_sample2 (250^3) with Google's settings, compared with Google and the GT.

Runs google/ffn's full-volume inference (PolicyPeaks seeds, the pbtxt thresholds) with the imported
checkpoint and prints JSON lines: progress every ``--log-every`` seconds, then the scores of our
segmentation against Google's published one (adapted Rand error, goal <= 0.05) and against the
ground truth (VI, ARAND; Google: 1.817 / 0.157), plus peak RSS.

With ``--max-seconds`` the run stops early and scores the *partial* result fairly: our segments so
far against Google's segments grown from the same seeds (the seeds before the stopping point in
PolicyPeaks order). The labels (partial or complete) are saved to ``--out`` as .npy.

    .venv/bin/python benchmarks/ffn_full_volume.py --threads 1 --out /tmp/ffn_full
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from _data import GOOGLE, H5  # noqa: E402  (../shared/data, or .gpu/data on the GPU machine)


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stop(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir (default: import Google's checkpoint to a temp dir)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--width", type=int, default=1, help="objects in flight at once (GPU)")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop early and score partially")
    ap.add_argument("--log-every", type=float, default=120)
    ap.add_argument("--out", default=None, help="directory for labels .npy and the JSON summary")
    args = ap.parse_args()

    import h5py
    import torch

    from napari_connectome.evaluate import evaluate_segmentation
    from napari_connectome.ffn.canvas import Canvas, segment_all
    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.seeds import peaks_seeds
    from napari_connectome.ffn.speculative import segment_all_speculative

    torch.set_num_threads(args.threads)
    tmp = None
    model_dir = args.model
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory()
        model_dir = Path(tmp.name) / "google-fib25"
        import_google_checkpoint(GOOGLE / "model.ckpt-27465036", model_dir)
    model, config = load_model(model_dir)
    options = options_for_model(config)
    with h5py.File(H5, "r") as f:
        raw = f["raw"][:]
        gt = f["labels"][:]
    google = np.load(GOOGLE / "sample-training2.npz", allow_pickle=False)["segmentation"]
    origins = json.loads((GOOGLE / "sample-training2.origins.json").read_text())

    t0 = time.perf_counter()
    seeds = peaks_seeds(raw)
    t_seeds = time.perf_counter() - t0
    seed_set = {tuple(int(v) for v in p) for p in seeds}
    missing = [k for k, o in origins.items() if tuple(o["start_zyx"]) not in seed_set]
    emit(
        figure="ffn_full_seeds",
        seeds=len(seeds),
        seconds=round(t_seeds, 1),
        google_origins_not_in_our_seeds=len(missing),
    )

    runner = LockstepRunner(model, device=args.device, precision=args.precision, batch=args.width)
    canvas = Canvas(
        raw,
        fov_size=config.architecture.fov_size,
        deltas=config.architecture.deltas,
        image_mean=config.image_mean,
        image_stddev=config.image_stddev,
        options=options,
        device=runner.device,
    )
    state = {"seeds_done": 0, "last_log": time.perf_counter()}
    t_start = time.perf_counter()

    def on_object(out) -> None:
        state["seeds_done"] += 1

    def log_progress(now: float) -> None:
        state["last_log"] = now
        calls = int(runner.counters["predict_calls"])
        emit(
            figure="ffn_full_progress",
            seconds=round(now - t_start, 1),
            seeds_done=state["seeds_done"],
            seeds_total=len(seeds),
            segments=int(canvas.counters["segments"]),
            ffn_steps=calls,
            google_predict_calls=25799,
            steps_per_s=round(calls / (now - t_start), 3),
        )

    def stoppable(driver):
        """Forward the canvas' requests; stop (dropping the object in flight) at the time limit."""
        reply = None
        while True:
            try:
                request = driver.send(reply)
            except StopIteration:
                return
            now = time.perf_counter()
            if now - state["last_log"] >= args.log_every:
                log_progress(now)
            if args.max_seconds and now - t_start > args.max_seconds:
                raise Stop
            reply = yield request

    complete = True
    try:
        if args.width > 1:
            driver = segment_all_speculative(canvas, seeds, width=args.width, on_object=on_object)
        else:
            driver = segment_all(canvas, seeds, on_object=on_object)
        runner.run([stoppable(driver)])
    except Stop:
        complete = False
    elapsed = time.perf_counter() - t_start
    labels = canvas.result()
    done_seeds = state["seeds_done"]
    c = canvas.counters
    summary = {
        "figure": "ffn_full_volume",
        "complete": complete,
        "precision": args.precision,
        "device": str(runner.device),
        "threads": args.threads,
        "objects_in_flight": args.width,
        "seconds": round(elapsed, 1),
        "seeds_done": done_seeds,
        "seeds_total": len(seeds),
        "segments": int(c["segments"]),
        "google_segments": len(origins),
        "steps": int(c["steps"]),
        "ffn_steps_incl_unfinished_object": int(runner.counters["predict_calls"]),
        "google_predict_calls": 25799,
        "google_steps_in_segments": int(sum(o["iters"] for o in origins.values())),
        "steps_per_s": round(runner.counters["predict_calls"] / elapsed, 3),
        "voxels_per_hour": round(labels.size * 3600 / elapsed) if complete else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if args.out:  # labels first: a crash while scoring must not lose an hour of inference
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "labels.npy", labels)
        (out / "counters.json").write_text(json.dumps(dict(c), indent=2) + "\n")
    if complete:
        reference = google
    else:
        # Google's segments whose seeds we have already passed (same PolicyPeaks order).
        order = {tuple(int(v) for v in p): i for i, p in enumerate(seeds)}
        keep = [
            int(k)
            for k, o in origins.items()
            if order.get(tuple(o["start_zyx"]), 1e18) < done_seeds
        ]
        reference = np.where(np.isin(google, keep), google, 0)
        summary["google_segments_compared"] = len(keep)
    if reference.any():
        vs_google = evaluate_segmentation(labels, reference)
        summary["arand_vs_google"] = round(vs_google["arand"], 4)
        summary["vi_vs_google"] = round(vs_google["vi"], 4)
    if complete:
        ours_gt = evaluate_segmentation(labels, gt)
        google_gt = evaluate_segmentation(google, gt)
        summary.update(
            vi_vs_gt=round(ours_gt["vi"], 4),
            vi_split_vs_gt=round(ours_gt["vi_split"], 4),
            vi_merge_vs_gt=round(ours_gt["vi_merge"], 4),
            arand_vs_gt=round(ours_gt["arand"], 4),
            google_vi_vs_gt=round(google_gt["vi"], 4),
            google_arand_vs_gt=round(google_gt["arand"], 4),
        )
    emit(**summary)
    if args.out:
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
