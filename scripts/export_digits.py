"""Exports scikit-learn's 8x8 digits (1797 images, 10 classes, pixel values 0..16; bundled with
scikit-learn, no download) to crates/sconce-data/data/digits.bin: 1797 records of 65 bytes,
[label, 64 pixels row-major], in scikit-learn's order. sconce_data::Digits embeds the file.

Run: .venv-ref/bin/python scripts/export_digits.py
"""
import pathlib

import numpy as np
from sklearn.datasets import load_digits

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-data/data/digits.bin"

d = load_digits()
rec = np.concatenate([d.target.reshape(-1, 1), d.data], axis=1).astype(np.uint8)
assert rec.shape == (1797, 65) and rec[:, 1:].max() == 16
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_bytes(rec.tobytes())
print(f"{OUT}: {rec.shape[0]} digits, {OUT.stat().st_size} bytes, class counts {np.bincount(d.target).tolist()}")
