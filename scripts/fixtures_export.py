"""The PyTorch state_dict (key, shape, dtype) of each architecture sconce builds, so that a Rust
test can check that a sconce model exported to safetensors loads into timm / smp / the classic
U-Net with `load_state_dict(..., strict=True)`: strict loading needs exactly these keys with
these shapes (dtype float32, int64 for BatchNorm's num_batches_tracked).

Writes crates/sconce-hub/tests/fixtures/export_keys.json.
Run: .venv-ref/bin/python scripts/fixtures_export.py
(The same check end to end, on a real exported file: scripts/check_export.py.)
"""
import json
import pathlib
import sys

import segmentation_models_pytorch as smp
import timm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fixtures_backbones import ClassicUNet  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-hub/tests/fixtures/export_keys.json"

CASES = [
    # (sconce model name, num_classes, classic-U-Net base, builder)
    ("resnet18", 10, 64, lambda: timm.create_model("resnet18", num_classes=10)),
    ("resnet50", 1000, 64, lambda: timm.create_model("resnet50", num_classes=1000)),
    ("densenet121", 5, 64, lambda: timm.create_model("densenet121", num_classes=5)),
    ("unet-resnet34", 2, 64, lambda: smp.Unet("resnet34", encoder_weights=None, classes=2)),
    ("unet-densenet121", 1, 64, lambda: smp.Unet("densenet121", encoder_weights=None, classes=1)),
    ("unet", 1, 16, lambda: ClassicUNet(3, 1, 16)),
]


def main():
    out = []
    for name, classes, base, build in CASES:
        sd = build().state_dict()
        out.append({
            "model": name,
            "num_classes": classes,
            "unet_base": base,
            "state_dict": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()],
        })
        print(name, len(sd), "tensors")
    OUT.write_text(json.dumps({"timm": timm.__version__, "smp": smp.__version__, "models": out}))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
