"""Reference values for sconce-metrics from scikit-learn, on random and edge-case label sets
(a class never predicted, a class never present, one class only, perfect and all-wrong
predictions). Writes crates/sconce-metrics/tests/fixtures/classification.json; NaN is null.

Run: .venv-ref/bin/python scripts/fixtures_metrics.py
"""
import json
import math
import pathlib
import warnings

import numpy as np
import sklearn
from sklearn import metrics

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/sconce-metrics/tests/fixtures/classification.json"
warnings.filterwarnings("ignore")
rng = np.random.default_rng(5)


def clean(v):
    v = float(v)
    return None if math.isnan(v) else v


def case(name, y_true, y_pred, k):
    y_true, y_pred = list(map(int, y_true)), list(map(int, y_pred))
    out = dict(name=name, num_classes=k, y_true=y_true, y_pred=y_pred,
               report=metrics.classification_report(y_true, y_pred, zero_division=0, digits=4),
               accuracy=clean(metrics.accuracy_score(y_true, y_pred)),
               balanced_accuracy=clean(metrics.balanced_accuracy_score(y_true, y_pred)),
               mcc=clean(metrics.matthews_corrcoef(y_true, y_pred)),
               kappa=clean(metrics.cohen_kappa_score(y_true, y_pred)), prf=[])
    for zd_name, zd in [("zero", 0.0), ("one", 1.0), ("nan", np.nan)]:
        for beta in [1.0, 0.5, 2.0]:
            for avg in ["micro", "macro", "weighted", None]:
                p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, beta=beta, average=avg,
                                                                     zero_division=zd)
                if avg is None:
                    out["prf"].append(dict(average="none", beta=beta, zero_division=zd_name,
                                           precision=[clean(x) for x in p], recall=[clean(x) for x in r],
                                           f=[clean(x) for x in f], support=[int(x) for x in s],
                                           labels=sorted(set(y_true) | set(y_pred))))
                else:
                    out["prf"].append(dict(average=avg, beta=beta, zero_division=zd_name,
                                           precision=clean(p), recall=clean(r), f=clean(f)))
            if len(set(y_true) | set(y_pred)) <= 2:
                for pos in sorted(set(y_true) | set(y_pred)):
                    p, r, f, _ = metrics.precision_recall_fscore_support(y_true, y_pred, beta=beta, average="binary",
                                                                         pos_label=pos, zero_division=zd)
                    out["prf"].append(dict(average="binary", pos_label=pos, beta=beta, zero_division=zd_name,
                                           precision=clean(p), recall=clean(r), f=clean(f)))
    return out


cases = []
for i in range(4):
    k = int(rng.integers(3, 7))
    n = int(rng.integers(20, 60))
    cases.append(case(f"random_{i}", rng.integers(0, k, n), rng.integers(0, k, n), k))
yt = rng.integers(0, 4, 40)
yp = rng.integers(0, 3, 40)  # class 3 never predicted
cases.append(case("class_never_predicted", yt, yp, 4))
yt2 = rng.integers(0, 3, 40)  # class 3 never present
yp2 = rng.integers(0, 4, 40)
cases.append(case("class_never_present", yt2, yp2, 5))
cases.append(case("binary", rng.integers(0, 2, 30), rng.integers(0, 2, 30), 2))
cases.append(case("binary_no_positive_predictions", [0, 1, 1, 0, 1], [0, 0, 0, 0, 0], 2))
cases.append(case("perfect", [0, 1, 2, 2, 1], [0, 1, 2, 2, 1], 3))
cases.append(case("all_wrong", [0, 1, 2, 0], [1, 2, 0, 2], 3))
cases.append(case("single_class", [1, 1, 1], [1, 1, 1], 3))


