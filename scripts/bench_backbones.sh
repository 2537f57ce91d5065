#!/usr/bin/env bash
# Runs the model benchmark on both sides, same cases, same machine, one after the other:
# target/release/examples/benchmark (Rust) and scripts/bench_backbones.py (PyTorch, 2 threads).
# Usage: bash scripts/bench_backbones.sh > bench.jsonl   (after cargo build --release --example benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
B="${CARGO_TARGET_DIR:-$HOME/.cache/sconce-target}/release/examples/benchmark"
export MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=536870912
while read -r model bench batch img steps warmup; do
    "$B" --model "$model" --bench "$bench" --batch-size "$batch" --img-size "$img" --steps "$steps" --warmup "$warmup" --json
    .venv-ref/bin/python scripts/bench_backbones.py --one "$model" "$bench" "$batch" "$img" "$steps" "$warmup"
done <<'CASES'
resnet50 inference 8 224 10 3
resnet50 train 8 224 5 2
densenet121 inference 8 224 10 3
densenet121 train 8 224 5 2
unet-resnet50 train 2 250 5 2
unet-densenet121 train 2 250 5 2
unet train 2 250 5 2
CASES
