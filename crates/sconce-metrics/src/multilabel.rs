//! Multi-label classification: per-label confusion counts from thresholded scores, and
//! precision / recall / F-beta with `micro`, `macro`, `weighted` and `samples` averaging as
//! scikit-learn defines them on indicator matrices.

use sconce_core::{Error, Result};

use crate::report::{ReportRow, Threshold, report_text};
use crate::{Prf, ZeroDivision};

/// scikit-learn's `classification_report` for multi-label targets (see
/// [`MultilabelConfusion::report`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MultilabelReport {
    /// A row per label, then `micro avg`, `macro avg`, `weighted avg`, `samples avg`.
    pub rows: Vec<ReportRow>,
    labels: usize,
}

impl MultilabelReport {
    /// The text table, laid out as scikit-learn lays it out (with `digits` decimals).
    pub fn to_text(&self, digits: usize) -> String {
        report_text(&self.rows, self.labels, None, digits)
    }
}

/// How multi-label scores are averaged (scikit-learn's `average` for indicator matrices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultilabelAverage {
    /// Global counts over every (sample, label).
    Micro,
    /// Mean over labels.
    Macro,
    /// Mean over labels weighted by support.
    Weighted,
    /// Mean over samples of each sample's score.
    Samples,
}

/// Streaming multi-label counts: per label `(tp, fp, fn, support)`, and per-sample score sums.
/// Update per batch, [`merge`](Self::merge) across workers, [`reset`](Self::reset) per epoch;
/// a target value set by [`ignore_value`](Self::ignore_value) (e.g. −1 for "not annotated")
/// leaves that (sample, label) pair out of every count.
#[derive(Debug, Clone, PartialEq)]
pub struct MultilabelConfusion {
    labels: usize,
    thresholds: Vec<Threshold>,
    ignore: Option<f64>,
    counts: Vec<[u64; 4]>,
    /// Per label, the pairs counted (not ignored): a label with none has no score.
    seen: Vec<u64>,
    /// Per sample `(|pred ∩ true|, |pred|, |true|)`, kept for the `samples` average.
    samples: Vec<(u32, u32, u32)>,
}

impl MultilabelConfusion {
    /// Counts for `labels` labels, each decided by its own threshold (one threshold for all if
    /// a single one is given).
    ///
    /// # Errors
    /// [`Error::Config`] for zero labels or a threshold count other than 1 or `labels`.
    pub fn new(labels: usize, thresholds: Vec<Threshold>) -> Result<Self> {
        if labels == 0 {
            return Err(Error::config("labels", "must be > 0"));
        }
        let thresholds = match thresholds.len() {
            1 => vec![thresholds[0]; labels],
            n if n == labels => thresholds,
            n => return Err(Error::config("thresholds", format!("need 1 or {labels} thresholds, got {n}"))),
        };
        Ok(Self {
            labels,
            thresholds,
            ignore: None,
            counts: vec![[0; 4]; labels],
            seen: vec![0; labels],
            samples: Vec::new(),
        })
    }

    /// Targets equal to `v` (e.g. −1 for "not annotated") mark pairs to leave out of every
    /// count; a sample with all its pairs ignored leaves the `samples` average, a label with
    /// all its pairs ignored the `macro`/`weighted` ones.
    ///
    /// # Errors
    /// [`Error::Config`] for 0, 1 (real targets) or a non-finite value.
    pub fn ignore_value(mut self, v: f64) -> Result<Self> {
        if !v.is_finite() || v == 0.0 || v == 1.0 {
            return Err(Error::config("ignore_value", format!("must be finite and neither 0 nor 1, got {v}")));
        }
        self.ignore = Some(v);
        Ok(self)
    }

    /// Adds another worker's counts (same labels, thresholds and ignore value).
    ///
    /// # Errors
    /// [`Error::Config`] when the two were set up differently.
    pub fn merge(&mut self, other: &MultilabelConfusion) -> Result<()> {
        if other.labels != self.labels || other.thresholds != self.thresholds || other.ignore != self.ignore {
            return Err(Error::config(
                "merge",
                format!(
                    "cannot merge counts of {} labels (thresholds {:?}, ignore value {:?}) into {} labels \
                     (thresholds {:?}, ignore value {:?}): all three must match",
                    other.labels, other.thresholds, other.ignore, self.labels, self.thresholds, self.ignore
                ),
            ));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (a, b) in self.seen.iter_mut().zip(&other.seen) {
            *a += b;
        }
        self.samples.extend_from_slice(&other.samples);
        Ok(())
    }

    /// Clears every count.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = [0; 4]);
        self.seen.iter_mut().for_each(|c| *c = 0);
        self.samples.clear();
    }

