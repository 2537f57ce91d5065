//! Categorical cross-entropy from logits over axis 1, fused: integer targets (with
//! `ignore_index`) or probability targets, class weights and label smoothing with PyTorch's
//! exact semantics, for `[N, C]` and `[N, C, H, W, ...]`.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

use crate::fastmath::{self, simd};
use crate::kernel::{Flag, Real, check_float, slice, with_flag};
use crate::reduction::Reduction;

/// Cross-entropy of softmax(logits) along axis 1, as PyTorch's `CrossEntropyLoss`:
/// `ℓ = −Σ_c a_c · log softmax(x)_c`, where for an integer target `y`
/// `a = (1 − ε)·w_y·onehot(y) + (ε/C)·w`, and for a probability target `t`
/// `a_c = w_c·((1 − ε)·t_c + ε/C)`. `Mean` divides by `Σ w_y` over non-ignored targets
/// (integer targets) or by the number of rows/pixels (probability targets).
///
/// Integer targets have the logits' shape without axis 1 (`[N]` for `[N, C]`, `[N, H, W]` for
/// `[N, C, H, W]`) and may be any integer dtype (`i64` for a negative `ignore_index`).
///
/// ```
/// use sconce_core::Loss;
/// use sconce_losses::CrossEntropy;
/// # fn main() -> sconce_core::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let logits = candle_core::Tensor::new(&[[2.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &dev)?;
/// let labels = candle_core::Tensor::new(&[0u32, 2], &dev)?;
/// let l = CrossEntropy::new().loss(&logits, &labels)?.to_scalar::<f32>()?;
/// // (−log(e²/(e²+2)) − log(1/3)) / 2
/// let want = ((2f32.exp() + 2.0).ln() - 2.0 + 3f32.ln()) / 2.0;
/// assert!((l - want).abs() < 1e-6);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossEntropy {
    class_weights: Option<Vec<f64>>,
    ignore_index: Option<i64>,
    label_smoothing: f64,
    reduction: Reduction,
}

impl CrossEntropy {
    /// Mean reduction, no weights, no ignored index, no smoothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A weight per class (PyTorch's `weight`).
    pub fn class_weights(mut self, w: Vec<f64>) -> Self {
        self.class_weights = Some(w);
        self
    }

    /// Integer targets equal to this value contribute nothing (PyTorch's `ignore_index`,
    /// e.g. 255 for "void" pixels, −100 by convention).
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = Some(i);
        self
    }

    /// Label smoothing `ε`: the target becomes `(1 − ε)·target + ε/C`.
    pub fn label_smoothing(mut self, eps: f64) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// The reduction (default: mean over valid elements).
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
}

/// What the target tensor holds.
#[derive(Clone)]
enum Target {
    /// Class indices as i64 (ignored ones equal to `ignore`), one per row/pixel.
    Index(Arc<Vec<i64>>),
    /// Probabilities with the logits' layout (passed as the op's second input).
    Prob,
}

