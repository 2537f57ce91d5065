"""Reference fixtures for sconce-backbones, computed by torchvision, timm and smp.

Every parameter and buffer is filled with a deterministic pattern that the Rust tests compute
too (`sconce_testutil::pattern`), so full-size models (ResNet50, DenseNet121, smp Unets) are
compared without committing their weights: only inputs, outputs and gradients are saved.

pattern(key, shape): u_i = splitmix64(fnv1a64(key) + (i+1)·0x9E3779B97F4A7C15) >> 11 · 2^-53 for
i in 0..numel, then by the key's role:
  *.running_var -> 0.5 + u       *.running_mean -> 0.1·(2u − 1)
  rank-1 *.weight (norm scale) -> 0.5 + 0.5u     other rank-1 (bias) -> 0.1·(2u − 1)
  rank >= 2 (conv/linear weight) -> (2u − 1)·sqrt(3 / fan_in), fan_in = numel / shape[0]
  inputs ("input") -> 2u − 1

Writes crates/sconce-backbones/tests/fixtures/backbones.{json,safetensors}; with --variants,
variants.{json,safetensors} (the other ResNet and DenseNet depths) instead.
Run: .venv-ref/bin/python scripts/fixtures_backbones.py [--variants]   (see scripts/setup_venv.sh)
"""
import json
import math
import pathlib
import sys

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-backbones/tests/fixtures"
torch.set_num_threads(2)

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(key):
    h = 0xCBF29CE484222325
    for b in key.encode():
        h ^= b
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def uniform(key, n):
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(key)) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def pattern(key, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(key, n)
    if key.endswith("running_var"):
        v = 0.5 + u
    elif key.endswith("running_mean"):
        v = 0.1 * (2 * u - 1)
    elif len(shape) == 1 and key.endswith("weight"):
        v = 0.5 + 0.5 * u
    elif len(shape) == 1:
        v = 0.1 * (2 * u - 1)
    elif key == "input":
        v = 2 * u - 1
    else:
        v = (2 * u - 1) * math.sqrt(3.0 / (n // shape[0]))
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def fill(model):
    sd = model.state_dict()
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        t.copy_(pattern(k, tuple(t.shape)))
    return model


def num_params(m):
    return sum(p.numel() for p in m.parameters())


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class ClassicUNet(nn.Module):
    """milesial/Pytorch-UNet with bilinear=False: same padding, BatchNorm, transposed-conv up."""

    def __init__(self, in_ch=3, classes=1, base=64):
        super().__init__()
        c = [base * 2**i for i in range(5)]
        self.inc = DoubleConv(in_ch, c[0])
        self.down1, self.down2, self.down3, self.down4 = (Down(c[i], c[i + 1]) for i in range(4))
        self.up1, self.up2, self.up3, self.up4 = (Up(c[4 - i], c[3 - i]) for i in range(4))
        self.outc = OutConv(c[0], classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


def resnet_features(m, x):
    x = m.act1(m.bn1(m.conv1(x)))
    feats = [x]
    x = m.maxpool(x)
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        x = layer(x)
        feats.append(x)
    return feats


def densenet_features(m, x):
    f = m.features
    x = f.relu0(f.norm0(f.conv0(x)))
    feats = [x]
    x = f.pool0(x)
    for b in range(1, 4):
        x = getattr(f, f"denseblock{b}")(x)
        t = getattr(f, f"transition{b}")
        x = t.relu(t.norm(x))
        feats.append(x)
        x = t.pool(t.conv(x))
    x = f.norm5(f.denseblock4(x))
    feats.append(x)
    return feats


class Book:
    def __init__(self):
        self.cases, self.tensors = [], {}

    def put(self, name, key, t):
        self.tensors[f"{name}.{key}"] = t.detach().float().contiguous()


def eval_case(book, name, model, shape, features=None, **meta):
    fill(model).eval()
    x = pattern("input", shape)
    with torch.no_grad():
        y = model(x)
        book.put(name, "input", x)
        book.put(name, "logits", y)
        if features is not None:
            for i, f in enumerate(features(model, x)):
                book.put(name, f"feature.{i}", f)
    book.cases.append(dict(name=name, mode="eval", input=list(shape), params=num_params(model), **meta))
    print(f"{name}: eval {list(shape)} -> {list(y.shape)}, {num_params(model):,} params")


def train_case(book, name, model, shape, target, loss, **meta):
    """One training-mode forward/backward: logits, loss, every gradient, updated running stats."""
    fill(model).train()
    x = pattern("input", shape)
    y = model(x)
    value = loss(y, target)
    value.backward()
    book.put(name, "input", x)
    book.put(name, "target", target)
    book.put(name, "logits", y)
    book.put(name, "loss", value.reshape(1))
    for k, p in model.named_parameters():
        book.put(name, f"grad.{k}", p.grad)
    for k, b in model.named_buffers():
        if k.endswith("running_mean") or k.endswith("running_var"):
            book.put(name, f"buffer.{k}", b)
    book.cases.append(dict(name=name, mode="train", input=list(shape), params=num_params(model), **meta))
    print(f"{name}: train {list(shape)} loss {value.item():.6f}, {num_params(model):,} params")


def variants():
    """The other depths (ResNet 34/101/152, DenseNet 161/169/201), eval at 32×32 with every
    feature stage: crates/sconce-backbones/tests/fixtures/variants.{json,safetensors}."""
    book = Book()
    for n in ("resnet34", "resnet101", "resnet152"):
        eval_case(book, n, timm.create_model(n), (1, 3, 32, 32), resnet_features, arch=n)
    for n in ("densenet161", "densenet169", "densenet201"):
        eval_case(book, n, getattr(torchvision.models, n)(), (1, 3, 32, 32), densenet_features, arch=n)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(book.tensors, str(OUT / "variants.safetensors"))
    (OUT / "variants.json").write_text(json.dumps(book.cases, indent=1) + "\n")
    print(f"{len(book.cases)} cases, {(OUT / 'variants.safetensors').stat().st_size / 1e6:.2f} MB")


def main():
    if "--variants" in sys.argv:
        return variants()
    book = Book()
    # Full-size models, eval mode, small inputs.
    eval_case(book, "resnet50", timm.create_model("resnet50"), (1, 3, 32, 32), resnet_features, arch="resnet50")
    eval_case(book, "resnet18", timm.create_model("resnet18", num_classes=10), (2, 3, 40, 36), resnet_features,
              arch="resnet18", num_classes=10)
    eval_case(book, "densenet121", torchvision.models.densenet121(), (1, 3, 32, 32), densenet_features,
              arch="densenet121")
    eval_case(book, "unet_resnet50", smp.Unet("resnet50", encoder_weights=None, classes=1), (1, 3, 64, 64),
              arch="unet-resnet50", classes=1)
    eval_case(book, "unet_densenet121", smp.Unet("densenet121", encoder_weights=None, classes=1), (1, 3, 64, 64),
              arch="unet-densenet121", classes=1)
    eval_case(book, "unet_resnet18_odd", smp.Unet("resnet18", encoder_weights=None, classes=2), (1, 3, 50, 46),
              arch="unet-resnet18", classes=2)
    eval_case(book, "unet_classic_odd", ClassicUNet(3, 1, base=8), (1, 3, 50, 46), arch="unet", base=8, classes=1)

    # Reduced-width models, one training-mode step each. The ResNets get 64x64 inputs: at 32x32
    # layer4 is 1x1, its BatchNorm sees 2 values per channel, and f32 rounding alone (PyTorch's
    # own f32 vs f64) moves the logits by 4e-5.
    # timm builds the plain 7x7 stem with 64 channels whatever stem_width says.
    tiny = dict(channels=(8, 16, 32, 64), num_classes=5)
    labels = torch.tensor([1, 3])
    ce = F.cross_entropy
    train_case(book, "tiny_resnet_bottleneck",
               timm.models.resnet.ResNet(timm.models.resnet.Bottleneck, [1, 2, 1, 1], **tiny),
               (2, 3, 64, 64), labels, ce, arch="resnet", block="bottleneck", layers=[1, 2, 1, 1],
               channels=[8, 16, 32, 64], stem_width=64, num_classes=5)
    train_case(book, "tiny_resnet_basic",
               timm.models.resnet.ResNet(timm.models.resnet.BasicBlock, [1, 1, 2, 1], **tiny),
               (2, 3, 64, 64), labels, ce, arch="resnet", block="basic", layers=[1, 1, 2, 1],
               channels=[8, 16, 32, 64], stem_width=64, num_classes=5)
    train_case(book, "tiny_densenet",
               torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16,
                                           bn_size=2, num_classes=5),
               (2, 3, 32, 32), labels, ce, arch="densenet", growth_rate=8, block_config=[2, 3, 2, 2],
               num_init_features=16, bn_size=2, num_classes=5)
    mask = (pattern("mask", (2, 1, 34, 30)) > 0).float()
    train_case(book, "tiny_unet_classic", ClassicUNet(3, 1, base=4), (2, 3, 34, 30), mask,
               F.binary_cross_entropy_with_logits, arch="unet", base=4, classes=1)

    # Parameter counts of every architecture the crate offers (no forward pass).
    counts = {}
    for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
              "densenet121", "densenet161", "densenet169", "densenet201"):
        counts[n] = num_params(timm.create_model(n))
    for enc in ("resnet18", "resnet34", "resnet50", "densenet121"):
        counts[f"unet-{enc}"] = num_params(smp.Unet(enc, encoder_weights=None, classes=1))
    counts["unet"] = num_params(ClassicUNet(3, 1, 64))
    book.cases.append(dict(name="param_counts", mode="counts", counts=counts))
    print(json.dumps(counts, indent=1))

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(book.tensors, str(OUT / "backbones.safetensors"))
    (OUT / "backbones.json").write_text(json.dumps(book.cases, indent=1) + "\n")
    print(f"{len(book.cases)} cases, {(OUT / 'backbones.safetensors').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
