"""Times PyTorch on the shapes of crates/sconce-tensor/benches/kernels.rs, with 2 threads (the
machine's cores), and writes crates/sconce-tensor/benches/reference_torch.json, which the bench
reads to print ours/PyTorch ratios.

Run: .venv-ref/bin/python scripts/bench_tensor.py   (re-executes itself with the same glibc
MALLOC_* settings as the Rust bench; `--only ID` times one benchmark, used by
scripts/bench_tensor_paired.py)
"""
import argparse
import json
import pathlib
import platform
import sys

from benchutil import same_allocator

same_allocator()  # before torch is imported: glibc reads the settings at start-up

import torch
import torch.nn.functional as F

from benchutil import median_time

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-tensor/benches/reference_torch.json"
THREADS = 2


CONVS = [
    ("3x3_c64_h56_b8", [8, 64, 56, 56], [64, 64, 3, 3], 1, 1),
    ("1x1_c64_h56_b8", [8, 64, 56, 56], [256, 64, 1, 1], 1, 0),
    ("1x1_c256_h56_b8", [8, 256, 56, 56], [64, 256, 1, 1], 1, 0),
    ("3x3_c128_h28_b8", [8, 128, 28, 28], [128, 128, 3, 3], 1, 1),
    ("3x3_c256_h14_b8", [8, 256, 14, 14], [256, 256, 3, 3], 1, 1),
    ("1x1_c1024_h14_b8", [8, 1024, 14, 14], [256, 1024, 1, 1], 1, 0),
    ("3x3_c512_h7_b8", [8, 512, 7, 7], [512, 512, 3, 3], 1, 1),
    ("1x1_c2048_h7_b8", [8, 2048, 7, 7], [512, 2048, 1, 1], 1, 0),
    ("7x7_c3_h224_b8", [8, 3, 224, 224], [64, 3, 7, 7], 2, 3),
    ("3x3_c16_h250_b4", [4, 16, 250, 250], [16, 16, 3, 3], 1, 1),
    ("3x3_c32_h125_b4", [4, 32, 125, 125], [32, 32, 3, 3], 1, 1),
]


def cases():
    """(benchmark id, function to time) for every bench of kernels.rs with a PyTorch side."""
    out = []
    for name, xs, ws, s, p in CONVS:
        x, w = torch.randn(xs), torch.randn(ws)

        def fwd(x=x, w=w, s=s, p=p):
            with torch.no_grad():
                F.conv2d(x, w, None, s, p)

        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def fb(xg=xg, wg=wg, s=s, p=p):
            xg.grad = wg.grad = None
            y = F.conv2d(xg, wg, None, s, p)
            y.backward(torch.ones_like(y))

        out += [(f"conv2d/{name}/fwd", fwd), (f"conv2d/{name}/fwd_bwd", fb)]
    stem = torch.randn(8, 64, 112, 112, requires_grad=True)
    trans = torch.randn(8, 128, 56, 56, requires_grad=True)
    up = torch.randn(8, 32, 125, 125, requires_grad=True)

    # Upstream gradient: ones made in the timed call, as candle's `y.backward()` does on the
    # Rust side (one fill, handed to the op as is).
    def fb_of(x, f):
        def run():
            x.grad = None
            y = f(x)
            y.backward(torch.ones_like(y))
        return run

    bn_x = torch.randn(8, 64, 56, 56, requires_grad=True)
    gamma, beta = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    rm, rv = torch.zeros(64), torch.ones(64)
    out += [
        ("pool/max_3x3_s2_c64_h112_b8/fwd_bwd", fb_of(stem, lambda t: F.max_pool2d(t, 3, 2, 1))),
        ("pool/avg_2x2_c128_h56_b8/fwd_bwd", fb_of(trans, lambda t: F.avg_pool2d(t, 2))),
        ("resize/bilinear_c32_h125_to_250_b8/fwd_bwd",
         fb_of(up, lambda t: F.interpolate(t, size=(250, 250), mode="bilinear", align_corners=False))),
        ("resize/nearest_c32_h125_to_250_b8/fwd_bwd",
         fb_of(up, lambda t: F.interpolate(t, size=(250, 250), mode="nearest"))),
        ("batch_norm/train_c64_h56_b8/fwd_bwd",
         fb_of(bn_x, lambda t: F.batch_norm(t, rm, rv, gamma, beta, True, 0.1, 1e-5))),
    ]
    return out


def main():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="time only the benchmark with this id; print its seconds as JSON")
    args = ap.parse_args()
    if args.only:
        fn = dict(cases()).get(args.only)
        if fn is None:
            sys.exit(f"no benchmark {args.only!r}")
        print(json.dumps({args.only: median_time(fn)}))
        return
    res = {name: median_time(fn) for name, fn in cases()}
    meta = dict(torch=torch.__version__, threads=THREADS, machine=platform.processor() or platform.machine(),
                mkldnn=torch.backends.mkldnn.is_available())
    OUT.write_text(json.dumps(dict(meta=meta, seconds=res), indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:<48} {v * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
