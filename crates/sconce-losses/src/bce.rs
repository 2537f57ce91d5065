//! Binary cross-entropy from logits, fused: value and gradient in one pass each, finite for any
//! finite logit, with `pos_weight` per class and Keras-style label smoothing. A reduced `f32`
//! loss under autograd writes its gradient during the forward pass (one pass in all).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::fastmath::{self, simd};
use crate::kernel::{Flag, Real, check_float, par_sum, sigmoid, slice, softplus_neg, with_flag};
use crate::reduction::Reduction;

/// `ℓ = (1 − z)·x + (1 + (w − 1)·z)·softplus(−x)`: binary cross-entropy of logit `x` against
/// target `z ∈ [0, 1]` with positive weight `w`, i.e. `−w·z·log σ(x) − (1 − z)·log(1 − σ(x))`
/// (PyTorch's `BCEWithLogitsLoss`, TensorFlow's `sigmoid_cross_entropy_with_logits`).
///
/// Use it for binary and multi-label outputs — including per-pixel binary masks, where the
/// logits are `[N, 1, H, W]` and the target a float mask of the same shape with values in
/// `[0, 1]` (divide 0/255 masks by 255 first; the loss refuses them).
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::BinaryCrossEntropy;
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let logits = candle_core::Tensor::new(&[[40.0f32], [-40.0]], &dev)?;
/// let target = candle_core::Tensor::new(&[[0.0f32], [1.0]], &dev)?;
/// // Wrong and very confident: a large but finite loss (40 per element), never NaN.
/// let l = BinaryCrossEntropy::new().loss(&logits, &target)?.to_scalar::<f32>()?;
/// assert!((l - 40.0).abs() < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinaryCrossEntropy {
    pos_weight: Option<Vec<f64>>,
    label_smoothing: f64,
    reduction: Reduction,
}

impl BinaryCrossEntropy {
    /// Mean reduction, no positive weight, no smoothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Weight of positive targets per class (axis 1): `> 1` raises recall. PyTorch's
    /// `pos_weight`; 100 positives against 300 negatives suggests 3.
    pub fn pos_weight(mut self, w: Vec<f64>) -> Self {
        self.pos_weight = Some(w);
        self
    }

    /// Keras' label smoothing: targets become `z·(1 − s) + s/2`.
    pub fn label_smoothing(mut self, s: f64) -> Self {
        self.label_smoothing = s;
        self
    }

    /// The reduction (default: mean over all elements).
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    fn validate(&self, logits: &Tensor) -> Result<usize> {
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::config("label_smoothing", format!("must be in [0, 1], got {}", self.label_smoothing)));
        }
        let channels = if logits.rank() >= 2 { logits.dims()[1] } else { 1 };
        if let Some(w) = &self.pos_weight {
            if w.len() != channels && w.len() != 1 {
                return Err(Error::config(
                    "pos_weight",
                    format!("needs one weight per class (axis 1 has {channels}) or a single weight, got {}", w.len()),
                ));
            }
            if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                return Err(Error::config("pos_weight", format!("weights must be positive and finite, got {bad}")));
            }
        }
        Ok(channels)
    }
}

impl Loss for BinaryCrossEntropy {
    fn name(&self) -> &str {
        "binary_cross_entropy_with_logits"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        check_float(logits, "logits")?;
        sconce_core::check::same_shape(logits, "logits", target, "target")?;
        let channels = self.validate(logits)?;
        let target = target.to_dtype(logits.dtype())?;
        let inner: usize = logits.dims().iter().skip(2).product();
        let n = logits.elem_count();
        let reduce = self.reduction != Reduction::None;
        let op = BceOp {
            pos_weight: Arc::new(match &self.pos_weight {
                Some(w) if w.len() == 1 => vec![w[0]; channels],
                Some(w) => w.clone(),
                None => Vec::new(),
            }),
            channels,
            inner: inner.max(1),
            smoothing: self.label_smoothing,
            reduce,
            scale: if self.reduction == Reduction::Mean { 1.0 / n.max(1) as f64 } else { 1.0 },
            flag: Arc::new(OnceLock::new()),
            eager: (reduce && logits.track_op() && logits.dtype() == DType::F32).then(|| Arc::new(OnceLock::new())),
        };
        let flag = op.flag.clone();
        with_flag(&flag, || logits.contiguous()?.apply_op2(&target.contiguous()?, op))
    }

