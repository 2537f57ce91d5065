//! Regression and margin losses: MSE, MAE, Huber, log-cosh (stable), hinge and squared hinge
//! (Keras semantics, `{0, 1}` labels mapped to `{−1, +1}`).

use candle_core::Tensor;
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::reduction::Reduction;

/// Which elementwise regression or margin loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointLoss {
    /// `(ŷ − y)²`.
    Mse,
    /// `|ŷ − y|`.
    Mae,
    /// `½e²` for `|e| ≤ δ`, else `δ(|e| − ½δ)` (PyTorch's `HuberLoss`).
    Huber {
        /// The threshold `δ > 0`.
        delta: f64,
    },
    /// `log cosh(e)`, computed as `|e| + softplus(−2|e|) − log 2` (no overflow).
    LogCosh,
    /// `max(1 − y·ŷ, 0)` with `y ∈ {−1, +1}` (`{0, 1}` is mapped).
    Hinge,
    /// `max(1 − y·ŷ, 0)²`.
    SquaredHinge,
}

/// An elementwise loss with a reduction.
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::{ElementwiseLoss, PointLoss};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let pred = candle_core::Tensor::new(&[0.0f32, 3.0], &dev)?;
/// let target = candle_core::Tensor::new(&[1.0f32, 0.0], &dev)?;
/// let l = ElementwiseLoss::new(PointLoss::Huber { delta: 1.0 }).loss(&pred, &target)?;
/// assert_eq!(l.to_scalar::<f32>()?, (0.5 + 2.5) / 2.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementwiseLoss {
    kind: PointLoss,
    reduction: Reduction,
}

impl ElementwiseLoss {
    /// The loss with mean reduction.
    pub fn new(kind: PointLoss) -> Self {
        Self { kind, reduction: Reduction::Mean }
    }

    /// The reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
}

impl Loss for ElementwiseLoss {
    fn name(&self) -> &str {
        match self.kind {
            PointLoss::Mse => "mse",
            PointLoss::Mae => "mae",
            PointLoss::Huber { .. } => "huber",
            PointLoss::LogCosh => "log_cosh",
            PointLoss::Hinge => "hinge",
            PointLoss::SquaredHinge => "squared_hinge",
        }
    }

    fn loss(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::kernel::check_float(pred, "predictions")?;
        sconce_core::check::same_shape(pred, "predictions", target, "target")?;
        let y = target.to_dtype(pred.dtype())?;
        sconce_core::check::finite(&y, "target")?;
        let per = match self.kind {
            PointLoss::Mse => (pred - &y)?.sqr()?,
            PointLoss::Mae => (pred - &y)?.abs()?,
            PointLoss::Huber { delta } => {
                if !(delta.is_finite() && delta > 0.0) {
                    return Err(Error::config("delta", format!("must be positive, got {delta}")));
                }
                let a = (pred - &y)?.abs()?;
                let quad = (a.sqr()? * 0.5)?;
                let lin = a.affine(delta, -0.5 * delta * delta)?;
                a.le(delta)?.where_cond(&quad, &lin)?
            }
            PointLoss::LogCosh => {
                let a = (pred - &y)?.abs()?;
                ((&a + sconce_tensor::softplus(&a.affine(-2.0, 0.0)?)?)? - std::f64::consts::LN_2)?
            }
            PointLoss::Hinge | PointLoss::SquaredHinge => {
                let ys = hinge_labels(&y)?;
                let m = (pred * ys)?.affine(-1.0, 1.0)?.relu()?;
                if self.kind == PointLoss::Hinge { m } else { m.sqr()? }
            }
        };
        let n = per.elem_count().max(1) as f64;
        self.reduction.apply(per, n)
    }

    fn activation(&self) -> Activation {
        Activation::Identity
    }

    fn target_kind(&self) -> TargetKind {
        match self.kind {
            PointLoss::Hinge | PointLoss::SquaredHinge => TargetKind::SignedLabels,
            _ => TargetKind::Real,
        }
    }
}

/// Keras' `convert_binary_labels_to_hinge`: `{0, 1}` → `{−1, +1}`; `{−1, +1}` unchanged.
fn hinge_labels(y: &Tensor) -> Result<Tensor> {
    let v = y.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| ![-1.0, 0.0, 1.0].contains(*x)) {
        return Err(Error::data("target", format!("hinge labels must be −1/+1 or 0/1, found {x} at element {i}")));
    }
    if v.contains(&0.0) && v.contains(&-1.0) {
        return Err(Error::data("target", "hinge labels mix 0 and −1; use either {0, 1} or {−1, +1}"));
    }
    Ok(if v.contains(&0.0) { y.affine(2.0, -1.0)? } else { y.clone() })
}
