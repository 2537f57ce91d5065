//! Training (`svm_train`: class grouping, one-vs-one pairs, the five formulations) and the
//! trained model: decision values, votes, probabilities, in LIBSVM's layout.

use rayon::prelude::*;
use sconce_core::{Error, Result, SeededRng};

use crate::features::Features;
use crate::kernel::{Kernel, KernelRows, KernelType};
use crate::params::{SvmParams, SvmType};
use crate::prob;
use crate::solver::{QMat, SolveOptions, solve};

/// What the solver reported for one sub-problem (one per class pair, or one in total).
#[derive(Debug, Clone, PartialEq)]
pub struct SolveInfo {
    /// Dual objective at the solution (LIBSVM's `obj`; nu-SVC: divided by r²).
    pub obj: f64,
    /// The bias: `f(x) = Σ coefᵢ K(xᵢ, x) − rho`.
    pub rho: f64,
    /// SMO iterations.
    pub iterations: usize,
    /// False when the iteration cap stopped the solver.
    pub converged: bool,
    /// Support vectors of this sub-problem.
    pub n_sv: usize,
    /// Bounded support vectors (α at the upper bound).
    pub n_bsv: usize,
    /// C-SVC with equal class costs and ε-SVR: the ν this solution corresponds to.
    pub nu: Option<f64>,
    /// ν-SVC: the C this solution corresponds to (`1/r`).
    pub c: Option<f64>,
    /// ν-SVR: the tube width found (`−r`).
    pub epsilon: Option<f64>,
    /// Kernel columns computed (cache misses).
    pub kernel_columns: usize,
}

/// A trained SVM, laid out as LIBSVM's `svm_model` (and its model file).
#[derive(Debug, Clone, PartialEq)]
pub struct SvmModel {
    pub(crate) svm_type: SvmType,
    pub(crate) kernel: Kernel,
    /// Classes (2 for regression and one-class, as LIBSVM).
    pub(crate) nr_class: usize,
    /// Class labels in LIBSVM's order (first occurrence; +1 before −1 for ±1 labels).
    pub(crate) labels: Vec<i32>,
    /// Support vectors per class (classification only).
    pub(crate) n_sv: Vec<usize>,
    /// The support vectors, grouped by class.
    pub(crate) sv: Features,
    /// `(nr_class − 1) × total_sv` coefficients in LIBSVM's one-vs-one layout.
    pub(crate) sv_coef: Vec<Vec<f64>>,
    /// One bias per decision function.
    pub(crate) rho: Vec<f64>,
    pub(crate) prob_a: Option<Vec<f64>>,
    pub(crate) prob_b: Option<Vec<f64>>,
    pub(crate) prob_density_marks: Option<Vec<f64>>,
    /// 0-based training indices of the support vectors (empty for a loaded model).
    pub(crate) sv_indices: Vec<usize>,
    pub(crate) info: Vec<SolveInfo>,
    /// Largest feature index of the training data.
    pub(crate) n_features: u32,
    pub(crate) predict_from_probability: bool,
}

/// Labels grouped LIBSVM's way.
pub(crate) struct Groups {
    pub(crate) labels: Vec<i32>,
    pub(crate) start: Vec<usize>,
    pub(crate) count: Vec<usize>,
    /// Grouped position → original sample.
    pub(crate) perm: Vec<usize>,
}

/// `svm_group_classes`: labels by first occurrence, except that a two-class ±1 problem whose
/// first label is −1 is swapped so that +1 is the positive class.
pub(crate) fn group_classes(y: &[i32]) -> Groups {
    let mut labels: Vec<i32> = Vec::new();
    let mut count: Vec<usize> = Vec::new();
    let mut data_label = Vec::with_capacity(y.len());
    for &v in y {
        match labels.iter().position(|&l| l == v) {
            Some(j) => {
                count[j] += 1;
                data_label.push(j);
            }
            None => {
                labels.push(v);
                count.push(1);
                data_label.push(labels.len() - 1);
            }
        }
    }
    if labels.len() == 2 && labels[0] == -1 && labels[1] == 1 {
        labels.swap(0, 1);
        count.swap(0, 1);
        for d in &mut data_label {
            *d = 1 - *d;
        }
    }
    let k = labels.len();
    let mut start = vec![0; k];
    for i in 1..k {
        start[i] = start[i - 1] + count[i - 1];
    }
    let mut next = start.clone();
    let mut perm = vec![0; y.len()];
    for (i, &d) in data_label.iter().enumerate() {
        perm[next[d]] = i;
        next[d] += 1;
    }
    Groups { labels, start, count, perm }
}

