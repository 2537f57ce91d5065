"""Loads a sconce checkpoint into the PyTorch model with the same architecture, strict=True.

Usage: .venv-ref/bin/python scripts/check_export.py MODEL.safetensors ARCH [CLASSES] [WIDTH]
ARCH: resnet18..152 / densenet121..201 (timm), unet-<encoder> (smp.Unet), unet (classic, WIDTH).
Example: cargo run --example segment -- --smoke --backbone resnet18 --out /tmp/s &&
         .venv-ref/bin/python scripts/check_export.py /tmp/s/*/checkpoints/checkpoint-epoch0002/model.safetensors unet-resnet18 1
"""
import sys

import segmentation_models_pytorch as smp
import timm
from safetensors.torch import load_file

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from fixtures_backbones import ClassicUNet  # noqa: E402


def main():
    path, arch = sys.argv[1], sys.argv[2]
    classes = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    width = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    sd = load_file(path)
    if arch == "unet":
        model = ClassicUNet(3, classes, width)
    elif arch.startswith("unet-"):
        model = smp.Unet(arch[5:], encoder_weights=None, classes=classes)
    else:
        model = timm.create_model(arch, num_classes=classes)
    print(arch, model.load_state_dict(sd, strict=True), f"({len(sd)} tensors)")


if __name__ == "__main__":
    main()
