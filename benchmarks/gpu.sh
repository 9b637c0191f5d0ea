#!/usr/bin/env bash
# Every GPU figure of FFN inference in one go, as JSON lines, for the 15 minutes a GPU is lent.
#   benchmarks/gpu_prepare.sh                  # here, once: wheels + data into .gpu/ (ignored by git)
#   run(command="benchmarks/gpu.sh", carry=[".gpu/wheels-cp312", ".gpu/data"], timeout_s=540)
#   benchmarks/gpu.sh --dry-run                # the same steps on the CPU at tiny sizes (no GPU needed)
# About 8 minutes on one H200; QUICK=1 skips the two 250^3 runs and the blockwise job.
# 1. raw forward vs full inference (one region, batch 1) in fp32 / bf16 / fp16 / auto
# 2. batched: 64 regions (what block-wise jobs do); 1 region with 64 objects in flight; 256 canvases
#    (16 regions x 16 objects) with and without torch.compile -- all bf16
# 3. a training-step rate (Google's architecture)
# 4. the whole FIB-25 250^3 volume in fp32 and bf16 (32 objects in flight): ARAND vs Google / GT,
#    and bf16 vs fp32 ARAND
# 5. a blockwise job on one GPU (LocalCluster, one worker) on the same volume, against the bf16 canvas
# Runs on the bare GPU machine: its python3 (torch with CUDA, numpy, scipy, h5py, ...) plus the wheels
# carried in .gpu/wheels-cpXY, installed with --target; the data from .gpu/data. A step that fails
# prints a {"figure": "gpu_step_failed"} line and the next one runs. Everything printed also lands in
# $OUT/gpu.log and the JSON lines in $OUT/gpu.jsonl (the device tool brings $OUT back).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu.log") 2>&1

tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [ -d ".gpu/wheels-$tag" ]; then
    site=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" ".gpu/wheels-$tag"/*.whl || exit 1
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .gpu/data ]; then
    export NAPARI_CONNECTOME_SHARED_DATA="${NAPARI_CONNECTOME_SHARED_DATA:-$PWD/.gpu/data}"
fi

DEV=cuda
if [ "$DRY" = 1 ]; then DEV=cpu; fi
"$PY" - "$DEV" <<'PYEOF' | tee -a "$OUT/gpu.jsonl" || exit 1
import importlib, json, pkgutil, sys
import torch
import napari_connectome

if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA GPU (or --dry-run)"
    name = torch.cuda.get_device_name(0)
else:
    name = "cpu (dry run)"
# Every core module must import with what this machine has: fail here, not in step 5.
for m in pkgutil.walk_packages(napari_connectome.__path__, "napari_connectome."):
    if not (".gui" in m.name or ".testing" in m.name or m.name.endswith("__main__")):
        importlib.import_module(m.name)
for mod in ("dask.array", "distributed", "zarr", "numcodecs", "fastremap", "cc3d", "pydantic", "h5py"):
    importlib.import_module(mod)  # what the core imports lazily, inside functions
print(json.dumps({"figure": "gpu", "name": name, "torch": torch.__version__,
                  "python": sys.version.split()[0]}))
PYEOF

# step NAME TIMEOUT CMD...: JSON lines go to gpu.jsonl too; a failure is recorded and the run goes on.
# All steps share BUDGET seconds (default 540: the device tool allows 600 a call), so a slow step
# shortens the later ones instead of losing the whole call's output.
BUDGET=${BUDGET:-$([ "$DRY" = 1 ] && echo 1800 || echo 540)}
T0=$SECONDS
left() { echo $((BUDGET - (SECONDS - T0))); }
step() {
    local name=$1 limit=$2
    shift 2
    local rest
    rest=$(left)
    if [ "$rest" -lt 20 ]; then
        echo "{\"figure\": \"gpu_step_skipped\", \"step\": \"$name\", \"seconds_left\": $rest}" | tee -a "$OUT/gpu.jsonl"
        return
    fi
    [ "$limit" -gt "$rest" ] && limit=$rest
    echo "== $name (at most ${limit} s): $*" >&2
    timeout "$limit" "$@" | tee -a "$OUT/gpu.jsonl"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "{\"figure\": \"gpu_step_failed\", \"step\": \"$name\", \"rc\": $rc}" | tee -a "$OUT/gpu.jsonl"
    fi
}

