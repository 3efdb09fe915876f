#!/usr/bin/env bash
# Side-by-side speed and memory of lomo and PyTorch 1.13 (tests/bench/torch_bench.py)
# at the 134M shape, f32, no checkpointing, alternating runs because the
# machine is noisy; prints every run and the medians. Rows: inference, a plain
# SGD training step (full gradients), LOMO, LOMO with norm clipping.
#   tests/bench/side_by_side.sh [build-dir] [rounds] [threads]
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"; rounds="${2:-3}"; threads="${3:-2}"
py=/usr/bin/python3
$py -c "import torch" 2>/dev/null || { echo "needs Debian's python3-torch: apt-get install python3-torch"; exit 1; }
shape=(--hidden 768 --layers 12 --heads 12 --ffn 2048 --vocab 32000 --seq 256 --batch 2)
out=$(mktemp)
for r in $(seq "$rounds"); do
  for mode in inference sgd lomo lomo-clip; do
    j=$($py tests/bench/torch_bench.py "${shape[@]}" --threads "$threads" --steps 3 --mode "$mode")
    tps=$(echo "$j" | $py -c 'import json,sys; d=json.load(sys.stdin); print(d["tokens_per_s"], d["peak_rss_mib"])')
    echo "torch $mode $tps" | tee -a "$out"
  done
  for mode in forward sgd lomo lomo-clip; do
    line=$("$build"/tests/bench_model "${shape[@]}" --threads "$threads" --steps 3 --ckpt 0 --modes "$mode" | grep "^$mode ")
    echo "lomo  $mode $(echo "$line" | awk '{print $12, $10}')" | tee -a "$out"
  done
done
echo "== medians (tokens/s, peak RSS MiB) over $rounds rounds, $threads threads"
$py - "$out" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    impl, mode, tps, rss = line.split()
    runs[(impl, {"forward": "inference"}.get(mode, mode))].append((float(tps), float(rss)))
for (impl, mode), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{impl:5s} {mode:10s} tokens/s {statistics.median(t for t, _ in v):8.1f}   peak RSS {statistics.median(r for _, r in v):7.1f} MiB")
for mode in ("inference", "sgd", "lomo", "lomo-clip"):
    a, b = runs.get(("lomo", mode)), runs.get(("torch", mode))
    if a and b:
        print(f"ratio {mode:10s} speed lomo/torch {statistics.median(t for t, _ in a) / statistics.median(t for t, _ in b):.2f}x"
              f"   RSS lomo/torch {statistics.median(r for _, r in a) / statistics.median(r for _, r in b):.2f}x")
PY
rm -f "$out"
