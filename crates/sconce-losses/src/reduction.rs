//! How per-element losses become the value that is minimised.

use candle_core::Tensor;
use sconce_core::Result;

/// The reduction of per-element losses, as PyTorch's `reduction` argument.
///
/// `Mean` follows each loss's PyTorch definition: for cross-entropy with class weights or an
/// ignored index it is the *weighted mean over valid elements* (`Σ wᵢℓᵢ / Σ wᵢ`), elsewhere the
/// plain mean over all elements.
///
/// Losses that take a reduction: BCE, cross-entropy, the element-wise regression and hinge
/// losses (`ElementwiseLoss`), KL divergence, Poisson and categorical hinge (a `reduction`
/// setter each), and categorical focal (its `reduction` field); per position for the last four. Per-sample weights go through [`weighted_mean`] on their `None` output. The
/// set losses (Dice/Jaccard/Tversky, Lovász) and smp's focal loss are means by definition and
/// have no per-element form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Per-element losses, same shape as the target (class axis removed for class targets).
    None,
    /// The sum.
    Sum,
    /// The (weighted, valid-only where defined) mean.
    #[default]
    Mean,
}

impl Reduction {
    /// Applies the reduction to per-element losses with a denominator for `Mean`.
    pub(crate) fn apply(self, per_element: Tensor, mean_divisor: f64) -> Result<Tensor> {
        Ok(match self {
            Reduction::None => per_element,
            Reduction::Sum => per_element.sum_all()?,
            Reduction::Mean => (per_element.sum_all()? / mean_divisor)?,
        })
    }
}

/// How per-sample weights normalise a weighted loss (Keras' two weighted reductions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightNorm {
    /// `Σ wᵢℓᵢ / N` (Keras' `sum_over_batch_size`).
    BatchSize,
    /// `Σ wᵢℓᵢ / Σ wᵢ` (Keras' `mean_with_sample_weight`).
    SumOfWeights,
}

/// Applies per-sample weights to per-element losses (a loss with [`Reduction::None`]):
/// each sample's losses are averaged over its remaining axes, multiplied by its weight, summed,
/// and normalised by `norm`.
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::{BinaryCrossEntropy, Reduction, WeightNorm, weighted_mean};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let logits = candle_core::Tensor::new(&[[0.0f32], [0.0]], &dev)?;
/// let target = candle_core::Tensor::new(&[[1.0f32], [0.0]], &dev)?;
/// let per = BinaryCrossEntropy::new().reduction(Reduction::None).loss(&logits, &target)?;
/// let w = candle_core::Tensor::new(&[3.0f32, 1.0], &dev)?;
/// // Both losses are ln 2: (3·ln2 + 1·ln2) / (3 + 1) = ln 2.
/// let l = weighted_mean(&per, &w, WeightNorm::SumOfWeights)?.to_scalar::<f32>()?;
/// assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`sconce_core::Error::Shape`] when `sample_weight` is not `[N]`; [`sconce_core::Error::Data`]
/// for negative or non-finite weights, or weights summing to 0 with [`WeightNorm::SumOfWeights`].
pub fn weighted_mean(per_element: &Tensor, sample_weight: &Tensor, norm: WeightNorm) -> Result<Tensor> {
    let n = per_element.dims().first().copied().unwrap_or(1);
    if sample_weight.dims() != [n] {
        return Err(sconce_core::Error::shape(
            "sample_weight",
            format!("[{n}] (one weight per sample)"),
            sample_weight.dims(),
        ));
    }
    let w = sample_weight.to_dtype(per_element.dtype())?;
    let wv = w.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    if let Some((i, v)) = wv.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
        return Err(sconce_core::Error::data(
            "sample_weight",
            format!("weight {v} of sample {i} must be finite and ≥ 0"),
        ));
    }
    let per_sample = if per_element.rank() > 1 { per_element.flatten_from(1)?.mean(1)? } else { per_element.clone() };
    let total = (per_sample * &w)?.sum_all()?;
    let denom = match norm {
        WeightNorm::BatchSize => n as f64,
        WeightNorm::SumOfWeights => wv.iter().sum(),
    };
    if denom <= 0.0 {
        return Err(sconce_core::Error::data("sample_weight", "weights sum to 0; nothing to average"));
    }
    Ok((total / denom)?)
}
