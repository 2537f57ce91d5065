//! Numerically stable activations and normalisations over any axis: `sigmoid`, `softplus`,
//! `log_sigmoid`, `logsumexp`, `log_softmax`, `softmax`, and `one_hot`.
//!
//! Each stays finite — value and gradient — for inputs of ±1e4 in `f32`, where the textbook
//! forms (`log(sigmoid(x))`, `log(1 + exp(x))`, `exp(x) / Σ exp(x)`) overflow to ±∞ or NaN.

use candle_core::backend::BackendStorage;
use candle_core::shape::Dim;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::{Real, contiguous_slice};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unary {
    Sigmoid,
    Softplus,
    LogSigmoid,
}

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Sigmoid => "sigmoid",
            Unary::Softplus => "softplus",
            Unary::LogSigmoid => "log_sigmoid",
        }
    }

    #[inline]
    fn eval<T: Real>(self, x: T) -> T {
        let one = T::one();
        match self {
            Unary::Sigmoid => {
                if x >= T::zero() {
                    one / (one + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (one + e)
                }
            }
            // max(x, 0) + log1p(exp(−|x|))
            Unary::Softplus => Float::max(x, T::zero()) + (-x.abs()).exp().ln_1p(),
            // min(x, 0) − log1p(exp(−|x|))
            Unary::LogSigmoid => Float::min(x, T::zero()) - (-x.abs()).exp().ln_1p(),
        }
    }

    fn run<T: Real>(self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = self.eval(x);
            }
        });
        out
    }
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        Unary::name(*self)
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = layout.shape().clone();
        match storage {
            CpuStorage::F32(_) => {
                Ok((CpuStorage::F32(self.run(contiguous_slice::<f32>(storage, layout, self.name())?)), shape))
            }
            CpuStorage::F64(_) => {
                Ok((CpuStorage::F64(self.run(contiguous_slice::<f64>(storage, layout, self.name())?)), shape))
            }
            other => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name(), other.dtype()),
        }
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let local = match self {
            // σ' = σ(1 − σ)
            Unary::Sigmoid => (res * res.affine(-1.0, 1.0)?)?,
            // softplus' = σ(x)
            Unary::Softplus => apply(arg, Unary::Sigmoid)?,
            // log σ' = 1 − σ(x) = σ(−x)
            Unary::LogSigmoid => apply(&arg.neg()?, Unary::Sigmoid)?,
        };
        Ok(Some(grad_res.mul(&local)?))
    }
}

fn apply(x: &Tensor, op: Unary) -> candle_core::Result<Tensor> {
    match (x.device().is_cpu(), x.dtype()) {
        (true, DType::F32 | DType::F64) => x.contiguous()?.apply_op1(op),
        // Other devices and half precision: the same stable formulas from candle's ops.
        _ => {
            let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            match op {
                Unary::Sigmoid => {
                    let e = x.abs()?.neg()?.exp()?;
                    let pos = e.affine(1.0, 1.0)?.recip()?;
                    let neg = (&e * &pos)?;
                    x.ge(0.0)?.where_cond(&pos, &neg)
                }
                Unary::Softplus => x.relu()? + tail,
                Unary::LogSigmoid => x.neg()?.relu()?.neg()? - tail,
            }
        }
    }
}

/// The logistic sigmoid `1 / (1 + e^−x)`, exact in both tails.
///
/// # Errors
/// Only candle's own (e.g. an integer dtype).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(apply(x, Unary::Sigmoid)?)
}

/// `softplus(x) = log(1 + eˣ)`, computed as `max(x, 0) + log1p(e^−|x|)`.
///
/// # Errors
/// Only candle's own.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok(apply(x, Unary::Softplus)?)
}

/// `log σ(x) = −softplus(−x)`, finite for any finite `x` (≈ `x` for very negative `x`).
///
/// ```
/// # fn main() -> sconce_core::Result<()> {
/// let x = candle_core::Tensor::new(&[-1e4f32, 0.0, 1e4], &candle_core::Device::Cpu)?;
/// let y = sconce_tensor::log_sigmoid(&x)?.to_vec1::<f32>()?;
/// assert_eq!(y[0], -1e4);
/// assert!((y[1] + std::f32::consts::LN_2).abs() < 1e-7);
/// assert_eq!(y[2], 0.0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Only candle's own.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(apply(x, Unary::LogSigmoid)?)
}

fn axis_of<D: Dim>(x: &Tensor, axis: D, op: &'static str) -> Result<usize> {
    let axis = axis
        .to_index(x.shape(), op)
        .map_err(|_| Error::shape(op, format!("an axis within rank {}", x.rank()), x.dims()))?;
    if x.dims()[axis] == 0 {
        return Err(Error::shape(op, format!("a non-empty axis {axis}"), x.dims()));
    }
    Ok(axis)
}