impl Loss for CrossEntropy {
    fn name(&self) -> &str {
        "cross_entropy"
    }

    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        check_float(logits, "logits")?;
        if logits.rank() < 2 {
            return Err(Error::shape("logits", "[N, C, ...] with the classes on axis 1", logits.dims()));
        }
        let dims = logits.dims();
        let (n, c) = (dims[0], dims[1]);
        let inner: usize = dims[2..].iter().product();
        if c == 1 {
            return Err(Error::config(
                "logits",
                "cross-entropy over a single output channel is always 0 (softmax of one value is 1); \
                 use one logit with sigmoid + BinaryCrossEntropy for binary problems, or C ≥ 2 outputs",
            ));
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::config("label_smoothing", format!("must be in [0, 1], got {}", self.label_smoothing)));
        }
        let weights = match &self.class_weights {
            Some(w) if w.len() != c => {
                return Err(Error::config(
                    "class_weights",
                    format!("needs {c} weights (one per class), got {}", w.len()),
                ));
            }
            Some(w) => {
                if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(Error::config("class_weights", format!("must be finite and ≥ 0, got {bad}")));
                }
                w.clone()
            }
            None => vec![1.0; c],
        };
        let mut spatial = dims.to_vec();
        spatial.remove(1);
        let (kind, second) = if target.dims() == spatial.as_slice() {
            (Target::Index(Arc::new(index_targets(target)?)), Tensor::zeros(1, logits.dtype(), logits.device())?)
        } else if target.dims() == dims {
            check_float(target, "target")?;
            sconce_core::check::finite(target, "target")?;
            (Target::Prob, target.to_dtype(logits.dtype())?)
        } else {
            return Err(Error::shape(
                "target",
                format!("class indices {spatial:?} or class probabilities {dims:?}"),
                target.dims(),
            ));
        };
        let reduce = self.reduction != Reduction::None;
        // A reduced f32 loss over index targets computes its gradient during the forward pass
        // (see `CeOp::eager`), when there will be a backward pass at all.
        let eager = reduce && logits.track_op() && logits.dtype() == DType::F32 && matches!(kind, Target::Index(_));
        let op = CeOp {
            n,
            c,
            inner,
            weights: Arc::new(weights),
            ignore: self.ignore_index,
            eps: self.label_smoothing,
            kind,
            reduce,
            mean: self.reduction == Reduction::Mean,
            lse: Arc::new(OnceLock::new()),
            flag: Arc::new(OnceLock::new()),
            divisor: Arc::new(OnceLock::new()),
            eager: eager.then(|| Arc::new(OnceLock::new())),
        };
        let flag = op.flag.clone();
        with_flag(&flag, || logits.contiguous()?.apply_op2(&second.contiguous()?, op))
    }

    fn activation(&self) -> Activation {
        Activation::Softmax { axis: 1 }
    }

    fn target_kind(&self) -> TargetKind {
        TargetKind::ClassIndices
    }
    fn ignore_index(&self) -> Option<i64> {
        self.ignore_index
    }
}

/// Integer targets as i64 (any integer dtype, or whole-valued floats).
fn index_targets(t: &Tensor) -> Result<Vec<i64>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
        DType::U32 => flat.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
        DType::I64 => flat.to_vec1::<i64>()?,
        _ => {
            let v = flat.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !(x.is_finite() && x.fract() == 0.0)) {
                return Err(Error::data("target", format!("class index {x} at element {i} is not a whole number")));
            }
            v.into_iter().map(|x| x as i64).collect()
        }
    })
}

#[derive(Clone)]
struct CeOp {
    n: usize,
    c: usize,
    inner: usize,
    weights: Arc<Vec<f64>>,
    ignore: Option<i64>,
    eps: f64,
    kind: Target,
    reduce: bool,
    /// `Mean` reduction: the op divides its sum by the divisor itself (so that the gradient it
    /// precomputes already carries the factor).
    mean: bool,
    /// log Σ exp(x) per row/pixel, saved for the backward pass.
    lse: Arc<OnceLock<Vec<f64>>>,
    flag: Flag,
    /// The `Mean` denominator, found while validating the targets.
    divisor: Arc<OnceLock<f64>>,
    /// The gradient of the (reduced) loss for a unit upstream gradient, written by the `f32`
    /// forward pass while each tile of logits is in cache: the backward pass then returns it
    /// (or scales it) instead of reading the logits again and recomputing every exponential.
    /// `None` when not wanted (no autograd, no reduction, f64 or probability targets).
    eager: Option<Arc<OnceLock<Tensor>>>,
}

impl CeOp {
    /// The factor the reduced loss and its gradient carry: `1 / divisor` for `Mean` (0 when
    /// every target is ignored: PyTorch returns NaN there, we return 0 with no gradient), 1
    /// otherwise.
    fn scale(&self) -> f64 {
        if !self.mean {
            return 1.0;
        }
        match self.divisor.get() {
            Some(&d) if d > 0.0 => 1.0 / d,
            _ => 0.0,
        }
    }