    fn activation(&self) -> Activation {
        Activation::Sigmoid
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::BinaryProbabilities
    }
}

/// The fused op: per-element loss, or its sum when `reduce`.
#[derive(Clone)]
struct BceOp {
    pos_weight: Arc<Vec<f64>>,
    channels: usize,
    inner: usize,
    smoothing: f64,
    reduce: bool,
    /// The factor of the reduced loss (and its gradient): `1/n` for `Mean`, else 1.
    scale: f64,
    flag: Flag,
    /// The gradient of the reduced loss for a unit upstream gradient, written by the `f32`
    /// forward pass (its exponentials are the ones the loss needs); `None` when not wanted.
    eager: Option<Arc<OnceLock<Tensor>>>,
}

impl BceOp {
    #[inline]
    fn weight(&self, i: usize) -> f64 {
        if self.pos_weight.is_empty() { 1.0 } else { self.pos_weight[(i / self.inner) % self.channels] }
    }

    #[inline]
    fn smooth(&self, z: f64) -> f64 {
        z * (1.0 - self.smoothing) + 0.5 * self.smoothing
    }

    fn check_targets<T: Real>(&self, z: &[T]) -> candle_core::Result<()> {
        let bad = z.par_iter().position_first(|v| {
            let v = v.to_f64();
            !(0.0..=1.0).contains(&v)
        });
        if let Some(i) = bad {
            let v = z[i].to_f64();
            let hint = if v > 1.0 && v <= 255.0 { "; a 0/255 mask must be divided by 255" } else { "" };
            let _ = self.flag.set(Error::data(
                "target",
                format!("binary cross-entropy targets must lie in [0, 1], found {v} at element {i}{hint}"),
            ));
            candle_core::bail!("invalid targets");
        }
        Ok(())
    }

    fn forward<T: Real>(&self, x: &[T], z: &[T]) -> candle_core::Result<Vec<T>> {
        self.check_targets(z)?;
        let elem = |i: usize| {
            let (x, z) = (x[i].to_f64(), self.smooth(z[i].to_f64()));
            (1.0 - z) * x + (1.0 + (self.weight(i) - 1.0) * z) * softplus_neg(x)
        };
        if self.reduce {
            Ok(vec![T::from_f64(par_sum(x.len(), elem) * self.scale)])
        } else {
            let mut out = vec![T::zero(); x.len()];
            out.par_iter_mut().enumerate().for_each(|(i, o)| *o = T::from_f64(elem(i)));
            Ok(out)
        }
    }
}

/// The `f32` fast paths: planes of constant positive weight, vectorised `exp`/`log1p`.
impl BceOp {
    /// Elements per plane (one weight per plane) and the weight of plane `j`.
    fn planes(&self) -> usize {
        if self.pos_weight.is_empty() { 1 << 14 } else { self.inner }
    }

    #[inline]
    fn plane_weight(&self, j: usize) -> f32 {
        if self.pos_weight.is_empty() { 1.0 } else { self.pos_weight[j % self.channels] as f32 }
    }

