//! Shared plumbing of the fused loss kernels: element types, storage access, parallel sums,
//! and recording a data error found inside a kernel so the caller can return it as such.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};
use rayon::prelude::*;
use sconce_core::{Error, Result};

/// `f32` or `f64`; values are converted with candle's `WithDType::{to_f64, from_f64}`.
pub(crate) trait Real: WithDType + Send + Sync + 'static {}
impl Real for f32 {}
impl Real for f64 {}

/// The contiguous slice of a storage.
pub(crate) fn slice<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous tensor"),
    }
}

/// `softplus(−x) = max(−x, 0) + log1p(exp(−|x|))`, i.e. `−log σ(x)`.
#[inline]
pub(crate) fn softplus_neg(x: f64) -> f64 {
    (-x).max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `σ(x)` without overflow.
#[inline]
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Σ f(i) over `0..n` in f64, in parallel blocks.
pub(crate) fn par_sum(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    (0..n.div_ceil(4096)).into_par_iter().map(|b| (b * 4096..((b + 1) * 4096).min(n)).map(&f).sum::<f64>()).sum()
}

/// A data problem found inside a kernel, handed back to the caller.
pub(crate) type Flag = Arc<OnceLock<Error>>;

/// Runs `op`; if it failed and a kernel recorded a data error, returns that error instead.
pub(crate) fn with_flag(flag: &Flag, op: impl FnOnce() -> candle_core::Result<Tensor>) -> Result<Tensor> {
    match op() {
        Ok(t) => Ok(t),
        Err(e) => match flag.get() {
            Some(err) => Err(clone_data_error(err)),
            None => Err(e.into()),
        },
    }
}

fn clone_data_error(e: &Error) -> Error {
    match e {
        Error::Data { what, reason } => Error::data(what.clone(), reason.clone()),
        other => Error::data("loss input", other.to_string()),
    }
}

/// Checks a float tensor's dtype and device for the fused kernels.
pub(crate) fn check_float(t: &Tensor, what: &str) -> Result<()> {
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::config(
            format!("{what} dtype"),
            format!(
                "expected f32 or f64, got {:?}; losses compute in f32 or f64 (convert half precision first)",
                t.dtype()
            ),
        ));
    }
    if t.elem_count() == 0 {
        return Err(Error::shape(what, "a non-empty tensor", t.dims()));
    }
    if !t.device().is_cpu() {
        return Err(Error::config(
            format!("{what} device"),
            format!("the fused losses run on the CPU, got {:?}", t.device()),
        ));
    }
    Ok(())
}
