//! How per-element losses become the value that is minimised.

use candle_core::Tensor;
use sconce_core::Result;

/// The reduction of per-element losses, as PyTorch's `reduction` argument.
///
/// `Mean` follows each loss's PyTorch definition: for cross-entropy with class weights or an
/// ignored index it is the *weighted mean over valid elements* (`Σ wᵢℓᵢ / Σ wᵢ`), elsewhere the
/// plain mean over all elements.
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
