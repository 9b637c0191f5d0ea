#!/usr/bin/env bash
# The whole FIB-25 training_sample2 (250^3) the way a user runs it, with Google's imported model:
# `segment` (one pass, Google's settings from the checkpoint), then `agglomerate` with the claim
# alone and with the model's resegmentation (`--model`, band 0.1), each scored against the
# ground truth. One JSON line per figure on stdout; everything is written under WORK.
#
#   nice benchmarks/whole_volume_agglomerate.sh WORK [--threads N] [--precision auto|fp32|bf16]
#
# WORK must not exist yet. Google's checkpoint is imported into WORK/model. The FFN pass is
# the long part: ~26,000 steps (74 min in bf16 on a 2-core AMD EPYC with AVX512_BF16, shared).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: whole_volume_agglomerate.sh WORK [--threads N] [--precision P]}
shift
THREADS=2
PRECISION=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS=$2; shift 2 ;;
        --precision) PRECISION=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -e "$WORK" ] && { echo "$WORK exists: give a new folder" >&2; exit 2; }
mkdir -p "$WORK"
NC=${NC:-.venv/bin/napari-connectome}
DATA=${DATA:-../shared/data}
H5=$DATA/fib25-training-sample2/fib25_training_sample2.h5
CKPT=$DATA/google-ffn-fib25/model.ckpt-27465036

line() {  # figure name, seconds, the command's own JSON line
    python3 -c 'import json, sys; print(json.dumps({"figure": sys.argv[1], "seconds": float(sys.argv[2]), **json.loads(sys.argv[3])}))' "$@"
}
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
flags=$(grep -m1 "^flags" /proc/cpuinfo | grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16' | sort -u | tr '\n' ' ')
line machine 0 "{\"cpu\": \"$cpu\", \"cpu_flags\": \"$flags\", \"threads\": $THREADS}"

"$NC" import-checkpoint "$CKPT" "$WORK/model" >&2
t0=$(date +%s)
"$NC" segment "$H5:raw" "$WORK/seg.ome.zarr" --model "$WORK/model" --threads "$THREADS" \
    --precision "$PRECISION" --quiet >&2
t1=$(date +%s)
line segment $((t1 - t0)) "$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["counters"]; print(json.dumps({"steps": c["steps"], "precision": c["precision"], "segments": c["segments"]}))' "$WORK/seg.ome.zarr/ffn_counters.json")"
line "segment vs gt" 0 "$("$NC" evaluate "$WORK/seg.ome.zarr" "$H5:labels" --quiet)"

t0=$(date +%s)
"$NC" agglomerate "$WORK/seg.ome.zarr" "$H5:raw" "$WORK/agg.ome.zarr" --quiet >"$WORK/agg.json"
t1=$(date +%s)
line "agglomerate (claim)" $((t1 - t0)) "$(cat "$WORK/agg.json")"
line "supervoxels vs gt" 0 "$("$NC" evaluate "$WORK/agg.ome.zarr/supervoxels" "$H5:labels" --quiet)"
line "agglomerate (claim) vs gt" 0 "$("$NC" evaluate "$WORK/agg.ome.zarr" "$H5:labels" --quiet)"

t0=$(date +%s)
"$NC" agglomerate "$WORK/seg.ome.zarr" "$H5:raw" "$WORK/agg-reseg.ome.zarr" --model "$WORK/model" \
    --threads "$THREADS" --quiet >"$WORK/agg-reseg.json"
t1=$(date +%s)
line "agglomerate (claim + resegmentation)" $((t1 - t0)) "$(cat "$WORK/agg-reseg.json")"
line "agglomerate (claim + resegmentation) vs gt" 0 \
    "$("$NC" evaluate "$WORK/agg-reseg.ome.zarr" "$H5:labels" --quiet)"
