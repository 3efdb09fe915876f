#!/usr/bin/env bash
# tests/gpu/run.sh: the GPU checks, on a machine with an NVIDIA GPU.
#
# Builds lomo with the CUDA backend, checks that its module opens through the
# runtime's loader with the GPU's driver (tests/test_cuda_loader.c), runs the CPU-vs-GPU parity test of every
# op and of whole training steps (tests/gpu/test_cuda.c), cuBLAS alone on the
# 7B GEMM shapes (tests/gpu/bench_gemm.cu), then the benchmark table
# (tests/gpu/bench_cuda.c) with the 7B step's op profile (where its time goes:
# GEMM rate, attention, elementwise). Results go to gpu-results/ (or $1):
# parity.txt, gemm.txt, bench.md, gpu.txt. On one H200: about a minute to
# build, one to run.
#
#   tests/gpu/run.sh [results-dir]
#   LOMO_GPU_BIN=dir tests/gpu/run.sh   # use test_cuda_loader, test_cuda, bench_gemm and bench_cuda built in dir
#   LOMO_BENCH_QUICK=1                  # smaller benchmark (batch <= 8)
#   LOMO_BENCH_LOGITS_CHUNK=32000       # the LM head's logits whole (default: 8192 rows at a time)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/gpu-results}
mkdir -p "$out"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "tests/gpu/run.sh: skipped: no NVIDIA GPU here (nvidia-smi finds none)"
    exit 77
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

bin=${LOMO_GPU_BIN:-}
if [ -z "$bin" ]; then
    command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && bash "$root/tests/install_packages.sh"
    # this GPU's architecture only: the build takes a minute instead of four
    cmake -S "$root" -B "$root/build-gpu" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
        -DLOMO_WERROR=ON >"$out/build.log" 2>&1 &&
        cmake --build "$root/build-gpu" -j"$(nproc)" --target test_cuda_loader test_cuda bench_cuda bench_gemm \
            >>"$out/build.log" 2>&1 ||
        { tail -30 "$out/build.log"; echo "tests/gpu/run.sh: build failed (log: $out/build.log)"; exit 1; }
    bin=$root/build-gpu/tests
fi

echo "== the CUDA module, opened by the runtime's loader: the default context is on the GPU"
timeout 60 "$bin/test_cuda_loader" 2>&1 | tee "$out/loader.txt"
loader=${PIPESTATUS[0]}

echo "== parity: CUDA backend against the CPU backend"
timeout 240 "$bin/test_cuda" 2>&1 | tee "$out/parity.txt"
parity=${PIPESTATUS[0]}

echo "== cuBLAS alone on the 7B shapes"
timeout 120 "$bin/bench_gemm" 2>&1 | tee "$out/gemm.txt"

echo "== benchmark"
quick=()
[ -n "${LOMO_BENCH_QUICK:-}" ] && quick=(--quick)
timeout 300 "$bin/bench_cuda" "${quick[@]}" --out "$out/bench.md" 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}

echo "== results in $out: loader exit $loader, parity exit $parity, benchmark exit $bench"
[ "$loader" = 0 ] && [ "$parity" = 0 ] && [ "$bench" = 0 ]
