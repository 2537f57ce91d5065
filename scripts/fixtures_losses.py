"""Reference fixtures for sconce-losses, computed by PyTorch and segmentation_models_pytorch.

Writes crates/sconce-losses/tests/fixtures/losses.{json,safetensors}: for every case the logits
(x0), the target, the loss value (y), an upstream gradient (gy, 1 for scalar losses) and the
gradient of the logits (gx0), in f32 and f64.

Run: .venv-ref/bin/python scripts/fixtures_losses.py   (see scripts/setup_venv.sh)
"""
import json
import math
import pathlib

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-losses/tests/fixtures"
torch.manual_seed(7)
DT = {"f32": torch.float32, "f64": torch.float64}
cases, tensors = [], {}


def add(name, case, fn, logits, target, dtype):
    x = logits.to(DT[dtype]).detach().clone().requires_grad_(True)
    t = target.to(DT[dtype]) if target.is_floating_point() else target
    y = fn(x, t)
    gy = torch.ones_like(y) if y.dim() == 0 else torch.randn_like(y)
    y.backward(gy)
    key = f"{name}_{dtype}"
    cases.append(dict(case, name=key, dtype=dtype))
    tensors[f"{key}.x0"] = x.detach().contiguous()
    tensors[f"{key}.target"] = t.contiguous().clone()
    tensors[f"{key}.y"] = y.detach().contiguous()
    tensors[f"{key}.gy"] = gy.contiguous()
    tensors[f"{key}.gx0"] = x.grad.contiguous()


def both(name, case, fn, logits, target):
    for dtype in ["f64", "f32"]:
        add(name, case, fn, logits, target, dtype)


def bce():
    extreme = torch.tensor([[-1e4, -100.0, -17.0, -1.0], [0.0, 1.0, 17.0, 1e4], [30.0, -30.0, 2.0, -2.0]])
    hard = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    soft = torch.rand(3, 4)
    pw = [0.5, 1.0, 3.0, 2.0]
    for red in ["mean", "sum", "none"]:
        both(f"bce_extreme_{red}", dict(op="bce", reduction=red),
             lambda x, t, r=red: F.binary_cross_entropy_with_logits(x, t, reduction=r), extreme, hard)
    both("bce_soft_posweight", dict(op="bce", reduction="mean", pos_weight=pw),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor(pw, dtype=x.dtype)),
         torch.randn(3, 4) * 4, soft)
    # Keras label smoothing: z -> z(1 - s) + s/2, then the plain loss.
    both("bce_smoothing", dict(op="bce", reduction="mean", label_smoothing=0.2),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t * 0.8 + 0.1), torch.randn(3, 4) * 4, hard)
    seg_mask = (torch.rand(2, 1, 9, 7) > 0.6).float()
    both("bce_segmentation", dict(op="bce", reduction="mean"),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t), torch.randn(2, 1, 9, 7) * 3, seg_mask)
    both("bce_seg_posweight_map", dict(op="bce", reduction="none", pos_weight=[2.5, 0.7]),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor([2.5, 0.7], dtype=x.dtype).view(1, 2, 1, 1), reduction="none"),
         torch.randn(2, 2, 4, 5) * 3, torch.rand(2, 2, 4, 5))


def ce():
    x = torch.randn(6, 4) * 3
    x[0] = torch.tensor([1e4, -1e4, 0.0, 30.0])
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    w = [0.2, 1.0, 2.0, 0.7]
    for red in ["mean", "sum", "none"]:
        both(f"ce_{red}", dict(op="ce", reduction=red), lambda a, t, r=red: F.cross_entropy(a, t, reduction=r), x, y)
    both("ce_weights", dict(op="ce", reduction="mean", class_weights=w),
         lambda a, t: F.cross_entropy(a, t, weight=torch.tensor(w, dtype=a.dtype)), x, y)
    both("ce_weights_smoothing", dict(op="ce", reduction="mean", class_weights=w, label_smoothing=0.1),
         lambda a, t: F.cross_entropy(a, t, weight=torch.tensor(w, dtype=a.dtype), label_smoothing=0.1), x, y)
    yi = y.clone()
    yi[2] = -100
    both("ce_ignore_neg100", dict(op="ce", reduction="mean", ignore_index=-100, label_smoothing=0.05),
         lambda a, t: F.cross_entropy(a, t, ignore_index=-100, label_smoothing=0.05), x, yi)
    # Segmentation: [N, C, H, W] logits, [N, H, W] labels with 255 = void.
    xs = torch.randn(2, 3, 5, 6) * 2
    ys = torch.randint(0, 3, (2, 5, 6))
    ys[0, 0, :3] = 255
    both("ce_seg_ignore255_weights", dict(op="ce", reduction="mean", ignore_index=255, class_weights=[1.0, 2.0, 0.5]),
         lambda a, t: F.cross_entropy(a, t, weight=torch.tensor([1.0, 2.0, 0.5], dtype=a.dtype), ignore_index=255), xs, ys)
    both("ce_seg_none", dict(op="ce", reduction="none", ignore_index=255),
         lambda a, t: F.cross_entropy(a, t, ignore_index=255, reduction="none"), xs, ys)
    probs = torch.softmax(torch.randn(6, 4), 1)
    both("ce_prob_targets", dict(op="ce", reduction="mean", class_weights=w, label_smoothing=0.1, target="prob"),
         lambda a, t: F.cross_entropy(a, t, weight=torch.tensor(w, dtype=a.dtype), label_smoothing=0.1), x, probs)