    /// Validates integer targets; returns the mean divisor `Σ w_y` over valid ones.
    fn check_indices(&self, y: &[i64]) -> candle_core::Result<f64> {
        let c = self.c as i64;
        if let Some(i) = y.iter().position(|&v| Some(v) != self.ignore && !(0..c).contains(&v)) {
            let ignore = self.ignore.map(|v| format!(" (or the ignore_index {v})")).unwrap_or_default();
            let _ = self.flag.set(Error::data(
                "target",
                format!("class index {} at element {i} is outside 0..{}{ignore}", y[i], self.c),
            ));
            candle_core::bail!("invalid targets");
        }
        Ok(y.iter().filter(|&&v| Some(v) != self.ignore).map(|&v| self.weights[v as usize]).sum())
    }

    /// Row `r = n·inner + s`: `(A, a)` where `a_c` is the coefficient of `−log p_c` and
    /// `A = Σ_c a_c`, written into `a` (length C); `None` for an ignored target.
    #[inline]
    fn coeffs<T: Real>(&self, prob: &[T], r: usize, sum_w: f64, a: &mut [f64]) -> Option<f64> {
        let (c, inner) = (self.c, self.inner);
        let (n, s) = (r / inner, r % inner);
        let smooth = self.eps / c as f64;
        match &self.kind {
            Target::Index(y) => {
                let y = y[r];
                if Some(y) == self.ignore {
                    return None;
                }
                for (ch, a) in a.iter_mut().enumerate() {
                    *a = self.weights[ch] * smooth;
                }
                let wy = self.weights[y as usize];
                a[y as usize] += (1.0 - self.eps) * wy;
                Some((1.0 - self.eps) * wy + smooth * sum_w)
            }
            Target::Prob => {
                let mut total = 0.0;
                for (ch, a) in a.iter_mut().enumerate() {
                    let t = prob[(n * c + ch) * inner + s].to_f64();
                    *a = self.weights[ch] * ((1.0 - self.eps) * t + smooth);
                    total += *a;
                }
                Some(total)
            }
        }
    }

    fn forward<T: Real>(&self, x: &[T], prob: &[T]) -> candle_core::Result<Vec<T>> {
        let divisor = match &self.kind {
            Target::Index(y) => self.check_indices(y)?,
            Target::Prob => (self.n * self.inner) as f64,
        };
        let _ = self.divisor.set(divisor);
        let (c, inner) = (self.c, self.inner);
        let sum_w: f64 = self.weights.iter().sum();
        // One row/pixel per (n, s): its log-sum-exp and its loss Σ_c a_c·(lse − x_c).
        let rows: Vec<(f64, f64)> = (0..self.n * inner)
            .into_par_iter()
            .map_init(
                || vec![0.0; c],
                |a, r| {
                    let (n, s) = (r / inner, r % inner);
                    let at = |ch: usize| x[(n * c + ch) * inner + s].to_f64();
                    let m = (0..c).map(at).fold(f64::NEG_INFINITY, f64::max);
                    let m = if m.is_finite() { m } else { 0.0 };
                    let lse = m + (0..c).map(|ch| (at(ch) - m).exp()).sum::<f64>().ln();
                    let loss = match self.coeffs(prob, r, sum_w, a) {
                        None => 0.0,
                        Some(_) => (0..c).filter(|&ch| a[ch] != 0.0).map(|ch| a[ch] * (lse - at(ch))).sum(),
                    };
                    (lse, loss)
                },
            )
            .collect();
        let _ = self.lse.set(rows.iter().map(|r| r.0).collect());
        Ok(if self.reduce {
            vec![T::from_f64(rows.iter().map(|r| r.1).sum::<f64>() * self.scale())]
        } else {
            rows.iter().map(|r| T::from_f64(r.1)).collect()
        })
    }