/// The integer class labels of `y`, or an error naming the first non-integer.
pub(crate) fn class_labels(y: &[f64]) -> Result<Vec<i32>> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v.abs() <= f64::from(i32::MAX) {
                Ok(v as i32)
            } else {
                Err(Error::data(
                    "labels",
                    format!(
                        "row {} has label {v}; classification labels must be integers (use epsilon_svr or nu_svr for real-valued targets)",
                        i + 1
                    ),
                ))
            }
        })
        .collect()
}

/// The solution of one sub-problem over samples `idx` of `x`.
pub(crate) struct OneSolution {
    /// Signed coefficients per sample of `idx`.
    pub(crate) alpha: Vec<f64>,
    pub(crate) info: SolveInfo,
}

fn cache_bytes(params: &SvmParams, share: usize) -> usize {
    ((params.cache_mb * f64::from(1u32 << 20)) / share.max(1) as f64) as usize
}

/// `svm_train_one`: solves the formulation on samples `idx` with targets `y` (±1 for
/// classification).
pub(crate) fn train_one(
    x: &Features,
    idx: &[usize],
    y: &[f64],
    params: &SvmParams,
    kernel: Kernel,
    cp: f64,
    cn: f64,
    cache_share: usize,
) -> OneSolution {
    let l = idx.len();
    let bytes = cache_bytes(params, cache_share);
    let rows = KernelRows::with_precision(x, idx.to_vec(), kernel, params.single_precision);
    let opts = |nu: bool| SolveOptions { eps: params.eps, shrinking: params.shrinking, nu, max_iter: params.max_iter };
    let ysign: Vec<i8> = y.iter().map(|&v| if v > 0.0 { 1 } else { -1 }).collect();
    let (alpha, sol, ub_p, ub_n, info_extra) = match params.svm_type {
        SvmType::CSvc => {
            let mut q = QMat::svc(rows, &ysign, bytes);
            let sol = solve(&mut q, &vec![-1.0; l], &ysign, &vec![0.0; l], cp, cn, &opts(false));
            let sum: f64 = sol.alpha.iter().sum();
            let nu = (cp == cn).then(|| sum / (cp * l as f64));
            let alpha = sol.alpha.iter().zip(&ysign).map(|(a, &s)| a * f64::from(s)).collect();
            (alpha, sol, cp, cn, (nu, None, None))
        }
        SvmType::NuSvc => {
            let (mut sum_pos, mut sum_neg) = (params.nu * l as f64 / 2.0, params.nu * l as f64 / 2.0);
            let a0: Vec<f64> = ysign
                .iter()
                .map(|&s| {
                    let s = if s == 1 { &mut sum_pos } else { &mut sum_neg };
                    let a = f64::min(1.0, *s);
                    *s -= a;
                    a
                })
                .collect();
            let mut q = QMat::svc(rows, &ysign, bytes);
            let mut sol = solve(&mut q, &vec![0.0; l], &ysign, &a0, 1.0, 1.0, &opts(true));
            let r = sol.r;
            let alpha = sol.alpha.iter().zip(&ysign).map(|(a, &s)| a * (f64::from(s) / r)).collect();
            sol.rho /= r;
            sol.obj /= r * r;
            (alpha, sol, 1.0 / r, 1.0 / r, (None, Some(1.0 / r), None))
        }
        SvmType::OneClass => {
            let n = (params.nu * l as f64) as usize;
            let mut a0 = vec![0.0; l];
            for a in a0.iter_mut().take(n) {
                *a = 1.0;
            }
            if n < l {
                a0[n] = params.nu * l as f64 - n as f64;
            }
            let ones = vec![1i8; l];
            let mut q = QMat::one_class(rows, bytes);
            let sol = solve(&mut q, &vec![0.0; l], &ones, &a0, 1.0, 1.0, &opts(false));
            (sol.alpha.clone(), sol, 1.0, 1.0, (None, None, None))
        }
        SvmType::EpsilonSvr => {
            let mut p = vec![0.0; 2 * l];
            let mut ys = vec![1i8; 2 * l];
            for i in 0..l {
                p[i] = params.p - y[i];
                p[i + l] = params.p + y[i];
                ys[i + l] = -1;
            }
            let mut q = QMat::svr(rows, bytes);
            let sol = solve(&mut q, &p, &ys, &vec![0.0; 2 * l], params.c, params.c, &opts(false));
            let alpha: Vec<f64> = (0..l).map(|i| sol.alpha[i] - sol.alpha[i + l]).collect();
            let nu = alpha.iter().map(|a| a.abs()).sum::<f64>() / (params.c * l as f64);
            (alpha, sol, params.c, params.c, (Some(nu), None, None))
        }
        SvmType::NuSvr => {
            let c = params.c;
            let mut sum = c * params.nu * l as f64 / 2.0;
            let mut a0 = vec![0.0; 2 * l];
            let mut p = vec![0.0; 2 * l];
            let mut ys = vec![1i8; 2 * l];
            for i in 0..l {
                let a = f64::min(sum, c);
                a0[i] = a;
                a0[i + l] = a;
                sum -= a;
                p[i] = -y[i];
                p[i + l] = y[i];
                ys[i + l] = -1;
            }
            let mut q = QMat::svr(rows, bytes);
            let sol = solve(&mut q, &p, &ys, &a0, c, c, &opts(true));
            let alpha = (0..l).map(|i| sol.alpha[i] - sol.alpha[i + l]).collect();
            let eps = -sol.r;
            (alpha, sol, c, c, (None, None, Some(eps)))
        }
    };
    let mut n_sv = 0;
    let mut n_bsv = 0;
    for (i, a) in alpha.iter().enumerate() {
        if a.abs() > 0.0 {
            n_sv += 1;
            let ub = if y[i] > 0.0 { ub_p } else { ub_n };
            if a.abs() >= ub {
                n_bsv += 1;
            }
        }
    }
    OneSolution {
        alpha,
        info: SolveInfo {
            obj: sol.obj,
            rho: sol.rho,
            iterations: sol.iterations,
            converged: sol.converged,
            n_sv,
            n_bsv,
            nu: info_extra.0,
            c: info_extra.1,
            epsilon: info_extra.2,
            kernel_columns: sol.columns_computed,
        },
    }
}

