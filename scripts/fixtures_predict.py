"""Reference for the predict path (`sconce_hub::Pretrained`, `classify predict`): timm loads a
checkpoint file itself (`pretrained_cfg_overlay=dict(file=...)`, so its own key filters run)
and classifies a deterministic image with its eval transform. The Rust test
(crates/sconce-hub/tests/predict.rs) writes the same file, with the weight pattern of
scripts/fixtures_backbones.py in the case's key spelling, and must give the same logits and
top-5 from the raw image bytes.

Cases:
  resnet50_hub       timm names, with num_batches_tracked, in a hub cache with a config.json
                     (timm/resnet50.a1_in1k's preprocessing: bicubic, crop_pct 0.95)
  densenet121_known  timm names, hub cache without a config.json: the known table's
                     preprocessing for timm/densenet121.tv_in1k (bicubic, 0.875)
  densenet121_legacy the old torchvision spelling (`denselayerN.norm.1`, `conv.2`) and no
                     num_batches_tracked (files saved before PyTorch 0.4.1), as a plain file:
                     timm's default preprocessing (its `PretrainedCfg()`: bicubic, 0.875)

The classifier's weights are the pattern times HEAD_SCALE (a power of two: exact on both sides),
which spreads the logits of these untrained networks so that the top-5 are decided well beyond
the tests' tolerance (checked below).

Writes crates/sconce-hub/tests/fixtures/predict.{json,safetensors} (logits only: a few kB).
Run: .venv-ref/bin/python scripts/fixtures_predict.py   (see scripts/setup_venv.sh)
"""
import json
import pathlib
import re
import sys
import tempfile

import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fixtures_backbones import pattern  # noqa: E402
from fixtures_hub import image  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-hub/tests/fixtures"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD_SCALE = 16.0
HEADS = ("fc.weight", "classifier.weight")
RTOL = ATOL = 1e-4  # the Rust test's
torch.set_num_threads(2)

# `tag`: the timm pretrained tag whose preprocessing the case's checkpoint has (read from timm
# below, so the test's expectations of sconce's known table come from timm); None: a plain
# file, timm's defaults.
CASES = [
    dict(name="resnet50_hub", arch="resnet50", naming="timm", counters=True, image=[240, 300],
         tag="resnet50.a1_in1k"),
    dict(name="densenet121_known", arch="densenet121", naming="timm", counters=True, image=[250, 300],
         tag="densenet121.tv_in1k"),
    dict(name="densenet121_legacy", arch="densenet121", naming="legacy", counters=False, image=[200, 260],
         tag=None),
]


def preprocessing(tag):
    """(interpolation, crop_pct) of a timm pretrained tag, or timm's defaults."""
    c = timm.models.PretrainedCfg() if tag is None else timm.models.get_pretrained_cfg(tag)
    return c.interpolation, c.crop_pct

LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|conv))([12])\.(weight|bias|running_mean|running_var)$")


def state_dict(arch, naming, counters):
    """The pattern in `arch`'s timm names, respelled as `naming` spells them."""
    sd = {}
    for k, t in timm.create_model(arch).state_dict().items():
        if k.endswith("num_batches_tracked"):
            if counters:
                sd[k] = torch.tensor(0, dtype=torch.int64)
            continue
        name = LEGACY.sub(r"\1.\2.\3", k) if naming == "legacy" else k
        sd[name] = pattern(k, tuple(t.shape)) * (HEAD_SCALE if k in HEADS else 1.0)
    if naming == "legacy":
        assert any(".norm.1." in k for k in sd), "the legacy spelling was not applied"
    return sd


def main():
    tensors, out = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for c in CASES:
            path = pathlib.Path(tmp) / f"{c['name']}.safetensors"
            save_file(state_dict(c["arch"], c["naming"], c["counters"]), str(path))
            model = timm.create_model(c["arch"], pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
            h, w = c["image"]
            c["interpolation"], c["crop_pct"] = preprocessing(c["tag"])
            t = create_transform(input_size=(3, 224, 224), interpolation=c["interpolation"], crop_pct=c["crop_pct"],
                                 mean=MEAN, std=STD, is_training=False)
            x = t(Image.fromarray(image(h, w))).unsqueeze(0)
            with torch.no_grad():
                logits = model(x)[0]
            top = torch.topk(logits, 6).values
            # Top-5 must be decidable at the test's tolerance: neighbours 4× its bound apart.
            gaps = (top[:-1] - top[1:]).min().item()
            bound = ATOL + RTOL * logits.abs().max().item()
            assert gaps > 4 * bound, f"{c['name']}: top-6 logits too close ({gaps} vs tolerance {bound})"
            tensors[f"{c['name']}.logits"] = logits.contiguous()
            out.append({**c, "top5": torch.topk(logits, 5).indices.tolist()})
            print(c["name"], out[-1]["top5"], f"min gap {gaps:.4f}, max |logit| {logits.abs().max().item():.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "predict.safetensors"))
    (OUT / "predict.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
