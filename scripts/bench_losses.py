"""Times PyTorch's BCE-with-logits and sparse cross-entropy (forward + backward) on the shapes of
crates/sconce-losses/benches/losses.rs with 2 threads; writes
crates/sconce-losses/benches/reference_torch.json for the bench's ratio table.

Run: .venv-ref/bin/python scripts/bench_losses.py   (re-executes itself with the
same glibc MALLOC_* settings as the Rust bench)
"""
import json
import pathlib

from benchutil import same_allocator

same_allocator()  # before torch is imported: glibc reads the settings at start-up

import torch
import torch.nn.functional as F

from benchutil import median_time

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-losses/benches/reference_torch.json"


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = (torch.randn(8, 1, 250, 250) * 3).requires_grad_()
    mask = (torch.rand(8, 1, 250, 250) > 0.5).float()

    def bce():
        x.grad = None
        F.binary_cross_entropy_with_logits(x, mask).backward()

    xc = (torch.randn(8, 21, 250, 250) * 3).requires_grad_()
    labels = torch.randint(0, 21, (8, 250, 250))

    def ce():
        xc.grad = None
        F.cross_entropy(xc, labels).backward()

    res = {"bce_logits/b8_c1_h250/fwd_bwd": median_time(bce), "sparse_ce/b8_c21_h250/fwd_bwd": median_time(ce)}
    OUT.write_text(json.dumps(dict(meta=dict(torch=torch.__version__, threads=2), seconds=res), indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:<40} {v * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
