//! Classification metrics from a confusion matrix, with scikit-learn's definitions: accuracy,
//! balanced accuracy, precision / recall / F-beta / support with `binary`, `micro`, `macro`,
//! `weighted` averaging and `zero_division`, Matthews correlation and Cohen's kappa.

use sconce_core::{Error, Result};

use crate::ConfusionMatrix;

/// How per-class scores are combined (scikit-learn's `average`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// Only the class `pos_label`.
    Binary {
        /// The positive class.
        pos_label: usize,
    },
    /// Global counts: `Σtp / Σ(tp + fp)` etc. For single-label data micro-F1 equals accuracy.
    Micro,
    /// The unweighted mean of per-class scores.
    Macro,
    /// The mean of per-class scores weighted by support (true samples per class).
    Weighted,
}

/// The value of a score whose denominator is 0 (scikit-learn's `zero_division`; its default
/// `"warn"` behaves as `Zero`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroDivision {
    /// 0.
    Zero,
    /// 1.
    One,
    /// NaN, and left out of macro/weighted averages.
    NaN,
}

impl ZeroDivision {
    fn value(self) -> f64 {
        match self {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        }
    }
}

/// Per-class scores over the classes that occur in the true or predicted labels (scikit-learn's
/// default `labels`), in increasing class order.
#[derive(Debug, Clone, PartialEq)]
pub struct PerClass {
    /// The classes, ascending.
    pub classes: Vec<usize>,
    /// Precision per class.
    pub precision: Vec<f64>,
    /// Recall per class.
    pub recall: Vec<f64>,
    /// F-beta per class.
    pub f_score: Vec<f64>,
    /// True samples per class.
    pub support: Vec<u64>,
}

/// Averaged precision, recall and F-beta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F-beta.
    pub f_score: f64,
}

fn divide(num: f64, den: f64, zd: ZeroDivision) -> f64 {
    if den == 0.0 { zd.value() } else { num / den }
}

/// `(1 + β²)·tp / ((1 + β²)·tp + β²·fn + fp)`, i.e. scikit-learn's F-beta from counts.
fn f_beta(tp: f64, pred: f64, truth: f64, beta: f64, zd: ZeroDivision) -> f64 {
    if beta.is_infinite() {
        return divide(tp, truth, zd);
    }
    let b2 = beta * beta;
    divide((1.0 + b2) * tp, b2 * truth + pred, zd)
}

fn check_beta(beta: f64) -> Result<()> {
    if beta.is_nan() || beta < 0.0 {
        return Err(Error::config("beta", format!("must be ≥ 0, got {beta}")));
    }
    Ok(())
}

/// Per-class precision, recall, F-beta and support.
///
/// # Errors
/// [`Error::Config`] for a negative or NaN `beta`.
pub fn per_class_prf(cm: &ConfusionMatrix, beta: f64, zero_division: ZeroDivision) -> Result<PerClass> {
    check_beta(beta)?;
    let counts = cm.per_class();
    let classes = cm.present();
    let mut out =
        PerClass { classes: classes.clone(), precision: vec![], recall: vec![], f_score: vec![], support: vec![] };
    for &c in &classes {
        let (tp, fp, fneg, support) = counts[c];
        let (tp, pred, truth) = (tp as f64, (tp + fp) as f64, (tp + fneg) as f64);
        out.precision.push(divide(tp, pred, zero_division));
        out.recall.push(divide(tp, truth, zero_division));
        out.f_score.push(f_beta(tp, pred, truth, beta, zero_division));
        out.support.push(support);
    }
    Ok(out)
}

/// Mean of `values` weighted by `weights`, leaving NaNs out (scikit-learn's `_nanaverage`).
fn nan_average(values: &[f64], weights: Option<&[u64]>) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let w = weights.map(|w| w[i] as f64).unwrap_or(1.0);
        num += w * v;
        den += w;
    }
    if den == 0.0 { f64::NAN } else { num / den }
}

