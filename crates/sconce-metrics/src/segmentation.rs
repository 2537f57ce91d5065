//! Segmentation scores: IoU (Jaccard) and Dice per class and their means, computed globally
//! over the dataset (one confusion matrix) and per image (then averaged), and pixel accuracy.
//!
//! **Empty-mask policy.** A class absent from both the target and the prediction has an
//! undefined IoU/Dice (0/0). [`EmptyPolicy::Exclude`] (the default, torchmetrics' and
//! scikit-learn's choice of averaging only classes that occur) leaves it out of every mean;
//! [`EmptyPolicy::Score`] counts it with a fixed value (1.0 rewards correctly predicting
//! nothing, smp's `zero_division=1`).

use candle_core::Tensor;
use sconce_core::{Error, Result};

use crate::ConfusionMatrix;

/// What an undefined (0/0) per-class score counts as.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum EmptyPolicy {
    /// Left out of means (NaN in per-class lists).
    #[default]
    Exclude,
    /// Counted as this value.
    Score(f64),
}

/// IoU/Dice accumulator over a dataset, updated one batch of label maps at a time.
///
/// ```
/// use sconce_metrics::{EmptyPolicy, SegmentationScores};
/// # fn main() -> sconce_core::Result<()> {
/// let mut s = SegmentationScores::new(2, EmptyPolicy::Exclude)?;
/// // One 2×2 image: foreground predicted on 1 of its 2 pixels, plus 1 false positive.
/// s.update_image(&[1, 1, 0, 0], &[1, 0, 1, 0])?;
/// assert!((s.iou()[1] - 1.0 / 3.0).abs() < 1e-12);
/// assert!((s.dice()[1] - 0.5).abs() < 1e-12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SegmentationScores {
    global: ConfusionMatrix,
    policy: EmptyPolicy,
    /// Per class: Σ over images of the per-image IoU / Dice, and how many images counted.
    image_iou: Vec<f64>,
    image_dice: Vec<f64>,
    image_count: Vec<u64>,
    images: u64,
    ignore_index: Option<u32>,
}

fn score(num: f64, den: f64, policy: EmptyPolicy) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        match policy {
            EmptyPolicy::Exclude => f64::NAN,
            EmptyPolicy::Score(v) => v,
        }
    }
}

fn nan_mean(v: &[f64]) -> f64 {
    let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    kept.iter().sum::<f64>() / kept.len() as f64
}

impl SegmentationScores {
    /// An empty accumulator over `num_classes` classes (2 for binary masks: background, object).
    ///
    /// # Errors
    /// [`Error::Config`] for zero classes or a non-finite policy score.
    pub fn new(num_classes: usize, policy: EmptyPolicy) -> Result<Self> {
        if let EmptyPolicy::Score(v) = policy
            && !v.is_finite()
        {
            return Err(Error::config("EmptyPolicy::Score", format!("must be finite, got {v}")));
        }
        Ok(Self {
            global: ConfusionMatrix::new(num_classes)?,
            policy,
            image_iou: vec![0.0; num_classes],
            image_dice: vec![0.0; num_classes],
            image_count: vec![0; num_classes],
            images: 0,
            ignore_index: None,
        })
    }

    /// Pixels whose target equals `index` (e.g. 255, "void") are not counted.
    pub fn with_ignore_index(mut self, index: u32) -> Self {
        self.ignore_index = Some(index);
        self.global = self.global.clone().with_ignore_index(index);
        self
    }

