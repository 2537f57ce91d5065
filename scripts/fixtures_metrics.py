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
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(dict(sklearn=sklearn.__version__, cases=cases)) + "\n")
print(len(cases), "cases,", OUT.stat().st_size, "bytes")
