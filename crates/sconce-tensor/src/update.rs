//! Fused in-place parameter updates for optimizers (SGD with momentum, Adam/AdamW) and the
//! sum of squares of a gradient: one parallel pass per state tensor, no allocations.
//!
//! An update written with tensor ops (`p.set(&(p − g·lr))`, and a dozen ops for Adam) allocates
//! a tensor per op and runs most of them on one thread; for ResNet50's 25.6 M parameters that
//! is several passes over 100 MB each per step. These kernels overwrite the parameter and its
//! state in place, with PyTorch's arithmetic (`torch.optim.SGD`, `Adam`, `AdamW`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::Real;

/// Elements per parallel task; tensors of at most this many elements run on the calling
/// thread (most of a network's tensors are small: biases, batch-norm vectors).
const CHUNK: usize = 1 << 15;

/// One in-place pass `x ← f(x, a, b)` over a target `x` and up to two inputs of its shape.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// `x ← x − lr·(a + wd·x)`: SGD without momentum (`a` = gradient).
    Sgd { lr: f64, wd: f64 },
    /// `x ← a + wd·b` on the first step, else `x ← μ·x + (1 − d)·(a + wd·b)`: the momentum
    /// buffer (`a` = gradient, `b` = parameter, or empty without weight decay).
    Momentum { mu: f64, damp: f64, wd: f64, first: bool },
    /// `x ← x − lr·((a + wd·x) + μ·b)` (Nesterov) or `x ← x − lr·b`: the parameter after its
    /// momentum buffer (`a` = gradient, `b` = buffer).
    MomentumApply { lr: f64, mu: f64, wd: f64, nesterov: bool },
    /// `x ← β·x + (1 − β)·g` with `g = a + wd·b`, or `g²` when `square`: Adam's moments
    /// (`a` = gradient, `b` = parameter, or empty without weight decay).
    Moment { beta: f64, wd: f64, square: bool },
    /// `x ← max(x, a)`: AMSGrad's running maximum.
    Max,
    /// `x ← x·decay − (a / (√b / √bc2 + eps))·step`: Adam's parameter update (`a` = first
    /// moment, `b` = second).
    AdamApply { decay: f64, step: f64, bc2_sqrt: f64, eps: f64 },
}

impl Pass {
    /// Name in error messages.
    const NAME: &'static str = "optimizer update";

    /// Applies the pass to one chunk (`a`, `b` empty when the pass does not read them).
    fn chunk<T: Real>(self, x: &mut [T], a: &[T], b: &[T]) {
        pulp::Arch::new().dispatch(Chunk { pass: self, x, a, b });
    }

    /// The pass over whole slices: parallel in chunks of [`CHUNK`] for large ones.
    fn run<T: Real>(self, x: &mut [T], a: &[T], b: &[T]) {
        if x.len() <= CHUNK {
            self.chunk(x, a, b);
            return;
        }
        fn sub<T>(s: &[T], i: usize, len: usize) -> &[T] {
            if s.is_empty() { s } else { &s[i * CHUNK..][..len] }
        }
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(i, xc)| {
            let len = xc.len();
            self.chunk(xc, sub(a, i, len), sub(b, i, len));
        });
    }
}

/// One chunk of a [`Pass`], compiled for the CPU's widest vectors.
struct Chunk<'a, T> {
    pass: Pass,
    x: &'a mut [T],
    a: &'a [T],
    b: &'a [T],
}

