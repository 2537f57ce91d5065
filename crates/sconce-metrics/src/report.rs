//! scikit-learn's `classification_report` (text and JSON), top-k and thresholded binary
//! accuracy, and a [`MetricSet`] a training loop updates per batch and prints as one line.

use std::fmt::Write as _;

use candle_core::{DType, Tensor};
use sconce_core::{Error, Result};

use crate::{
    Average, ConfusionMatrix, EmptyPolicy, SegmentationScores, ZeroDivision, accuracy, per_class_prf,
    precision_recall_fscore,
};

/// Fraction of rows of `scores` `[N, C]` whose true label is among the `k` highest scores
/// (scikit-learn's `top_k_accuracy_score`, including its tie rule: among equal scores the
/// higher class index ranks first).
///
/// # Errors
/// Shape errors, `k == 0`, labels out of range.
pub fn top_k_accuracy(scores: &[f64], labels: &[u32], classes: usize, k: usize) -> Result<f64> {
    if k == 0 || classes == 0 || labels.is_empty() || scores.len() != labels.len() * classes {
        return Err(Error::shape("scores", format!("[{}, {classes}] with k ≥ 1", labels.len()), &[scores.len()]));
    }
    let mut hits = 0usize;
    for (row, &y) in scores.chunks(classes).zip(labels) {
        if y as usize >= classes {
            return Err(Error::data("labels", format!("label {y} is outside 0..{classes}")));
        }
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|&a, &b| row[a].total_cmp(&row[b])); // stable, ascending
        idx.reverse();
        hits += usize::from(idx[..k.min(classes)].contains(&(y as usize)));
    }
    Ok(hits as f64 / labels.len() as f64)
}

/// Where a binary decision threshold applies. Stating it explicitly is the point: thresholding
/// logits at 0.5 (instead of 0) is a classic silent error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Scores are probabilities; positive when `p ≥ t` (Keras' `BinaryAccuracy` uses `p > 0.5`).
    Probability(f64),
    /// Scores are logits; positive when `x ≥ t` (0 corresponds to probability ½).
    Logit(f64),
}

/// Accuracy of thresholded binary scores against `{0, 1}` labels.
///
/// # Errors
/// Shape errors; [`Error::Data`] for a probability outside `[0, 1]` under
/// [`Threshold::Probability`] (logits passed as probabilities).
pub fn binary_accuracy(scores: &[f64], labels: &[bool], threshold: Threshold) -> Result<f64> {
    if scores.len() != labels.len() || scores.is_empty() {
        return Err(Error::shape("scores", format!("[{}] (one per label)", labels.len()), &[scores.len()]));
    }
    let t = match threshold {
        Threshold::Probability(t) => {
            if let Some(v) = scores.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(Error::data(
                    "scores",
                    format!("{v} is not a probability; pass Threshold::Logit(0.0) for raw logits"),
                ));
            }
            t
        }
        Threshold::Logit(t) => t,
    };
    let hits = scores.iter().zip(labels).filter(|(s, l)| (**s >= t) == **l).count();
    Ok(hits as f64 / labels.len() as f64)
}

/// One row of a classification report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Class name, `"macro avg"` or `"weighted avg"`.
    pub name: String,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// True samples.
    pub support: u64,
}

impl ReportRow {
    /// An average's row (`"macro avg"`, ...) from its scores and the total support.
    pub(crate) fn average(name: &str, p: &crate::Prf, support: u64) -> Self {
        Self { name: name.into(), precision: p.precision, recall: p.recall, f1: p.f_score, support }
    }
}

/// scikit-learn's `classification_report`: per present class, accuracy, macro and weighted
/// averages (`zero_division = 0`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    /// Per-class rows, then `macro avg` and `weighted avg`.
    pub rows: Vec<ReportRow>,
    /// Accuracy.
    pub accuracy: f64,
    /// Number of samples.
    pub total: u64,
}

impl ClassificationReport {
    /// Builds the report; `names` labels the classes (default: the class index).
    ///
    /// # Errors
    /// [`Error::Config`] when `names` has fewer entries than classes.
    pub fn new(cm: &ConfusionMatrix, names: Option<&[&str]>) -> Result<Self> {
        Self::with_zero_division(cm, names, ZeroDivision::Zero)
    }

