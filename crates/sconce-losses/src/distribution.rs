//! Losses between a distribution over axis 1 and the model's logits — KL divergence, Poisson
//! (log-rate outputs), categorical hinge, categorical focal — and a weighted sum of losses
//! (e.g. BCE + Dice for segmentation).

use candle_core::{D, DType, Tensor};
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::Reduction;

fn class_axis_check(logits: &Tensor, target: &Tensor) -> Result<()> {
    crate::kernel::check_float(logits, "logits")?;
    if logits.rank() < 2 {
        return Err(Error::shape("logits", "[N, C, ...] with the classes on axis 1", logits.dims()));
    }
    sconce_core::check::same_shape(logits, "logits", target, "target")?;
    sconce_core::check::finite(target, "target")
}

fn non_negative(t: &Tensor, what: &str) -> Result<()> {
    let min = t.flatten_all()?.min(D::Minus1)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if min < 0.0 {
        return Err(Error::data(what, format!("values must be ≥ 0, found {min}")));
    }
    Ok(())
}

/// Reduces a per-position loss `[N, ...]` (class axis already summed): the mean over positions
/// by default.
fn reduce(per_position: Tensor, r: Reduction) -> Result<Tensor> {
    let n = per_position.elem_count() as f64;
    r.apply(per_position, n)
}

/// `KL(t ‖ softmax(x)) = Σ_c t_c·(log t_c − log softmax(x)_c)` over axis 1 (with `0·log 0 = 0`),
/// averaged over the other positions: PyTorch's `kl_div(log_softmax(x), t, reduction="batchmean")`
/// for `[N, C]`; for `[N, C, H, W]` the mean over the `N·H·W` positions (Keras' convention;
/// PyTorch's `batchmean` would divide the sum by `N` alone). [`Reduction::None`] gives the
/// per-position values, [`Reduction::Sum`] their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KlDivergence {
    reduction: Reduction,
}

impl KlDivergence {
    /// Mean over positions.
    pub fn new() -> Self {
        Self::default()
    }

    /// How the per-position values are reduced.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
}

impl Loss for KlDivergence {
    fn name(&self) -> &str {
        "kl_divergence"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        class_axis_check(logits, target)?;
        let t = target.to_dtype(logits.dtype())?;
        non_negative(&t, "target")?;
        let logp = sconce_tensor::log_softmax(logits, 1)?;
        // t·log t with 0·log 0 = 0: log of max(t, tiny) is finite and multiplied by 0 there.
        let t_log_t = (&t * t.maximum(f64::from(f32::MIN_POSITIVE))?.log()?)?.detach();
        let per = (t_log_t - (&t * logp)?)?.sum(1)?;
        reduce(per, self.reduction)
    }

    fn activation(&self) -> Activation {
        Activation::Softmax { axis: 1 }
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::ClassProbabilities
    }
}

/// Poisson negative log-likelihood for log-rate outputs: `exp(x) − t·x`, mean over elements
/// (PyTorch's `PoissonNLLLoss(log_input=True, full=False)`). The model outputs `log λ`.
///
/// The one loss here that is not finite for every logit: `exp(x)` is the value itself, so a
/// log-rate above ~88 (f32) or ~709 (f64) gives `+inf` (never NaN), as in PyTorch and Keras;
/// that is a rate of 10³⁸ events, i.e. a diverged model, not a numerical trap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Poisson {
    reduction: Reduction,
}

impl Poisson {
    /// Mean over elements.
    pub fn new() -> Self {
        Self::default()
    }

    /// How the per-element values are reduced.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
}

impl Loss for Poisson {
    fn name(&self) -> &str {
        "poisson"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        crate::kernel::check_float(logits, "log-rates")?;
        sconce_core::check::same_shape(logits, "log-rates", target, "target")?;
        let t = target.to_dtype(logits.dtype())?;
        sconce_core::check::finite(&t, "target")?;
        non_negative(&t, "target counts")?;
        reduce((logits.exp()? - (t * logits)?)?, self.reduction)
    }

    fn activation(&self) -> Activation {
        Activation::Identity
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::Counts
    }
}

/// Keras' categorical hinge: `max(max_c (1 − y_c)·ŷ_c − Σ_c y_c·ŷ_c + 1, 0)` over axis 1,
/// mean over positions; one-hot targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoricalHinge {
    reduction: Reduction,
}

impl CategoricalHinge {
    /// Mean over positions.
    pub fn new() -> Self {
        Self::default()
    }

    /// How the per-position values are reduced.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
}

