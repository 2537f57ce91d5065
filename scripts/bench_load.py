"""Weight loading speed: timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=F))
against sconce's `benchmark --bench load` (build the model, strict mmap load of the same
safetensors file), both from the page cache, median of N runs, on the same machine.

Run (after `cargo build --release --example benchmark`):
  .venv-ref/bin/python scripts/bench_load.py [--arch resnet50] [--runs 7]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import timm
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/examples/benchmark"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_file({k: v.contiguous() for k, v in timm.create_model(args.arch).state_dict().items()}, path)
        make = lambda: timm.create_model(args.arch, pretrained=True, pretrained_cfg_overlay=dict(file=path))  # noqa: E731
        make()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            make()
            times.append(time.perf_counter() - t)
        timm_ms = sorted(times)[len(times) // 2] * 1e3
        out = subprocess.run([args.bin, "--model", args.arch, "--bench", "load", "--weights", path, "--steps", str(args.runs), "--json"],
                             capture_output=True, text=True, check=True).stdout
        ours_ms = json.loads(out.strip().splitlines()[-1])["load_ms"]
    print(f"{args.arch}: timm create_model(pretrained=True, file) {timm_ms:.1f} ms, sconce build + load {ours_ms:.1f} ms, "
          f"ratio sconce/timm {ours_ms / timm_ms:.3f}")


if __name__ == "__main__":
    main()
