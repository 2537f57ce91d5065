"""Times PyTorch on the shapes of crates/sconce-tensor/benches/kernels.rs, with 2 threads (the
machine's cores), and writes crates/sconce-tensor/benches/reference_torch.json, which the bench
reads to print ours/PyTorch ratios.

Run: .venv-ref/bin/python scripts/bench_tensor.py
"""
import json
import pathlib
import platform

import torch
import torch.nn.functional as F

from benchutil import median_time

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-tensor/benches/reference_torch.json"
THREADS = 2


def main():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    res = {}
    convs = [
        ("3x3_c64_h56_b8", [8, 64, 56, 56], [64, 64, 3, 3], 1, 1),
        ("1x1_c64_h56_b8", [8, 64, 56, 56], [256, 64, 1, 1], 1, 0),
        ("1x1_c256_h56_b8", [8, 256, 56, 56], [64, 256, 1, 1], 1, 0),
        ("3x3_c128_h28_b8", [8, 128, 28, 28], [128, 128, 3, 3], 1, 1),
        ("7x7_c3_h224_b8", [8, 3, 224, 224], [64, 3, 7, 7], 2, 3),
    ]
    for name, xs, ws, s, p in convs:
        x, w = torch.randn(xs), torch.randn(ws)
        with torch.no_grad():
            res[f"conv2d/{name}/fwd"] = median_time(lambda: F.conv2d(x, w, None, s, p))
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        gy = torch.randn_like(F.conv2d(x, w, None, s, p))

        def fb():
            xg.grad = wg.grad = None
            F.conv2d(xg, wg, None, s, p).backward(gy)

        res[f"conv2d/{name}/fwd_bwd"] = median_time(fb)
    stem = torch.randn(8, 64, 112, 112, requires_grad=True)
    trans = torch.randn(8, 128, 56, 56, requires_grad=True)
    up = torch.randn(8, 32, 125, 125, requires_grad=True)

    def fb_of(x, f):
        gy = torch.randn_like(f(x))

        def run():
            x.grad = None
            f(x).backward(gy)
        return run

    res["pool/max_3x3_s2_c64_h112_b8/fwd_bwd"] = median_time(fb_of(stem, lambda t: F.max_pool2d(t, 3, 2, 1)))
    res["pool/avg_2x2_c128_h56_b8/fwd_bwd"] = median_time(fb_of(trans, lambda t: F.avg_pool2d(t, 2)))
    res["resize/bilinear_c32_h125_to_250_b8/fwd_bwd"] = median_time(
        fb_of(up, lambda t: F.interpolate(t, size=(250, 250), mode="bilinear", align_corners=False)))
    res["resize/nearest_c32_h125_to_250_b8/fwd_bwd"] = median_time(
        fb_of(up, lambda t: F.interpolate(t, size=(250, 250), mode="nearest")))
    bn_x = torch.randn(8, 64, 56, 56, requires_grad=True)
    gamma, beta = torch.randn(64, requires_grad=True), torch.randn(64, requires_grad=True)
    rm, rv = torch.zeros(64), torch.ones(64)
    res["batch_norm/train_c64_h56_b8/fwd_bwd"] = median_time(
        fb_of(bn_x, lambda t: F.batch_norm(t, rm, rv, gamma, beta, True, 0.1, 1e-5)))
    meta = dict(torch=torch.__version__, threads=THREADS, machine=platform.processor() or platform.machine(),
                mkldnn=torch.backends.mkldnn.is_available())
    OUT.write_text(json.dumps(dict(meta=meta, seconds=res), indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:<48} {v * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