    /// `dx_c = g · (A·p_c − a_c)`.
    fn backward<T: Real>(&self, x: &[T], prob: &[T], g: &[f64]) -> candle_core::Result<Vec<T>> {
        let Some(lse) = self.lse.get() else { candle_core::bail!("cross-entropy backward without forward") };
        let (c, inner) = (self.c, self.inner);
        let sum_w: f64 = self.weights.iter().sum();
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(c * inner).enumerate().for_each(|(n, dxn)| {
            let mut a = vec![0.0; c];
            for s in 0..inner {
                let r = n * inner + s;
                let gr = if g.len() == 1 { g[0] } else { g[r] };
                let Some(total) = self.coeffs(prob, r, sum_w, &mut a) else { continue };
                if gr == 0.0 {
                    continue;
                }
                for ch in 0..c {
                    let p = (x[(n * c + ch) * inner + s].to_f64() - lse[r]).exp();
                    dxn[ch * inner + s] = T::from_f64(gr * (total * p - a[ch]));
                }
            }
        });
        Ok(dx)
    }
}

impl CustomOp2 for CeOp {
    fn name(&self) -> &'static str {
        "sconce-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut spatial = l1.shape().dims().to_vec();
        spatial.remove(1);
        let shape = if self.reduce { Shape::from(()) } else { Shape::from(spatial) };
        let name = "cross-entropy";
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok((
                CpuStorage::F32(self.forward_f32(slice::<f32>(s1, l1, name)?, slice::<f32>(s2, l2, name)?)?),
                shape,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                Ok((CpuStorage::F64(self.forward(slice::<f64>(s1, l1, name)?, slice::<f64>(s2, l2, name)?)?), shape))
            }
            (a, _) => candle_core::bail!("{name}: unsupported dtype {:?}", a.dtype()),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if let (Some(dx), [g0]) = (self.eager.as_ref().and_then(|e| e.get()), g.as_slice()) {
            // `loss.backward()` on this loss directly: the precomputed gradient as it is.
            let dx = dx.reshape(x.shape())?;
            return Ok((Some(if *g0 == 1.0 { dx } else { (dx * *g0)? }), None));
        }
        let scale = self.scale();
        let g = g.iter().map(|v| v * scale).collect();
        let op = CeGrad { op: self.clone(), g: Arc::new(g) };
        Ok((Some(x.apply_op2_no_bwd(t, &op)?), None))
    }
}

struct CeGrad {
    op: CeOp,
    g: Arc<Vec<f64>>,
}

impl CustomOp2 for CeGrad {
    fn name(&self) -> &'static str {
        "sconce-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = "cross-entropy backward";
        let shape = l1.shape().clone();
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok((
                CpuStorage::F32(self.op.backward_f32(
                    slice::<f32>(s1, l1, name)?,
                    slice::<f32>(s2, l2, name)?,
                    &self.g,
                )?),
                shape,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => Ok((
                CpuStorage::F64(self.op.backward(slice::<f64>(s1, l1, name)?, slice::<f64>(s2, l2, name)?, &self.g)?),
                shape,
            )),
            (a, _) => candle_core::bail!("{name}: unsupported dtype {:?}", a.dtype()),
        }
    }
}

/// Positions per tile of the `f32` kernels: one tile's rows of every class fit in L1.
const TILE: usize = 256;

/// The `f32` fast paths: per image, tiles of `TILE` positions; loops over classes outside and
/// positions inside, so every inner loop is contiguous and vectorised.
impl CeOp {
    /// Per-class constants: `(w_c, ε/C·w_c)`.
    fn class_consts(&self) -> (Vec<f32>, Vec<f32>) {
        let smooth = self.eps / self.c as f64;
        (self.weights.iter().map(|&w| w as f32).collect(), self.weights.iter().map(|&w| (smooth * w) as f32).collect())
    }