impl<T: Real> pulp::WithSimd for Chunk<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let c = |v: f64| <T as candle_core::WithDType>::from_f64(v);
        let (x, a, b) = (self.x, self.a, self.b);
        match self.pass {
            Pass::Sgd { lr, wd } => {
                let (lr, wd) = (c(lr), c(wd));
                for (x, &g) in x.iter_mut().zip(a) {
                    *x = *x - (g + *x * wd) * lr;
                }
            }
            // Without weight decay the parameter is not read (`b` is empty).
            Pass::Momentum { mu, damp, wd, first } => {
                let (mu, keep, wd) = (c(mu), c(1.0 - damp), c(wd));
                match (first, b.is_empty()) {
                    (true, true) => x.copy_from_slice(a),
                    (true, false) => {
                        for ((x, &g), &p) in x.iter_mut().zip(a).zip(b) {
                            *x = g + p * wd;
                        }
                    }
                    (false, true) => {
                        for (x, &g) in x.iter_mut().zip(a) {
                            *x = *x * mu + g * keep;
                        }
                    }
                    (false, false) => {
                        for ((x, &g), &p) in x.iter_mut().zip(a).zip(b) {
                            *x = *x * mu + (g + p * wd) * keep;
                        }
                    }
                }
            }
            Pass::MomentumApply { lr, mu, wd, nesterov } => {
                let (lr, mu, wd) = (c(lr), c(mu), c(wd));
                if nesterov {
                    for ((x, &g), &buf) in x.iter_mut().zip(a).zip(b) {
                        *x = *x - ((g + *x * wd) + buf * mu) * lr;
                    }
                } else {
                    for (x, &buf) in x.iter_mut().zip(b) {
                        *x += -(buf * lr);
                    }
                }
            }
            Pass::Moment { beta, wd, square } => {
                let (beta, rest, wd) = (c(beta), c(1.0 - beta), c(wd));
                match (square, b.is_empty()) {
                    (false, true) => {
                        for (x, &g) in x.iter_mut().zip(a) {
                            *x = *x * beta + g * rest;
                        }
                    }
                    (true, true) => {
                        for (x, &g) in x.iter_mut().zip(a) {
                            *x = *x * beta + g * g * rest;
                        }
                    }
                    (_, false) => {
                        for ((x, &g), &p) in x.iter_mut().zip(a).zip(b) {
                            let g = g + p * wd;
                            let g = if square { g * g } else { g };
                            *x = *x * beta + g * rest;
                        }
                    }
                }
            }
            Pass::Max => {
                for (x, &v) in x.iter_mut().zip(a) {
                    // NaN in either propagates, as `torch.maximum`.
                    if v > *x || v.is_nan() {
                        *x = v;
                    }
                }
            }
            Pass::AdamApply { decay, step, bc2_sqrt, eps } => {
                let (decay, step, bc2_sqrt, eps) = (c(decay), c(step), c(bc2_sqrt), c(eps));
                for ((x, &m), &v) in x.iter_mut().zip(a).zip(b) {
                    *x = *x * decay - (m / (v.sqrt() / bc2_sqrt + eps)) * step;
                }
            }
        }
    }
}

/// `s` as a contiguous slice of `T`, for an input of `len` elements.
fn input<'a, T: Real>(s: &'a CpuStorage, l: &Layout, len: usize) -> candle_core::Result<&'a [T]> {
    let x = crate::kernel::contiguous_slice::<T>(s, l, Pass::NAME)?;
    if x.len() != len {
        candle_core::bail!("{}: an input of {} elements for a target of {len}", Pass::NAME, x.len());
    }
    Ok(x)
}

/// The target's contiguous slice of its storage's `data`.
fn target<'a, T>(data: &'a mut [T], l: &Layout) -> candle_core::Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("{}: the updated tensor must be contiguous", Pass::NAME),
    }
}

impl InplaceOp2 for Pass {
    fn name(&self) -> &'static str {
        "sconce-update"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        match s1 {
            CpuStorage::F32(data) => {
                let x = target(data, l1)?;
                self.run(x, input(s2, l2, x.len())?, &[]);
            }
            CpuStorage::F64(data) => {
                let x = target(data, l1)?;
                self.run(x, input(s2, l2, x.len())?, &[]);
            }
            other => candle_core::bail!("{}: f32 or f64 only, got {:?}", Pass::NAME, other.dtype()),
        }
        Ok(())
    }
}

impl InplaceOp3 for Pass {
    fn name(&self) -> &'static str {
        "sconce-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        match s1 {
            CpuStorage::F32(data) => {
                let x = target(data, l1)?;
                let n = x.len();
                self.run(x, input(s2, l2, n)?, input(s3, l3, n)?);
            }
            CpuStorage::F64(data) => {
                let x = target(data, l1)?;
                let n = x.len();
                self.run(x, input(s2, l2, n)?, input(s3, l3, n)?);
            }
            other => candle_core::bail!("{}: f32 or f64 only, got {:?}", Pass::NAME, other.dtype()),
        }
        Ok(())
    }
}

