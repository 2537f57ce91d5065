//! Focal loss from logits (Lin et al. 2017) with segmentation_models_pytorch's semantics:
//! binary, multilabel, and multiclass as one-vs-rest sigmoid focal losses averaged over classes.

use candle_core::{DType, Tensor};
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::bce::BinaryCrossEntropy;
use crate::reduction::Reduction;
use crate::region::Mode;

/// `FL = (1 − p_t)^γ · BCE(x, y)` with `p_t = exp(−BCE)`, optionally weighted by
/// `α·y + (1 − α)·(1 − y)` and normalised by `Σ (1 − p_t)^γ`; the mean over non-ignored
/// elements (per class, then over classes for multiclass/multilabel), as smp's `FocalLoss`.
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::{FocalLoss, Mode};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let logits = candle_core::Tensor::new(&[[[[3.0f32, -3.0]]]], &dev)?;
/// let mask = candle_core::Tensor::new(&[[[[1.0f32, 0.0]]]], &dev)?;
/// // Both pixels are easy and right: BCE = softplus(−3) ≈ 0.0486 each, down-weighted by
/// // (1 − p_t)² with p_t = exp(−BCE) to ≈ 1.09e-4.
/// let l = FocalLoss::new(Mode::Binary).loss(&logits, &mask)?.to_scalar::<f32>()?;
/// let bce = (-3f32).exp().ln_1p();
/// assert!((l - (1.0 - (-bce).exp()).powi(2) * bce).abs() < 1e-7);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FocalLoss {
    mode: Mode,
    alpha: Option<f64>,
    gamma: f64,
    normalized: bool,
    ignore_index: Option<i64>,
}

impl FocalLoss {
    /// `γ = 2`, no `α`, not normalised (smp's defaults).
    pub fn new(mode: Mode) -> Self {
        Self { mode, alpha: None, gamma: 2.0, normalized: false, ignore_index: None }
    }

    /// Class balance `α ∈ [0, 1]` (weight of positives).
    pub fn alpha(mut self, a: f64) -> Self {
        self.alpha = Some(a);
        self
    }

    /// Focusing exponent `γ ≥ 0` (0 gives BCE).
    pub fn gamma(mut self, g: f64) -> Self {
        self.gamma = g;
        self
    }

    /// Divide by `Σ (1 − p_t)^γ` (normalised focal loss).
    pub fn normalized(mut self, on: bool) -> Self {
        self.normalized = on;
        self
    }

    /// Target value whose elements are left out.
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = Some(i);
        self
    }

    /// Mean focal loss of logits `x` against binary targets `y` over elements where `mask` is 1.
    fn binary(&self, x: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let y_clean = match mask {
            Some(m) => (y * m)?,
            None => y.clone(),
        };
        let logpt = BinaryCrossEntropy::new().reduction(Reduction::None).loss(x, &y_clean)?;
        let pt = logpt.neg()?.exp()?;
        let focal = focal_term(&pt.affine(-1.0, 1.0)?, self.gamma)?;
        let mut loss = (&focal * &logpt)?;
        if let Some(a) = self.alpha {
            loss = (loss * y_clean.affine(2.0 * a - 1.0, 1.0 - a)?)?;
        }
        let (loss, focal) = match mask {
            Some(m) => ((loss * m)?, (focal * m)?),
            None => (loss, focal),
        };
        let count = match mask {
            Some(m) => m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            None => x.elem_count() as f64,
        };
        let mut total = loss.sum_all()?;
        if self.normalized {
            total = total.broadcast_div(&focal.sum_all()?.maximum(1e-6)?)?;
        }
        Ok((total / count.max(1.0))?)
    }
}

/// A binary mask fits `[N, 1, H, W]` logits as `[N, 1, H, W]` or `[N, H, W]`.
pub(crate) fn binary_target_fits(logits: &Tensor, target: &Tensor) -> bool {
    let mut squeezed = logits.dims().to_vec();
    if squeezed.len() >= 2 && squeezed[1] == 1 {
        squeezed.remove(1);
    }
    target.dims() == logits.dims() || target.dims() == squeezed.as_slice()
}