    fn forward_f32(&self, x: &[f32], prob: &[f32]) -> candle_core::Result<Vec<f32>> {
        let divisor = match &self.kind {
            Target::Index(y) => self.check_indices(y)?,
            Target::Prob => (self.n * self.inner) as f64,
        };
        let _ = self.divisor.set(divisor);
        let (c, s_len) = (self.c, self.inner);
        let (w, sw) = self.class_consts();
        let mut lse = vec![0f32; self.n * s_len];
        // Per-position losses are written by the tile kernel itself (also when only their sum is
        // needed: one f32 per position, no second pass).
        let mut losses = vec![0f32; self.n * s_len];
        let scale = self.scale();
        let eager = self.eager.as_ref().filter(|_| matches!(self.kind, Target::Index(_)));
        let mut dx: Vec<f32> = Vec::with_capacity(if eager.is_some() { x.len() } else { 0 });
        let image =
            |n: usize, lse: &mut [f32], losses: &mut [f32], xn: &[f32], mut dxn: Option<&mut [MaybeUninit<f32>]>| {
                let mut total = 0.0;
                for s0 in (0..s_len).step_by(TILE) {
                    let len = TILE.min(s_len - s0);
                    let ys = match &self.kind {
                        Target::Index(y) => Some(&y[n * s_len + s0..n * s_len + s0 + len]),
                        Target::Prob => None,
                    };
                    let pn = match &self.kind {
                        Target::Prob => Some(&prob[n * c * s_len..(n + 1) * c * s_len]),
                        Target::Index(_) => None,
                    };
                    total += simd(FwdTile {
                        x: xn,
                        s_len,
                        s0,
                        len,
                        c,
                        w: &w,
                        sw: &sw,
                        one_m_eps: (1.0 - self.eps) as f32,
                        ys,
                        ignore: self.ignore,
                        probs: pn,
                        lse: &mut lse[s0..s0 + len],
                        loss: &mut losses[s0..s0 + len],
                        dx: dxn.as_deref_mut(),
                        scale: scale as f32,
                    });
                }
                total
            };
        let per_image = lse.par_chunks_mut(s_len).zip(losses.par_chunks_mut(s_len)).zip(x.par_chunks(c * s_len));
        let sums: Vec<f64> = if eager.is_some() {
            let spare = &mut dx.spare_capacity_mut()[..x.len()];
            per_image
                .zip(spare.par_chunks_mut(c * s_len))
                .enumerate()
                .map(|(n, (((lse, losses), xn), dxn))| image(n, lse, losses, xn, Some(dxn)))
                .collect()
        } else {
            per_image.enumerate().map(|(n, ((lse, losses), xn))| image(n, lse, losses, xn, None)).collect()
        };
        if let Some(slot) = eager {
            // SAFETY: the images split `dx` into whole `c·s_len` chunks, and `FwdTile` writes
            // every class row of every tile of its image (tiles cover `0..s_len`).
            unsafe { dx.set_len(x.len()) };
            let _ = slot.set(Tensor::from_vec(dx, x.len(), &candle_core::Device::Cpu)?);
        }
        if eager.is_none() {
            // Only the separate backward kernel reads it.
            let _ = self.lse.set(lse.iter().map(|&v| f64::from(v)).collect());
        }
        Ok(if self.reduce { vec![(sums.iter().sum::<f64>() * scale) as f32] } else { losses })
    }

