"""Reference fixtures for sconce-svm, made by LIBSVM's own command-line tools.

The reference is LIBSVM 3.37 built from its source (`--libsvm-src`: a checkout of
cjlin1/libsvm; the script compiles svm-train/svm-predict with `g++ -O2`). Debian's
libsvm-tools 3.24 also works (`--libsvm-bin`), but its SMO paths differ slightly from 3.37's
(different iteration counts on some problems; same objectives to 1e-6).

For every case (formulation x kernel x dataset) it runs `svm-train` with the case's flags,
records what LIBSVM prints per sub-problem (#iter, obj, rho, nSV, nBSV, nu / C / epsilon),
keeps the model file, and runs `svm-predict` (with -b 1 for probability models) on the
training file. Chi-squared and intersection kernels (not in LIBSVM) are run through LIBSVM's
precomputed kernel (-t 4) with the Gram matrix computed here in float64. gamma='scale' is
computed as scikit-learn does (1 / (n_features * X.var())) and passed to LIBSVM with -g.

Datasets (LIBSVM format, values written with %.17g so they are exact):
  heart_scale (from the LIBSVM source tree, copied as is), bc_mm (breast cancer, min-max to
  [-1,1]), iris_mm, wine_mm, diab_z (diabetes, y z-scored), digits300 (300 digits / 16,
  non-negative: for chi2/intersection).

Writes crates/sconce-svm/tests/fixtures/{*.libsvm, *.model, *.pred, cases.json} and, with
--libsvm-src, scale/ (svm-scale's outputs, which .ci/run compares the svm-scale example with).
Run: .venv-ref/bin/python scripts/fixtures_svm.py --libsvm-src DIR   (heart_scale is taken from it)
LIBSVM's tools: `apt-get install libsvm-tools` (Debian: LIBSVM 3.24), or without root:
  apt-get download libsvm-tools libsvm3 && for f in libsvm*.deb; do dpkg -x $f /opt/libsvm; done
  then --libsvm-bin /opt/libsvm/usr/bin (LD_LIBRARY_PATH is set from it).
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import numpy as np
from sklearn import datasets

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/sconce-svm/tests/fixtures"


def write_libsvm(path, X, y, precomputed=False):
    with open(path, "w") as f:
        for i, (row, label) in enumerate(zip(X, y)):
            parts = ["%.17g" % label]
            if precomputed:
                parts.append("0:%d" % (i + 1))
                parts += ["%d:%.17g" % (j + 1, v) for j, v in enumerate(row)]
            else:
                parts += ["%d:%.17g" % (j + 1, v) for j, v in enumerate(row) if v != 0]
            f.write(" ".join(parts) + "\n")


def read_libsvm(path):
    rows, ys, m = [], [], 0
    for line in open(path):
        t = line.split()
        ys.append(float(t[0]))
        d = {int(a): float(b) for a, b in (p.split(":") for p in t[1:])}
        rows.append(d)
        m = max([m] + list(d))
    X = np.zeros((len(rows), m))
    for i, d in enumerate(rows):
        for k, v in d.items():
            X[i, k - 1] = v
    return X, np.array(ys)


def minmax(X):
    lo, hi = X.min(0), X.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return -1 + 2 * (X - lo) / span


def gamma_scale(X):
    v = X.var()
    return 1.0 / (X.shape[1] * v) if v != 0 else 1.0


def chi2_gram(A, B, gamma):
    K = np.zeros((len(A), len(B)))
    for i, a in enumerate(A):
        num = (a[None, :] - B) ** 2
        den = a[None, :] + B
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(den != 0, num / np.where(den != 0, den, 1), 0.0)
        K[i] = np.exp(-gamma * t.sum(1))
    return K


def inter_gram(A, B):
    return np.array([np.minimum(a[None, :], B).sum(1) for a in A])


STAT = re.compile(r"^(optimization finished, #iter = (\d+)|nu = (\S+)|C = (\S+)|epsilon = (\S+)|obj = (\S+), rho = (\S+)|nSV = (\d+), nBSV = (\d+))")


def parse_train_stdout(text):
    pairs, cur = [], None
    for line in text.splitlines():
        line = line.lstrip(".*")
        m = STAT.match(line)
        if not m:
            continue
        if m.group(2):
            cur = {"iter": int(m.group(2))}
            pairs.append(cur)
        elif m.group(3):
            cur["nu"] = float(m.group(3))
        elif m.group(4):
            cur["C"] = float(m.group(4))
        elif m.group(5):
            cur["epsilon"] = float(m.group(5))
        elif m.group(6):
            cur["obj"] = float(m.group(6))
            cur["rho"] = float(m.group(7))
        elif m.group(8):
            cur["nSV"] = int(m.group(8))
            cur["nBSV"] = int(m.group(9))
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libsvm-bin", default=os.environ.get("LIBSVM_BIN"))
    ap.add_argument("--libsvm-src", help="a cjlin1/libsvm checkout to build (preferred)")
    ap.add_argument("--heart-scale", default=None)
    args = ap.parse_args()
    version = None
    if args.libsvm_src:
        src = pathlib.Path(args.libsvm_src)
        bindir = tempfile.mkdtemp(prefix="libsvm-build-")
        subprocess.run(["g++", "-O2", "-fPIC", "-c", str(src / "svm.cpp"), "-o", f"{bindir}/svm.o"], check=True)
        for tool in ["svm-train", "svm-predict"]:
            subprocess.run(["g++", "-O2", str(src / f"{tool}.c"), f"{bindir}/svm.o", "-o", f"{bindir}/{tool}", "-lm"], check=True)
        subprocess.run(["gcc", "-O2", str(src / "svm-scale.c"), "-o", f"{bindir}/svm-scale"], check=True)
        head = subprocess.run(["git", "-C", str(src), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        ver = re.search(r"LIBSVM_VERSION (\d+)", (src / "svm.h").read_text()).group(1)
        version = f"LIBSVM {ver} built from source ({head or 'no git'}), g++ -O2"
        args.heart_scale = args.heart_scale or str(src / "heart_scale")
    else:
        bindir = args.libsvm_bin or os.path.dirname(shutil.which("svm-train") or "/opt/libsvm/usr/bin/svm-train")
    env = dict(os.environ)
    lib = pathlib.Path(bindir).parent / "lib/x86_64-linux-gnu"
    if lib.exists():
        env["LD_LIBRARY_PATH"] = str(lib)
    train_bin, predict_bin = os.path.join(bindir, "svm-train"), os.path.join(bindir, "svm-predict")
    if version is None:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libsvm-tools"], capture_output=True, text=True).stdout
        version = "Debian libsvm-tools " + (version or "3.24+ds-6 (extracted)")
    OUT.mkdir(parents=True, exist_ok=True)

    # Datasets.
    data = {}
    shutil.copy(args.heart_scale, OUT / "heart_scale.libsvm")
    data["heart_scale"] = read_libsvm(OUT / "heart_scale.libsvm")
    bc = datasets.load_breast_cancer()
    data["bc_mm"] = (minmax(bc.data), np.where(bc.target == 1, 1.0, -1.0))
    iris = datasets.load_iris()
    data["iris_mm"] = (minmax(iris.data), iris.target.astype(float) + 1)
    wine = datasets.load_wine()
    data["wine_mm"] = (minmax(wine.data), wine.target.astype(float) + 1)
    diab = datasets.load_diabetes(scaled=False)
    data["diab_z"] = (minmax(diab.data), (diab.target - diab.target.mean()) / diab.target.std())
    dg = datasets.load_digits()
    rng = np.random.RandomState(0)
    pick = np.sort(rng.choice(len(dg.target), 300, replace=False))
    data["digits300"] = (dg.data[pick] / 16.0, dg.target[pick].astype(float))
    # A 50-sample iris subset (every third row) for the precomputed-kernel case: its Gram
    # file stays small.
    data["iris50"] = (data["iris_mm"][0][::3], data["iris_mm"][1][::3])
    for name, (X, y) in data.items():
        if name != "heart_scale":
            write_libsvm(OUT / f"{name}.libsvm", X, y)

    def g(name):
        return "%.17g" % gamma_scale(data[name][0])

    cases = [
        # (case, dataset, flags, sconce-only flags replacing LIBSVM's (for chi2/inter))
        ("csvc_rbf_heart", "heart_scale", "-s 0 -t 2", None),
        ("csvc_rbf_heart_noshrink", "heart_scale", "-s 0 -t 2 -h 0 -c 4", None),
        ("csvc_rbf_bc_scale", "bc_mm", f"-s 0 -t 2 -g {g('bc_mm')}", "-s 0 -t 2 -g scale"),
        ("csvc_lin_bc", "bc_mm", "-s 0 -t 0 -c 0.5", None),
        ("csvc_poly_iris", "iris_mm", "-s 0 -t 1 -d 3 -g 0.5 -r 1 -c 2", None),
        ("csvc_sig_heart", "heart_scale", "-s 0 -t 3 -g 0.01 -r -0.5", None),
        ("csvc_rbf_iris_scale", "iris_mm", f"-s 0 -t 2 -g {g('iris_mm')}", "-s 0 -t 2 -g scale"),
        ("csvc_rbf_wine_weights", "wine_mm", "-s 0 -t 2 -c 2 -w1 0.5 -w3 4", None),
        ("csvc_rbf_digits", "digits300", "-s 0 -t 2 -g 0.02 -c 10", None),
        ("nusvc_rbf_bc", "bc_mm", f"-s 1 -t 2 -g {g('bc_mm')}", None),
        ("nusvc_rbf_iris", "iris_mm", "-s 1 -t 2 -n 0.3", None),
        ("nusvc_lin_heart", "heart_scale", "-s 1 -t 0 -n 0.4 -h 0", None),
        ("oneclass_rbf_bc", "bc_mm", f"-s 2 -t 2 -g {g('bc_mm')}", None),
        ("oneclass_rbf_iris_nu01", "iris_mm", "-s 2 -t 2 -n 0.1 -g 0.5", None),
        ("epssvr_rbf_diab_scale", "diab_z", f"-s 3 -t 2 -g {g('diab_z')}", "-s 3 -t 2 -g scale"),
        ("epssvr_poly_diab", "diab_z", "-s 3 -t 1 -d 2 -g 0.1 -r 1 -c 3 -p 0.2", None),
        ("epssvr_lin_diab_noshrink", "diab_z", "-s 3 -t 0 -p 0.3 -h 0", None),
        ("nusvr_rbf_diab", "diab_z", "-s 4 -t 2 -g 0.1", None),
        ("nusvr_rbf_diab_c10", "diab_z", "-s 4 -t 2 -g 0.1 -c 10", None),
        ("csvc_chi2_digits", "digits300", "-s 0 -t 4 -c 5", "-s 0 -t 5 -g 0.5 -c 5"),
        ("csvc_inter_digits", "digits300", "-s 0 -t 4 -c 0.5", "-s 0 -t 6 -c 0.5"),
        ("csvc_precomputed_iris", "iris50", "-s 0 -t 4 -c 3", None),
        # Probability models: LIBSVM's internal CV uses C's rand(), so only predictions from
        # LIBSVM's model are compared (sigmoid + coupling), not the fitted probA/probB.
        ("csvc_rbf_iris_prob", "iris_mm", "-s 0 -t 2 -b 1", None),
        ("csvc_rbf_heart_prob", "heart_scale", "-s 0 -t 2 -b 1", None),
        ("epssvr_rbf_diab_prob", "diab_z", "-s 3 -t 2 -g 0.1 -b 1", None),
        # One-class probabilities (LIBSVM ≥ 3.25): density marks from the training decision
        # values, no internal CV, so the model's marks themselves are compared.
        ("oneclass_rbf_heart_prob", "heart_scale", "-s 2 -t 2 -b 1", None),
    ]
    out_cases = []
    for name, dset, flags, sconce_flags in cases:
        X, y = data[dset]
        train_file = OUT / f"{dset}.libsvm"
        kernel_note = None
        if " -t 4" in f" {flags}":
            if name.startswith("csvc_chi2"):
                K = chi2_gram(X, X, 0.5)
                kernel_note = "chi2 gamma=0.5"
            elif name.startswith("csvc_inter"):
                K = inter_gram(X, X)
                kernel_note = "intersection"
            else:
                K = X @ X.T
                kernel_note = "linear Gram"
            train_file = OUT / f"{name}.gram.libsvm"
            write_libsvm(train_file, K, y, precomputed=True)
        model = OUT / f"{name}.model"
        pred = OUT / f"{name}.pred"
        r = subprocess.run([train_bin, *flags.split(), str(train_file), str(model)], env=env, capture_output=True, text=True, check=True)
        pairs = parse_train_stdout(r.stdout)
        if "-b 1" in flags:
            # LIBSVM also prints the 5 internal CV trainings: classification runs them before
            # each pair's final solve, regression after its only solve.
            pairs = pairs[:1] if name.startswith(("eps", "nusvr", "oneclass")) else pairs[5::6]
        b = ["-b", "1"] if "-b 1" in flags else []
        p = subprocess.run([predict_bin, *b, str(train_file), str(model), str(pred)], env=env, capture_output=True, text=True, check=True)
        if kernel_note and kernel_note != "linear Gram":
            # Rust trains chi2/intersection on the features; the Gram file only fed LIBSVM.
            train_file.unlink()
        out_cases.append({
            "name": name,
            "data": train_file.name,
            "features": f"{dset}.libsvm",
            "libsvm_flags": flags,
            "sconce_flags": sconce_flags or flags,
            "kernel_note": kernel_note,
            "gamma_scale": gamma_scale(X),
            "pairs": pairs,
            "model": model.name,
            "pred": pred.name,
            "predict_stdout": p.stdout.strip().splitlines()[-2:] if "-b 1" in flags and name.startswith("eps") else p.stdout.strip().splitlines()[-1:],
        })
        print(name, [(q["iter"], q["obj"], q["nSV"]) for q in pairs][:3])

    # svm-scale's own output (for the svm-scale example, compared byte for byte by .ci/run):
    # [0, 1] with the factors saved, y scaling, and another file restored from those factors
    # (stderr holds LIBSVM's density warning).
    scale_bin = os.path.join(bindir, "svm-scale")
    if os.path.exists(scale_bin):
        sd = OUT / "scale"
        sd.mkdir(exist_ok=True)
        for out, args in [("wine_l0_u1", ["-l", "0", "-u", "1", "-s", str(sd / "wine_l0_u1.range"), str(OUT / "wine_mm.libsvm")]),
                          ("diab_y", ["-y", "-1", "1", str(OUT / "diab_z.libsvm")]),
                          ("iris_restore_wine", ["-r", str(sd / "wine_l0_u1.range"), str(OUT / "iris_mm.libsvm")])]:
            r = subprocess.run([scale_bin, *args], env=env, capture_output=True, text=True, check=True)
            (sd / f"{out}.out").write_text(r.stdout)
            if r.stderr:
                (sd / f"{out}.err").write_text(r.stderr)

    # 5-fold CV accuracy of LIBSVM on heart_scale (its documented 83.3333%) for the record.
    r = subprocess.run([train_bin, "-v", "5", "-q", str(OUT / "heart_scale.libsvm")], env=env, capture_output=True, text=True, check=True)
    # scikit-learn's decision_function shapes on iris_mm (labels already in sorted order, so
    # scikit-learn's class order equals LIBSVM's): ovo (150×3) and ovr (150×3), γ='scale'.
    from sklearn.svm import SVC

    Xi, yi = data["iris_mm"]
    ovo = SVC(C=1.0, gamma="scale", decision_function_shape="ovo").fit(Xi, yi).decision_function(Xi)
    ovr = SVC(C=1.0, gamma="scale", decision_function_shape="ovr").fit(Xi, yi).decision_function(Xi)
    sklearn_ref = {"data": "iris_mm.libsvm", "ovo": ovo.tolist(), "ovr": ovr.tolist()}
    meta = {"sklearn_iris_decision": sklearn_ref, "libsvm": version.strip(), "heart_scale_cv5": r.stdout.strip(), "cases": out_cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