    /// [`ClassificationReport::new`] with scikit-learn's `zero_division`: the value a 0/0
    /// precision, recall or F1 takes (a class never predicted, or never present).
    ///
    /// # Errors
    /// [`Error::Config`] when `names` has fewer entries than classes.
    pub fn with_zero_division(cm: &ConfusionMatrix, names: Option<&[&str]>, zd: ZeroDivision) -> Result<Self> {
        if let Some(n) = names
            && n.len() < cm.num_classes()
        {
            return Err(Error::config("names", format!("{} names for {} classes", n.len(), cm.num_classes())));
        }
        let pc = per_class_prf(cm, 1.0, zd)?;
        let mut rows: Vec<ReportRow> = pc
            .classes
            .iter()
            .enumerate()
            .map(|(i, &c)| ReportRow {
                name: names.map(|n| n[c].to_string()).unwrap_or_else(|| c.to_string()),
                precision: pc.precision[i],
                recall: pc.recall[i],
                f1: pc.f_score[i],
                support: pc.support[i],
            })
            .collect();
        let total = cm.total();
        for (name, avg) in [("macro avg", Average::Macro), ("weighted avg", Average::Weighted)] {
            rows.push(ReportRow::average(name, &precision_recall_fscore(cm, 1.0, avg, zd)?, total));
        }
        Ok(Self { rows, accuracy: accuracy(cm), total })
    }

    /// The text table, laid out as scikit-learn lays it out (with `digits` decimals).
    pub fn to_text(&self, digits: usize) -> String {
        let n_classes = self.rows.len().saturating_sub(2);
        report_text(&self.rows, n_classes, Some((self.accuracy, self.total)), digits)
    }

    /// The report as JSON, keyed like scikit-learn's `output_dict=True`.
    pub fn to_json(&self) -> String {
        let num = |v: f64| if v.is_finite() { format!("{v}") } else { "null".into() };
        let n_classes = self.rows.len().saturating_sub(2);
        let entry = |r: &ReportRow| {
            format!(
                "\"{}\": {{\"precision\": {}, \"recall\": {}, \"f1-score\": {}, \"support\": {}}}",
                r.name.replace('"', "\\\""),
                num(r.precision),
                num(r.recall),
                num(r.f1),
                r.support
            )
        };
        let mut parts: Vec<String> = self.rows[..n_classes].iter().map(entry).collect();
        parts.push(format!("\"accuracy\": {}", num(self.accuracy)));
        parts.extend(self.rows[n_classes..].iter().map(entry));
        format!("{{{}}}", parts.join(", "))
    }
}

/// scikit-learn's `classification_report` text: the first `n_main` rows (classes or labels),
/// a blank line, the accuracy line when given (multi-class), then the average rows.
pub(crate) fn report_text(rows: &[ReportRow], n_main: usize, accuracy: Option<(f64, u64)>, digits: usize) -> String {
    let headers = ["precision", "recall", "f1-score", "support"];
    let longest = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let width = longest.max("weighted avg".len()).max(digits);
    // scikit-learn's formats: "{:>{width}s} " then " {:>9}" per column.
    let mut s = format!("{:>width$} ", "", width = width);
    for h in headers {
        let _ = write!(s, " {h:>9}");
    }
    s.push_str("\n\n");
    let row = |s: &mut String, r: &ReportRow| {
        let _ = writeln!(
            s,
            "{:>width$}  {:>9.d$} {:>9.d$} {:>9.d$} {:>9}",
            r.name,
            r.precision,
            r.recall,
            r.f1,
            r.support,
            width = width,
            d = digits
        );
    };
    let n_main = n_main.min(rows.len());
    for r in &rows[..n_main] {
        row(&mut s, r);
    }
    s.push('\n');
    if let Some((acc, total)) = accuracy {
        let _ = writeln!(
            s,
            "{:>width$}  {:>9} {:>9} {:>9.d$} {:>9}",
            "accuracy",
            "",
            "",
            acc,
            total,
            width = width,
            d = digits
        );
    }
    for r in &rows[n_main..] {
        row(&mut s, r);
    }
    s
}