    fn backward_f32(&self, x: &[f32], prob: &[f32], g: &[f64]) -> candle_core::Result<Vec<f32>> {
        let Some(lse) = self.lse.get() else { candle_core::bail!("cross-entropy backward without forward") };
        let (c, s_len) = (self.c, self.inner);
        let (w, sw) = self.class_consts();
        let sum_w: f32 = w.iter().sum();
        // Every element of `dx` is written by the tile kernel (the target's `−a_y` included),
        // so the 42 MiB gradient of a segmentation batch is not zeroed first.
        let mut dx: Vec<f32> = Vec::with_capacity(x.len());
        let spare = &mut dx.spare_capacity_mut()[..x.len()];
        spare.par_chunks_mut(c * s_len).zip(x.par_chunks(c * s_len)).enumerate().for_each(|(n, (dxn, xn))| {
            // One image at a time, class rows outermost: each pass streams one logit row and
            // one gradient row (plus the per-position arrays, which stay in L2). Tiles across
            // all classes kept 2·C streams in flight and stalled the hardware prefetcher.
            let r0 = n * s_len;
            let lse_t: Vec<f32> = lse[r0..r0 + s_len].iter().map(|&v| v as f32).collect();
            let g_t: Vec<f32> = (0..s_len).map(|t| (if g.len() == 1 { g[0] } else { g[r0 + t] }) as f32).collect();
            simd(BwdTile {
                x: xn,
                dx: dxn,
                s_len,
                c,
                w: &w,
                sw: &sw,
                sum_w,
                one_m_eps: (1.0 - self.eps) as f32,
                ys: match &self.kind {
                    Target::Index(y) => Some(&y[r0..r0 + s_len]),
                    Target::Prob => None,
                },
                ignore: self.ignore,
                probs: match &self.kind {
                    Target::Prob => Some(&prob[n * c * s_len..(n + 1) * c * s_len]),
                    Target::Index(_) => None,
                },
                lse: &lse_t,
                g: &g_t,
            });
        });
        // SAFETY: the images split `dx` into whole `c·s_len` chunks, and `BwdTile` writes every
        // position `0..s_len` of every class row of its image.
        unsafe { dx.set_len(x.len()) };
        Ok(dx)
    }
}

/// Forward over one tile: log-sum-exp per position and Σ loss.
struct FwdTile<'a> {
    x: &'a [f32],
    s_len: usize,
    s0: usize,
    len: usize,
    c: usize,
    w: &'a [f32],
    sw: &'a [f32],
    one_m_eps: f32,
    ys: Option<&'a [i64]>,
    ignore: Option<i64>,
    probs: Option<&'a [f32]>,
    lse: &'a mut [f32],
    loss: &'a mut [f32],
    /// The image's gradient (`c·s_len`, index targets only): this tile's columns of every
    /// class row are written, `scale·(A·p_c − a_c)`.
    dx: Option<&'a mut [MaybeUninit<f32>]>,
    scale: f32,
}