def seg_case(name, yt, yp, k):
    """yt, yp: [N, H, W] int arrays. Global scores from scikit-learn on all pixels (classes
    absent from both excluded: zero_division=nan + nanmean), per-image scores likewise per image,
    cross-checked against torchmetrics: MulticlassJaccardIndex (average=None) for the global IoU,
    MeanIoU(per_class=True) and DiceScore(average="none", samplewise) for the per-image means."""
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex
    ft, fp = yt.reshape(-1), yp.reshape(-1)
    labels = list(range(k))
    def absent(t, p):
        cm = metrics.confusion_matrix(t, p, labels=labels)
        return (cm.sum(0) + cm.sum(1)) == 0  # class in neither target nor prediction

    def per_class(score, t, p):
        v = score(t, p, labels=labels, average=None, zero_division=0).astype(float)
        v[absent(t, p)] = np.nan
        return v

    iou = per_class(metrics.jaccard_score, ft, fp)
    dice = per_class(metrics.f1_score, ft, fp)
    tm = MulticlassJaccardIndex(num_classes=k, average="none", zero_division=float("nan"))(
        torch.from_numpy(fp), torch.from_numpy(ft)).numpy()
    assert np.allclose(np.nan_to_num(tm, nan=-1), np.nan_to_num(iou, nan=-1)), (tm, iou)
    per_iou = np.array([per_class(metrics.jaccard_score, t.reshape(-1), p.reshape(-1)) for t, p in zip(yt, yp)])
    per_dice = np.array([per_class(metrics.f1_score, t.reshape(-1), p.reshape(-1)) for t, p in zip(yt, yp)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img_iou, img_dice = np.nanmean(per_iou, 0), np.nanmean(per_dice, 0)
    # torchmetrics' own per-image mean: MeanIoU(per_class=True) averages each class's IoU over
    # the images where it is in the target or the prediction (union > 0), as img_iou does
    # (-1 where no image has it).
    from torchmetrics.segmentation import MeanIoU
    tm_img = MeanIoU(num_classes=k, per_class=True, input_format="index")(
        torch.from_numpy(yp), torch.from_numpy(yt)).numpy()
    assert np.allclose(tm_img, np.nan_to_num(img_iou, nan=-1)), (tm_img, img_iou)
    # And DiceScore's sample-wise per-class mean is img_dice (NaN where no image has the class).
    from torchmetrics.segmentation import DiceScore
    tm_dice = DiceScore(num_classes=k, average="none", input_format="index", aggregation_level="samplewise")(
        torch.from_numpy(yp), torch.from_numpy(yt)).numpy()
    assert np.allclose(np.nan_to_num(tm_dice, nan=-1), np.nan_to_num(img_dice, nan=-1)), (tm_dice, img_dice)
    return dict(name=name, num_classes=k, shape=list(yt.shape), y_true=ft.tolist(), y_pred=fp.tolist(),
                iou=[clean(v) for v in iou], dice=[clean(v) for v in dice],
                mean_iou=clean(np.nanmean(iou)), mean_dice=clean(np.nanmean(dice)),
                per_image_iou=[clean(v) for v in img_iou], per_image_dice=[clean(v) for v in img_dice],
                pixel_accuracy=clean(metrics.accuracy_score(ft, fp)))


seg = []
seg.append(seg_case("random_4class", rng.integers(0, 4, (3, 6, 7)), rng.integers(0, 4, (3, 6, 7)), 4))
yt = rng.integers(0, 3, (3, 5, 5))
yp = rng.integers(0, 3, (3, 5, 5))
yt[0][yt[0] == 2] = 0  # class 2 absent from image 0's target
yp[0][yp[0] == 2] = 1  # and prediction
seg.append(seg_case("class_absent_in_one_image", yt, yp, 4))  # class 3 absent everywhere
seg.append(seg_case("binary_masks_with_empty_image", np.stack([np.zeros((4, 4), int), rng.integers(0, 2, (4, 4))]),
                    np.stack([np.zeros((4, 4), int), rng.integers(0, 2, (4, 4))]), 2))
reg = []
for i, (yt, yp) in enumerate([(rng.normal(3, 2, 50), rng.normal(3, 2, 50)), (np.array([3, -0.5, 2, 7.0]), np.array([2.5, 0.0, 2, 8])),
                              (np.full(5, 2.0), np.full(5, 2.0)), (np.full(5, 2.0), np.arange(5.0)),
                              (rng.normal(1e6, 1.0, 40), rng.normal(1e6, 1.0, 40))]):
    reg.append(dict(name=f"regression_{i}", y_true=yt.tolist(), y_pred=yp.tolist(),
                    mse=clean(metrics.mean_squared_error(yt, yp)), mae=clean(metrics.mean_absolute_error(yt, yp)),
                    r2=clean(metrics.r2_score(yt, yp)), explained_variance=clean(metrics.explained_variance_score(yt, yp))))
rank = []
for i, (n, k) in enumerate([(40, 2), (60, 4), (30, 3)]):
    import torch
    from torchmetrics.classification import MulticlassCalibrationError
    logits = rng.normal(0, 2, (n, k)).astype(np.float32)
    if i == 2:
        logits = np.round(logits)  # ties in scores
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs = probs.astype(np.float32).astype(np.float64)  # f32-exact, as torchmetrics computes in f32
    y = rng.integers(0, k, n)
    entry = dict(name=f"ranking_{i}", classes=k, probs=probs.reshape(-1).tolist(), labels=y.tolist(),
                 brier=clean(metrics.brier_score_loss(y, probs, labels=list(range(k)))),
                 ece=clean(MulticlassCalibrationError(num_classes=k, n_bins=15, norm="l1")(
                     torch.from_numpy(probs).float(), torch.from_numpy(y))))
    onehot = np.eye(k)[y]
    for avg in ["macro", "weighted"]:
        entry[f"roc_auc_{avg}"] = clean(metrics.roc_auc_score(y, probs, multi_class="ovr", average=avg, labels=list(range(k)))
                                        if k > 2 else metrics.roc_auc_score(y, probs[:, 1]))
        entry[f"ap_{avg}"] = clean(metrics.average_precision_score(onehot, probs, average=avg))
    entry["top2"] = clean(metrics.top_k_accuracy_score(y, probs, k=2, labels=list(range(k)))) if k > 2 else None
    entry["roc_auc_binary_class1"] = clean(metrics.roc_auc_score(y == 1, probs[:, 1]))
    entry["ap_binary_class1"] = clean(metrics.average_precision_score(y == 1, probs[:, 1]))
    rank.append(entry)
multi = []
for i, (n, k) in enumerate([(30, 4), (25, 3)]):
    probs = rng.random((n, k))
    yt = (rng.random((n, k)) > 0.6).astype(int)
    if i == 1:
        yt[:, 2] = 0  # a label never present
        yt[3] = 0  # a sample with no labels
    yp = (probs >= 0.5).astype(int)
    entry = dict(name=f"multilabel_{i}", labels=k, probs=probs.reshape(-1).tolist(), targets=yt.reshape(-1).tolist(), prf=[])
    for zd_name, zd in [("zero", 0.0), ("one", 1.0), ("nan", np.nan)]:
        for avg in ["micro", "macro", "weighted", "samples"]:
            p, r, f, _ = metrics.precision_recall_fscore_support(yt, yp, beta=1.0, average=avg, zero_division=zd)
            entry["prf"].append(dict(average=avg, zero_division=zd_name, precision=clean(p), recall=clean(r), f=clean(f)))
    entry["report"] = metrics.classification_report(yt, yp, digits=4, zero_division=0)
    multi.append(entry)
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(dict(sklearn=sklearn.__version__, cases=cases, segmentation=seg, regression=reg,
                               ranking=rank, multilabel=multi)) + "\n")
print(len(cases), "cases,", OUT.stat().st_size, "bytes")
