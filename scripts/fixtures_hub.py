"""Reference for sconce-hub's preprocessing: timm's eval transform (PIL resize of the shorter side
to floor(size / crop_pct) with antialiasing, centre crop, to [0, 1], ImageNet normalisation) on a
deterministic 8-bit image, for bilinear and bicubic.

Writes crates/sconce-hub/tests/fixtures/preprocess.{json,safetensors}.
Run: .venv-ref/bin/python scripts/fixtures_hub.py
"""
import json
import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-hub/tests/fixtures"


def image(h, w):
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 7 + y * 3) % 256
    g = (x * x + 2 * y * y) % 256
    b = ((x // 4 + y // 5) % 2) * 200 + 20
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def main():
    tensors, cases = {}, []
    for name, (h, w), size, crop_pct, interp in [
        ("bilinear_down", (61, 83), 32, 0.875, "bilinear"),
        ("bicubic_down", (61, 83), 32, 0.95, "bicubic"),
        ("bicubic_up", (20, 27), 32, 0.875, "bicubic"),
    ]:
        img = image(h, w)
        t = create_transform(input_size=(3, size, size), interpolation=interp, crop_pct=crop_pct,
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_training=False)
        out = t(Image.fromarray(img))
        tensors[f"{name}.image"] = torch.from_numpy(img.copy())
        tensors[f"{name}.out"] = out.contiguous()
        cases.append(dict(name=name, size=size, crop_pct=crop_pct, interpolation=interp, transform=str(t)))
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "preprocess.safetensors"))
    (OUT / "preprocess.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
