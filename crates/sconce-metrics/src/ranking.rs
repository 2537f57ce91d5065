//! Ranking and calibration metrics with scikit-learn's and torchmetrics' definitions: exact
//! ROC-AUC (ties count ½) and average precision for binary scores and one-vs-rest multiclass,
//! expected calibration error (equal-width bins, L1) and the Brier score.

use sconce_core::{Error, Result};

fn check_scores(scores: &[f64], n: usize, what: &str) -> Result<()> {
    if scores.len() != n {
        return Err(Error::shape(what, format!("[{n}] (one score per label)"), &[scores.len()]));
    }
    if let Some((i, v)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::data(what, format!("score {v} at position {i} is not finite")));
    }
    Ok(())
}

/// Indices sorted by decreasing score.
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Area under the ROC curve of binary `labels` ranked by `scores` (higher = more positive):
/// the probability that a random positive outranks a random negative, ties counting ½ —
/// scikit-learn's `roc_auc_score`.
///
/// ```
/// # fn main() -> sconce_core::Result<()> {
/// let auc = sconce_metrics::roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])?;
/// assert!((auc - 0.75).abs() < 1e-12); // scikit-learn's doc example
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Data`] when only one class is present (the AUC is undefined) or a score is not
/// finite; [`Error::Shape`] for mismatched lengths.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    check_scores(scores, labels.len(), "scores")?;
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::data("labels", "only one class is present; ROC AUC is not defined"));
    }
    // Sum of the (tie-averaged, 1-based, ascending) ranks of the positives: Mann–Whitney U.
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * idx[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Average precision: `Σ_n (R_n − R_{n−1})·P_n` over decreasing distinct score thresholds,
/// without interpolation — scikit-learn's `average_precision_score`. With no positive label it
/// is 0 (scikit-learn warns and returns 0).
///
/// # Errors
/// As [`roc_auc`], except that one class alone is allowed.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64> {
    check_scores(scores, labels.len(), "scores")?;
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    if pos == 0.0 {
        return Ok(0.0);
    }
    let idx = by_score_desc(scores);
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            j += 1;
        }
        let recall = tp / pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
        i = j;
    }
    Ok(ap)
}

/// How one-vs-rest scores are averaged over classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvrAverage {
    /// Unweighted mean over classes.
    Macro,
    /// Weighted by each class's number of true samples.
    Weighted,
}

fn ovr(
    scores: &[f64],
    labels: &[u32],
    classes: usize,
    average: OvrAverage,
    f: fn(&[f64], &[bool]) -> Result<f64>,
) -> Result<f64> {
    if classes == 0 || scores.len() != labels.len() * classes {
        return Err(Error::shape(
            "scores",
            format!("[{}, {classes}] (one row per label)", labels.len()),
            &[scores.len()],
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= classes) {
        return Err(Error::data("labels", format!("label {l} at position {i} is outside 0..{classes}")));
    }
    let (mut num, mut den) = (0.0, 0.0);
    for c in 0..classes {
        let col: Vec<f64> = scores.iter().skip(c).step_by(classes).copied().collect();
        let bin: Vec<bool> = labels.iter().map(|&l| l as usize == c).collect();
        let w = match average {
            OvrAverage::Macro => 1.0,
            OvrAverage::Weighted => bin.iter().filter(|&&b| b).count() as f64,
        };
        num += w * f(&col, &bin)?;
        den += w;
    }
    Ok(num / den)
}

/// One-vs-rest multiclass ROC-AUC over scores `[N, C]` (row-major), as scikit-learn's
/// `roc_auc_score(..., multi_class="ovr")`.
///
/// # Errors
/// As [`roc_auc`] for any class, plus shape and label-range errors.
pub fn roc_auc_ovr(scores: &[f64], labels: &[u32], classes: usize, average: OvrAverage) -> Result<f64> {
    ovr(scores, labels, classes, average, roc_auc)
}

/// One-vs-rest multiclass average precision over scores `[N, C]`, as scikit-learn's
/// `average_precision_score(label_binarize(y), scores)`.
///
/// # Errors
/// Shape, label-range and non-finite-score errors.
pub fn average_precision_ovr(scores: &[f64], labels: &[u32], classes: usize, average: OvrAverage) -> Result<f64> {
    ovr(scores, labels, classes, average, average_precision)
}

/// Expected calibration error with `bins` equal-width bins on `[0, 1]` (L1), torchmetrics'
/// definition: confidence = the highest probability of each row of `probs` `[N, C]`, correct =
/// its class equals the label; `Σ_b (n_b / N)·|accuracy_b − confidence_b|`. A confidence of
/// exactly 1 has a bin of its own (torchmetrics' `bucketize(right=True)`).
///
/// # Errors
/// Shape and label-range errors; [`Error::Config`] for zero bins; [`Error::Data`] for a
/// probability outside `[0, 1]`.
pub fn expected_calibration_error(probs: &[f64], labels: &[u32], classes: usize, bins: usize) -> Result<f64> {
    if bins == 0 {
        return Err(Error::config("bins", "must be > 0"));
    }
    if classes == 0 || probs.len() != labels.len() * classes || labels.is_empty() {
        return Err(Error::shape(
            "probs",
            format!("[{}, {classes}] (one row per label)", labels.len()),
            &[probs.len()],
        ));
    }
    if let Some((i, v)) = probs.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        return Err(Error::data("probs", format!("probability {v} at position {i} is outside [0, 1]")));
    }
    let (mut count, mut conf, mut acc) = (vec![0.0; bins + 1], vec![0.0; bins + 1], vec![0.0; bins + 1]);
    for (row, &label) in probs.chunks(classes).zip(labels) {
        if label as usize >= classes {
            return Err(Error::data("labels", format!("label {label} is outside 0..{classes}")));
        }
        // First maximum, as torch.max.
        let (arg, &p) =
            row.iter().enumerate().fold((0, &row[0]), |best, (i, v)| if *v > *best.1 { (i, v) } else { best });
        let b = ((p * bins as f64).floor() as usize).min(bins);
        count[b] += 1.0;
        conf[b] += p;
        acc[b] += if arg == label as usize { 1.0 } else { 0.0 };
    }
    let n = labels.len() as f64;
    Ok((0..=bins)
        .filter(|&b| count[b] > 0.0)
        .map(|b| count[b] / n * (acc[b] / count[b] - conf[b] / count[b]).abs())
        .sum())
}

/// Brier score: the mean over samples of `Σ_c (p_c − [y = c])²` for probabilities `[N, C]`
/// (scikit-learn's multiclass `brier_score_loss`). For `C = 2` scikit-learn uses the binary
/// definition on the positive column, `mean((p₁ − y)²)`, which is half the sum; so does this.
///
/// # Errors
/// Shape and label-range errors.
pub fn brier(probs: &[f64], labels: &[u32], classes: usize) -> Result<f64> {
    if classes == 0 || probs.len() != labels.len() * classes || labels.is_empty() {
        return Err(Error::shape("probs", format!("[{}, {classes}]", labels.len()), &[probs.len()]));
    }
    let mut total = 0.0;
    for (row, &l) in probs.chunks(classes).zip(labels) {
        if l as usize >= classes {
            return Err(Error::data("labels", format!("label {l} is outside 0..{classes}")));
        }
        total +=
            row.iter().enumerate().map(|(c, p)| (p - if c == l as usize { 1.0 } else { 0.0 }).powi(2)).sum::<f64>();
    }
    let halve = if classes == 2 { 2.0 } else { 1.0 };
    Ok(total / labels.len() as f64 / halve)
}

/// Binary Brier score `mean((p − y)²)` of positive-class probabilities.
///
/// # Errors
/// [`Error::Shape`] for mismatched or empty inputs.
pub fn binary_brier(probs: &[f64], labels: &[bool]) -> Result<f64> {
    if probs.len() != labels.len() || probs.is_empty() {
        return Err(Error::shape("probs", format!("[{}] (one per label)", labels.len()), &[probs.len()]));
    }
    Ok(probs.iter().zip(labels).map(|(p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2)).sum::<f64>()
        / probs.len() as f64)
}