/// Averaged precision, recall and F-beta, as `sklearn.metrics.precision_recall_fscore_support`.
///
/// ```
/// use sconce_metrics::{Average, ConfusionMatrix, ZeroDivision, precision_recall_fscore};
/// # fn main() -> sconce_core::Result<()> {
/// let mut cm = ConfusionMatrix::new(3)?;
/// cm.update(&[0, 1, 2, 0, 1, 2], &[0, 2, 1, 0, 0, 1])?;
/// let micro = precision_recall_fscore(&cm, 1.0, Average::Micro, ZeroDivision::Zero)?;
/// assert!((micro.f_score - 2.0 / 6.0).abs() < 1e-12); // micro-F1 = accuracy
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Config`] for a negative `beta` or a `pos_label` outside the classes.
pub fn precision_recall_fscore(
    cm: &ConfusionMatrix,
    beta: f64,
    average: Average,
    zero_division: ZeroDivision,
) -> Result<Prf> {
    check_beta(beta)?;
    let counts = cm.per_class();
    match average {
        Average::Binary { pos_label } => {
            let Some(&(tp, fp, fneg, _)) = counts.get(pos_label) else {
                return Err(Error::config(
                    "pos_label",
                    format!("{pos_label} is not one of the {} classes", cm.num_classes()),
                ));
            };
            let (tp, pred, truth) = (tp as f64, (tp + fp) as f64, (tp + fneg) as f64);
            Ok(Prf {
                precision: divide(tp, pred, zero_division),
                recall: divide(tp, truth, zero_division),
                f_score: f_beta(tp, pred, truth, beta, zero_division),
            })
        }
        Average::Micro => {
            let present = cm.present();
            let (mut tp, mut pred, mut truth) = (0.0, 0.0, 0.0);
            for &c in &present {
                let (t, fp, fneg, _) = counts[c];
                tp += t as f64;
                pred += (t + fp) as f64;
                truth += (t + fneg) as f64;
            }
            Ok(Prf {
                precision: divide(tp, pred, zero_division),
                recall: divide(tp, truth, zero_division),
                f_score: f_beta(tp, pred, truth, beta, zero_division),
            })
        }
        Average::Macro | Average::Weighted => {
            let pc = per_class_prf(cm, beta, zero_division)?;
            let weights = if average == Average::Weighted { Some(pc.support.as_slice()) } else { None };
            if average == Average::Weighted && pc.support.iter().sum::<u64>() == 0 {
                let z = zero_division.value();
                return Ok(Prf { precision: z, recall: z, f_score: z });
            }
            Ok(Prf {
                precision: nan_average(&pc.precision, weights),
                recall: nan_average(&pc.recall, weights),
                f_score: nan_average(&pc.f_score, weights),
            })
        }
    }
}

/// Fraction of correct predictions (`trace / total`); NaN for an empty matrix.
pub fn accuracy(cm: &ConfusionMatrix) -> f64 {
    let correct: u64 = (0..cm.num_classes()).map(|c| cm.get(c, c)).sum();
    correct as f64 / cm.total() as f64
}

/// Mean recall over the classes that have true samples (scikit-learn's `balanced_accuracy_score`).
pub fn balanced_accuracy(cm: &ConfusionMatrix) -> f64 {
    let recalls: Vec<f64> = cm
        .per_class()
        .iter()
        .filter(|(_, _, _, support)| *support > 0)
        .map(|(tp, _, _, support)| *tp as f64 / *support as f64)
        .collect();
    recalls.iter().sum::<f64>() / recalls.len() as f64
}

/// Matthews correlation coefficient, multiclass (Gorodkin's R_K), as scikit-learn: 0 when
/// either marginal is constant.
pub fn matthews_corrcoef(cm: &ConfusionMatrix) -> f64 {
    let n = cm.num_classes();
    let t: Vec<f64> = (0..n).map(|i| (0..n).map(|j| cm.get(i, j) as f64).sum()).collect();
    let p: Vec<f64> = (0..n).map(|j| (0..n).map(|i| cm.get(i, j) as f64).sum()).collect();
    let correct: f64 = (0..n).map(|c| cm.get(c, c) as f64).sum();
    let s: f64 = p.iter().sum();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_tp = correct * s - dot(&t, &p);
    let cov_pp = s * s - dot(&p, &p);
    let cov_tt = s * s - dot(&t, &t);
    if cov_pp * cov_tt == 0.0 { 0.0 } else { cov_tp / (cov_tt * cov_pp).sqrt() }
}

/// Cohen's kappa (unweighted): `1 − Σ_{i≠j} C_ij / Σ_{i≠j} E_ij` with `E` the outer product of
/// the marginals over the total.
pub fn cohen_kappa(cm: &ConfusionMatrix) -> f64 {
    let n = cm.num_classes();
    let total = cm.total() as f64;
    let rows: Vec<f64> = (0..n).map(|i| (0..n).map(|j| cm.get(i, j) as f64).sum()).collect();
    let cols: Vec<f64> = (0..n).map(|j| (0..n).map(|i| cm.get(i, j) as f64).sum()).collect();
    let (mut observed, mut expected) = (0.0, 0.0);
    for (i, col) in cols.iter().enumerate() {
        for (j, row) in rows.iter().enumerate() {
            if i != j {
                observed += cm.get(i, j) as f64;
                expected += col * row / total;
            }
        }
    }
    1.0 - observed / expected
}
