//! Overlap losses for segmentation — Dice, Jaccard (IoU) and Tversky — computed from logits
//! with segmentation_models_pytorch's semantics (v0.6): soft scores per class over the batch
//! and all pixels, classes absent from the batch's targets contribute zero.

use candle_core::{DType, Tensor};
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

/// How the output channels relate to the target, as smp's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One channel `[N, 1, H, W]`; target a `{0, 1}` (or soft) mask `[N, 1, H, W]` or `[N, H, W]`;
    /// sigmoid.
    Binary,
    /// `C` mutually exclusive classes `[N, C, H, W]`; integer target `[N, H, W]`; softmax.
    Multiclass,
    /// `C` independent channels `[N, C, H, W]`; target `[N, C, H, W]` in `[0, 1]`; sigmoid.
    Multilabel,
}

/// Which overlap score.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    /// Tversky with `α` weighting false positives and `β` false negatives (Dice: ½, ½; IoU: 1, 1).
    Tversky { alpha: f64, beta: f64 },
}

/// Dice, Jaccard or Tversky loss from logits.
///
/// Per class `c`, with probabilities `p` and targets `y` summed over the batch and pixels:
/// `TP = (Σp + Σy − Σ|p − y|)/2`, `FP = Σp − TP`, `FN = Σy − TP`,
/// `score = (TP + smooth) / max(TP + α·FP + β·FN + smooth, eps)`, loss `1 − score` (or
/// `−log max(score, eps)` with [`RegionLoss::log_loss`]). **Empty-mask policy**: a class with
/// no target pixels in the batch contributes 0 (smp's rule; its score would be undefined).
/// The loss is the mean over classes (or the `class_weights`-weighted mean), raised to `gamma`
/// (focal Tversky).
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::{Mode, RegionLoss};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// // A perfect, confident prediction of a 2×2 binary mask: Dice loss ≈ 0.
/// let mask = candle_core::Tensor::new(&[[[[1.0f32, 0.0], [0.0, 1.0]]]], &dev)?;
/// let logits = ((&mask * 40.0)? - 20.0)?;
/// let l = RegionLoss::dice(Mode::Binary).loss(&logits, &mask)?.to_scalar::<f32>()?;
/// assert!(l < 1e-6);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RegionLoss {
    mode: Mode,
    score: Score,
    smooth: f64,
    eps: f64,
    log_loss: bool,
    ignore_index: Option<i64>,
    class_weights: Option<Vec<f64>>,
    gamma: f64,
}

impl RegionLoss {
    fn with(mode: Mode, alpha: f64, beta: f64) -> Self {
        Self {
            mode,
            score: Score::Tversky { alpha, beta },
            smooth: 0.0,
            eps: 1e-7,
            log_loss: false,
            ignore_index: None,
            class_weights: None,
            gamma: 1.0,
        }
    }

    /// Dice loss (`α = β = ½`): smp's `DiceLoss`, Keras' `Dice`.
    pub fn dice(mode: Mode) -> Self {
        Self::with(mode, 0.5, 0.5)
    }

    /// Jaccard / IoU loss (`α = β = 1`): smp's `JaccardLoss`.
    pub fn jaccard(mode: Mode) -> Self {
        Self::with(mode, 1.0, 1.0)
    }

    /// Tversky loss: `alpha` weights false positives, `beta` false negatives.
    pub fn tversky(mode: Mode, alpha: f64, beta: f64) -> Self {
        Self::with(mode, alpha, beta)
    }

    /// Additive smoothing of numerator and denominator (default 0).
    pub fn smooth(mut self, s: f64) -> Self {
        self.smooth = s;
        self
    }

    /// Lower bound of the denominator (default 1e-7).
    pub fn eps(mut self, e: f64) -> Self {
        self.eps = e;
        self
    }

    /// Use `−log(score)` instead of `1 − score`.
    pub fn log_loss(mut self, on: bool) -> Self {
        self.log_loss = on;
        self
    }

