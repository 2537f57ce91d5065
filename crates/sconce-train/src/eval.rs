//! Ready-made evaluators on sconce-metrics: binary/multiclass segmentation (IoU, Dice) and
//! classification (accuracy, macro F1, and the per-output "binary accuracy" that makes
//! sigmoid + BCE on single-label targets look good).

use candle_core::{DType, Tensor};
use sconce_core::{Error, Result};
use sconce_metrics::{EmptyPolicy, MetricSet, SegmentationScores, Task};

use crate::trainer::Evaluator;

/// Segmentation metrics. One output channel: a pixel is foreground when its logit ≥ 0;
/// several: arg-max. Targets `[N, 1, H, W]` (0/1) or `[N, H, W]` (class indices).
///
/// Reports `iou` and `dice` of the foreground (class 1) for binary masks, or their means over
/// classes otherwise, plus `mean_iou` and `pixel_accuracy`.
#[derive(Debug, Clone)]
pub struct SegmentationEvaluator {
    classes: usize,
    scores: SegmentationScores,
}

impl SegmentationEvaluator {
    /// For `classes` classes (2 for binary masks, whether the model has 1 or 2 channels).
    ///
    /// # Errors
    /// [`Error::Config`] for fewer than 2 classes.
    pub fn new(classes: usize) -> Result<Self> {
        if classes < 2 {
            return Err(Error::config("classes", "segmentation needs at least 2 classes (background and object)"));
        }
        Ok(Self { classes, scores: SegmentationScores::new(classes, EmptyPolicy::Exclude)? })
    }
}

impl Evaluator for SegmentationEvaluator {
    fn reset(&mut self) {
        if let Ok(s) = SegmentationScores::new(self.classes, EmptyPolicy::Exclude) {
            self.scores = s;
        }
    }

    fn update(&mut self, logits: &Tensor, target: &Tensor) -> Result<()> {
        let pred =
            if logits.dim(1)? == 1 { logits.squeeze(1)?.ge(0.0)?.to_dtype(DType::U32)? } else { logits.argmax(1)? };
        let labels = if target.rank() == 4 { target.squeeze(1)? } else { target.clone() };
        self.scores.update(&labels.to_dtype(DType::U32)?, &pred)
    }

    fn compute(&self) -> Result<Vec<(String, f64)>> {
        if self.scores.images() == 0 {
            return Err(Error::data("evaluation", "no images were evaluated"));
        }
        let (iou, dice) = if self.classes == 2 {
            (self.scores.iou()[1], self.scores.dice()[1])
        } else {
            (self.scores.mean_iou(), self.scores.mean_dice())
        };
        Ok(vec![
            ("iou".into(), iou),
            ("dice".into(), dice),
            ("mean_iou".into(), self.scores.mean_iou()),
            ("pixel_accuracy".into(), self.scores.pixel_accuracy()),
        ])
    }
}

/// Classification metrics from logits `[N, C]`: `accuracy` and `macro_f1` of the arg-max;
/// with one-hot targets `[N, C]` (the BCE setup) also `binary_accuracy`, the fraction of the
/// N·C sigmoid outputs on the right side of 0.5 — high (≈ 1 − 1/C) even for a model that
/// never predicts the right class. A binary classifier with one logit and `[N, 1]` 0/1 targets
/// (2 classes) is read as class 1 where the logit is ≥ 0.
#[derive(Debug, Clone)]
pub struct ClassificationEvaluator {
    classes: usize,
    set: MetricSet,
    bin_right: u64,
    bin_total: u64,
}

impl ClassificationEvaluator {
    /// For `classes` classes.
    ///
    /// # Errors
    /// [`Error::Config`] for zero classes.
    pub fn new(classes: usize) -> Result<Self> {
        Ok(Self { classes, set: MetricSet::new(Task::Multiclass { classes })?, bin_right: 0, bin_total: 0 })
    }
}

impl Evaluator for ClassificationEvaluator {
    fn reset(&mut self) {
        if let Ok(s) = MetricSet::new(Task::Multiclass { classes: self.classes }) {
            self.set = s;
        }
        self.bin_right = 0;
        self.bin_total = 0;
    }

    fn update(&mut self, logits: &Tensor, target: &Tensor) -> Result<()> {
        if target.rank() == 2 && target.dim(1)? == 1 {
            // One logit and a 0/1 target per sample (sigmoid + BCE, two classes).
            let labels = target.squeeze(1)?.to_dtype(DType::F64)?.ge(0.5)?.to_dtype(DType::U32)?;
            self.set.update(logits, &labels)
        } else if target.rank() == 2 {
            let labels = target.argmax(1)?;
            let right = logits
                .ge(0.0)?
                .to_dtype(DType::F64)?
                .eq(&target.to_dtype(DType::F64)?.ge(0.5)?.to_dtype(DType::F64)?)?;
            self.bin_right += right.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? as u64;
            self.bin_total += target.elem_count() as u64;
            self.set.update(logits, &labels)
        } else {
            self.set.update(logits, &target.to_dtype(DType::U32)?)
        }
    }

    fn compute(&self) -> Result<Vec<(String, f64)>> {
        let mut v: Vec<(String, f64)> = self.set.values().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if self.bin_total > 0 {
            v.push(("binary_accuracy".into(), self.bin_right as f64 / self.bin_total as f64));
        }
        Ok(v)
    }
}