impl Loss for CategoricalHinge {
    fn name(&self) -> &str {
        "categorical_hinge"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        class_axis_check(logits, target)?;
        let y = target.to_dtype(logits.dtype())?;
        let pos = (&y * logits)?.sum(1)?;
        let neg = (y.affine(-1.0, 1.0)? * logits)?.max(1)?;
        reduce(((neg - pos)? + 1.0)?.relu()?, self.reduction)
    }

    fn activation(&self) -> Activation {
        Activation::Identity
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::ClassProbabilities
    }
}

/// Keras' categorical focal cross-entropy from logits:
/// `Σ_c −α·(1 − p_c)^γ·y_c·log p_c` with `p = softmax(x)` over axis 1, mean over positions;
/// one-hot or probability targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoricalFocal {
    /// Balance factor (Keras' default 0.25).
    pub alpha: f64,
    /// Focusing exponent (default 2).
    pub gamma: f64,
    /// How the per-position values are reduced (default: the mean).
    pub reduction: Reduction,
}

impl Default for CategoricalFocal {
    fn default() -> Self {
        Self { alpha: 0.25, gamma: 2.0, reduction: Reduction::Mean }
    }
}

impl Loss for CategoricalFocal {
    fn name(&self) -> &str {
        "categorical_focal"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        if !(self.gamma.is_finite() && self.gamma >= 0.0 && self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::config("CategoricalFocal", format!("alpha and gamma must be ≥ 0, got {self:?}")));
        }
        class_axis_check(logits, target)?;
        let y = target.to_dtype(logits.dtype())?;
        let logp = sconce_tensor::log_softmax(logits, 1)?;
        let focal = crate::focal::focal_term(&logp.exp()?.affine(-1.0, 1.0)?, self.gamma)?;
        let per = ((focal * y)? * logp)?.sum(1)?.affine(-self.alpha, 0.0)?;
        reduce(per, self.reduction)
    }

    fn activation(&self) -> Activation {
        Activation::Softmax { axis: 1 }
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::ClassProbabilities
    }
}

/// `Σ_i w_i·loss_i`: e.g. `BCE + Dice` for masks. Every term must imply the same activation
/// (they all read the same logits).
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::{BinaryCrossEntropy, Mode, RegionLoss, WeightedSum};
/// # fn main() -> sconce_core::Result<()> {
/// let bce_dice = WeightedSum::new(vec![
///     (1.0, Box::new(BinaryCrossEntropy::new()) as Box<dyn Loss>),
///     (1.0, Box::new(RegionLoss::dice(Mode::Binary))),
/// ])?;
/// assert_eq!(bce_dice.activation(), sconce_core::Activation::Sigmoid);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WeightedSum {
    terms: Vec<(f64, Box<dyn Loss>)>,
}

impl WeightedSum {
    /// The weighted sum of `terms`.
    ///
    /// # Errors
    /// [`Error::Config`] for no terms, a non-finite or negative weight, or terms that imply
    /// different activations (e.g. softmax CE with sigmoid BCE).
    pub fn new(terms: Vec<(f64, Box<dyn Loss>)>) -> Result<Self> {
        let Some(first) = terms.first().map(|t| t.1.activation()) else {
            return Err(Error::config("WeightedSum", "needs at least one term"));
        };
        for (w, l) in &terms {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(Error::config(
                    "WeightedSum weight",
                    format!("{w} for {} must be finite and ≥ 0", l.name()),
                ));
            }
            if l.activation() != first {
                return Err(Error::config(
                    "WeightedSum",
                    format!(
                        "{} implies {} but the first term implies {first}; terms must agree",
                        l.name(),
                        l.activation()
                    ),
                ));
            }
        }
        Ok(Self { terms })
    }
}

impl Loss for WeightedSum {
    fn name(&self) -> &str {
        "weighted_sum"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (w, l) in &self.terms {
            let v = (l.loss(logits, target)? * *w)?;
            total = Some(match total {
                Some(t) => (t + v)?,
                None => v,
            });
        }
        total.ok_or_else(|| Error::config("WeightedSum", "needs at least one term"))
    }

    fn activation(&self) -> Activation {
        self.terms.first().map(|t| t.1.activation()).unwrap_or(Activation::Identity)
    }

    fn target_kind(&self) -> TargetKind {
        self.terms.first().map(|t| t.1.target_kind()).unwrap_or(TargetKind::Real)
    }

    /// The first term's ignored value, if any term has one.
    fn ignore_index(&self) -> Option<i64> {
        self.terms.iter().find_map(|t| t.1.ignore_index())
    }
}
