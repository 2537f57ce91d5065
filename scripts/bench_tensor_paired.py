"""Paired kernel benchmarks: each benchmark of crates/sconce-tensor/benches/kernels.rs timed
back to back with its PyTorch twin (scripts/bench_tensor.py --only ID), several rounds,
alternating which side goes first, so that both sides of a ratio see the VM in the same
minute. Prints a markdown table with each round's ratio (sconce / PyTorch) and the median.

Each side starts after a pause (`--settle`, 2 s): a run that starts right as the other side's
process exits measured up to ~10 % slower on this VM (1x1_c2048_h7_b8/fwd: 2.34 ms after a
PyTorch run, 2.05-2.15 otherwise).

Run (after `cargo bench -p sconce-tensor --bench kernels --no-run`):
    .venv-ref/bin/python scripts/bench_tensor_paired.py [--rounds 3] [--only REGEX] [--settle 2]
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from benchutil import ALLOCATOR_ENV  # noqa: E402


def bench_exe():
    """The kernels bench binary that cargo built (without running it)."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "sconce-tensor", "--bench", "kernels", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "kernels":
            return msg["executable"]
    sys.exit("could not find the kernels bench binary")


def target_dir():
    return (ROOT / os.environ.get("CARGO_TARGET_DIR", "target")).resolve()


def ours(exe, bid, env):
    group, fn = bid.rsplit("/", 1)
    est = target_dir() / "criterion" / group.replace("/", "_") / fn / "new/estimates.json"
    # A stale estimate must not pass for this run's (an id the bench no longer has).
    est.unlink(missing_ok=True)
    subprocess.run([exe, "--bench", f"^{re.escape(bid)}$"], cwd=ROOT / "crates/sconce-tensor", env=env,
                   check=True, capture_output=True)
    if not est.exists():
        sys.exit(f"the bench ran no benchmark {bid!r}")
    return json.loads(est.read_text())["median"]["point_estimate"] / 1e9


def torch_side(bid, env):
    out = subprocess.run([sys.executable, str(ROOT / "scripts/bench_tensor.py"), "--only", bid], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])[bid]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="regex on benchmark ids")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of pause before each side's run")
    args = ap.parse_args()
    ref = json.loads((ROOT / "crates/sconce-tensor/benches/reference_torch.json").read_text())
    ids = [b for b in ref["seconds"] if re.search(args.only, b)]
    exe = bench_exe()
    defaults = {} if "SCONCE_MALLOC_DEFAULTS" in os.environ else ALLOCATOR_ENV
    env = {**os.environ, **defaults, "CARGO_TARGET_DIR": str(target_dir())}
    rows = []
    for bid in ids:
        ratios, o_s, t_s = [], [], []
        for r in range(args.rounds):
            def o_run():
                time.sleep(args.settle)
                return ours(exe, bid, env)

            def t_run():
                time.sleep(args.settle)
                return torch_side(bid, env)

            if r % 2 == 0:
                o, t = o_run(), t_run()
            else:
                t, o = t_run(), o_run()
            o_s.append(o)
            t_s.append(t)
            ratios.append(o / t)
        rows.append((bid, statistics.median(o_s), statistics.median(t_s), ratios))
        print(f"{bid}: {' '.join(f'{x:.2f}' for x in ratios)}", file=sys.stderr)
    print("| benchmark | sconce ms | PyTorch ms | ratio per round | median ratio |")
    print("|---|---:|---:|---|---:|")
    for bid, o, t, ratios in rows:
        print(f"| {bid} | {o * 1e3:.2f} | {t * 1e3:.2f} | {' / '.join(f'{x:.2f}' for x in ratios)} | "
              f"{statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