/// What a [`MetricSet`] measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Task {
    /// Single-label classification over `classes`: scores `[N, C]` (C = 1 with 2 classes: one
    /// logit per sample, thresholded at logit 0), labels `[N]`.
    Multiclass {
        /// Number of classes.
        classes: usize,
    },
    /// Semantic segmentation: scores `[N, C, H, W]` (C = 1 with 2 classes: one logit per pixel,
    /// thresholded at logit 0) and label maps `[N, H, W]`.
    Segmentation {
        /// Number of classes (2 for binary masks).
        classes: usize,
    },
}

/// The metrics of one evaluation, updated batch by batch and printed as one line or JSON.
///
/// ```
/// use sconce_metrics::{MetricSet, Task};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let mut m = MetricSet::new(Task::Multiclass { classes: 3 })?;
/// let logits = candle_core::Tensor::new(&[[2.0f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &dev)?;
/// m.update(&logits, &candle_core::Tensor::new(&[0u32, 1], &dev)?)?;
/// assert!(m.line().starts_with("accuracy 0.5000"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MetricSet {
    task: Task,
    cm: ConfusionMatrix,
    seg: Option<SegmentationScores>,
}

impl MetricSet {
    /// An empty set for `task`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero classes.
    pub fn new(task: Task) -> Result<Self> {
        let (classes, seg) = match task {
            Task::Multiclass { classes } => (classes, None),
            Task::Segmentation { classes } => (classes, Some(SegmentationScores::new(classes, EmptyPolicy::Exclude)?)),
        };
        Ok(Self { task, cm: ConfusionMatrix::new(classes)?, seg })
    }

    /// Adds a batch of model outputs and targets. The outputs have one channel per class on
    /// axis 1 (scores or logits, arg-max), or, for two classes, a single logit per sample or
    /// pixel (class 1 where `logit ≥ 0`: a sigmoid + BCE head).
    ///
    /// # Errors
    /// [`Error::Shape`] when the channels fit neither form (e.g. 1 logit for 3 classes), and
    /// the label errors.
    pub fn update(&mut self, outputs: &Tensor, targets: &Tensor) -> Result<()> {
        let (Task::Multiclass { classes } | Task::Segmentation { classes }) = self.task;
        let channels = if outputs.rank() >= 2 { outputs.dims()[1] } else { 0 };
        let preds = if channels == 1 && classes == 2 {
            outputs.squeeze(1)?.ge(0.0)?.to_dtype(DType::U32)?
        } else if channels == classes {
            outputs.argmax(1)?
        } else {
            return Err(Error::shape(
                "metric outputs",
                format!("[N, {classes}, ...] class scores (or [N, 1, ...] logits for 2 classes)"),
                outputs.dims(),
            ));
        };
        match &mut self.seg {
            Some(seg) => seg.update(targets, &preds)?,
            None => self.cm.update_tensors(targets, &preds)?,
        }
        Ok(())
    }

    /// Clears all counts.
    pub fn reset(&mut self) -> Result<()> {
        *self = Self::new(self.task)?;
        Ok(())
    }

    /// `(name, value)` pairs: accuracy and macro F1, plus mean IoU/Dice for segmentation.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        match &self.seg {
            Some(seg) => vec![
                ("pixel_accuracy", seg.pixel_accuracy()),
                ("mean_iou", seg.mean_iou()),
                ("mean_dice", seg.mean_dice()),
            ],
            None => {
                let f1 = precision_recall_fscore(&self.cm, 1.0, Average::Macro, ZeroDivision::Zero)
                    .map(|p| p.f_score)
                    .unwrap_or(f64::NAN);
                vec![("accuracy", accuracy(&self.cm)), ("macro_f1", f1)]
            }
        }
    }

    /// One line: `name value name value ...` with four decimals.
    pub fn line(&self) -> String {
        self.values().iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(" ")
    }

    /// The values as a JSON object (NaN as null).
    pub fn json(&self) -> String {
        let parts: Vec<String> = self
            .values()
            .iter()
            .map(|(k, v)| format!("\"{k}\": {}", if v.is_finite() { v.to_string() } else { "null".into() }))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
}