if [ "$DRY" = 1 ]; then
    # the same code paths, sized to finish in a few minutes on a CPU
    S=(--seconds 1 --slices 1 --region-size 40)
    step forward 300 "$PY" benchmarks/bench_ffn_speed.py --device cpu --precision fp32 bf16 auto "${S[@]}"
    step regions 300 "$PY" benchmarks/bench_ffn_speed.py --device cpu --precision fp32 --regions 2 "${S[@]}"
    step width 300 "$PY" benchmarks/bench_ffn_speed.py --device cpu --precision fp32 --width 2 "${S[@]}"
    step train 300 "$PY" benchmarks/bench_train.py --device cpu --fov 33 --deltas 8 --depth 12 \
        --features 32 --batch 2 --steps 2 --threads 2
    step full_fp32 300 "$PY" benchmarks/ffn_full_volume.py --device cpu --precision fp32 --width 2 \
        --max-seconds 20 --log-every 10 --out "$OUT/fp32"
    # the shipped small model (FOV 17^3) keeps the CPU's job short; on the GPU it is Google's
    step job 600 "$PY" benchmarks/bench_jobs_ffn_arand.py --device cpu --precision fp32 --workers 1 \
        --crop 48 --block 24 --overlap 8 --model napari_connectome/resources/models/fib25-small
    echo "{\"figure\": \"gpu_sh_seconds\", \"seconds\": $((SECONDS - T0)), \"dry_run\": true}" | tee -a "$OUT/gpu.jsonl"
    exit 0
fi

# Most wanted first: a step that runs out of budget is skipped, not the call.
step forward 150 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision fp32 bf16 fp16 auto --seconds 8
step regions 90 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --regions 64 --seconds 10
if [ "${QUICK:-0}" != "1" ]; then
    # whole-volume runs stop early (and score the partial result) rather than eat the later steps
    step full_bf16 200 "$PY" benchmarks/ffn_full_volume.py --device cuda --precision bf16 --width 32 \
        --log-every 30 --max-seconds $(($(left) / 3)) --out "$OUT/bf16"
    step full_fp32 200 "$PY" benchmarks/ffn_full_volume.py --device cuda --precision fp32 --width 32 \
        --log-every 30 --max-seconds $(($(left) / 3)) --out "$OUT/fp32"
    if [ -f "$OUT/fp32/labels.npy" ] && [ -f "$OUT/bf16/labels.npy" ]; then
        "$PY" - "$OUT" <<'PYEOF' | tee -a "$OUT/gpu.jsonl"
import json, sys
from pathlib import Path
import numpy as np
from napari_connectome.evaluate import evaluate_segmentation
out = Path(sys.argv[1])
fp32, bf16 = np.load(out / "fp32" / "labels.npy"), np.load(out / "bf16" / "labels.npy")
s = evaluate_segmentation(bf16, fp32)
print(json.dumps({"figure": "ffn_bf16_vs_fp32_250cube", "arand": round(s["arand"], 4), "vi": round(s["vi"], 4)}))
PYEOF
    fi
    canvas=()
    [ -f "$OUT/bf16/labels.npy" ] && canvas=(--canvas "$OUT/bf16/labels.npy")
    step job 150 "$PY" benchmarks/bench_jobs_ffn_arand.py --device cuda --precision bf16 --workers 1 \
        --crop 250 --block 128 --overlap 32 "${canvas[@]}"
    # the label volumes are ~60-125 MB each: too big to come back, and not needed once scored
    rm -f "$OUT"/fp32/labels.npy "$OUT"/bf16/labels.npy
fi
step width 60 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --width 64 --seconds 10
step batched 60 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --regions 16 --width 16 --seconds 10
# training: Google's architecture, sampler alone vs optimiser steps (fp32)
step train 60 "$PY" benchmarks/bench_train.py --device cuda --fov 33 --deltas 8 --depth 12 --features 32 \
    --batch 16 --steps 30 --threads 4
step compiled 120 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --regions 16 --width 16 \
    --seconds 10 --compile
echo "{\"figure\": \"gpu_sh_seconds\", \"seconds\": $((SECONDS - T0))}" | tee -a "$OUT/gpu.jsonl"
