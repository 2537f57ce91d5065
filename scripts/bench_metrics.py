"""Times torchmetrics' IoU + Dice update and compute on the shapes of
crates/sconce-metrics/benches/segmentation.rs (2 threads); writes
crates/sconce-metrics/benches/reference_torch.json for the bench's ratio table.

Run: .venv-ref/bin/python scripts/bench_metrics.py
"""
import json
import pathlib

from benchutil import same_allocator

same_allocator()  # before torch is imported: glibc reads the settings at start-up

import torch
from torchmetrics.classification import BinaryJaccardIndex, MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore

from benchutil import median_time

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-metrics/benches/reference_torch.json"


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    logits = torch.randn(8, 1, 250, 250)
    masks = torch.randint(0, 2, (8, 250, 250))

    def binary():
        preds = (logits.squeeze(1) >= 0).long()
        iou = BinaryJaccardIndex()
        dice = DiceScore(num_classes=2, input_format="index", average="macro")
        iou.update(preds, masks)
        dice.update(preds, masks)
        return iou.compute(), dice.compute()

    scores = torch.randn(8, 21, 250, 250)
    labels = torch.randint(0, 21, (8, 250, 250))

    def multiclass():
        preds = scores.argmax(1)
        iou = MulticlassJaccardIndex(num_classes=21)
        dice = DiceScore(num_classes=21, input_format="index", average="macro")
        iou.update(preds, labels)
        dice.update(preds, labels)
        return iou.compute(), dice.compute()

    res = {"iou_dice/b8_c1_h250/update": median_time(binary), "iou_dice/b8_c21_h250/update": median_time(multiclass)}
    import torchmetrics
    OUT.write_text(json.dumps(dict(meta=dict(torch=torch.__version__, torchmetrics=torchmetrics.__version__, threads=2),
                                   seconds=res), indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:<36} {v * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