def region():
    xb = torch.randn(2, 1, 6, 7) * 2
    mb = (torch.rand(2, 1, 6, 7) > 0.5).float()
    xm = torch.randn(2, 4, 5, 5) * 2
    ym = torch.randint(0, 3, (2, 5, 5))  # class 3 never present: it must contribute 0
    ym_ign = ym.clone()
    ym_ign[1, 2, :] = 255
    xl = torch.randn(2, 3, 4, 6) * 2
    yl = (torch.rand(2, 3, 4, 6) > 0.5).float()
    yl[:, 1] = 0.0  # an empty channel
    specs = [
        ("dice_binary", "dice", "binary", {}, xb, mb),
        ("dice_binary_log_smooth", "dice", "binary", dict(log_loss=True, smooth=1.0), xb, mb),
        ("dice_multiclass_absent", "dice", "multiclass", {}, xm, ym),
        ("dice_multiclass_ignore", "dice", "multiclass", dict(ignore_index=255), xm, ym_ign),
        ("dice_multilabel_empty", "dice", "multilabel", {}, xl, yl),
        ("jaccard_multiclass", "jaccard", "multiclass", {}, xm, ym),
        ("jaccard_binary_smooth", "jaccard", "binary", dict(smooth=0.5), xb, mb),
        ("tversky_multilabel", "tversky", "multilabel", dict(alpha=0.3, beta=0.7, gamma=1.5), xl, yl),
        ("dice_multiclass_weights", "dice", "multiclass", dict(class_weights=[1.0, 2.0, 0.5, 1.0]), xm, ym),
    ]
    for name, kind, mode, kw, x, t in specs:
        args = dict(kw)
        if "class_weights" in args:
            args["class_weights"] = torch.tensor(args["class_weights"])
        cls = {"dice": smp.losses.DiceLoss, "jaccard": smp.losses.JaccardLoss, "tversky": smp.losses.TverskyLoss}[kind]
        loss = cls(mode, from_logits=True, **args)
        both(name, dict(op=kind, mode=mode, **kw), lambda a, b, loss=loss: loss(a, b), x, t)


def focal():
    xb = torch.randn(2, 1, 5, 6) * 3
    mb = (torch.rand(2, 1, 5, 6) > 0.5).float()
    xm = torch.randn(2, 3, 4, 5) * 2
    ym = torch.randint(0, 3, (2, 4, 5))
    ym[0, 0] = 255
    xl = torch.randn(2, 3, 4, 4) * 2
    yl = (torch.rand(2, 3, 4, 4) > 0.5).float()
    specs = [
        ("focal_binary", "binary", dict(), xb, mb),
        ("focal_binary_alpha_gamma3", "binary", dict(alpha=0.25, gamma=3.0), xb, mb),
        ("focal_binary_normalized", "binary", dict(normalized=True), xb, mb),
        ("focal_multiclass_ignore", "multiclass", dict(ignore_index=255, alpha=0.4), xm, ym),
        ("focal_multilabel", "multilabel", dict(gamma=1.0), xl, yl),
    ]
    for name, mode, kw, x, t in specs:
        loss = smp.losses.FocalLoss(mode, **kw)
        both(name, dict(op="focal", mode=mode, **kw), lambda a, b, loss=loss: loss(a, b), x, t)


