//! ReLU as one fused op with PyTorch's gradient convention: `y = max(x, 0)`, `dx = dy·[x > 0]`.
//!
//! candle's own `relu` computes its backward as `zeros_like(x)`, a comparison, a dtype
//! conversion and a product: five passes over the tensor where one suffices, on every
//! activation of a ResNet or DenseNet. It also passes the gradient at exactly 0 (`x ≥ 0`);
//! PyTorch, and this op, do not.
//!
//! [`add_relu`] is a residual block's `relu(a + b)` as one op: one pass forward, one backward,
//! and one node less in the autograd graph (candle zero-fills and adds every node's gradient).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::Result;

use crate::kernel::{Kernel2, Real, contiguous_slice, cpu, cpu_fwd2, float_dtype};

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// Runs `k` compiled for the CPU's best vector extensions (pulp's run-time dispatch).
fn simd<K: pulp::WithSimd>(k: K) -> K::Output {
    pulp::Arch::new().dispatch(k)
}

/// `out = max(x, 0)` over one chunk.
struct Fwd<'a, T> {
    x: &'a [T],
    out: &'a mut [MaybeUninit<T>],
}

impl<T: Real> pulp::WithSimd for Fwd<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::zero();
        for (o, &v) in self.out.iter_mut().zip(self.x) {
            o.write(if v > zero { v } else { zero });
        }
    }
}

/// `out = dy·[x > 0]` over one chunk.
struct Bwd<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    out: &'a mut [MaybeUninit<T>],
}

impl<T: Real> pulp::WithSimd for Bwd<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::zero();
        for ((o, &v), &d) in self.out.iter_mut().zip(self.x).zip(self.dy) {
            o.write(if v > zero { d } else { zero });
        }
    }
}

/// `out = max(a + b, 0)` over one chunk.
struct AddFwd<'a, T> {
    a: &'a [T],
    b: &'a [T],
    out: &'a mut [MaybeUninit<T>],
}

impl<T: Real> pulp::WithSimd for AddFwd<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::zero();
        for ((o, &u), &v) in self.out.iter_mut().zip(self.a).zip(self.b) {
            let s = u + v;
            o.write(if s > zero { s } else { zero });
        }
    }
}

/// A fresh vector of `len` elements, `f(start, chunk)` filling each chunk completely, chunks
/// in parallel.
fn fill<T: Real>(len: usize, f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| f(i * CHUNK, o));
    // SAFETY: `f` writes every element of its chunk (both callers zip the chunk with input
    // slices of the same length), and the chunks tile `0..len`.
    unsafe { out.set_len(len) };
    out
}

fn fwd<T: Real>(x: &[T]) -> Vec<T> {
    fill(x.len(), |s, out| simd(Fwd { x: &x[s..s + out.len()], out }))
}

/// `dy` has `x`'s length (checked by the op).
fn bwd<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    fill(x.len(), |s, out| simd(Bwd { x: &x[s..s + out.len()], dy: &dy[s..s + out.len()], out }))
}

/// `dy·[y > 0]` for the output `y` of a ReLU-ended fused op (`y > 0` exactly where the
/// pre-activation was), without autograd.
pub(crate) fn relu_grad(y: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    y.apply_op2_no_bwd(&dy.contiguous()?, &ReluGrad)
}

struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "sconce-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(fwd(contiguous_slice::<f32>(s, l, "relu")?)),
            CpuStorage::F64(_) => CpuStorage::F64(fwd(contiguous_slice::<f64>(s, l, "relu")?)),
            other => candle_core::bail!("relu: expected f32 or f64, got {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &ReluGrad)?))
    }
}

/// `(x, dy) → dy·[x > 0]`.
struct ReluGrad;

impl Kernel2 for ReluGrad {
    const NAME: &'static str = "relu backward";
    fn kernel<T: Real>(&self, x: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(bwd(x, dy))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "sconce-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("relu backward: gradient {:?} for input {:?}", l2.shape(), l1.shape());
        }
        Ok((cpu_fwd2(self, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }
}

/// `max(x, 0)`, differentiable with PyTorch's convention (gradient 0 at exactly 0), in one
/// pass forward and one backward.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// let x = Var::new(&[-1.0f32, 0.0, 2.0], &Device::Cpu)?;
/// let y = sconce_tensor::relu(x.as_tensor())?;
/// assert_eq!(y.to_vec1::<f32>()?, [0.0, 0.0, 2.0]);
/// let g = y.sum_all()?.backward()?;
/// assert_eq!(g.get(x.as_tensor()).map(|g| g.to_vec1::<f32>()).transpose()?, Some(vec![0.0, 0.0, 1.0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`sconce_core::Error::Config`] for a non-float dtype or a non-CPU device.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    float_dtype(x, "relu input")?;
    cpu(x, "relu input")?;
    Ok(x.contiguous()?.apply_op1(ReluOp)?)
}

/// `relu(a + b)` for `a` and `b` of one shape (a residual block's output).
struct AddRelu;

impl Kernel2 for AddRelu {
    const NAME: &'static str = "add_relu";
    fn kernel<T: Real>(&self, a: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(fill(a.len(), |s, out| simd(AddFwd { a: &a[s..s + out.len()], b: &b[s..s + out.len()], out })))
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "sconce-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("add_relu: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        Ok((cpu_fwd2(self, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }

    /// Both inputs get `dy·[y > 0]` (one tensor, shared).
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(res, grad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `max(a + b, 0)` in one pass, differentiable in both (PyTorch's gradient 0 where the sum is
/// exactly 0): a residual block's `relu(out + identity)` without the intermediate sum.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let a = Tensor::new(&[-1.0f32, 0.5, 2.0], &Device::Cpu)?;
/// let b = Tensor::new(&[0.5f32, -0.5, 1.0], &Device::Cpu)?;
/// assert_eq!(sconce_tensor::add_relu(&a, &b)?.to_vec1::<f32>()?, [0.0, 0.0, 3.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`sconce_core::Error::Shape`] when the shapes differ (no broadcasting);
/// [`sconce_core::Error::Config`] for a non-float dtype, mixed dtypes or a non-CPU device.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    float_dtype(a, "add_relu a")?;
    float_dtype(b, "add_relu b")?;
    cpu(a, "add_relu a")?;
    cpu(b, "add_relu b")?;
    if a.dims() != b.dims() {
        return Err(sconce_core::Error::shape("add_relu b", format!("{:?} (a's shape)", a.dims()), b.dims()));
    }
    if a.dtype() != b.dtype() {
        return Err(sconce_core::Error::config(
            "add_relu dtypes",
            format!("a is {:?} and b is {:?}; convert one with .to_dtype()", a.dtype(), b.dtype()),
        ));
    }
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)?)
}