    /// Σℓ in f32 lanes per plane, f64 across planes; counts targets outside [0, 1] (or NaN).
    fn forward_sum_f32(&self, x: &[f32], z: &[f32]) -> candle_core::Result<f32> {
        let (s, keep) = ((1.0 - self.smoothing) as f32, (0.5 * self.smoothing) as f32);
        let plane = self.planes();
        let scale = self.scale as f32;
        let kernel = |j: usize, x, z, o| simd(SumKernel { x, z, wm1: self.plane_weight(j) - 1.0, s, keep, o, scale });
        let planes = x.par_chunks(plane).zip(z.par_chunks(plane));
        let mut dx: Vec<f32> = Vec::with_capacity(if self.eager.is_some() { x.len() } else { 0 });
        let (sum, bad) = if self.eager.is_some() {
            let spare = &mut dx.spare_capacity_mut()[..x.len()];
            planes
                .zip(spare.par_chunks_mut(plane))
                .enumerate()
                .map(|(j, ((x, z), o))| kernel(j, x, z, Some(o)))
                .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        } else {
            planes
                .enumerate()
                .map(|(j, (x, z))| kernel(j, x, z, None))
                .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        if bad > 0 {
            self.check_targets(z)?;
        }
        if let Some(slot) = &self.eager {
            // SAFETY: the planes tile `dx`, and `SumKernel` writes every element of its plane.
            unsafe { dx.set_len(x.len()) };
            let _ = slot.set(Tensor::from_vec(dx, x.len(), &candle_core::Device::Cpu)?);
        }
        Ok((sum * self.scale) as f32)
    }

    /// `scale · dℓ/dx` per element.
    fn grad_f32(&self, x: &[f32], z: &[f32], scale: f32) -> Vec<f32> {
        let (s, keep) = ((1.0 - self.smoothing) as f32, (0.5 * self.smoothing) as f32);
        let plane = self.planes();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(plane)
            .zip(x.par_chunks(plane).zip(z.par_chunks(plane)))
            .enumerate()
            .for_each(|(j, (o, (x, z)))| simd(GradKernel { o, x, z, wm1: self.plane_weight(j) - 1.0, s, keep, scale }));
        out
    }
}

/// Σℓ over one plane of constant positive weight `wm1 + 1`, and the count of targets outside
/// `[0, 1]`; with `o`, also `scale · dℓ/dx` per element. A `WithSimd` kernel: its body is
/// compiled for the CPU's widest vectors.
struct SumKernel<'a> {
    x: &'a [f32],
    z: &'a [f32],
    wm1: f32,
    s: f32,
    keep: f32,
    o: Option<&'a mut [MaybeUninit<f32>]>,
    scale: f32,
}

impl pulp::WithSimd for SumKernel<'_> {
    type Output = (f64, u32);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, u32) {
        let Self { x, z, wm1, s, keep, o, scale } = self;
        if let Some(o) = o {
            return sum_and_grad(x, z, o, wm1, s, keep, scale);
        }
        let elem = |xv: f32, zv: f32| {
            let zs = zv * s + keep;
            let t = fastmath::exp(-xv.abs());
            let sp = (-xv).max(0.0) + fastmath::log1p_unit(t);
            (1.0 - zs) * xv + (1.0 + wm1 * zs) * sp
        };
        // Sixteen independent lanes over fixed-size blocks, so the loop vectorises.
        let mut acc = [0f32; 16];
        let mut bad = [0u32; 16];
        let (xc, zc) = (x.chunks_exact(16), z.chunks_exact(16));
        let (xr, zr) = (xc.remainder(), zc.remainder());
        for (xb, zb) in xc.zip(zc) {
            for l in 0..16 {
                bad[l] += u32::from(!(0.0..=1.0).contains(&zb[l]));
                acc[l] += elem(xb[l], zb[l]);
            }
        }
        let mut total: f64 = acc.iter().map(|v| f64::from(*v)).sum();
        let mut nbad: u32 = bad.iter().sum();
        for (&xv, &zv) in xr.iter().zip(zr) {
            nbad += u32::from(!(0.0..=1.0).contains(&zv));
            total += f64::from(elem(xv, zv));
        }
        (total, nbad)
    }
}

/// [`SumKernel`] with the gradient: one `exp(−|x|)` per element serves both.
#[inline(always)]
fn sum_and_grad(
    x: &[f32],
    z: &[f32],
    o: &mut [MaybeUninit<f32>],
    wm1: f32,
    s: f32,
    keep: f32,
    scale: f32,
) -> (f64, u32) {
    let elem = |xv: f32, zv: f32| {
        let zs = zv * s + keep;
        let t = fastmath::exp(-xv.abs());
        let sp = (-xv).max(0.0) + fastmath::log1p_unit(t);
        let num = if xv >= 0.0 { t } else { 1.0 };
        let wz = 1.0 + wm1 * zs;
        ((1.0 - zs) * xv + wz * sp, scale * ((1.0 - zs) - wz * (num / (1.0 + t))))
    };
    let mut acc = [0f32; 16];
    let mut bad = [0u32; 16];
    let (xc, zc, mut oc) = (x.chunks_exact(16), z.chunks_exact(16), o.chunks_exact_mut(16));
    let (xr, zr) = (xc.remainder(), zc.remainder());
    for ((xb, zb), ob) in xc.zip(zc).zip(&mut oc) {
        for l in 0..16 {
            bad[l] += u32::from(!(0.0..=1.0).contains(&zb[l]));
            let (v, g) = elem(xb[l], zb[l]);
            acc[l] += v;
            ob[l].write(g);
        }
    }
    let mut total: f64 = acc.iter().map(|v| f64::from(*v)).sum();
    let mut nbad: u32 = bad.iter().sum();
    for ((&xv, &zv), ob) in xr.iter().zip(zr).zip(oc.into_remainder()) {
        nbad += u32::from(!(0.0..=1.0).contains(&zv));
        let (v, g) = elem(xv, zv);
        total += f64::from(v);
        ob.write(g);
    }
    (total, nbad)
}