/// `base^γ` for `base ≥ 0` with a finite gradient everywhere: 1 for `γ = 0`, and the base
/// kept ≥ 1e-12 for `0 < γ < 1` (candle's `powf` backward is `γ·x^(γ−1)`, infinite at 0; in
/// `f32`, `p_t` rounds to exactly 1 for logits beyond ±17).
pub(crate) fn focal_term(base: &Tensor, gamma: f64) -> Result<Tensor> {
    Ok(if gamma == 0.0 {
        base.ones_like()?
    } else if gamma < 1.0 {
        base.maximum(1e-12)?.powf(gamma)?
    } else {
        base.maximum(0.0)?.powf(gamma)?
    })
}

/// Class-index targets must be whole numbers in `0..c` (or the ignore index): anything else
/// would silently count as background for every class.
fn check_class_targets(t: &Tensor, c: usize, ignore: Option<f64>) -> Result<()> {
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let ok = |y: f64| Some(y) == ignore || (y.fract() == 0.0 && y >= 0.0 && y < c as f64);
    if let Some(bad) = v.iter().copied().find(|&y| !ok(y)) {
        let or_ignore = ignore.map(|i| format!(" or the ignore_index {i}")).unwrap_or_default();
        return Err(Error::data(
            "target",
            format!(
                "class index {bad} is not one of 0..{c}{or_ignore}; multiclass focal loss takes one class index per \
                 position (set ignore_index for void labels such as 255)"
            ),
        ));
    }
    Ok(())
}

impl Loss for FocalLoss {
    fn name(&self) -> &str {
        "focal"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::config("gamma", format!("must be finite and ≥ 0, got {}", self.gamma)));
        }
        if let Some(a) = self.alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(Error::config("alpha", format!("must be in [0, 1], got {a}")));
        }
        crate::kernel::check_float(logits, "logits")?;
        let dtype = logits.dtype();
        let ignore = self.ignore_index.map(|v| v as f64);
        let mask_of = |y: &Tensor| -> Result<Option<Tensor>> {
            Ok(match ignore {
                Some(v) => Some(y.ne(v)?.to_dtype(dtype)?),
                None => None,
            })
        };
        match self.mode {
            Mode::Binary => {
                let y = target.to_dtype(dtype)?;
                if !binary_target_fits(logits, target) {
                    return Err(Error::shape(
                        "target",
                        format!("{:?} (one value per logit)", logits.dims()),
                        target.dims(),
                    ));
                }
                let y = y.reshape(logits.shape())?;
                let mask = mask_of(&y)?;
                self.binary(logits, &y, mask.as_ref())
            }
            Mode::Multilabel | Mode::Multiclass => {
                if logits.rank() < 2 {
                    return Err(Error::shape("logits", "[N, C, ...]", logits.dims()));
                }
                let c = logits.dims()[1];
                if self.mode == Mode::Multiclass {
                    check_class_targets(target, c, ignore)?;
                }
                let mut losses = Vec::with_capacity(c);
                for cls in 0..c {
                    let x = logits.narrow(1, cls, 1)?.squeeze(1)?;
                    let (y, mask) = if self.mode == Mode::Multiclass {
                        if target.dims() != x.dims() {
                            return Err(Error::shape("target", format!("class indices {:?}", x.dims()), target.dims()));
                        }
                        let t = target.to_dtype(DType::F64)?;
                        (t.eq(cls as f64)?.to_dtype(dtype)?, mask_of(&t)?)
                    } else {
                        if target.dims() != logits.dims() {
                            return Err(Error::shape("target", format!("{:?}", logits.dims()), target.dims()));
                        }
                        let y = target.narrow(1, cls, 1)?.squeeze(1)?.to_dtype(dtype)?;
                        let mask = mask_of(&y)?;
                        (y, mask)
                    };
                    losses.push(self.binary(&x, &y, mask.as_ref())?);
                }
                Ok((Tensor::stack(&losses, 0)?.sum_all()? / c as f64)?)
            }
        }
    }

    fn activation(&self) -> Activation {
        Activation::Sigmoid
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
