//! Plumbing shared by the CPU kernels: the float element trait, contiguous slices out of
//! candle's storage, and argument checks that become `sconce_core::Error`s.

use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};
use num_traits::Float;
use sconce_core::Error;

/// The element types the kernels run on: `f32` and `f64`.
pub(crate) trait Real: WithDType + Float + std::ops::AddAssign + std::iter::Sum + Send + Sync + 'static {}

impl Real for f32 {}
impl Real for f64 {}

/// `v` as `f64` (candle's conversion; `num_traits`' `to_f64` returns an `Option`).
#[inline]
pub(crate) fn f64_of<T: Real>(v: T) -> f64 {
    <T as WithDType>::to_f64(v)
}

/// The contiguous slice of `storage` that `layout` describes.
pub(crate) fn contiguous_slice<'a, T: Real>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the kernel needs a contiguous input (call .contiguous() first)"),
    }
}

/// Checks that a tensor holds `f32` or `f64` (the kernels' element types).
pub(crate) fn float_dtype(t: &Tensor, what: &str) -> sconce_core::Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::config(
            format!("{what} dtype"),
            format!("expected f32 or f64, got {other:?}; convert with .to_dtype(DType::F32) first"),
        )),
    }
}

/// Checks that a tensor lives on the CPU (the kernels are CPU kernels).
pub(crate) fn cpu(t: &Tensor, what: &str) -> sconce_core::Result<()> {
    if t.device().is_cpu() {
        Ok(())
    } else {
        Err(Error::config(
            format!("{what} device"),
            format!(
                "sconce-tensor's kernels run on the CPU, got {:?}; move the tensor with .to_device(&Device::Cpu)",
                t.device()
            ),
        ))
    }
}

/// Dims of a rank-4 `[N, C, H, W]` float tensor on the CPU.
pub(crate) fn nchw(t: &Tensor, what: &str) -> sconce_core::Result<[usize; 4]> {
    let d = sconce_core::check::dims::<4>(t, what, "[N, C, H, W]")?;
    float_dtype(t, what)?;
    cpu(t, what)?;
    Ok(d)
}