    /// Target value whose pixels are left out (both prediction and target masked).
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = Some(i);
        self
    }

    /// Weights of the per-class losses in the mean.
    pub fn class_weights(mut self, w: Vec<f64>) -> Self {
        self.class_weights = Some(w);
        self
    }

    /// Exponent of the aggregated loss (focal Tversky; default 1).
    pub fn gamma(mut self, g: f64) -> Self {
        self.gamma = g;
        self
    }

    fn validate(&self, c: usize) -> Result<()> {
        let Score::Tversky { alpha, beta } = self.score;
        for (name, v) in [("alpha", alpha), ("beta", beta), ("smooth", self.smooth), ("gamma", self.gamma)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(name, format!("must be finite and ≥ 0, got {v}")));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config("eps", format!("must be positive, got {}", self.eps)));
        }
        if let Some(w) = &self.class_weights
            && (w.len() != c || w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || w.iter().sum::<f64>() <= 0.0)
        {
            return Err(Error::config("class_weights", format!("needs {c} non-negative weights with a positive sum")));
        }
        if self.mode == Mode::Binary && c != 1 {
            return Err(Error::config(
                "mode",
                format!("binary mode needs one output channel, got {c}; use Mode::Multiclass or Mode::Multilabel"),
            ));
        }
        if self.mode == Mode::Multiclass && c < 2 {
            return Err(Error::config("mode", "multiclass mode needs at least 2 output channels; use Mode::Binary"));
        }
        Ok(())
    }

    /// `(probabilities [N, C, P], targets [N, C, P], mask [N, 1 or C, P] or None)`.
    fn prepare(&self, logits: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let dims = logits.dims();
        let (n, c) = (dims[0], dims[1]);
        let p: usize = dims[2..].iter().product();
        let dtype = logits.dtype();
        match self.mode {
            Mode::Multiclass => {
                let probs = sconce_tensor::softmax(logits, 1)?.reshape((n, c, p))?;
                let mut spatial = dims.to_vec();
                spatial.remove(1);
                if target.dims() != spatial.as_slice() {
                    return Err(Error::shape("target", format!("class indices {spatial:?}"), target.dims()));
                }
                let y = target.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                let mut onehot = vec![0f64; n * c * p];
                let mut mask = vec![1f64; n * p];
                for (i, &v) in y.iter().enumerate() {
                    if Some(v as i64) == self.ignore_index && v.fract() == 0.0 {
                        mask[i] = 0.0;
                        continue;
                    }
                    if !(v.fract() == 0.0 && v >= 0.0 && (v as usize) < c) {
                        return Err(Error::data("target", format!("class index {v} at element {i} is outside 0..{c}")));
                    }
                    let (b, s) = (i / p, i % p);
                    onehot[(b * c + v as usize) * p + s] = 1.0;
                }
                let dev = logits.device();
                let onehot = Tensor::from_vec(onehot, (n, c, p), dev)?.to_dtype(dtype)?;
                let mask =
                    self.ignore_index.map(|_| Tensor::from_vec(mask, (n, 1, p), dev)?.to_dtype(dtype)).transpose()?;
                Ok((probs, onehot, mask))
            }
            Mode::Binary | Mode::Multilabel => {
                let probs = sconce_tensor::sigmoid(logits)?.reshape((n, c, p))?;
                let ok_shape = target.dims() == dims
                    || (self.mode == Mode::Binary && crate::focal::binary_target_fits(logits, target));
                if !ok_shape {
                    return Err(Error::shape("target", format!("{dims:?} (same as the logits)"), target.dims()));
                }
                let y = target.to_dtype(dtype)?.reshape((n, c, p))?;
                sconce_core::check::finite(&y, "target")?;
                let ignore = self.ignore_index.map(|v| v as f64);
                let values = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                if let Some((i, v)) =
                    values.iter().enumerate().find(|(_, v)| !((0.0..=1.0).contains(*v) || Some(**v) == ignore))
                {
                    return Err(Error::data(
                        "target",
                        format!("mask value {v} at element {i} is outside [0, 1]; divide 0/255 masks by 255"),
                    ));
                }
                match ignore {
                    Some(iv) => {
                        let mask = y.ne(iv)?.to_dtype(dtype)?;
                        Ok(((probs * &mask)?, (y * &mask)?, Some(mask)))
                    }
                    None => Ok((probs, y, None)),
                }
            }
        }
    }
}

impl Loss for RegionLoss {
    fn name(&self) -> &str {
        match self.score {
            Score::Tversky { alpha, beta } if alpha == 0.5 && beta == 0.5 => "dice",
            Score::Tversky { alpha, beta } if alpha == 1.0 && beta == 1.0 => "jaccard",
            _ => "tversky",
        }
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::kernel::check_float(logits, "logits")?;
        if logits.rank() < 2 {
            return Err(Error::shape("logits", "[N, C, ...] with the classes on axis 1", logits.dims()));
        }
        let c = logits.dims()[1];
        self.validate(c)?;
        let (probs, y, mask) = self.prepare(logits, target)?;
        let probs = match (&mask, self.mode) {
            (Some(m), Mode::Multiclass) => probs.broadcast_mul(m)?,
            _ => probs,
        };
        let Score::Tversky { alpha, beta } = self.score;
        // Sums over the batch (axis 0) and pixels (axis 2): per class.
        let per_class = |t: &Tensor| -> Result<Tensor> { Ok(t.sum(2)?.sum(0)?) };
        let out_sum = per_class(&probs)?;
        let tgt_sum = per_class(&y)?;
        // |p − y| with sign(0) = 0 in the gradient, as PyTorch's L1 norm.
        let d = (&probs - &y)?;
        let abs = (&d * d.sign()?.detach())?;
        let diff = per_class(&abs)?;
        let tp = ((&out_sum + &tgt_sum)? - diff)?.affine(0.5, 0.0)?;
        let fp = (&out_sum - &tp)?;
        let fneg = (&tgt_sum - &tp)?;
        let den = (((&tp + (fp * alpha)?)? + (fneg * beta)?)? + self.smooth)?.maximum(self.eps)?;
        let score = ((&tp + self.smooth)? / den)?;
        let loss = if self.log_loss { score.maximum(self.eps)?.log()?.neg()? } else { score.affine(-1.0, 1.0)? };
        // Classes without target pixels contribute zero.
        let present = tgt_sum.gt(0.0)?.to_dtype(loss.dtype())?.detach();
        let loss = (loss * present)?;
        let agg = match &self.class_weights {
            Some(w) => {
                let wt = Tensor::from_slice(w, w.len(), logits.device())?.to_dtype(loss.dtype())?;
                ((loss * &wt)?.sum_all()? / w.iter().sum::<f64>())?
            }
            None => loss.mean_all()?,
        };
        Ok(if self.gamma == 1.0 { agg } else { crate::focal::focal_term(&agg, self.gamma)? })
    }

    fn activation(&self) -> Activation {
        match self.mode {
            Mode::Multiclass => Activation::Softmax { axis: 1 },
            _ => Activation::Sigmoid,
        }
    }

    fn target_kind(&self) -> TargetKind {
        match self.mode {
            Mode::Multiclass => TargetKind::ClassIndices,
            _ => TargetKind::BinaryProbabilities,
        }
    }

    fn ignore_index(&self) -> Option<i64> {
        self.ignore_index
    }
}