impl pulp::WithSimd for FwdTile<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let Self { x, s_len, s0, len, c, w, sw, one_m_eps, ys, ignore, probs, lse, loss, mut dx, scale } = self;
        let row = |ch: usize| &x[ch * s_len + s0..ch * s_len + s0 + len];
        // Work arrays sliced to `len`, so the inner loops are bounds-check free and vectorise.
        let mut m_buf = [f32::NEG_INFINITY; TILE];
        let m = &mut m_buf[..len];
        for ch in 0..c {
            for (m, &v) in m.iter_mut().zip(row(ch)) {
                *m = m.max(v);
            }
        }
        for v in m.iter_mut() {
            *v = if v.is_finite() { *v } else { 0.0 };
        }
        let (mut se_buf, mut a_buf, mut amx_buf) = ([0f32; TILE], [0f32; TILE], [0f32; TILE]);
        let (se, a_sum, amx) = (&mut se_buf[..len], &mut a_buf[..len], &mut amx_buf[..len]);
        // Σ_c a_c and Σ_c a_c·(m − x_c) for the smoothing part (index targets) or the whole
        // target; relative to the row maximum, so large logits do not cancel, and a zero
        // coefficient never multiplies a −∞ logit.
        for ch in 0..c {
            let r = row(ch);
            match dx.as_deref_mut() {
                // The exponentials are kept in the gradient's rows for the pass below.
                Some(d) => {
                    let dr = &mut d[ch * s_len + s0..ch * s_len + s0 + len];
                    for (((se, &v), &m), o) in se.iter_mut().zip(r).zip(m.iter()).zip(dr.iter_mut()) {
                        let e = fastmath::exp(v - m);
                        o.write(e);
                        *se += e;
                    }
                }
                None => {
                    for ((se, &v), &m) in se.iter_mut().zip(r).zip(m.iter()) {
                        *se += fastmath::exp(v - m);
                    }
                }
            }
            match probs {
                Some(p) => {
                    let pr = &p[ch * s_len + s0..ch * s_len + s0 + len];
                    for (((a_sum, amx), (&v, &mv)), &pv) in
                        a_sum.iter_mut().zip(amx.iter_mut()).zip(r.iter().zip(m.iter())).zip(pr)
                    {
                        let a = w[ch] * (one_m_eps * pv) + sw[ch];
                        *a_sum += a;
                        *amx += if a != 0.0 { a * (mv - v) } else { 0.0 };
                    }
                }
                None if sw[ch] != 0.0 => {
                    let swc = sw[ch];
                    for ((amx, &v), &mv) in amx.iter_mut().zip(r).zip(m.iter()) {
                        *amx += swc * (mv - v);
                    }
                }
                None => {}
            }
        }
        let sum_sw: f32 = sw.iter().sum();
        // The target's logit and weight per position first (a gather), then one vectorised pass
        // without a running sum (a sequential f32 sum would keep the loop scalar).
        let (mut wy_buf, mut xy_buf, mut keep_buf) = ([0f32; TILE], [0f32; TILE], [1f32; TILE]);
        let (wy, xy, keep) = (&mut wy_buf[..len], &mut xy_buf[..len], &mut keep_buf[..len]);
        if let Some(ys) = ys {
            for (t, &y) in ys.iter().enumerate() {
                if Some(y) == ignore {
                    keep[t] = 0.0;
                } else {
                    let yu = y as usize;
                    wy[t] = one_m_eps * w[yu];
                    xy[t] = x[yu * s_len + s0 + t];
                }
            }
        }
        let by_index = ys.is_some();
        let per_pos = lse.iter_mut().zip(loss.iter_mut()).zip(se.iter().zip(m.iter()));
        for (t, ((l, lo), (&sev, &mv))) in per_pos.enumerate() {
            let ln_se = fastmath::ln(sev);
            *l = mv + ln_se;
            *lo = if !by_index {
                a_sum[t] * ln_se + amx[t]
            } else if keep[t] != 0.0 {
                wy[t] * ((mv - xy[t]) + ln_se) + (sum_sw * ln_se + amx[t])
            } else {
                0.0
            };
        }
        if let (Some(d), Some(ys)) = (dx, ys) {
            // dx_c = scale·keep·(A·e_c/Σe − ε/C·w_c − [c = y]·(1 − ε)·w_y), A = (1 − ε)·w_y + Σ ε/C·w.
            let (mut coef_buf, mut base_buf, mut y_buf) = ([0f32; TILE], [0f32; TILE], [-1i32; TILE]);
            let (coef, base, y32) = (&mut coef_buf[..len], &mut base_buf[..len], &mut y_buf[..len]);
            for t in 0..len {
                let k = keep[t] * scale;
                base[t] = k;
                coef[t] = k * (wy[t] + sum_sw) / se[t];
                if keep[t] != 0.0 {
                    y32[t] = i32::try_from(ys[t]).unwrap_or(-1);
                }
            }
            for ch in 0..c {
                let dr = &mut d[ch * s_len + s0..ch * s_len + s0 + len];
                let (swc, hit, chi) = (sw[ch], one_m_eps * w[ch], ch as i32);
                for (((o, &cf), &b), &yt) in dr.iter_mut().zip(coef.iter()).zip(base.iter()).zip(y32.iter()) {
                    // SAFETY: the exponential pass above wrote this element.
                    let e = unsafe { o.assume_init() };
                    let own = if yt == chi { hit } else { 0.0 };
                    o.write(cf * e - b * (swc + own));
                }
            }
        }
        // Σ loss over sixteen lanes, folded in f64.
        let mut lanes = [0f32; 16];
        let mut chunks = loss.chunks_exact(16);
        for ch in &mut chunks {
            for (a, &v) in lanes.iter_mut().zip(ch) {
                *a += v;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
        lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + tail
    }
}

