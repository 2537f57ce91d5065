//! Gradient checking: compares candle's autograd gradient of an op with central finite
//! differences in `f64`, the check every op in this crate passes.

use candle_core::{DType, Tensor, Var};
use sconce_core::{Error, Result, SeededRng};

/// The largest disagreement between the autograd gradient and finite differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheck {
    /// `max |analytic − numeric|` over all input elements.
    pub max_abs_err: f64,
    /// `max |analytic − numeric| / max(1, |numeric|)`.
    pub max_rel_err: f64,
    /// Number of input elements checked.
    pub checked: usize,
}

/// Checks the gradient of `f` at `x` (any shape, converted to `f64`).
///
/// The scalar that is differentiated is `Σ r ⊙ f(x)` with fixed random weights `r` drawn from
/// `seed`, so every output element's gradient is exercised, not just their sum. Each input
/// element is perturbed by `±eps` (two evaluations of `f` per element), so keep inputs tiny.
///
/// ```
/// use sconce_tensor::gradcheck::check_gradient;
/// # fn main() -> sconce_core::Result<()> {
/// let x = candle_core::Tensor::new(&[0.3f64, -1.2, 2.0], &candle_core::Device::Cpu)?;
/// let r = check_gradient(|t| Ok(t.sqr()?), &x, 1e-6, 0)?;
/// assert!(r.max_abs_err < 1e-8);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Whatever `f` returns, and [`Error::NonFinite`] if `f` has no gradient path to `x`.
pub fn check_gradient(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, eps: f64, seed: u64) -> Result<GradCheck> {
    let x = x.to_dtype(DType::F64)?;
    let var = Var::from_tensor(&x)?;
    let y = f(var.as_tensor())?;
    let mut rng = SeededRng::new(seed);
    let weights: Vec<f64> = (0..y.elem_count()).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let r = Tensor::from_vec(weights, y.shape(), y.device())?;
    let objective = |t: &Tensor| -> Result<f64> { Ok((t.to_dtype(DType::F64)? * &r)?.sum_all()?.to_scalar::<f64>()?) };
    let grads = (y.to_dtype(DType::F64)? * &r)?.sum_all()?.backward()?;
    let Some(analytic) = grads.get(var.as_tensor()) else {
        return Err(Error::NonFinite {
            what: "gradient".into(),
            hint: "the function has no gradient path to its input (a no-backward op cut the graph)".into(),
        });
    };
    let analytic = analytic.flatten_all()?.to_vec1::<f64>()?;
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let mut report = GradCheck { max_abs_err: 0.0, max_rel_err: 0.0, checked: base.len() };
    for i in 0..base.len() {
        let mut probe = base.clone();
        probe[i] = base[i] + eps;
        let plus = objective(&f(&Tensor::from_vec(probe.clone(), x.shape(), x.device())?)?)?;
        probe[i] = base[i] - eps;
        let minus = objective(&f(&Tensor::from_vec(probe, x.shape(), x.device())?)?)?;
        let numeric = (plus - minus) / (2.0 * eps);
        let abs = (analytic[i] - numeric).abs();
        report.max_abs_err = report.max_abs_err.max(abs);
        report.max_rel_err = report.max_rel_err.max(abs / numeric.abs().max(1.0));
    }
    Ok(report)
}