/// `scale · dℓ/dx` over one plane of constant positive weight.
struct GradKernel<'a> {
    o: &'a mut [f32],
    x: &'a [f32],
    z: &'a [f32],
    wm1: f32,
    s: f32,
    keep: f32,
    scale: f32,
}

impl pulp::WithSimd for GradKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { o, x, z, wm1, s, keep, scale } = self;
        for ((o, &xv), &zv) in o.iter_mut().zip(x).zip(z) {
            let zs = zv * s + keep;
            let t = fastmath::exp(-xv.abs());
            // σ(−x) = t/(1+t) for x ≥ 0, 1/(1+t) for x < 0, with t = e^{−|x|}.
            let num = if xv >= 0.0 { t } else { 1.0 };
            *o = scale * ((1.0 - zs) - (1.0 + wm1 * zs) * (num / (1.0 + t)));
        }
    }
}

impl CustomOp2 for BceOp {
    fn name(&self) -> &'static str {
        "sconce-bce-with-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = if self.reduce { Shape::from(()) } else { l1.shape().clone() };
        let name = "binary cross-entropy";
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) if self.reduce => {
                let sum = self.forward_sum_f32(slice::<f32>(s1, l1, name)?, slice::<f32>(s2, l2, name)?)?;
                Ok((CpuStorage::F32(vec![sum]), shape))
            }
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                Ok((CpuStorage::F32(self.forward(slice::<f32>(s1, l1, name)?, slice::<f32>(s2, l2, name)?)?), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                Ok((CpuStorage::F64(self.forward(slice::<f64>(s1, l1, name)?, slice::<f64>(s2, l2, name)?)?), shape))
            }
            (a, _) => candle_core::bail!("{name}: unsupported dtype {:?}", a.dtype()),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        z: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // dℓ/dx = (1 − z) − (1 + (w − 1)·z)·σ(−x); targets get no gradient.
        if let (true, Some(dx)) = (self.reduce, self.eager.as_ref().and_then(|e| e.get())) {
            let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let dx = dx.reshape(x.shape())?;
            return Ok((Some(if g == 1.0 { dx } else { (dx * g)? }), None));
        }
        let op = BceGrad {
            op: self.clone(),
            scale: if self.reduce { grad.to_dtype(DType::F64)?.to_scalar::<f64>()? * self.scale } else { 1.0 },
        };
        let local = x.apply_op2_no_bwd(z, &op)?;
        Ok((Some(if self.reduce { local } else { local.mul(grad)? }), None))
    }
}

/// `scale · dℓ/dx` per element.
struct BceGrad {
    op: BceOp,
    scale: f64,
}

impl BceGrad {
    fn run<T: Real>(&self, x: &[T], z: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        out.par_iter_mut().enumerate().for_each(|(i, o)| {
            let (xv, zv) = (x[i].to_f64(), self.op.smooth(z[i].to_f64()));
            let d = (1.0 - zv) - (1.0 + (self.op.weight(i) - 1.0) * zv) * sigmoid(-xv);
            *o = T::from_f64(self.scale * d);
        });
        out
    }
}

impl CustomOp2 for BceGrad {
    fn name(&self) -> &'static str {
        "sconce-bce-with-logits-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = "binary cross-entropy backward";
        let shape = l1.shape().clone();
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok((
                CpuStorage::F32(self.op.grad_f32(
                    slice::<f32>(s1, l1, name)?,
                    slice::<f32>(s2, l2, name)?,
                    self.scale as f32,
                )),
                shape,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                Ok((CpuStorage::F64(self.run(slice::<f64>(s1, l1, name)?, slice::<f64>(s2, l2, name)?)), shape))
            }
            (a, _) => candle_core::bail!("{name}: unsupported dtype {:?}", a.dtype()),
        }
    }
}
