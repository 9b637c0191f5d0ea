#!/usr/bin/env bash
# Every GPU figure of FFN inference in one go, as JSON lines on stdout (run when a GPU is lent).
#   benchmarks/gpu.sh            # about 8 minutes on one H200; QUICK=1 skips the two 250^3 runs
# 1. raw forward vs full inference (one region, batch 1) in fp32 / bf16 / fp16
# 2. batched: 64 regions (what block-wise jobs do); 1 region with 64 objects in flight; 256 canvases
#    (16 regions x 16 objects) with torch.compile -- all bf16
# 3. the whole FIB-25 250^3 volume in fp32 and bf16 (32 objects in flight): ARAND vs Google / GT,
#    and bf16 vs fp32 ARAND
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d)}
"$PY" - <<'PYEOF'
import json, torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA GPU"
print(json.dumps({"figure": "gpu", "name": torch.cuda.get_device_name(0), "torch": torch.__version__}))
PYEOF
timeout 240 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision fp32 bf16 fp16 auto --seconds 8
timeout 240 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --regions 64 --seconds 10
timeout 240 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --width 64 --seconds 10
timeout 300 "$PY" benchmarks/bench_ffn_speed.py --device cuda --precision bf16 --regions 16 --width 16 --seconds 10 --compile
# training: Google's architecture, sampler alone vs optimiser steps (fp32)
timeout 180 "$PY" benchmarks/bench_train.py --device cuda --fov 33 --deltas 8 --depth 12 --features 32 --batch 16 --steps 30 --threads 4
if [ "${QUICK:-0}" != "1" ]; then
  timeout 420 "$PY" benchmarks/ffn_full_volume.py --device cuda --precision fp32 --width 32 --log-every 60 --out "$OUT/fp32"
  timeout 420 "$PY" benchmarks/ffn_full_volume.py --device cuda --precision bf16 --width 32 --log-every 60 --out "$OUT/bf16"
  "$PY" - "$OUT" <<'PYEOF'
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