    /// [`update`](Self::update) from candle tensors: scores and targets `[N, L]` of any dtype.
    ///
    /// # Errors
    /// As [`update`](Self::update); [`Error::Shape`] for other ranks or shapes.
    pub fn update_tensors(&mut self, scores: &candle_core::Tensor, targets: &candle_core::Tensor) -> Result<()> {
        let l = self.labels;
        if scores.rank() != 2 || scores.dims()[1] != l {
            return Err(Error::shape("scores", format!("[N, {l}]"), scores.dims()));
        }
        if targets.dims() != scores.dims() {
            return Err(Error::shape("targets", format!("{:?} like the scores", scores.dims()), targets.dims()));
        }
        let flat = |t: &candle_core::Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
        };
        self.update(&flat(scores)?, &flat(targets)?)
    }

    /// Adds scores `[N, L]` (row-major) and `{0, 1}` targets `[N, L]`.
    ///
    /// # Errors
    /// Shape errors; [`Error::Data`] for targets other than 0/1 or a probability threshold
    /// applied to a score outside `[0, 1]`.
    pub fn update(&mut self, scores: &[f64], targets: &[f64]) -> Result<()> {
        let l = self.labels;
        if scores.len() != targets.len() || !scores.len().is_multiple_of(l) {
            return Err(Error::shape(
                "scores",
                format!("[N, {l}] like the targets ({})", targets.len()),
                &[scores.len()],
            ));
        }
        // Check the whole batch first: a bad value must not leave half a batch counted.
        for (row, (s, t)) in scores.chunks(l).zip(targets.chunks(l)).enumerate() {
            for j in 0..l {
                if Some(t[j]) == self.ignore {
                    continue;
                }
                if t[j] != 0.0 && t[j] != 1.0 {
                    let or = self.ignore.map(|v| format!(" (or the ignore value {v})")).unwrap_or_default();
                    return Err(Error::data("targets", format!("value {} at [{row}, {j}] is not 0 or 1{or}", t[j])));
                }
                if let Threshold::Probability(_) = self.thresholds[j]
                    && !(0.0..=1.0).contains(&s[j])
                {
                    return Err(Error::data(
                        "scores",
                        format!("{} at [{row}, {j}] is not a probability; use Threshold::Logit for logits", s[j]),
                    ));
                }
                if s[j].is_nan() {
                    return Err(Error::data("scores", format!("NaN at [{row}, {j}]")));
                }
            }
        }
        for (s, t) in scores.chunks(l).zip(targets.chunks(l)) {
            let (mut both, mut pred, mut truth, mut counted) = (0u32, 0u32, 0u32, false);
            for j in 0..l {
                if Some(t[j]) == self.ignore {
                    continue;
                }
                counted = true;
                self.seen[j] += 1;
                let y = t[j] == 1.0;
                let p = match self.thresholds[j] {
                    Threshold::Probability(th) | Threshold::Logit(th) => s[j] >= th,
                };
                let c = &mut self.counts[j];
                match (y, p) {
                    (true, true) => c[0] += 1,
                    (false, true) => c[1] += 1,
                    (true, false) => c[2] += 1,
                    (false, false) => {}
                }
                c[3] += u64::from(y);
                both += u32::from(y && p);
                pred += u32::from(p);
                truth += u32::from(y);
            }
            if counted {
                self.samples.push((both, pred, truth));
            }
        }
        Ok(())
    }

    /// scikit-learn's `classification_report` for indicator matrices: a row per label, then
    /// the micro, macro, weighted and samples averages (supports: the labels' total).
    ///
    /// # Errors
    /// [`Error::Config`] for fewer names than labels; [`Error::Data`] before any update.
    pub fn report(&self, names: Option<&[&str]>, zd: ZeroDivision) -> Result<MultilabelReport> {
        if let Some(n) = names
            && n.len() < self.labels
        {
            return Err(Error::config("names", format!("{} names for {} labels", n.len(), self.labels)));
        }
        let z = match zd {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        };
        let div = |a: f64, b: f64| if b == 0.0 { z } else { a / b };
        let mut rows: Vec<ReportRow> = self
            .counts
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let (tp, fp, fneg) = (c[0] as f64, c[1] as f64, c[2] as f64);
                ReportRow {
                    name: names.map(|n| n[j].to_string()).unwrap_or_else(|| j.to_string()),
                    precision: div(tp, tp + fp),
                    recall: div(tp, tp + fneg),
                    f1: div(2.0 * tp, 2.0 * tp + fp + fneg),
                    support: c[3],
                }
            })
            .collect();
        let total: u64 = self.counts.iter().map(|c| c[3]).sum();
        for (name, avg) in [
            ("micro avg", MultilabelAverage::Micro),
            ("macro avg", MultilabelAverage::Macro),
            ("weighted avg", MultilabelAverage::Weighted),
            ("samples avg", MultilabelAverage::Samples),
        ] {
            rows.push(ReportRow::average(name, &self.prf(1.0, avg, zd)?, total));
        }
        Ok(MultilabelReport { rows, labels: self.labels })
    }

    /// Averaged precision, recall and F-beta.
    ///
    /// # Errors
    /// [`Error::Config`] for a negative `beta`; [`Error::Data`] before any update.
    pub fn prf(&self, beta: f64, average: MultilabelAverage, zd: ZeroDivision) -> Result<Prf> {
        if beta.is_nan() || beta < 0.0 {
            return Err(Error::config("beta", format!("must be ≥ 0, got {beta}")));
        }
        if self.samples.is_empty() {
            return Err(Error::data("multilabel metrics", "no samples yet"));
        }
        let z = match zd {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        };
        let div = |a: f64, b: f64| if b == 0.0 { z } else { a / b };
        let b2 = beta * beta;
        let score =
            |tp: f64, pred: f64, truth: f64| (div(tp, pred), div(tp, truth), div((1.0 + b2) * tp, b2 * truth + pred));
        let nan_avg = |v: &[(f64, f64)]| {
            let (mut num, mut den) = (0.0, 0.0);
            for &(x, w) in v {
                if !x.is_nan() {
                    num += w * x;
                    den += w;
                }
            }
            if den == 0.0 { f64::NAN } else { num / den }
        };
        let triple = |items: Vec<((f64, f64, f64), f64)>| Prf {
            precision: nan_avg(&items.iter().map(|((p, _, _), w)| (*p, *w)).collect::<Vec<_>>()),
            recall: nan_avg(&items.iter().map(|((_, r, _), w)| (*r, *w)).collect::<Vec<_>>()),
            f_score: nan_avg(&items.iter().map(|((_, _, f), w)| (*f, *w)).collect::<Vec<_>>()),
        };
        Ok(match average {
            MultilabelAverage::Micro => {
                let (tp, fp, fneg) = self
                    .counts
                    .iter()
                    .fold((0.0, 0.0, 0.0), |a, c| (a.0 + c[0] as f64, a.1 + c[1] as f64, a.2 + c[2] as f64));
                let (p, r, f) = score(tp, tp + fp, tp + fneg);
                Prf { precision: p, recall: r, f_score: f }
            }
            MultilabelAverage::Macro | MultilabelAverage::Weighted => {
                let weighted = average == MultilabelAverage::Weighted;
                if weighted && self.counts.iter().all(|c| c[3] == 0) {
                    return Ok(Prf { precision: z, recall: z, f_score: z });
                }
                triple(
                    self.counts
                        .iter()
                        .zip(&self.seen)
                        .filter(|(_, seen)| **seen > 0)
                        .map(|(c, _)| {
                            let (tp, fp, fneg) = (c[0] as f64, c[1] as f64, c[2] as f64);
                            (score(tp, tp + fp, tp + fneg), if weighted { c[3] as f64 } else { 1.0 })
                        })
                        .collect(),
                )
            }
            MultilabelAverage::Samples => triple(
                self.samples
                    .iter()
                    .map(|&(both, pred, truth)| (score(f64::from(both), f64::from(pred), f64::from(truth)), 1.0))
                    .collect(),
            ),
        })
    }
}
