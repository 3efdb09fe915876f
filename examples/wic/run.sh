#!/usr/bin/env bash
# The main job, from a fresh Debian machine: installs what is missing, builds lomo, fetches
# SmolLM2-135M-Instruct, builds the WordNet word-in-context dataset and fine-tunes the model
# with LOMO, printing zero-shot and fine-tuned accuracy on held-out pairs and the time taken.
#   examples/wic/run.sh [key=value ...]      e.g. examples/wic/run.sh train.limit=200 eval.limit=100
# CI's short form (about 3 minutes of training and scoring with 2 threads; fails unless the
# train loss falls and held-out accuracy beats chance significantly):
#   examples/wic/run.sh train.limit=400 eval.limit=200 eval.zero_shot=false check=true
# Extra arguments are overrides of examples/wic/recipe.yaml. BUILD_DIR picks the build folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)

echo "== installing what is missing"
tests/install_packages.sh cmake make gcc libc6-dev pkg-config libopenblas-openmp-dev libjansson-dev \
  libpcre2-dev liblua5.4-dev lua5.4 libyaml-dev libreadline-dev wordnet-base python3-pip unzip

build="${BUILD_DIR:-build}"
echo "== building lomo in $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target lomo_cli >/dev/null

echo "== fetching the model"
examples/get_smollm2.sh

echo "== building the dataset from WordNet"
lua5.4 examples/wic/build_dataset.lua --out examples/wic/data

# idle OpenMP threads sleep instead of spinning: little cost on an idle machine, and
# several times faster when anything else wants the CPU
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
echo "== zero-shot, LOMO fine-tuning, fine-tuned (examples/wic/recipe.yaml $*)"
"$build"/bindings/lomo run examples/wic/recipe.yaml "$@"

echo "== done in $(( $(date +%s) - start )) s, setup included"
