//! A per-channel bias added to `[N, C, ...]` activations (a convolution's bias) in one pass,
//! with a backward pass that sums the gradient per channel over contiguous planes.
//!
//! candle's `broadcast_add` is correct but its bias gradient is a generic strided reduction
//! over the batch and spatial axes: 7–8 % of a U-Net training step whose up-convolutions
//! carry biases.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::{Kernel2, Real, block_sum, cpu_fwd2};

/// Runs `k` compiled for the CPU's best vector extensions (pulp's run-time dispatch).
fn simd<K: pulp::WithSimd>(k: K) -> K::Output {
    pulp::Arch::new().dispatch(k)
}

/// `out = y + b` over one plane.
struct AddPlane<'a, T> {
    out: &'a mut [MaybeUninit<T>],
    y: &'a [T],
    b: T,
}

impl<T: Real> pulp::WithSimd for AddPlane<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let b = self.b;
        for (o, &v) in self.out.iter_mut().zip(self.y) {
            o.write(v + b);
        }
    }
}

/// `Σ` of one channel's planes.
struct ChannelSum<'a, T> {
    dy: &'a [T],
    c: usize,
    plane: usize,
    ch: usize,
}

impl<T: Real> pulp::WithSimd for ChannelSum<'_, T> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let Self { dy, c, plane, ch } = self;
        dy.chunks_exact(c * plane).map(|img| block_sum(&img[ch * plane..(ch + 1) * plane], |v| v)).sum()
    }
}

/// `(y, b) → y + b[c]` for `y` of `n·c·plane` values.
struct BiasAdd {
    c: usize,
    plane: usize,
}

impl Kernel2 for BiasAdd {
    const NAME: &'static str = "bias_add";
    fn kernel<T: Real>(&self, y: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let (c, plane) = (self.c, self.plane);
        if b.len() != c || plane == 0 || !y.len().is_multiple_of(c * plane) {
            candle_core::bail!("bias_add: {} values and {} biases for {c} channels of {plane}", y.len(), b.len());
        }
        let mut out: Vec<T> = Vec::with_capacity(y.len());
        out.spare_capacity_mut()[..y.len()]
            .par_chunks_mut(plane)
            .zip(y.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (o, y))| simd(AddPlane { out: o, y, b: b[i % c] }));
        // SAFETY: the planes tile `y.len()` (checked above) and each was written.
        unsafe { out.set_len(y.len()) };
        Ok(out)
    }
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "sconce-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((cpu_fwd2(self, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(bias_grad(grad, self.c, self.plane, b.dtype())?)))
    }
}

/// Checks that `b` is a bias for `c` output channels of `dtype` (`what` names the op).
pub(crate) fn check_bias(b: &Tensor, c: usize, dtype: candle_core::DType, what: &str) -> Result<()> {
    if b.dims() != [c] {
        return Err(Error::shape(format!("{what} bias"), format!("[{c}] (one per output channel)"), b.dims()));
    }
    if b.dtype() != dtype {
        return Err(Error::config(
            format!("{what} bias dtype"),
            format!("must match the input's {dtype:?}; convert the bias with .to_dtype"),
        ));
    }
    Ok(())
}

/// `y[i·c·plane + ch·plane + q] += b[ch]` in place (a fused op's bias, added to its fresh
/// output).
pub(crate) fn add_in_place<T: Real>(y: &mut [T], b: &[T], plane: usize) {
    let c = b.len();
    if c == 0 || plane == 0 {
        return;
    }
    y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
        let bv = b[i % c];
        simd(AddInPlace { y: p, b: bv });
    });
}

/// `y += b` over one plane.
struct AddInPlace<'a, T> {
    y: &'a mut [T],
    b: T,
}

impl<T: Real> pulp::WithSimd for AddInPlace<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let b = self.b;
        for v in self.y.iter_mut() {
            *v += b;
        }
    }
}

/// The bias gradient `Σ over images and the plane, per channel` (`[C]`) of `grad`
/// (`[N, C, ...]`, `plane` values per channel), in `dtype`.
pub(crate) fn bias_grad(
    grad: &Tensor,
    c: usize,
    plane: usize,
    dtype: candle_core::DType,
) -> candle_core::Result<Tensor> {
    grad.contiguous()?.apply_op1_no_bwd(&ChannelSums { c, plane })?.to_dtype(dtype)
}

/// `dy → Σ over images and the plane, per channel` (`[C]`).
struct ChannelSums {
    c: usize,
    plane: usize,
}

impl ChannelSums {
    fn run<T: Real>(&self, dy: &[T]) -> Vec<T> {
        let (c, plane) = (self.c, self.plane);
        (0..c).into_par_iter().map(|ch| T::from_f64(simd(ChannelSum { dy, c, plane, ch }))).collect()
    }
}

impl candle_core::CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "sconce-channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use crate::kernel::contiguous_slice;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(contiguous_slice::<f32>(s, l, "bias gradient")?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(contiguous_slice::<f64>(s, l, "bias gradient")?)),
            other => candle_core::bail!("bias gradient: expected f32 or f64, got {:?}", other.dtype()),
        };
        Ok((out, Shape::from(self.c)))
    }
}

/// `y + b` with `b` (`[C]`) broadcast over axis 1 of `y` (`[N, C, ...]`): a convolution's bias.
/// Checks `b`'s shape and dtype against `what`.
pub(crate) fn add_channel_bias(y: &Tensor, b: &Tensor, what: &str) -> Result<Tensor> {
    let c = y.dims().get(1).copied().unwrap_or(0);
    check_bias(b, c, y.dtype(), what)?;
    let plane = y.dims().iter().skip(2).product::<usize>();
    if y.elem_count() == 0 {
        return Ok((y + b
            .reshape(
                std::iter::once(1)
                    .chain(std::iter::once(c))
                    .chain(y.dims().iter().skip(2).map(|_| 1))
                    .collect::<Vec<_>>(),
            )?
            .broadcast_as(y.shape())?)?);
    }
    Ok(y.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd { c, plane })?)
}
