"""PyTorch side of the model benchmark: the same measurement as `cargo run --release --example
benchmark` (median step time after warm-up, inference or a training step of forward + loss +
backward + SGD update) for timm / smp / the classic U-Net, with 2 threads, one process per case
so that the peak RSS is the case's own.

Run:  .venv-ref/bin/python scripts/bench_backbones.py [--cases all|quick] > bench.jsonl
One case: .venv-ref/bin/python scripts/bench_backbones.py --one resnet50 inference 8 224 10 3
"""
import json
import resource
import subprocess
import sys
import time

# (model, bench, batch, img, timed steps, warm-up steps): the same as docs/benchmarks.md's Rust runs.
CASES = [
    ("resnet50", "inference", 8, 224, 10, 3), ("resnet50", "train", 8, 224, 5, 2),
    ("densenet121", "inference", 8, 224, 10, 3), ("densenet121", "train", 8, 224, 5, 2),
    ("unet-resnet50", "train", 2, 250, 5, 2), ("unet-densenet121", "train", 2, 250, 5, 2),
    ("unet", "train", 2, 250, 5, 2),
]


def build(name):
    import segmentation_models_pytorch as smp
    import timm
    if name == "unet":
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from fixtures_backbones import ClassicUNet
        return ClassicUNet(3, 1, 64), True
    if name.startswith("unet-"):
        return smp.Unet(name[5:], encoder_weights=None, classes=1), True
    return timm.create_model(name), False


def one(name, bench, batch, img, steps=10, warmup=3):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, seg = build(name)
    x = torch.randn(batch, 3, img, img)
    train = bench == "train"
    model.train(train)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if seg:
        target = (torch.arange(batch * img * img).reshape(batch, 1, img, img) // 7 % 2).float()
    else:
        target = torch.arange(batch) % 1000

    def step():
        if not train:
            with torch.no_grad():
                model(x)
            return
        y = model(x)
        loss = F.binary_cross_entropy_with_logits(y, target) if seg else F.cross_entropy(y, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(model=name, bench=bench, batch_size=batch, img_size=img, samples_per_sec=batch / med,
                          step_ms=med * 1e3, peak_rss_mib=peak, steps=steps, warmup=warmup, threads=2,
                          impl="pytorch " + torch.__version__)), flush=True)


def main():
    if len(sys.argv) >= 8 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:8]))
        return
    for c in CASES:
        subprocess.run([sys.executable, __file__, "--one", *map(str, c)], check=True)


if __name__ == "__main__":
    main()