/// Checks that `t` can take part in an update of `param`: same shape and dtype (the parameter
/// itself is checked by [`check_target`]).
fn check_like(what: &str, t: &Tensor, param: &Tensor) -> Result<()> {
    if t.dims() != param.dims() {
        return Err(Error::shape(
            format!("optimizer update ({what})"),
            format!("the parameter's shape {:?}", param.dims()),
            t.dims(),
        ));
    }
    if t.dtype() != param.dtype() {
        return Err(Error::config(
            what,
            format!("has dtype {:?} but the parameter has {:?}: convert it first", t.dtype(), param.dtype()),
        ));
    }
    Ok(())
}

/// Checks that `t` can be updated in place: a contiguous CPU tensor of `f32` or `f64`. Run on
/// every tensor an update writes before the first write, so that a refused update changes
/// nothing.
fn check_target(what: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::config(what, format!("has dtype {:?}; the fused updates take f32 or f64", t.dtype())));
    }
    if !t.device().is_cpu() {
        return Err(Error::config("device", "the fused optimizer updates run on the CPU only"));
    }
    if !t.is_contiguous() {
        return Err(Error::config(
            what,
            "is not contiguous: updates write its storage in place (call .contiguous() once)",
        ));
    }
    Ok(())
}

/// The gradient in the parameter's dtype, contiguous (a no-op for the usual gradient), after
/// checking that the parameter can be updated in place.
fn grad_like(grad: &Tensor, param: &Tensor) -> Result<Tensor> {
    check_target("parameter", param)?;
    let g = grad.to_dtype(param.dtype())?.contiguous()?;
    check_like("gradient", &g, param)?;
    Ok(g)
}

/// `torch.optim.SGD`'s hyper-parameters for [`sgd_update`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdUpdate {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD, no buffer).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for SgdUpdate {
    /// lr 0.01, no momentum, dampening or weight decay.
    fn default() -> Self {
        Self { lr: 0.01, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// One SGD step on `param` in place, as `torch.optim.SGD`: `g ← grad + wd·p`; with momentum
/// `b ← g` on the first step (`first`), else `b ← μ·b + (1 − dampening)·g`, and `g ← g + μ·b`
/// (Nesterov) or `g ← b`; then `p ← p − lr·g`. `momentum_buf` (required when `momentum ≠ 0`)
/// is updated in place too: one pass over the parameter without momentum, two with.
///
/// `param` and `momentum_buf` are overwritten in their storage: every tensor sharing that
/// storage (a clone, a reshape) sees the new values, as PyTorch's in-place `p.add_` does.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::{Device, Tensor};
/// use sconce_tensor::{SgdUpdate, sgd_update};
/// let p = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)?;
/// let g = Tensor::new(&[0.5f32, -1.0], &Device::Cpu)?;
/// let cfg = SgdUpdate { lr: 0.1, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };
/// sgd_update(&p, &g, None, false, &cfg)?;
/// assert_eq!(p.to_vec1::<f32>()?, vec![0.95, 2.1]);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Shape`] when the gradient or buffer does not match the parameter;
/// [`Error::Config`] for another dtype than `f32`/`f64`, a missing buffer with momentum, a
/// non-CPU or non-contiguous parameter or buffer. Every check runs before the first write: a
/// refused update changes nothing (buffers must not share storage with each other or the
/// parameter, which candle refuses only when the pass that meets them runs).
pub fn sgd_update(
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: Option<&Tensor>,
    first: bool,
    cfg: &SgdUpdate,
) -> Result<()> {
    let g = grad_like(grad, param)?;
    let (lr, wd, mu) = (cfg.lr, cfg.weight_decay, cfg.momentum);
    if mu == 0.0 {
        param.inplace_op2(&g, &Pass::Sgd { lr, wd })?;
        return Ok(());
    }
    let Some(buf) = momentum_buf else {
        return Err(Error::config("momentum_buf", "SGD with momentum needs its buffer (a tensor like the parameter)"));
    };
    check_like("momentum buffer", buf, param)?;
    check_target("momentum buffer", buf)?;
    let pass = Pass::Momentum { mu, damp: cfg.dampening, wd, first };
    if wd == 0.0 {
        buf.inplace_op2(&g, &pass)?
    } else {
        buf.inplace_op3(&g, param, &pass)?
    }
    param.inplace_op3(&g, buf, &Pass::MomentumApply { lr, mu, wd, nesterov: cfg.nesterov })?;
    Ok(())
}

/// `torch.optim.Adam` / `AdamW`'s hyper-parameters for [`adam_update`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamUpdate {
    /// Learning rate.
    pub lr: f64,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 added to the gradient, or decoupled (AdamW) when `decoupled`.
    pub weight_decay: f64,
    /// Decoupled weight decay: `p ← p·(1 − lr·wd)` before the update.
    pub decoupled: bool,
    /// This parameter's step number, from 1 (for the bias corrections).
    pub step: u64,
}

/// One Adam/AdamW step on `param` in place, as PyTorch: `m ← β₁m + (1−β₁)g`,
/// `v ← β₂v + (1−β₂)g²`, with AMSGrad `v̂ ← max(v̂, v)` (`vmax`), then
/// `p ← p − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + eps)`. The moments start as zeros (as PyTorch's
/// `zeros_like` state) and are updated in place; one pass per state tensor and one over the
/// parameter.
///
/// # Errors
/// As [`sgd_update`]; [`Error::Config`] for `step = 0`.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    vmax: Option<&Tensor>,
    cfg: &AdamUpdate,
) -> Result<()> {
    if cfg.step == 0 {
        return Err(Error::config("step", "Adam's step count starts at 1"));
    }
    let g = grad_like(grad, param)?;
    for (what, t) in
        [("first moment", m), ("second moment", v)].into_iter().chain(vmax.map(|t| ("max second moment", t)))
    {
        check_like(what, t, param)?;
        check_target(what, t)?;
    }
    let (b1, b2) = cfg.betas;
    let wd = if cfg.decoupled { 0.0 } else { cfg.weight_decay };
    for (t, beta, square) in [(m, b1, false), (v, b2, true)] {
        let pass = Pass::Moment { beta, wd, square };
        // The parameter is read only for an L2 penalty.
        if wd == 0.0 { t.inplace_op2(&g, &pass)? } else { t.inplace_op3(&g, param, &pass)? }
    }
    let second = match vmax {
        Some(mx) => {
            mx.inplace_op2(v, &Pass::Max)?;
            mx
        }
        None => v,
    };
    let t = i32::try_from(cfg.step).unwrap_or(i32::MAX);
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let decay = if cfg.decoupled { 1.0 - cfg.lr * cfg.weight_decay } else { 1.0 };
    param.inplace_op3(m, second, &Pass::AdamApply { decay, step: cfg.lr / bc1, bc2_sqrt: bc2.sqrt(), eps: cfg.eps })?;
    Ok(())
}

