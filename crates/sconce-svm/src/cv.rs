//! k-fold cross-validation as `svm-train -v` does it (stratified for classification) and a
//! grid search over C, γ, ν and ε like LIBSVM's `grid.py` or OpenCV's `trainAuto`; folds
//! and grid points run in parallel.

use rayon::prelude::*;
use sconce_core::{Error, Result, SeededRng};

use crate::features::Features;
use crate::kernel::Gamma;
use crate::model::{class_labels, group_classes};
use crate::params::{SvmParams, SvmType};

/// The fold of every sample, LIBSVM's `svm_cross_validation` layout: stratified by class for
/// classification when `folds < l`, a random split otherwise (seeded).
fn fold_order(params: &SvmParams, y: &[f64], folds: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let l = y.len();
    let mut rng = SeededRng::new(params.seed).fork(0xc0ffee);
    let mut perm = vec![0; l];
    let mut fold_start = vec![0; folds + 1];
    if params.svm_type.is_classification() && folds < l {
        let g = group_classes(&class_labels(y)?);
        let k = g.labels.len();
        let mut index = g.perm.clone();
        for c in 0..k {
            for i in 0..g.count[c] {
                let j = i + rng.below((g.count[c] - i) as u64) as usize;
                index.swap(g.start[c] + j, g.start[c] + i);
            }
        }
        let fold_count: Vec<usize> =
            (0..folds).map(|i| (0..k).map(|c| (i + 1) * g.count[c] / folds - i * g.count[c] / folds).sum()).collect();
        for i in 1..=folds {
            fold_start[i] = fold_start[i - 1] + fold_count[i - 1];
        }
        let mut pos = fold_start.clone();
        for c in 0..k {
            for i in 0..folds {
                let begin = g.start[c] + i * g.count[c] / folds;
                let end = g.start[c] + (i + 1) * g.count[c] / folds;
                for &v in &index[begin..end] {
                    perm[pos[i]] = v;
                    pos[i] += 1;
                }
            }
        }
    } else {
        for (i, p) in perm.iter_mut().enumerate() {
            *p = i;
        }
        for i in 0..l {
            let j = i + rng.below((l - i) as u64) as usize;
            perm.swap(i, j);
        }
        for (i, f) in fold_start.iter_mut().enumerate() {
            *f = i * l / folds;
        }
    }
    Ok((perm, fold_start))
}

/// Held-out predictions of `folds`-fold cross-validation (LIBSVM's `svm_cross_validation`):
/// entry `i` is the prediction for sample `i` by the model trained without its fold. With
/// `probability` on, classification uses the most probable class, as LIBSVM does.
///
/// `folds > l` falls back to leave-one-out. Folds train in parallel.
///
/// # Errors
/// [`Error::Config`] for `folds < 2`; anything [`SvmParams::train`] refuses.
pub fn cross_validation(params: &SvmParams, x: &Features, y: &[f64], folds: usize) -> Result<Vec<f64>> {
    params.validate()?;
    if folds < 2 {
        return Err(Error::config("folds", format!("{folds}: cross-validation needs at least 2 folds")));
    }
    if x.rows() != y.len() {
        return Err(Error::shape("cross-validation targets", format!("{} targets", x.rows()), &[y.len()]));
    }
    let l = y.len();
    let folds = if folds > l {
        tracing::warn!("{folds} folds > {l} samples: using leave-one-out");
        l
    } else {
        folds
    };
    let (perm, fold_start) = fold_order(params, y, folds)?;
    let parts: Vec<Vec<(usize, f64)>> = (0..folds)
        .into_par_iter()
        .map(|f| -> Result<Vec<(usize, f64)>> {
            crate::kernel::without_helpers(|| -> Result<Vec<(usize, f64)>> {
                let (begin, end) = (fold_start[f], fold_start[f + 1]);
                if begin == end {
                    return Ok(Vec::new());
                }
                let train: Vec<usize> = perm[..begin].iter().chain(&perm[end..]).copied().collect();
                let test: Vec<usize> = perm[begin..end].to_vec();
                let ty: Vec<f64> = train.iter().map(|&i| y[i]).collect();
                let mut p = params.clone();
                // The training set's gamma is resolved on the fold, as LIBSVM resolves it once on
                // the whole file: use the whole set's value so that every fold sees the same γ.
                p.gamma = Gamma::Value(params.gamma.resolve(x));
                let model = p.train(&x.select(&train), &ty)?;
                let tx = x.select(&test);
                let pred = if params.probability && params.svm_type.is_classification() {
                    model.predict_probability(&tx)?.0
                } else {
                    model.predict(&tx)?
                };
                Ok(test.into_iter().zip(pred).collect())
            })
        })
        .collect::<Result<_>>()?;
    let mut target = vec![0.0; l];
    for (i, v) in parts.into_iter().flatten() {
        target[i] = v;
    }
    Ok(target)
}

