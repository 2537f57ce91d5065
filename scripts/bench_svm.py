"""SVM speed comparison on one machine, in one run: sconce (svm-train / svm-predict examples)
against scikit-learn's SVC and OpenCV's ml::SVM (LIBSVM's algorithm, eps=1e-3).

Problem: C-SVC, RBF, C=1, gamma='scale', tol 1e-3, 200 MB cache, on
make_classification(n_samples=N, n_features=50, random_state=0). Reports fit and
decision-function wall/CPU seconds (median of --repeats runs), support vectors, the dual objective (scikit-learn's
computed from its dual coefficients) and the ratios reference/sconce.

Run (after `cargo build --release --example svm-train --example svm-predict`):
  .venv-ref/bin/python scripts/bench_svm.py [--sizes 5000,20000] [--json docs/svm_bench.json]
OpenCV is optional (`pip install "opencv-python-headless<5"`; 5.x wheels have no cv2.ml).
"""
import argparse
import json
import os
import re
import resource
import subprocess
import tempfile
import time

import numpy as np
from sklearn.datasets import make_classification
from sklearn.svm import SVC

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


REPEATS = 3


def timed(fn):
    """Median wall (and its CPU) over REPEATS runs; returns the last result."""
    runs = []
    for _ in range(REPEATS):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    runs.sort()
    w, c = runs[len(runs) // 2]
    return out, w, c


def run_child(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    inner = re.search(r"\((\d+) samples, ([0-9.]+) s\)", p.stderr)
    return p.stdout, float(inner.group(2)) if inner else wall, wall, cpu


def median_child(cmd):
    runs = sorted((run_child(cmd) for _ in range(REPEATS)), key=lambda r: r[1])
    return runs[len(runs) // 2]


def sconce(bindir, data, flags, tmp):
    model = os.path.join(tmp, "m.model")
    out, fit_s, proc_wall, cpu = median_child([os.path.join(bindir, "svm-train"), *flags, "-g", "scale", "-m", "200", data, model])
    obj = float(re.search(r"obj = (\S+),", out).group(1))
    nsv = int(re.search(r"Total nSV = (\d+)", out).group(1))
    iters = int(re.search(r"#iter = (\d+)", out).group(1))
    pout, pred_s, _, pcpu = median_child([os.path.join(bindir, "svm-predict"), data, model, os.path.join(tmp, "p.out")])
    acc = re.search(r"Accuracy = (\S+)%", pout).group(1)
    return {"fit_s": fit_s, "fit_process_wall_s": proc_wall, "fit_cpu_s": cpu, "obj": obj, "nsv": nsv, "iters": iters,
            "predict_s": pred_s, "predict_cpu_s": pcpu, "train_acc": float(acc) / 100}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5000,20000")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/examples"))
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=3, help="median of this many runs per measurement")
    args = ap.parse_args()
    global REPEATS
    REPEATS = args.repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            X, y = make_classification(n_samples=n, n_features=50, random_state=0)
            gamma = 1.0 / (X.shape[1] * X.var())
            data = os.path.join(tmp, f"mc{n}.libsvm")
            with open(data, "w") as f:
                for r, l in zip(X, y):
                    f.write(("+1" if l == 1 else "-1") + " " + " ".join("%d:%.17g" % (j + 1, v) for j, v in enumerate(r)) + "\n")
            row = {"n": n, "d": 50, "gamma": gamma}
            # scikit-learn (single-threaded LIBSVM 3.10 fork, dense).
            m, w, c = timed(lambda: SVC(C=1.0, gamma="scale", tol=1e-3, cache_size=200).fit(X, y))
            dec_sv = m.decision_function(m.support_vectors_) - m.intercept_[0]
            a = m.dual_coef_[0]
            obj = 0.5 * float(a @ dec_sv) - float(np.abs(a).sum())
            _, pw, pc = timed(lambda: m.decision_function(X))
            row["sklearn"] = {"fit_s": w, "fit_cpu_s": c, "nsv": int(m.n_support_.sum()), "iters": int(m.n_iter_[0]), "obj": obj,
                              "predict_s": pw, "predict_cpu_s": pc, "train_acc": float((m.predict(X) == y).mean())}
            # OpenCV ml::SVM with LIBSVM's tolerance (its default stops after 1000 iterations).
            try:
                import cv2

                svm = cv2.ml.SVM_create()
                svm.setType(cv2.ml.SVM_C_SVC)
                svm.setKernel(cv2.ml.SVM_RBF)
                svm.setC(1.0)
                svm.setGamma(gamma)
                svm.setTermCriteria((cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 100000000, 1e-3))
                Xf, yi = X.astype(np.float32), y.astype(np.int32)
                _, w, c = timed(lambda: svm.train(Xf, cv2.ml.ROW_SAMPLE, yi))
                (_, pred), pw, pc = timed(lambda: svm.predict(Xf))
                row["opencv"] = {"version": cv2.__version__, "fit_s": w, "fit_cpu_s": c, "nsv": int(svm.getSupportVectors().shape[0]),
                                 "predict_s": pw, "predict_cpu_s": pc, "train_acc": float((pred.ravel() == y).mean())}
            except ImportError:
                row["opencv"] = None
            row["sconce"] = sconce(args.bin, data, [], tmp)
            row["sconce_f32"] = sconce(args.bin, data, ["-f", "1"], tmp)
            s = row["sconce"]
            row["ratios"] = {
                "sklearn_fit/sconce_fit": row["sklearn"]["fit_s"] / s["fit_s"],
                "sklearn_fit/sconce_f32_fit": row["sklearn"]["fit_s"] / row["sconce_f32"]["fit_s"],
                "sklearn_predict/sconce_predict": row["sklearn"]["predict_s"] / s["predict_s"],
                "obj_rel_diff": abs(s["obj"] - row["sklearn"]["obj"]) / abs(row["sklearn"]["obj"]),
            }
            if row["opencv"]:
                row["ratios"]["opencv_fit/sconce_fit"] = row["opencv"]["fit_s"] / s["fit_s"]
                row["ratios"]["opencv_fit/sconce_f32_fit"] = row["opencv"]["fit_s"] / row["sconce_f32"]["fit_s"]
                row["ratios"]["opencv_predict/sconce_predict"] = row["opencv"]["predict_s"] / s["predict_s"]
            rows.append(row)
            print(f"N={n}")
            for eng in ["sklearn", "opencv", "sconce", "sconce_f32"]:
                e = row.get(eng)
                if e:
                    print(f"  {eng:11s} fit {e['fit_s']:7.3f} s wall ({e.get('fit_cpu_s', 0):6.3f} s cpu)  predict {e['predict_s']:6.3f} s"
                          f"  nSV {e['nsv']}  obj {e.get('obj', float('nan')):.6f}  train acc {e['train_acc']:.5f}")
            print("  ratios", {k: round(v, 3) if k != "obj_rel_diff" else v for k, v in row["ratios"].items()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