/// `Σ t²` accumulated in `f64` (a gradient's contribution to a global norm), in parallel
/// chunks whose partial sums are added in a fixed order: the same value on every run.
///
/// # Errors
/// [`Error::Config`] for another dtype than `f32`/`f64` or a non-CPU tensor.
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    if !t.device().is_cpu() {
        return Err(Error::config("device", "sum_squares runs on the CPU only"));
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else {
        return Err(Error::config("device", "sum_squares runs on the CPU only"));
    };
    let n = layout.shape().elem_count();
    Ok(match s {
        CpuStorage::F32(_) => squares(input::<f32>(s, layout, n)?),
        CpuStorage::F64(_) => squares(input::<f64>(s, layout, n)?),
        other => return Err(Error::config("dtype", format!("sum_squares: f32 or f64 only, got {:?}", other.dtype()))),
    })
}

fn squares<T: Real>(x: &[T]) -> f64 {
    let part = |c: &[T]| pulp::Arch::new().dispatch(Squares { x: c });
    if x.len() <= CHUNK {
        return part(x);
    }
    let parts: Vec<f64> = x.par_chunks(CHUNK).map(part).collect();
    parts.into_iter().sum()
}

/// One chunk of [`sum_squares`], compiled for the CPU's widest vectors (eight independent
/// partial sums so that the additions pipeline and vectorise).
struct Squares<'a, T> {
    x: &'a [T],
}

impl<T: Real> pulp::WithSimd for Squares<'_, T> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let mut acc = [0f64; 8];
        let mut it = self.x.chunks_exact(8);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                let v = crate::kernel::f64_of(v);
                *a += v * v;
            }
        }
        for (a, &v) in acc.iter_mut().zip(it.remainder()) {
            let v = crate::kernel::f64_of(v);
            *a += v * v;
        }
        acc.iter().sum()
    }
}
