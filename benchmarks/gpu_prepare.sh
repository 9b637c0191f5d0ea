#!/usr/bin/env bash
# Make what benchmarks/gpu.sh needs on the bare GPU machine, into .gpu/ (ignored by git; the device
# tool's `carry` takes it along):
#   .gpu/wheels-cpXY/  the wheels of benchmarks/gpu_wheels.txt for that Python (no registry there)
#   .gpu/data/         FIB-25 training_sample2 and Google's model, copied from ../shared/data
#                      (../shared does not travel)
# Usage: benchmarks/gpu_prepare.sh [PYTHON_VERSION]     (default 3.12, the GPU machine's python3)
#        benchmarks/gpu_prepare.sh 3.11                 (for a --dry-run with this machine's 3.11)
# Then, with the device tool: run(command="benchmarks/gpu.sh", carry=[".gpu/wheels-cp312", ".gpu/data"]).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
tag="cp${version/./}"
wheels=".gpu/wheels-$tag"
mkdir -p "$wheels" .gpu/data
grep -v '^#' benchmarks/gpu_wheels.txt | grep . | while read -r req; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$wheels" "$req"
done
src="${NAPARI_CONNECTOME_SHARED_DATA:-../shared/data}"
mkdir -p .gpu/data/fib25-training-sample2 .gpu/data/google-ffn-fib25
cp -u "$src/fib25-training-sample2"/* .gpu/data/fib25-training-sample2/
cp -u "$src/google-ffn-fib25"/* .gpu/data/google-ffn-fib25/
echo "$wheels: $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1); .gpu/data: $(du -sh .gpu/data | cut -f1)"
