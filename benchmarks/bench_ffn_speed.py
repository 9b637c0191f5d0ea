"""FFN inference speed versus the model's raw forward rate, measured side by side in one run.

For each precision: (a) raw forward throughput of the model (FOVs/s) at the batch size inference
uses, and (b) FOV steps/s achieved by full inference (google semantics, PolicyPeaks seeds) on a real
FIB-25 region, in many short slices taken in turn (a/b/a/b..., round-robin over the precisions)
so that the changing load of a shared machine hits all of them alike; then (b)/(a). The first
line names the CPU and its flags; with ``auto``, ``fp32`` and ``bf16`` (the default) a summary line
says what ``auto`` chose and its speed over the faster of fp32 and bf16.
With ``--regions N`` (b) runs N regions batched N-wide, and with ``--width W`` W objects of each
region grow at once (speculative, google's sequential labels); (a) then runs at batch N * W.

voxels_per_hour assumes Google's density on FIB-25: 250^3 voxels took 25,799 FOV steps.

    .venv/bin/python benchmarks/bench_ffn_speed.py --seconds 40 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from _data import GOOGLE, H5  # noqa: E402  (../shared/data, or .gpu/data on the GPU machine)

VOXELS_PER_STEP = 250**3 / 25799  # Google's full-volume run on this data


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


class Budget(Exception):
    pass


def raw_forward(runner, batch: int, seconds: float, rng, warm_up: bool = True) -> tuple[int, float]:
    import torch

    fov = runner.model.arch.fov_size
    img = torch.from_numpy(rng.standard_normal((batch, *fov), dtype=np.float32)).to(runner.device)
    lg = torch.full((batch, *fov), -2.9, device=runner.device)
    with torch.inference_mode():
        if warm_up:
            runner.predict(img, lg)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            runner.predict(img, lg).sum().item()  # .item(): wait for the device
            n += batch
    return n, time.perf_counter() - t0


def inference_steps(runner, canvases, seeds, seconds: float, width: int) -> tuple[int, float]:
    """FOV steps of full inference in ``seconds`` (the objects in flight at the end are dropped)."""
    from napari_connectome.ffn.canvas import FovRequest, segment_all
    from napari_connectome.ffn.speculative import RequestBatch, segment_all_speculative

    t0 = time.perf_counter()
    steps = [0]

    def limited(driver):
        reply = None
        while True:
            try:
                request = driver.send(reply)
            except StopIteration:
                return
            if time.perf_counter() - t0 > seconds:
                raise Budget
            items = request.items if isinstance(request, RequestBatch) else [request]
            steps[0] += sum(isinstance(r, FovRequest) for r in items)
            reply = yield request

    with contextlib.suppress(Budget):
        if width > 1:
            drivers = [segment_all_speculative(c, s, width=width) for c, s in zip(canvases, seeds)]
        else:
            drivers = [segment_all(c, s) for c, s in zip(canvases, seeds)]
        runner.run([limited(d) for d in drivers])
    return steps[0], time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir (default: import Google's FIB-25 checkpoint)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16", "auto"],
        help="precisions to measure side by side; with auto, fp32 and bf16 a summary line says "
        "what auto chose and how it compares with the faster of the two",
    )
    ap.add_argument("--regions", type=int, default=1, help="regions segmented concurrently")
    ap.add_argument("--width", type=int, default=1, help="objects in flight per region")
    ap.add_argument("--region-size", type=int, default=100)
    ap.add_argument(
        "--seconds", type=float, default=30, help="per precision and kind of measurement, in all"
    )
    ap.add_argument(
        "--slices", type=int, default=8, help="the --seconds come in this many interleaved slices"
    )
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    import h5py
    import torch

    from napari_connectome.ffn.canvas import Canvas
    from napari_connectome.ffn.checkpoint import import_google_checkpoint, load_model
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.precision import REPORTED_FLAGS, cpu_flags, cpu_name, native_bf16
    from napari_connectome.ffn.runner import LockstepRunner
    from napari_connectome.ffn.seeds import peaks_seeds
    from napari_connectome.ffn.threads import allocated_cores

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model
    if model_dir is None:
        model_dir = Path(tmp.name) / "google-fib25"
        import_google_checkpoint(GOOGLE / "model.ckpt-27465036", model_dir)
    with h5py.File(H5, "r") as f:
        raw = f["raw"][:]
    s = args.region_size
    corners = [(0, 0, 0), (0, 0, 125), (0, 125, 0), (125, 0, 0), (125, 125, 125), (0, 125, 125)]
    corners = (corners * (args.regions // len(corners) + 1))[: args.regions]
    regions = [raw[z : z + s, y : y + s, x : x + s] for z, y, x in corners]
    by_corner = {
        c: peaks_seeds(raw[c[0] : c[0] + s, c[1] : c[1] + s, c[2] : c[2] + s]) for c in set(corners)
    }
    region_seeds = [by_corner[c] for c in corners]
    rng = np.random.default_rng(0)
    flags = cpu_flags()
    emit(
        figure="cpu",
        cpu=cpu_name(),
        flags=[f for f in REPORTED_FLAGS if f in flags],
        native_bf16=native_bf16(flags),
        onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA"),  # e.g. AVX2: AVX2 kernels only
        cores=allocated_cores()[0],
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )
    runs = {}

    def fresh_canvases(runner, config):
        options = options_for_model(config)
        return [
            Canvas(
                r,
                fov_size=config.architecture.fov_size,
                deltas=config.architecture.deltas,
                image_mean=config.image_mean,
                image_stddev=config.image_stddev,
                options=options,
                device=runner.device,
            )
            for r in regions
        ]

    for precision in args.precision:  # each its own model, runner and canvases
        model, config = load_model(model_dir)
        runner = LockstepRunner(
            model,
            device=args.device,
            precision=precision,
            batch=args.regions * args.width,
            compile=args.compile,
        )
        runs[precision] = {
            "runner": runner,
            "config": config,
            "canvases": fresh_canvases(runner, config),
            "fw": [0, 0.0],
            "inf": [0, 0.0],
        }
    # Many short slices, round-robin over the precisions in a rotating order: on a shared machine
    # the load changes within seconds, and only slices this close together see the same load.
    width = args.regions * args.width
    slice_s = args.seconds / args.slices
    order = list(runs)
    for k in range(args.slices):
        for precision in order[k % len(order) :] + order[: k % len(order)]:
            run = runs[precision]
            n, t = raw_forward(run["runner"], width, slice_s, rng, warm_up=k == 0)
            run["fw"] = [run["fw"][0] + n, run["fw"][1] + t]
            n, t = inference_steps(
                run["runner"], run["canvases"], region_seeds, slice_s, args.width
            )
            if n == 0:  # every seed of the regions is done: start them again
                run["canvases"] = fresh_canvases(run["runner"], run["config"])
                n, t = inference_steps(
                    run["runner"], run["canvases"], region_seeds, slice_s, args.width
                )
            run["inf"] = [run["inf"][0] + n, run["inf"][1] + t]
    rates = {}
    for precision, run in runs.items():
        runner = run["runner"]
        raw_rate, inf_rate = run["fw"][0] / run["fw"][1], run["inf"][0] / run["inf"][1]
        rates[precision] = (raw_rate, inf_rate)
        common = {
            "device": str(runner.device),
            "precision": precision,
            "ran_as": runner.precision,
            "channels_last": True,
            "compile": args.compile,
            "batch": args.regions * args.width,
            "regions": args.regions,
            "objects_in_flight_per_region": args.width,
            "threads": torch.get_num_threads(),
        }
        emit(
            figure="ffn_raw_forward",
            fovs_per_s=round(raw_rate, 2),
            fovs=int(run["fw"][0]),
            **common,
        )
        emit(
            figure="ffn_inference",
            steps_per_s=round(inf_rate, 2),
            steps=int(run["inf"][0]),
            ratio_to_raw_forward=round(inf_rate / raw_rate, 3),
            voxels_per_hour=round(inf_rate * VOXELS_PER_STEP * 3600),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **common,
        )
    if {"auto", "fp32", "bf16"} <= set(rates):
        # auto is one of the two; measured as a third run, it must be within noise of the faster
        auto = runs["auto"]["runner"]
        best_raw = max(("fp32", "bf16"), key=lambda p: rates[p][0])
        best_inf = max(("fp32", "bf16"), key=lambda p: rates[p][1])
        raw_ratio = rates["auto"][0] / rates[best_raw][0]
        inf_ratio = rates["auto"][1] / rates[best_inf][1]
        emit(
            figure="ffn_auto_precision",
            device=str(auto.device),
            cpu=cpu_name(),
            auto_chose=auto.precision,
            reason=auto.precision_reason,
            bf16_over_fp32_raw=round(rates["bf16"][0] / rates["fp32"][0], 2),
            bf16_over_fp32_inference=round(rates["bf16"][1] / rates["fp32"][1], 2),
            faster_raw=best_raw,
            faster_inference=best_inf,
            auto_over_faster_raw=round(raw_ratio, 3),
            auto_over_faster_inference=round(inf_ratio, 3),
            within_10_percent=bool(raw_ratio >= 0.9 and inf_ratio >= 0.9),
        )
    for precision, run in runs.items():
        runner = run["runner"]
        conv = getattr(type(runner.model), "conv_class", None)  # None when compiled
        if precision == "fp32" and runner.device.type == "cpu" and conv is not None:
            # one FOV per call (a click in the viewer): PyTorch's own kernel choice vs forced oneDNN
            totals = {False: [0, 0.0], True: [0, 0.0]}
            for force in (False, True, False, True):
                conv.force_onednn = force
                n, t = raw_forward(runner, 1, args.seconds / 4, rng)
                totals[force][0] += n
                totals[force][1] += t
            conv.force_onednn = True
            native, onednn = (totals[k][0] / totals[k][1] for k in (False, True))
            emit(
                figure="ffn_forward_batch1_cpu_fp32",
                fovs_per_s_pytorch_choice=round(native, 2),
                fovs_per_s_onednn=round(onednn, 2),
                ratio_onednn_over_pytorch_choice=round(onednn / native, 2),
                fov=list(runner.model.arch.fov_size),
                features=runner.model.arch.features,
                threads=torch.get_num_threads(),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