def regression():
    pred = torch.randn(4, 5) * 3
    target = torch.randn(4, 5) * 3
    both("mse", dict(op="mse"), lambda a, t: F.mse_loss(a, t), pred, target)
    both("mae", dict(op="mae"), lambda a, t: F.l1_loss(a, t), pred, target)
    both("huber_1.5", dict(op="huber", delta=1.5), lambda a, t: F.huber_loss(a, t, delta=1.5), pred, target)
    both("log_cosh", dict(op="log_cosh"), lambda a, t: torch.log(torch.cosh(a - t)).mean(), pred, target)
    labels01 = (torch.rand(4, 5) > 0.5).float()
    # Keras Hinge: {0,1} -> {-1,+1}; mean(max(1 - y*yhat, 0)).
    both("hinge", dict(op="hinge"), lambda a, t: torch.clamp(1 - (2 * t - 1) * a, min=0).mean(), pred, labels01)
    both("squared_hinge", dict(op="squared_hinge"), lambda a, t: torch.clamp(1 - (2 * t - 1) * a, min=0).pow(2).mean(),
         pred, labels01)


def distribution():
    x = torch.randn(5, 4) * 3
    x[0] = torch.tensor([1e4, -1e4, 0.0, 3.0])
    t = torch.softmax(torch.randn(5, 4), 1)
    t[1] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # zeros: 0·log 0 = 0
    both("kl_div", dict(op="kl"), lambda a, b: F.kl_div(F.log_softmax(a, 1), b, reduction="batchmean"), x, t)
    rates = torch.randn(3, 6)
    counts = torch.poisson(torch.rand(3, 6) * 4)
    both("poisson", dict(op="poisson"), lambda a, b: F.poisson_nll_loss(a, b, log_input=True, full=False), rates, counts)
    onehot = F.one_hot(torch.tensor([0, 3, 1, 2, 2]), 4).float()
    both("categorical_hinge", dict(op="categorical_hinge"),
         lambda a, b: torch.clamp(((1 - b) * a).max(1).values - (b * a).sum(1) + 1, min=0).mean(), x, onehot)
    # Keras CategoricalFocalCrossentropy(from_logits=True), alpha=0.25, gamma=2 (no clipping needed from logits).
    both("categorical_focal", dict(op="categorical_focal", alpha=0.25, gamma=2.0),
         lambda a, b: (-0.25 * (1 - torch.softmax(a, 1)) ** 2 * b * F.log_softmax(a, 1)).sum(1).mean(), x, onehot)
    xs = torch.randn(2, 1, 6, 5) * 2
    ms = (torch.rand(2, 1, 6, 5) > 0.5).float()
    dice = smp.losses.DiceLoss("binary", from_logits=True)
    both("bce_plus_dice", dict(op="bce_plus_dice", w_bce=0.7, w_dice=1.3),
         lambda a, b: 0.7 * F.binary_cross_entropy_with_logits(a, b) + 1.3 * dice(a, b), xs, ms)


def lovasz():
    xb = torch.randn(2, 1, 5, 6) * 2
    mb = (torch.rand(2, 1, 5, 6) > 0.5).float()
    mb_ign = mb.clone()
    mb_ign[0, 0, 0, :] = 255
    xm = torch.randn(2, 4, 5, 5) * 2
    ym = torch.randint(0, 3, (2, 5, 5))  # class 3 absent
    ym[1, 0] = 255
    xl = torch.randn(2, 3, 4, 4) * 2
    yl = (torch.rand(2, 3, 4, 4) > 0.5).float()
    specs = [
        ("lovasz_binary", "binary", {}, xb, mb),
        ("lovasz_binary_per_image_ignore", "binary", dict(per_image=True, ignore_index=255), xb, mb_ign),
        ("lovasz_multiclass_ignore", "multiclass", dict(ignore_index=255), xm, ym),
        ("lovasz_multiclass_per_image", "multiclass", dict(per_image=True, ignore_index=255), xm, ym),
        ("lovasz_multilabel", "multilabel", {}, xl, yl),
    ]
    for name, mode, kw, x, t in specs:
        loss = smp.losses.LovaszLoss(mode, **kw)
        # smp's _lovasz_grad casts to float32, so its Lovász losses only run in f32.
        add(name, dict(op="lovasz", mode=mode, **kw), lambda a, b, loss=loss: loss(a, b), x, t, "f32")


if __name__ == "__main__":
    print("torch", torch.__version__, "smp", smp.__version__)
    torch.set_num_threads(2)
    bce()
    ce()
    region()
    focal()
    regression()
    distribution()
    lovasz()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "losses.safetensors"))
    (OUT / "losses.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(len(cases), "cases,", (OUT / "losses.safetensors").stat().st_size / 1e6, "MB")