    /// Adds one image's label map (flattened), target and prediction.
    ///
    /// # Errors
    /// As [`ConfusionMatrix::update`].
    pub fn update_image(&mut self, y_true: &[u32], y_pred: &[u32]) -> Result<()> {
        let mut cm = ConfusionMatrix::new(self.global.num_classes())?;
        if let Some(i) = self.ignore_index {
            cm = cm.with_ignore_index(i);
        }
        cm.update(y_true, y_pred)?;
        for (c, (tp, fp, fneg, _)) in cm.per_class().into_iter().enumerate() {
            let (tp, fp, fneg) = (tp as f64, fp as f64, fneg as f64);
            let iou = score(tp, tp + fp + fneg, self.policy);
            let dice = score(2.0 * tp, 2.0 * tp + fp + fneg, self.policy);
            if !iou.is_nan() {
                self.image_iou[c] += iou;
                self.image_dice[c] += dice;
                self.image_count[c] += 1;
            }
        }
        self.global.merge(&cm)?;
        self.images += 1;
        Ok(())
    }

    /// Adds a batch: targets `[N, H, W]` and predictions `[N, H, W]` (labels) or `[N, C, H, W]`
    /// (scores, arg-max over axis 1).
    ///
    /// # Errors
    /// Shape errors, and as [`ConfusionMatrix::update`].
    pub fn update(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        let n = y_true.dims().first().copied().unwrap_or(0);
        let pred = if y_pred.rank() == y_true.rank() + 1 { y_pred.argmax(1)? } else { y_pred.clone() };
        if pred.dims() != y_true.dims() || y_true.rank() < 2 {
            return Err(Error::shape("y_pred", format!("{:?} (labels [N, H, W])", y_true.dims()), pred.dims()));
        }
        for i in 0..n {
            let labels = |t: &Tensor, what: &str| -> Result<Vec<u32>> {
                let v = t.narrow(0, i, 1)?.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
                v.iter()
                    .map(|x| {
                        if x.is_finite() && x.fract() == 0.0 && *x >= 0.0 && *x <= f64::from(u32::MAX) {
                            Ok(*x as u32)
                        } else {
                            Err(Error::data(what, format!("label {x} is not a class index")))
                        }
                    })
                    .collect()
            };
            self.update_image(&labels(y_true, "y_true")?, &labels(&pred, "y_pred")?)?;
        }
        Ok(())
    }

    /// The dataset-level confusion matrix.
    pub fn confusion(&self) -> &ConfusionMatrix {
        &self.global
    }

    /// Global IoU per class: `tp / (tp + fp + fn)` over every pixel seen.
    pub fn iou(&self) -> Vec<f64> {
        self.global
            .per_class()
            .iter()
            .map(|&(tp, fp, f, _)| score(tp as f64, (tp + fp + f) as f64, self.policy))
            .collect()
    }

    /// Global Dice (F1) per class: `2tp / (2tp + fp + fn)`.
    pub fn dice(&self) -> Vec<f64> {
        self.global
            .per_class()
            .iter()
            .map(|&(tp, fp, f, _)| score(2.0 * tp as f64, (2 * tp + fp + f) as f64, self.policy))
            .collect()
    }

    /// Mean of [`SegmentationScores::iou`] over the classes that count under the policy.
    pub fn mean_iou(&self) -> f64 {
        nan_mean(&self.iou())
    }

    /// Mean of [`SegmentationScores::dice`].
    pub fn mean_dice(&self) -> f64 {
        nan_mean(&self.dice())
    }

    /// Per class, the mean over images of the per-image IoU (images where the class is absent
    /// from target and prediction do not count under `Exclude`).
    pub fn per_image_iou(&self) -> Vec<f64> {
        self.image_iou
            .iter()
            .zip(&self.image_count)
            .map(|(s, &n)| if n > 0 { s / n as f64 } else { f64::NAN })
            .collect()
    }

    /// Per class, the mean over images of the per-image Dice.
    pub fn per_image_dice(&self) -> Vec<f64> {
        self.image_dice
            .iter()
            .zip(&self.image_count)
            .map(|(s, &n)| if n > 0 { s / n as f64 } else { f64::NAN })
            .collect()
    }

    /// Fraction of pixels labelled correctly.
    pub fn pixel_accuracy(&self) -> f64 {
        crate::accuracy(&self.global)
    }

    /// Number of images seen.
    pub fn images(&self) -> u64 {
        self.images
    }
}
