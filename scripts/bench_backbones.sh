#!/usr/bin/env bash
# Runs the model benchmark on both sides, same cases, same machine, one after the other:
# target/release/examples/benchmark (Rust) and scripts/bench_backbones.py (PyTorch, 2 threads).
# Usage: bash scripts/bench_backbones.sh > bench.jsonl   (after cargo build --release --example benchmark)
#        REPEAT=3 bash scripts/bench_backbones.sh > bench.jsonl; .venv-ref/bin/python scripts/bench_summary.py bench.jsonl
# With REPEAT=N each case runs N times per side, alternating which side goes first (this VM
# favours whichever runs first in a pair); bench_summary.py prints medians and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${CARGO_TARGET_DIR:-$HOME/.cache/sconce-target}/release/examples/benchmark"
REPEAT="${REPEAT:-1}"
export MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=536870912 MALLOC_ARENA_MAX=1
while read -r model bench batch img steps warmup; do
    for ((r = 0; r < REPEAT; r++)); do
        rust() { "$B" --model "$model" --bench "$bench" --batch-size "$batch" --img-size "$img" --steps "$steps" --warmup "$warmup" --json; }
        torch() { .venv-ref/bin/python scripts/bench_backbones.py --one "$model" "$bench" "$batch" "$img" "$steps" "$warmup"; }
        if ((r % 2 == 0)); then rust; torch; else torch; rust; fi
    done
done <<'CASES'
resnet50 inference 8 224 10 3
resnet50 train 8 224 5 2
densenet121 inference 8 224 10 3
densenet121 train 8 224 5 2
unet-resnet50 train 2 250 5 2
unet-densenet121 train 2 250 5 2
unet train 2 250 5 2
CASES
