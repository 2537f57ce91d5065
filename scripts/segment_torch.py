"""PyTorch counterpart of `cargo run --release --example segment` for the speed comparison in
docs/benchmarks.md: the same classic U-Net (width 16, BatchNorm, transposed-conv upsampling),
batch 4 of 3x250x250, BCE from logits, Adam, 2 threads; the same number of training samples
per epoch (128) and validation images (32). Data content does not change the speed, so the
images are random with a fixed seed.

Run: .venv-ref/bin/python scripts/segment_torch.py [--epochs 3] [--width 16]
Prints one JSON object per epoch (epoch, train_loss, seconds, samples_per_sec) and a summary.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from fixtures_backbones import ClassicUNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--val-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=250)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = ClassicUNet(3, 1, a.width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = a.epochs * (a.train_size // a.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
    s = a.img_size
    xs = torch.rand(a.train_size, 3, s, s)
    ys = (torch.rand(a.train_size, 1, s, s) > 0.7).float()
    xv = torch.rand(a.val_size, 3, s, s)
    t_all = time.perf_counter()
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        perm = torch.randperm(a.train_size)
        for i in range(0, a.train_size, a.batch_size):
            idx = perm[i:i + a.batch_size]
            loss = F.binary_cross_entropy_with_logits(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        train_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            for i in range(0, a.val_size, a.batch_size):
                model(xv[i:i + a.batch_size])
        print(json.dumps(dict(epoch=epoch + 1, train_loss=total / a.train_size, seconds=time.perf_counter() - t0,
                              samples_per_sec=a.train_size / train_s)), flush=True)
    print(json.dumps(dict(summary=True, wall_seconds=time.perf_counter() - t_all, impl="pytorch " + torch.__version__,
                          params=sum(p.numel() for p in model.parameters()))))


if __name__ == "__main__":
    main()