/// A cross-validation score: accuracy for classification (and the fraction predicted
/// inlier for one-class), mean squared error and squared correlation for regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvScore {
    /// Accuracy in [0, 1] (classification).
    pub accuracy: Option<f64>,
    /// Mean squared error (regression).
    pub mse: Option<f64>,
    /// Squared correlation coefficient (regression).
    pub r2: Option<f64>,
}

/// Scores held-out predictions as `svm-train -v` prints them.
pub fn score(svm_type: SvmType, y: &[f64], pred: &[f64]) -> CvScore {
    let n = y.len() as f64;
    if svm_type.is_regression() {
        let (mut e, mut sv, mut sy, mut svv, mut syy, mut svy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (&t, &v) in y.iter().zip(pred) {
            e += (v - t) * (v - t);
            sv += v;
            sy += t;
            svv += v * v;
            syy += t * t;
            svy += v * t;
        }
        let num = (n * svy - sv * sy) * (n * svy - sv * sy);
        let den = (n * svv - sv * sv) * (n * syy - sy * sy);
        CvScore { accuracy: None, mse: Some(e / n), r2: Some(num / den) }
    } else {
        let correct = y.iter().zip(pred).filter(|(a, b)| a == b).count() as f64;
        CvScore { accuracy: Some(correct / n), mse: None, r2: None }
    }
}

/// The grid of a search: every combination is cross-validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Values of C (C-SVC, ε-SVR, ν-SVR).
    pub c: Vec<f64>,
    /// Values of γ (kernels that use it).
    pub gamma: Vec<f64>,
    /// Values of ν (ν-SVC, one-class, ν-SVR).
    pub nu: Vec<f64>,
    /// Values of ε-SVR's tube width.
    pub p: Vec<f64>,
}

impl Grid {
    /// LIBSVM's `grid.py` default: `C = 2^-5, 2^-3, …, 2^15`, `γ = 2^3, 2^1, …, 2^-15`
    /// (110 points), with the parameter's other values fixed.
    pub fn libsvm(params: &SvmParams) -> Self {
        Self {
            c: (-5..=15).step_by(2).map(|e| 2f64.powi(e)).collect(),
            gamma: (-15..=3).rev().step_by(2).map(|e| 2f64.powi(e)).collect(),
            nu: vec![params.nu],
            p: vec![params.p],
        }
    }

    /// OpenCV's `trainAuto` default grid, as values `min·step^k < max`: C 0.1..500 ×5,
    /// γ 1e-5..0.6 ×15, ν 0.01..0.2 ×3, p 0.01..100 ×7.
    pub fn opencv() -> Self {
        let seq = |lo: f64, hi: f64, step: f64| {
            let mut v = Vec::new();
            let mut x = lo;
            while x < hi {
                v.push(x);
                x *= step;
            }
            v
        };
        Self { c: seq(0.1, 500.0, 5.0), gamma: seq(1e-5, 0.6, 15.0), nu: seq(0.01, 0.2, 3.0), p: seq(0.01, 100.0, 7.0) }
    }
}

/// One evaluated grid point.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    /// The parameters tried.
    pub params: SvmParams,
    /// Its cross-validation score.
    pub score: CvScore,
}