/// `(z, log Σ exp(z))` with `z = x − max(x)` along `axis` (the max detached): the shared core
/// of [`logsumexp`] and [`log_softmax`]. Subtracting the maximum first keeps the largest
/// entries exact (`z = 0`), which is what makes `log_softmax` accurate at ±1e4 in `f32`.
fn shifted_lse(x: &Tensor, axis: usize) -> Result<(Tensor, Tensor, Tensor)> {
    // A slice that is all −∞ has max −∞; shift by a finite value there to avoid −∞ − (−∞).
    let lowest = if x.dtype() == DType::F64 { f64::MIN } else { f64::from(f32::MIN) };
    let m = x.max_keepdim(axis)?.detach().maximum(lowest)?.detach();
    let z = x.broadcast_sub(&m)?;
    let lse_z = z.exp()?.sum_keepdim(axis)?.log()?;
    Ok((z, lse_z, m))
}

/// `log Σ exp(x)` along `axis`, shifted by the (detached) maximum so it never overflows.
/// An all-`−∞` slice gives `−∞`, as in PyTorch.
///
/// # Errors
/// [`Error::Shape`] for an axis out of range.
pub fn logsumexp<D: Dim>(x: &Tensor, axis: D, keepdim: bool) -> Result<Tensor> {
    let axis = axis_of(x, axis, "logsumexp")?;
    let (_, lse_z, m) = shifted_lse(x, axis)?;
    let lse = (lse_z + m)?;
    Ok(if keepdim { lse } else { lse.squeeze(axis)? })
}

/// `log softmax(x)` along `axis`, computed as `z − log Σ exp(z)` with `z = x − max(x)`.
///
/// # Errors
/// [`Error::Shape`] for an axis out of range.
pub fn log_softmax<D: Dim>(x: &Tensor, axis: D) -> Result<Tensor> {
    let axis = axis_of(x, axis, "log_softmax")?;
    let (z, lse_z, _) = shifted_lse(x, axis)?;
    Ok(z.broadcast_sub(&lse_z)?)
}

/// `softmax(x)` along `axis`, computed as `exp(log_softmax(x))` (no overflow, rows sum to 1).
///
/// Unlike candle's `softmax_last_dim`, which silently drops its gradient, this one trains.
///
/// # Errors
/// [`Error::Shape`] for an axis out of range.
pub fn softmax<D: Dim>(x: &Tensor, axis: D) -> Result<Tensor> {
    Ok(log_softmax(x, axis)?.exp()?)
}

/// One-hot encoding of integer labels, with the class axis inserted at `axis` of the output.
///
/// `labels` of shape `S` (any integer dtype, or floats holding whole numbers) becomes a tensor
/// of shape `S` with `num_classes` inserted at `axis`: `[N] → [N, K]` with `axis = 1`,
/// `[N, H, W] → [N, K, H, W]` with `axis = 1`.
///
/// ```
/// # fn main() -> sconce_core::Result<()> {
/// let y = candle_core::Tensor::new(&[2u32, 0], &candle_core::Device::Cpu)?;
/// let t = sconce_tensor::one_hot(&y, 3, 1, candle_core::DType::F32)?;
/// assert_eq!(t.to_vec2::<f32>()?, vec![vec![0.0, 0.0, 1.0], vec![1.0, 0.0, 0.0]]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Data`] for a label outside `0..num_classes`; [`Error::Config`] for
/// `num_classes == 0`; [`Error::Shape`] for `axis > labels.rank()`.
pub fn one_hot(labels: &Tensor, num_classes: usize, axis: usize, dtype: DType) -> Result<Tensor> {
    if num_classes == 0 {
        return Err(Error::config("num_classes", "must be > 0"));
    }
    if axis > labels.rank() {
        return Err(Error::shape("one_hot axis", format!("an axis in 0..={}", labels.rank()), labels.dims()));
    }
    let idx = sconce_core::check::labels(labels, num_classes, "one_hot labels")?;
    let dims = labels.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis..].iter().product();
    let mut v = vec![0f32; idx.len() * num_classes];
    for (i, &c) in idx.iter().enumerate() {
        let (o, r) = (i / inner.max(1), i % inner.max(1));
        v[(o * num_classes + c as usize) * inner + r] = 1.0;
    }
    let mut out_dims = dims.to_vec();
    out_dims.insert(axis, num_classes);
    debug_assert_eq!(outer * num_classes * inner, v.len());
    Ok(Tensor::from_vec(v, out_dims, labels.device())?.to_dtype(dtype)?)
}