/// A decision function over training samples: `Σ coef·K(x_sv, ·) − rho`.
pub(crate) struct SubModel {
    sv: Vec<usize>,
    coef: Vec<f64>,
    rho: f64,
}

impl SubModel {
    pub(crate) fn from_solution(idx: &[usize], s: &OneSolution) -> Self {
        let (mut sv, mut coef) = (Vec::new(), Vec::new());
        for (k, &a) in s.alpha.iter().enumerate() {
            if a.abs() > 0.0 {
                sv.push(idx[k]);
                coef.push(a);
            }
        }
        Self { sv, coef, rho: s.info.rho }
    }

    pub(crate) fn decision(&self, x: &Features, kernel: &Kernel, row: usize) -> f64 {
        let r = x.row(row);
        let mut sum = 0.0;
        for (&s, &c) in self.sv.iter().zip(&self.coef) {
            sum += c * kernel.eval(r, x.row(s));
        }
        sum - self.rho
    }
}

/// Checks the data against the parameters before training.
fn check_data(params: &SvmParams, x: &Features, y: &[f64]) -> Result<()> {
    let ignored = params.svm_type == SvmType::OneClass && y.is_empty();
    if x.rows() != y.len() && !ignored {
        return Err(Error::shape(
            "SVM training targets",
            format!("{} targets (one per sample; one-class also accepts none)", x.rows()),
            &[y.len()],
        ));
    }
    if x.rows() == 0 {
        return Err(Error::data(
            "training set",
            "no samples; an SVM needs at least one (two classes for classification)",
        ));
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(Error::data("targets", format!("row {} holds {}; targets must be finite", i + 1, y[i])));
    }
    if matches!(params.kernel, KernelType::Chi2 | KernelType::Intersection) && x.has_negative() {
        return Err(Error::data(
            "features",
            format!(
                "the {} kernel is defined for non-negative features (histograms); shift or rescale them to ≥ 0",
                params.kernel.name()
            ),
        ));
    }
    if params.kernel == KernelType::Precomputed {
        let l = x.max_index();
        for r in 0..x.rows() {
            let id = x.row(r).get(0);
            if !(id >= 1.0 && id.fract() == 0.0 && id <= f64::from(l)) {
                return Err(Error::data(
                    "precomputed kernel",
                    format!(
                        "row {} needs `0:id` with an integer id in 1..={l} (LIBSVM's precomputed layout); found {id}",
                        r + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl SvmParams {
    /// Trains on features `x` and targets `y` (integer class labels for C-SVC/ν-SVC, real
    /// values for the regressions; ignored for one-class, which also accepts `&[]`).
    ///
    /// # Errors
    /// [`Error::Config`] for invalid parameters (an infeasible ν included); [`Error::Data`] /
    /// [`Error::Shape`] for empty, single-class, non-finite or mismatched data.
    pub fn train(&self, x: &Features, y: &[f64]) -> Result<SvmModel> {
        self.validate()?;
        check_data(self, x, y)?;
        let kernel = Kernel { kind: self.kernel, degree: self.degree, gamma: self.gamma.resolve(x), coef0: self.coef0 };
        let n_features = x.max_index();
        let all: Vec<usize> = (0..x.rows()).collect();
        let ones;
        let y = if y.is_empty() {
            ones = vec![1.0; x.rows()];
            &ones[..]
        } else {
            y
        };
        if !self.svm_type.is_classification() {
            let s = train_one(x, &all, y, self, kernel, 0.0, 0.0, 1);
            let sv_idx: Vec<usize> = (0..all.len()).filter(|&i| s.alpha[i].abs() > 0.0).collect();
            let coef: Vec<f64> = sv_idx.iter().map(|&i| s.alpha[i]).collect();
            let mut model = SvmModel {
                svm_type: self.svm_type,
                kernel,
                nr_class: 2,
                labels: Vec::new(),
                n_sv: Vec::new(),
                sv: x.select(&sv_idx),
                sv_coef: vec![coef],
                rho: vec![s.info.rho],
                prob_a: None,
                prob_b: None,
                prob_density_marks: None,
                sv_indices: sv_idx,
                info: vec![s.info],
                n_features,
                predict_from_probability: self.predict_from_probability,
            };
            if self.probability {
                if self.svm_type.is_regression() {
                    model.prob_a = Some(vec![svr_probability(self, x, y)?]);
                } else {
                    let dec = model.decision_values(x)?;
                    match prob::one_class_marks(dec) {
                        Some(m) => model.prob_density_marks = Some(m),
                        None => tracing::warn!(
                            "fewer than 5 positive or negative decision values: too few to estimate one-class probabilities"
                        ),
                    }
                }
            }
            return Ok(model);
        }

        let yi = class_labels(y)?;
        let g = group_classes(&yi);
        let k = g.labels.len();
        if k < 2 {
            return Err(Error::data(
                "labels",
                format!(
                    "every training sample has label {}; a classifier needs two or more classes (use SvmParams::one_class for novelty detection)",
                    g.labels[0]
                ),
            ));
        }
        if k * (k - 1) / 2 > 10_000_000 {
            return Err(Error::data(
                "labels",
                format!(
                    "{k} distinct labels would need {} one-vs-one classifiers; real-valued targets belong to epsilon_svr / nu_svr",
                    k * (k - 1) / 2
                ),
            ));
        }
        if self.svm_type == SvmType::NuSvc {
            for i in 0..k {
                for j in i + 1..k {
                    let (n1, n2) = (g.count[i] as f64, g.count[j] as f64);
                    if self.nu * (n1 + n2) / 2.0 > n1.min(n2) {
                        return Err(Error::config(
                            "nu",
                            format!(
                                "{} is infeasible for classes {} ({} samples) and {} ({} samples): ν·(n₁+n₂)/2 must not exceed min(n₁,n₂), so ν ≤ {:.6}",
                                self.nu,
                                g.labels[i],
                                g.count[i],
                                g.labels[j],
                                g.count[j],
                                2.0 * n1.min(n2) / (n1 + n2)
                            ),
                        ));
                    }
                }
            }
        }
        let mut weighted_c = vec![self.c; k];
        if self.svm_type == SvmType::CSvc {
            for &(label, w) in &self.class_weights {
                match g.labels.iter().position(|&l| l == label) {
                    Some(j) => weighted_c[j] *= w,
                    None => tracing::warn!("class label {label} given a weight is not in the training data"),
                }
            }
        }
        let pairs: Vec<(usize, usize)> = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).collect();
        let share = pairs.len().min(rayon::current_num_threads()).max(1);
        let solve_pair = |p: usize| -> Result<(OneSolution, Option<(f64, f64)>)> {
            let (i, j) = pairs[p];
            let (si, sj, ci, cj) = (g.start[i], g.start[j], g.count[i], g.count[j]);
            let idx: Vec<usize> = g.perm[si..si + ci].iter().chain(&g.perm[sj..sj + cj]).copied().collect();
            let ys: Vec<f64> = (0..ci + cj).map(|t| if t < ci { 1.0 } else { -1.0 }).collect();
            let probab = if self.probability {
                Some(binary_svc_probability(x, &idx, &ys, self, kernel, weighted_c[i], weighted_c[j], p as u64, share)?)
            } else {
                None
            };
            Ok((train_one(x, &idx, &ys, self, kernel, weighted_c[i], weighted_c[j], share), probab))
        };
        let results: Vec<(OneSolution, Option<(f64, f64)>)> = if pairs.len() > 1 {
            (0..pairs.len())
                .into_par_iter()
                .map(|p| crate::kernel::without_helpers(|| solve_pair(p)))
                .collect::<Result<_>>()?
        } else {
            vec![solve_pair(0)?]
        };

        // Which grouped positions are SVs of any pair.
        let l = x.rows();
        let mut nonzero = vec![false; l];
        for (p, (s, _)) in results.iter().enumerate() {
            let (i, j) = pairs[p];
            for t in 0..g.count[i] {
                if s.alpha[t].abs() > 0.0 {
                    nonzero[g.start[i] + t] = true;
                }
            }
            for t in 0..g.count[j] {
                if s.alpha[g.count[i] + t].abs() > 0.0 {
                    nonzero[g.start[j] + t] = true;
                }
            }
        }
        let n_sv: Vec<usize> = (0..k).map(|c| (0..g.count[c]).filter(|&t| nonzero[g.start[c] + t]).count()).collect();
        let total: usize = n_sv.iter().sum();
        let mut nz_start = vec![0; k];
        for c in 1..k {
            nz_start[c] = nz_start[c - 1] + n_sv[c - 1];
        }
        let sv_indices: Vec<usize> = (0..l).filter(|&t| nonzero[t]).map(|t| g.perm[t]).collect();
        let mut sv_coef = vec![vec![0.0; total]; k - 1];
        for (p, (s, _)) in results.iter().enumerate() {
            let (i, j) = pairs[p];
            let mut q = nz_start[i];
            for t in 0..g.count[i] {
                if nonzero[g.start[i] + t] {
                    sv_coef[j - 1][q] = s.alpha[t];
                    q += 1;
                }
            }
            let mut q = nz_start[j];
            for t in 0..g.count[j] {
                if nonzero[g.start[j] + t] {
                    sv_coef[i][q] = s.alpha[g.count[i] + t];
                    q += 1;
                }
            }
        }
        let (prob_a, prob_b) = if self.probability {
            let ab: Vec<(f64, f64)> = results.iter().map(|(_, ab)| ab.unwrap_or((0.0, 0.0))).collect();
            (Some(ab.iter().map(|v| v.0).collect()), Some(ab.iter().map(|v| v.1).collect()))
        } else {
            (None, None)
        };
        Ok(SvmModel {
            svm_type: self.svm_type,
            kernel,
            nr_class: k,
            labels: g.labels,
            n_sv,
            sv: x.select(&sv_indices),
            sv_coef,
            rho: results.iter().map(|(s, _)| s.info.rho).collect(),
            prob_a,
            prob_b,
            prob_density_marks: None,
            sv_indices,
            info: results.into_iter().map(|(s, _)| s.info).collect(),
            n_features,
            predict_from_probability: self.predict_from_probability,
        })
    }
}

/// `svm_binary_svc_probability`: Platt parameters from held-out decision values of an
/// internal 5-fold CV (shuffled by the seeded RNG instead of C's `rand()`).
#[allow(clippy::too_many_arguments)]
fn binary_svc_probability(
    x: &Features,
    idx: &[usize],
    y: &[f64],
    params: &SvmParams,
    kernel: Kernel,
    cp: f64,
    cn: f64,
    stream: u64,
    share: usize,
) -> Result<(f64, f64)> {
    let l = idx.len();
    let nr_fold = 5;
    let mut rng = SeededRng::new(params.seed).fork(0x5eed_0000 + stream);
    let mut perm: Vec<usize> = (0..l).collect();
    for i in 0..l {
        let j = i + rng.below((l - i) as u64) as usize;
        perm.swap(i, j);
    }
    let mut dec = vec![0.0; l];
    let mut sub = params.clone();
    sub.probability = false;
    sub.c = 1.0;
    for f in 0..nr_fold {
        let (begin, end) = (f * l / nr_fold, (f + 1) * l / nr_fold);
        // Training part, grouped +1 first as svm_train would order it.
        let train: Vec<usize> = perm[..begin].iter().chain(&perm[end..]).copied().collect();
        let (pos, neg): (Vec<usize>, Vec<usize>) = train.iter().partition(|&&t| y[t] > 0.0);
        let value = match (pos.is_empty(), neg.is_empty()) {
            (true, true) => Some(0.0),
            (false, true) => Some(1.0),
            (true, false) => Some(-1.0),
            (false, false) => None,
        };
        if let Some(v) = value {
            for &t in &perm[begin..end] {
                dec[t] = v;
            }
            continue;
        }
        let order: Vec<usize> = pos.iter().chain(&neg).copied().collect();
        let sub_idx: Vec<usize> = order.iter().map(|&t| idx[t]).collect();
        let sub_y: Vec<f64> = order.iter().map(|&t| y[t]).collect();
        let s = train_one(x, &sub_idx, &sub_y, &sub, kernel, cp, cn, share);
        let m = SubModel::from_solution(&sub_idx, &s);
        for &t in &perm[begin..end] {
            dec[t] = m.decision(x, &kernel, idx[t]);
        }
    }
    Ok(prob::sigmoid_train(&dec, y))
}

/// `svm_svr_probability`: the Laplace scale of 5-fold CV residuals.
fn svr_probability(params: &SvmParams, x: &Features, y: &[f64]) -> Result<f64> {
    let mut p = params.clone();
    p.probability = false;
    let pred = crate::cv::cross_validation(&p, x, y, 5)?;
    let l = y.len() as f64;
    let res: Vec<f64> = y.iter().zip(&pred).map(|(a, b)| a - b).collect();
    let mae = res.iter().map(|r| r.abs()).sum::<f64>() / l;
    let std = (2.0 * mae * mae).sqrt();
    let kept: Vec<f64> = res.iter().map(|r| r.abs()).filter(|r| *r <= 5.0 * std).collect();
    Ok(kept.iter().sum::<f64>() / kept.len().max(1) as f64)
}

impl SvmModel {
    /// The formulation.
    pub fn svm_type(&self) -> SvmType {
        self.svm_type
    }
    /// The kernel with its resolved γ.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// Number of classes (2 for regression and one-class, as LIBSVM).
    pub fn nr_class(&self) -> usize {
        self.nr_class
    }
    /// Class labels in LIBSVM's order (empty for regression and one-class).
    pub fn labels(&self) -> &[i32] {
        &self.labels
    }
    /// Support vectors per class (classification).
    pub fn n_sv(&self) -> &[usize] {
        &self.n_sv
    }
    /// Total number of support vectors.
    pub fn total_sv(&self) -> usize {
        self.sv.rows()
    }
    /// The support vectors.
    pub fn support_vectors(&self) -> &Features {
        &self.sv
    }
    /// 0-based training indices of the support vectors (empty for a model read from a file).
    pub fn sv_indices(&self) -> &[usize] {
        &self.sv_indices
    }
    /// `(nr_class − 1) × total_sv` dual coefficients (scikit-learn's `dual_coef_` before its
    /// binary sign flip).
    pub fn sv_coef(&self) -> &[Vec<f64>] {
        &self.sv_coef
    }
    /// Biases, one per decision function (scikit-learn's `intercept_ = −rho`).
    pub fn rho(&self) -> &[f64] {
        &self.rho
    }
    /// Platt `A` per class pair, or SVR's Laplace scale.
    pub fn prob_a(&self) -> Option<&[f64]> {
        self.prob_a.as_deref()
    }
    /// Platt `B` per class pair.
    pub fn prob_b(&self) -> Option<&[f64]> {
        self.prob_b.as_deref()
    }
    /// One-class density marks.
    pub fn prob_density_marks(&self) -> Option<&[f64]> {
        self.prob_density_marks.as_deref()
    }
    /// Solver reports per sub-problem (empty for a model read from a file).
    pub fn info(&self) -> &[SolveInfo] {
        &self.info
    }
    /// Whether every sub-problem met the tolerance.
    pub fn converged(&self) -> bool {
        self.info.iter().all(|i| i.converged)
    }
    /// Largest feature index seen in training (0 for a model read from a file).
    pub fn n_features(&self) -> u32 {
        self.n_features
    }
    /// Whether the model carries probability information.
    pub fn has_probability(&self) -> bool {
        match self.svm_type {
            SvmType::CSvc | SvmType::NuSvc => self.prob_a.is_some() && self.prob_b.is_some(),
            SvmType::OneClass => self.prob_density_marks.is_some(),
            _ => self.prob_a.is_some(),
        }
    }
    /// Makes `predict` return the most probable class (see [`SvmParams::predict_from_probability`]).
    pub fn set_predict_from_probability(&mut self, on: bool) {
        self.predict_from_probability = on;
    }

    /// Number of decision values per sample: `k(k−1)/2`, or 1.
    pub fn n_decision(&self) -> usize {
        if self.svm_type.is_classification() { self.nr_class * (self.nr_class - 1) / 2 } else { 1 }
    }

    /// Checks the internal layout (after reading a file or building by hand).
    pub(crate) fn check_layout(&self) -> Result<()> {
        let bad = |why: String| Err(Error::data("SVM model", why));
        let l = self.sv.rows();
        if self.nr_class < 2 {
            return bad(format!("nr_class {} < 2", self.nr_class));
        }
        if self.sv_coef.len() != self.nr_class - 1 || self.sv_coef.iter().any(|c| c.len() != l) {
            return bad(format!("sv_coef must be {} rows of {l} coefficients", self.nr_class - 1));
        }
        if self.rho.len() != self.n_decision() {
            return bad(format!("{} rho values for {} decision functions", self.rho.len(), self.n_decision()));
        }
        if self.svm_type.is_classification() {
            if self.labels.len() != self.nr_class || self.n_sv.len() != self.nr_class {
                return bad("classification models need `label` and `nr_sv` with nr_class entries".into());
            }
            if self.n_sv.iter().sum::<usize>() != l {
                return bad(format!("nr_sv sums to {} but total_sv is {l}", self.n_sv.iter().sum::<usize>()));
            }
            for p in [&self.prob_a, &self.prob_b].into_iter().flatten() {
                if p.len() != self.n_decision() {
                    return bad("probA/probB need one value per class pair".into());
                }
            }
        }
        Ok(())
    }

    /// Decision values and the LIBSVM prediction of one sample from its kernel values to
    /// every support vector (`svm_predict_values`).
    fn decide(&self, kbuf: &[f64], dec: &mut [f64]) -> f64 {
        if !self.svm_type.is_classification() {
            let sum: f64 = self.sv_coef[0].iter().zip(kbuf.iter()).map(|(c, k)| c * k).sum::<f64>() - self.rho[0];
            dec[0] = sum;
            return if self.svm_type == SvmType::OneClass { if sum > 0.0 { 1.0 } else { -1.0 } } else { sum };
        }
        let k = self.nr_class;
        let mut start = vec![0; k];
        for i in 1..k {
            start[i] = start[i - 1] + self.n_sv[i - 1];
        }
        let mut vote = vec![0usize; k];
        let mut p = 0;
        for i in 0..k {
            for j in i + 1..k {
                let (si, sj, ci, cj) = (start[i], start[j], self.n_sv[i], self.n_sv[j]);
                let c1 = &self.sv_coef[j - 1];
                let c2 = &self.sv_coef[i];
                let mut sum = 0.0;
                for t in 0..ci {
                    sum += c1[si + t] * kbuf[si + t];
                }
                for t in 0..cj {
                    sum += c2[sj + t] * kbuf[sj + t];
                }
                sum -= self.rho[p];
                dec[p] = sum;
                if sum > 0.0 {
                    vote[i] += 1;
                } else {
                    vote[j] += 1;
                }
                p += 1;
            }
        }
        let mut best = 0;
        for i in 1..k {
            if vote[i] > vote[best] {
                best = i;
            }
        }
        f64::from(self.labels[best])
    }

    /// Runs `f(prediction, decision values)` over all samples, in parallel over blocks of
    /// samples whose kernel values to every support vector are computed together.
    fn map_rows<T: Send>(&self, x: &Features, f: impl Fn(f64, &[f64]) -> T + Sync) -> Result<Vec<T>> {
        self.check_layout()?;
        let n = x.rows();
        let m = self.n_decision();
        let l = self.sv.rows();
        let panels = crate::predict::SvPanels::new(&self.sv, x, self.kernel);
        let chunk = 32;
        let out: Vec<Vec<T>> = (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|c| {
                let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(n));
                let mut kmat = vec![0.0; (r1 - r0) * l];
                match &panels {
                    Some(p) => p.kernel_block(x, r0..r1, &mut kmat),
                    None => {
                        for (r, krow) in (r0..r1).zip(kmat.chunks_mut(l.max(1))) {
                            let row = x.row(r);
                            for (s, k) in krow.iter_mut().enumerate() {
                                *k = self.kernel.eval(row, self.sv.row(s));
                            }
                        }
                    }
                }
                let mut dec = vec![0.0; m];
                (0..r1 - r0)
                    .map(|r| {
                        let pred = self.decide(&kmat[r * l..(r + 1) * l], &mut dec);
                        f(pred, &dec)
                    })
                    .collect()
            })
            .collect();
        Ok(out.into_iter().flatten().collect())
    }

    /// Predictions: class labels (as `f64`, like LIBSVM), regression values, or ±1 for
    /// one-class (+1 = inlier). With `predict_from_probability` and a probability model,
    /// classification returns the most probable class.
    ///
    /// # Errors
    /// [`Error::Data`] when the model's layout is inconsistent (a hand-edited file).
    pub fn predict(&self, x: &Features) -> Result<Vec<f64>> {
        if self.predict_from_probability && self.svm_type.is_classification() && self.has_probability() {
            return Ok(self.predict_probability(x)?.0);
        }
        self.map_rows(x, |p, _| p)
    }

    /// One-vs-one decision values, `n × k(k−1)/2` row-major (pair order (0,1), (0,2), …,
    /// positive = the first class of the pair), or `n` values for regression / one-class.
    ///
    /// # Errors
    /// As [`SvmModel::predict`].
    pub fn decision_values(&self, x: &Features) -> Result<Vec<f64>> {
        Ok(self.map_rows(x, |_, d| d.to_vec())?.into_iter().flatten().collect())
    }

    /// scikit-learn's `decision_function_shape='ovr'`: `n × k` votes plus confidences scaled
    /// into (−⅓, ⅓), so that the argmax is the voted class with ties broken by confidence.
    ///
    /// # Errors
    /// [`Error::Config`] for regression / one-class models.
    pub fn decision_function_ovr(&self, x: &Features) -> Result<Vec<f64>> {
        if !self.svm_type.is_classification() {
            return Err(Error::config("decision_function_ovr", "only classification models have per-class scores"));
        }
        let k = self.nr_class;
        let ovo = self.decision_values(x)?;
        let m = self.n_decision();
        let mut out = vec![0.0; x.rows() * k];
        for (r, d) in ovo.chunks(m.max(1)).enumerate() {
            let mut votes = vec![0.0; k];
            let mut conf = vec![0.0; k];
            let mut p = 0;
            for i in 0..k {
                for j in i + 1..k {
                    conf[i] += d[p];
                    conf[j] -= d[p];
                    // scikit-learn's rule (`dec < 0` votes for j), which differs from LIBSVM's
                    // vote only at exactly 0.
                    if d[p] >= 0.0 {
                        votes[i] += 1.0;
                    } else {
                        votes[j] += 1.0;
                    }
                    p += 1;
                }
            }
            for c in 0..k {
                out[r * k + c] = votes[c] + conf[c] / (3.0 * (conf[c].abs() + 1.0));
            }
        }
        Ok(out)
    }

    /// Predictions and probabilities (`n × nr_class`, columns in [`SvmModel::labels`] order;
    /// one-class: `[P(normal), P(outlier)]`) — LIBSVM's `svm_predict_probability`.
    ///
    /// # Errors
    /// [`Error::Config`] when the model was trained without probabilities (regression models
    /// have a Laplace scale instead: see [`SvmModel::prob_a`]).
    pub fn predict_probability(&self, x: &Features) -> Result<(Vec<f64>, Vec<f64>)> {
        if !self.has_probability() || self.svm_type.is_regression() {
            return Err(Error::config(
                "probability",
                "this model has no probability information: train with SvmParams::probability(true) (svm-train -b 1); regression models give a Laplace scale in prob_a instead",
            ));
        }
        let k = self.nr_class;
        let rows = self.map_rows(x, |pred, dec| {
            if self.svm_type == SvmType::OneClass {
                let pn = prob::one_class_probability(self.prob_density_marks.as_deref().unwrap_or(&[]), dec[0]);
                return (pred, vec![pn, 1.0 - pn]);
            }
            let (pa, pb) = (self.prob_a.as_deref().unwrap_or(&[]), self.prob_b.as_deref().unwrap_or(&[]));
            let min_prob = 1e-7;
            let mut pairwise = vec![vec![0.0; k]; k];
            let mut p = 0;
            for i in 0..k {
                for j in i + 1..k {
                    let v = prob::sigmoid_predict(dec[p], pa[p], pb[p]).clamp(min_prob, 1.0 - min_prob);
                    pairwise[i][j] = v;
                    pairwise[j][i] = 1.0 - v;
                    p += 1;
                }
            }
            let probs =
                if k == 2 { vec![pairwise[0][1], pairwise[1][0]] } else { prob::multiclass_probability(&pairwise) };
            let mut best = 0;
            for i in 1..k {
                if probs[i] > probs[best] {
                    best = i;
                }
            }
            (f64::from(self.labels[best]), probs)
        })?;
        let mut labels = Vec::with_capacity(rows.len());
        let mut probs = Vec::with_capacity(rows.len() * k);
        for (l, p) in rows {
            labels.push(l);
            probs.extend(p);
        }
        Ok((labels, probs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_first_occurrence_with_the_plus_one_swap() {
        let g = group_classes(&[3, 1, 3, 2, 1]);
        assert_eq!(g.labels, vec![3, 1, 2]);
        assert_eq!(g.perm, vec![0, 2, 1, 4, 3]);
        let g = group_classes(&[-1, 1, 1]);
        assert_eq!(g.labels, vec![1, -1]);
        assert_eq!(g.perm, vec![1, 2, 0]);
        let g = group_classes(&[1, -1]);
        assert_eq!(g.labels, vec![1, -1]);
    }

    #[test]
    fn refuses_bad_training_sets() {
        let x = Features::dense(3, 1, vec![0.0, 1.0, 2.0]).unwrap();
        let e = SvmParams::c_svc().train(&x, &[1.0, 1.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("two or more classes"), "{e}");
        let e = SvmParams::c_svc().train(&x, &[1.0, 2.5, 1.0]).unwrap_err().to_string();
        assert!(e.contains("integers") && e.contains("row 2"), "{e}");
        assert!(SvmParams::c_svc().train(&x, &[1.0, 2.0]).is_err());
        let e = SvmParams::nu_svc().nu(0.9).train(&x, &[1.0, 2.0, 1.0]).unwrap_err().to_string();
        assert!(e.contains("infeasible"), "{e}");
        let e = SvmParams::c_svc()
            .kernel(KernelType::Chi2)
            .train(&Features::dense(2, 1, vec![-1.0, 1.0]).unwrap(), &[1.0, 2.0]);
        assert!(e.is_err());
        let e = SvmParams::epsilon_svr().train(&x, &[1.0, f64::NAN, 1.0]).unwrap_err().to_string();
        assert!(e.contains("row 2"), "{e}");
        // Real-valued targets passed to a classifier: refused before any pair is trained.
        let many = Features::dense(5000, 1, (0..5000).map(f64::from).collect()).unwrap();
        let labels: Vec<f64> = (0..5000).map(f64::from).collect();
        let e = SvmParams::c_svc().train(&many, &labels).unwrap_err().to_string();
        assert!(e.contains("epsilon_svr"), "{e}");
    }
}