/// The best point first, then all points in grid order.
#[derive(Debug, Clone, PartialEq)]
pub struct GridResult {
    /// The point with the highest accuracy (classification) or lowest MSE (regression);
    /// ties go to the earlier grid point.
    pub best: GridPoint,
    /// Every point.
    pub all: Vec<GridPoint>,
}

/// Cross-validates every grid combination (only the axes the formulation and kernel use)
/// with `folds` folds; grid points run in parallel.
///
/// # Errors
/// [`Error::Config`] for an empty grid axis or bad parameters; training errors.
pub fn grid_search(params: &SvmParams, grid: &Grid, x: &Features, y: &[f64], folds: usize) -> Result<GridResult> {
    let uses_c = matches!(params.svm_type, SvmType::CSvc | SvmType::EpsilonSvr | SvmType::NuSvr);
    let uses_nu = matches!(params.svm_type, SvmType::NuSvc | SvmType::OneClass | SvmType::NuSvr);
    let uses_p = params.svm_type == SvmType::EpsilonSvr;
    let axis = |use_it: bool, v: &[f64], cur: f64, name: &str| -> Result<Vec<f64>> {
        if !use_it {
            return Ok(vec![cur]);
        }
        if v.is_empty() {
            return Err(Error::config("grid", format!("the {name} axis is empty")));
        }
        Ok(v.to_vec())
    };
    let cs = axis(uses_c, &grid.c, params.c, "C")?;
    let nus = axis(uses_nu, &grid.nu, params.nu, "nu")?;
    let ps = axis(uses_p, &grid.p, params.p, "p")?;
    let gammas: Vec<Gamma> = if params.kernel.uses_gamma() {
        if grid.gamma.is_empty() {
            return Err(Error::config("grid", "the gamma axis is empty"));
        }
        grid.gamma.iter().map(|&g| Gamma::Value(g)).collect()
    } else {
        vec![params.gamma]
    };
    let mut points = Vec::new();
    for &c in &cs {
        for &g in &gammas {
            for &nu in &nus {
                for &p in &ps {
                    let mut q = params.clone();
                    q.c = c;
                    q.gamma = g;
                    q.nu = nu;
                    q.p = p;
                    points.push(q);
                }
            }
        }
    }
    let all: Vec<GridPoint> = points
        .into_par_iter()
        .map(|q| {
            let pred = cross_validation(&q, x, y, folds)?;
            Ok(GridPoint { score: score(q.svm_type, y, &pred), params: q })
        })
        .collect::<Result<_>>()?;
    let key = |g: &GridPoint| match (g.score.accuracy, g.score.mse) {
        (Some(a), _) => a,
        (None, Some(m)) => -m,
        _ => f64::NEG_INFINITY,
    };
    let mut best = 0;
    for (i, g) in all.iter().enumerate() {
        if key(g) > key(&all[best]) {
            best = i;
        }
    }
    Ok(GridResult { best: all[best].clone(), all })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_folds_partition_every_sample_once() {
        let y: Vec<f64> = (0..23).map(|i| f64::from(i % 3)).collect();
        let (perm, start) = fold_order(&SvmParams::c_svc(), &y, 5).unwrap();
        let mut seen = perm.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        assert_eq!(start[5], 23);
        // Each fold holds each class in proportion (±1).
        for f in 0..5 {
            for c in 0..3 {
                let n = perm[start[f]..start[f + 1]].iter().filter(|&&i| y[i] == f64::from(c)).count();
                assert!((1..=2).contains(&n), "fold {f} class {c}: {n}");
            }
        }
    }

    #[test]
    fn opencv_grid_matches_its_documented_values() {
        let g = Grid::opencv();
        assert_eq!(g.c.len(), 6); // 0.1, 0.5, 2.5, 12.5, 62.5, 312.5
        assert!((g.c[1] - 0.5).abs() < 1e-12);
        let l = Grid::libsvm(&SvmParams::c_svc());
        assert_eq!((l.c.len(), l.gamma.len()), (11, 10));
        assert_eq!(l.gamma[0], 8.0);
    }
}