/// Backward over one image's `s_len` positions: `dx_c = g·(A·p_c − a_c)`.
struct BwdTile<'a> {
    x: &'a [f32],
    dx: &'a mut [MaybeUninit<f32>],
    s_len: usize,
    c: usize,
    w: &'a [f32],
    sw: &'a [f32],
    sum_w: f32,
    one_m_eps: f32,
    ys: Option<&'a [i64]>,
    ignore: Option<i64>,
    probs: Option<&'a [f32]>,
    lse: &'a [f32],
    g: &'a [f32],
}

impl pulp::WithSimd for BwdTile<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { x, dx, s_len, c, w, sw, sum_w, one_m_eps, ys, ignore, probs, lse, g } = self;
        let smooth = if sum_w > 0.0 { sw.iter().sum::<f32>() / sum_w } else { 0.0 };
        // Per position: the total coefficient A (and, for index targets, validity and y).
        let mut big_a = vec![0f32; s_len];
        let mut valid = vec![1f32; s_len];
        match (ys, probs) {
            (Some(ys), _) => {
                for t in 0..s_len {
                    if Some(ys[t]) == ignore {
                        valid[t] = 0.0;
                    } else {
                        big_a[t] = one_m_eps * w[ys[t] as usize] + smooth * sum_w;
                    }
                }
            }
            (None, Some(p)) => {
                for ch in 0..c {
                    let pr = &p[ch * s_len..(ch + 1) * s_len];
                    for t in 0..s_len {
                        big_a[t] += w[ch] * (one_m_eps * pr[t]) + sw[ch];
                    }
                }
            }
            (None, None) => {}
        }
        // The target class per position as i32 (−1 when none), so that the class test below
        // runs sixteen lanes wide.
        let mut y32_buf = vec![-1i32; s_len];
        if let Some(ys) = ys {
            for (o, &y) in y32_buf.iter_mut().zip(ys) {
                *o = i32::try_from(y).unwrap_or(-1);
            }
        }
        let y32 = &y32_buf[..];
        let (big_a, valid) = (&big_a[..], &valid[..]);
        for ch in 0..c {
            let xr = &x[ch * s_len..(ch + 1) * s_len];
            let dr = &mut dx[ch * s_len..(ch + 1) * s_len];
            match probs {
                Some(p) => {
                    let pr = &p[ch * s_len..(ch + 1) * s_len];
                    let it = dr.iter_mut().zip(xr).zip(pr).zip(lse).zip(g).zip(big_a);
                    for (((((d, &xv), &pv), &l), &gv), &ba) in it {
                        let a = w[ch] * (one_m_eps * pv) + sw[ch];
                        d.write(gv * (ba * fastmath::exp(xv - l) - a));
                    }
                }
                None => {
                    let swc = sw[ch];
                    // The target class's `−(1−ε)·w_y` in the same pass (zero where ignored).
                    let (hit, chi) = (one_m_eps * w[ch], ch as i32);
                    let it = dr.iter_mut().zip(xr).zip(lse).zip(g).zip(big_a).zip(valid).zip(y32);
                    for ((((((d, &xv), &l), &gv), &ba), &vv), &yt) in it {
                        let own = if yt == chi { hit } else { 0.0 };
                        d.write(gv * vv * (ba * fastmath::exp(xv - l) - swc - own));
                    }
                }
            }
        }
    }
}
