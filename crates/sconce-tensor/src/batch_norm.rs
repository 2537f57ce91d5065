//! Batch normalisation over `[N, C, H, W]` (or `[N, C]`): training with batch statistics and a
//! fused, memory-lean backward; evaluation with running statistics; and PyTorch's running-stat
//! update (momentum or cumulative average, unbiased variance).
//!
//! The training op keeps only the per-channel mean and variance for its backward pass — not the normalised activation — so it stores `2·C` numbers beyond its input,
//! where candle-nn's composed version keeps several full-size intermediates.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::{Kernel3, Real, block_sum, cpu, cpu_fwd3, f64_of, float_dtype};

/// Per-channel statistics of one training batch.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Batch mean per channel, `[C]`.
    pub mean: Tensor,
    /// Biased batch variance per channel (divided by `n`), `[C]`.
    pub var: Tensor,
    /// Number of values per channel, `n = N·H·W`.
    pub count: usize,
}

/// `(mean, biased variance)` per channel, in f64, shared between the forward and backward ops.
pub(crate) type Saved = Arc<OnceLock<(Vec<f64>, Vec<f64>)>>;

/// Layout of a batch-norm input: `n` images, `c` channels, `hw` values per channel and image.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    hw: usize,
}

fn dims_of(x: &Tensor) -> Result<Dims> {
    dims_of_shape(x.dims())
}

fn dims_of_shape(dims: &[usize]) -> Result<Dims> {
    if dims.iter().product::<usize>() == 0 {
        return Err(Error::shape("batch_norm input", "a non-empty [N, C] or [N, C, H, W]", dims));
    }
    match *dims {
        [n, c] => Ok(Dims { n, c, hw: 1 }),
        [n, c, h, w] => Ok(Dims { n, c, hw: h * w }),
        _ => Err(Error::shape("batch_norm input", "[N, C] or [N, C, H, W]", dims)),
    }
}

pub(crate) struct BnTrain {
    d: Dims,
    eps: f64,
    saved: Saved,
    /// A ReLU fused after the affine map (`max(·, 0)`; backward masks `dy` by `y > 0`).
    relu: bool,
}

impl BnTrain {
    /// `(dx, dγ, dβ)` for the forward input `x`, γ, the output `res` and its gradient.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        g: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (dx, dg, db) = self.backward_with(x, g, res, grad, None)?;
        Ok((dx.reshape(x.shape())?, dg, db))
    }

    /// [`Self::backward`] with `dx` written into zero-padded planes: `[N, C, h + 2ph, w + 2pw]`
    /// (flat), each plane's `h×w` values at `(ph, pw)`. The layout a stride-1 convolution's
    /// backward reads `dY` in (its input gradient convolves the padded `dY`; its weight
    /// gradient reads `dY` on the grid, which is the padded plane from `(ph, pw)` on), so that
    /// neither pads a copy of it.
    pub(crate) fn backward_padded(
        &self,
        x: &Tensor,
        g: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        (h, w, ph, pw): (usize, usize, usize, usize),
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        self.backward_with(x, g, res, grad, Some((h, w, ph, pw)))
    }

    fn backward_with(
        &self,
        x: &Tensor,
        g: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        pad: Option<(usize, usize, usize, usize)>,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let gamma = g.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let op = BnBackward { d: self.d, eps: self.eps, saved: self.saved.clone(), gamma, relu: self.relu, pad };
        let all = x.apply_op3_no_bwd(res, &grad.contiguous()?, &op)?;
        let c = self.d.c;
        let len = all.elem_count() - 2 * c;
        let dx = all.narrow(0, 0, len)?;
        let dg = all.narrow(0, len, c)?;
        let db = all.narrow(0, len + c, c)?;
        Ok((dx, dg, db))
    }

    pub(crate) fn run<T: Real>(&self, x: &[T], g: &[T], b: &[T]) -> Vec<T> {
        self.run_with(x, g, b, None)
    }

    /// [`Self::run`] with `residual` (shaped like `x`) added after the affine map, before the
    /// ReLU: a residual block's `relu(bn(z) + shortcut)` in the same pass.
    ///
    /// # Errors
    /// When `residual` is not as long as `x`.
    pub(crate) fn run_add<T: Real>(&self, x: &[T], g: &[T], b: &[T], residual: &[T]) -> candle_core::Result<Vec<T>> {
        if residual.len() != x.len() {
            candle_core::bail!("batch_norm: residual of {} values for an input of {}", residual.len(), x.len());
        }
        Ok(self.run_with(x, g, b, Some(residual)))
    }

    /// [`Self::run`], adding `residual` when given; callers check its length.
    ///
    /// One task per channel: its statistics, then its planes normalised right after, while the
    /// channel is still in L2 (the statistics and the map used to run as two parallel sweeps,
    /// each reading `x` from memory).
    fn run_with<T: Real>(&self, x: &[T], g: &[T], b: &[T], residual: Option<&[T]>) -> Vec<T> {
        let Dims { n, c, hw } = self.d;
        let mut y: Vec<T> = Vec::with_capacity(x.len());
        let by_channel = planes_by_channel(&mut y.spare_capacity_mut()[..x.len()], hw, c, n);
        let stats: Vec<(f64, f64)> = by_channel
            .into_par_iter()
            .enumerate()
            .map(|(ch, planes)| {
                let (mean, var) = self.channel_stats(x, ch);
                let (scale, shift) = self.channel_coefficients::<T>(mean, var, g[ch], b[ch]);
                for (plane, yp) in planes {
                    let at = plane * hw..(plane + 1) * hw;
                    let r = residual.map(|r| &r[at.clone()]);
                    let xp = &x[at];
                    if self.relu {
                        simd(Affine::<T, true> { y: yp, x: xp, r, scale, shift });
                    } else {
                        simd(Affine::<T, false> { y: yp, x: xp, r, scale, shift });
                    }
                }
                (mean, var)
            })
            .collect();
        // SAFETY: the planes tile `x.len()` values (`hw > 0`; with `hw = 0` there are none) and
        // every one was written above.
        unsafe { y.set_len(x.len()) };
        let _ = self.saved.set(stats.into_iter().unzip());
        y
    }

    /// Channel `ch`'s batch mean and biased variance.
    fn channel_stats<T: Real>(&self, x: &[T], ch: usize) -> (f64, f64) {
        let m = (self.d.n * self.d.hw) as f64;
        let (sum, ss) = simd(ChannelStats { x, d: self.d, ch });
        (sum / m, ss / m)
    }

    /// The forward map's `(scale, shift)` for one channel's statistics and `γ`, `β`.
    fn channel_coefficients<T: Real>(&self, mean: f64, var: f64, g: T, b: T) -> (T, T) {
        let scale = (1.0 / (var + self.eps).sqrt()) * f64_of(g);
        (T::from_f64(scale), T::from_f64(f64_of(b) - mean * scale))
    }

    /// The batch statistics of `x` (recorded for the backward pass and [`Self::stats`]) as the
    /// per-channel `(scale, shift)` of the forward map `y = x·scale + shift`: what
    /// [`Self::run`] applies, for ops that apply it themselves (while packing a product).
    pub(crate) fn coefficients<T: Real>(&self, x: &[T], g: &[T], b: &[T]) -> (Vec<T>, Vec<T>) {
        // Per channel in f64: the mean and the centred sum of squares ([`ChannelStats`]).
        let stats: Vec<(f64, f64)> = (0..self.d.c).into_par_iter().map(|ch| self.channel_stats(x, ch)).collect();
        let (scale, shift) = stats
            .iter()
            .enumerate()
            .map(|(ch, &(mean, var))| self.channel_coefficients(mean, var, g[ch], b[ch]))
            .unzip();
        let _ = self.saved.set(stats.into_iter().unzip());
        (scale, shift)
    }
}

/// One channel's planes of an `[N, C, plane]` buffer, each with its index `i·C + c`.
type ChannelPlanes<'a, T> = Vec<(usize, &'a mut [MaybeUninit<T>])>;

/// `buf`'s planes of `plane` values grouped by channel (`c` channels, `n` images), for one
/// task per channel.
fn planes_by_channel<T>(buf: &mut [MaybeUninit<T>], plane: usize, c: usize, n: usize) -> Vec<ChannelPlanes<'_, T>> {
    let mut by_channel: Vec<ChannelPlanes<'_, T>> = (0..c).map(|_| Vec::with_capacity(n)).collect();
    for (i, p) in buf.chunks_mut(plane.max(1)).enumerate() {
        by_channel[i % c].push((i, p));
    }
    by_channel
}

/// `(Σ(x − m), Σ(x − m)²)` over one block, in 8 lanes of `T`, returned in `f64`.
#[inline(always)]
fn centred_sums<T: Real>(x: &[T], m: T) -> (f64, f64) {
    let (mut a, mut b) = ([T::zero(); 8], [T::zero(); 8]);
    let mut lanes = x.chunks_exact(8);
    for c in &mut lanes {
        for ((a, b), &v) in a.iter_mut().zip(b.iter_mut()).zip(c) {
            let d = v - m;
            *a += d;
            *b += d * d;
        }
    }
    let (mut s1, mut s2) = (0f64, 0f64);
    for &v in lanes.remainder() {
        let d = f64_of(v - m);
        s1 += d;
        s2 += d * d;
    }
    for (a, b) in a.into_iter().zip(b) {
        s1 += f64_of(a);
        s2 += f64_of(b);
    }
    (s1, s2)
}

/// Values per block of [`ChannelStats`] (2 KiB of `f32`, one L1-resident run).
const STATS_BLOCK: usize = 512;

/// Runs `k` compiled for the CPU's best vector extensions (pulp's run-time dispatch); the
/// element-wise loops below otherwise compile for baseline SSE2.
fn simd<K: pulp::WithSimd>(k: K) -> K::Output {
    pulp::Arch::new().dispatch(k)
}

/// `(Σx, Σ(x − mean)²)` of one channel over all images, reading the channel once: each block
/// of [`STATS_BLOCK`] values (in L1 after its first pass) gives its own mean and centred sum of
/// squares in two passes over it, and the blocks merge in `f64` (Chan et al.'s pairwise update), as
/// accurate as a two-pass over the whole channel even for a large mean, without the second
/// read of the channel from memory.
struct ChannelStats<'a, T> {
    x: &'a [T],
    d: Dims,
    ch: usize,
}

impl<T: Real> pulp::WithSimd for ChannelStats<'_, T> {
    type Output = (f64, f64);
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, f64) {
        let Dims { n, c, hw } = self.d;
        let (mut count, mut mean, mut ss) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let plane = &self.x[(i * c + self.ch) * hw..(i * c + self.ch + 1) * hw];
            for block in plane.chunks(STATS_BLOCK) {
                let nb = block.len() as f64;
                // A first mean (summed in `T`: off by a few ulps of the values), then the sums
                // of the values centred on it, small and exact enough in `T`, correct both.
                let mt = T::from_f64(block_sum(block, |v| v) / nb);
                let (s1, s2) = centred_sums(block, mt);
                let mb = f64_of(mt) + s1 / nb;
                let ssb = s2 - s1 * s1 / nb;
                let total = count + nb;
                let delta = mb - mean;
                mean += delta * nb / total;
                ss += ssb + delta * delta * count * nb / total;
                count = total;
            }
        }
        (mean * count, ss)
    }
}

/// `y = x·scale + shift` (`+ r` when given), then `max(·, 0)` when `RELU`, over one plane,
/// into uninitialised memory.
struct Affine<'a, T, const RELU: bool> {
    y: &'a mut [MaybeUninit<T>],
    x: &'a [T],
    r: Option<&'a [T]>,
    scale: T,
    shift: T,
}

impl<T: Real, const RELU: bool> pulp::WithSimd for Affine<'_, T, RELU> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (scale, shift, zero) = (self.scale, self.shift, T::zero());
        let relu = |a: T| if !RELU || a > zero { a } else { zero };
        match self.r {
            None => {
                for (o, &v) in self.y.iter_mut().zip(self.x) {
                    o.write(relu(v * scale + shift));
                }
            }
            Some(r) => {
                for ((o, &v), &r) in self.y.iter_mut().zip(self.x).zip(r) {
                    o.write(relu(v * scale + shift + r));
                }
            }
        }
    }
}

/// `y = x·scale_c + shift_c` per channel plane, `(scale_c, shift_c) = coef(c)`, then a ReLU when
/// `relu`, written without a zeroing pass; whole images per task (a plane can be 49 values).
fn affine_planes<T: Real>(x: &[T], d: Dims, relu: bool, coef: impl Fn(usize) -> (T, T) + Sync) -> Vec<T> {
    affine_planes_add(x, d, relu, None, coef)
}

/// [`affine_planes`] with `residual` added before the ReLU. The residual must be as long as
/// `x` (callers check).
fn affine_planes_add<T: Real>(
    x: &[T],
    d: Dims,
    relu: bool,
    residual: Option<&[T]>,
    coef: impl Fn(usize) -> (T, T) + Sync,
) -> Vec<T> {
    let (hw, c) = (d.hw, d.c);
    let coefs: Vec<(T, T)> = (0..c).map(coef).collect();
    let mut y: Vec<T> = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()].par_chunks_mut(c * hw).zip(x.par_chunks(c * hw)).enumerate().for_each(
        |(i, (yi, xi))| {
            for (ch, ((yp, xp), &(scale, shift))) in yi.chunks_mut(hw).zip(xi.chunks(hw)).zip(&coefs).enumerate() {
                let at = (i * c + ch) * hw;
                let r = residual.map(|r| &r[at..at + hw]);
                if relu {
                    simd(Affine::<T, true> { y: yp, x: xp, r, scale, shift });
                } else {
                    simd(Affine::<T, false> { y: yp, x: xp, r, scale, shift });
                }
            }
        },
    );
    // SAFETY: the images split `x` into whole `c·hw` chunks and every plane of each was written.
    unsafe { y.set_len(x.len()) };
    y
}

impl Kernel3 for BnTrain {
    const NAME: &'static str = "batch_norm";
    fn kernel<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(self.run(a, b, c))
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "sconce-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dg, db) = self.backward(x, g, res, grad)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// `(x, y, dy) → [dx | dγ | dβ]` using the saved mean and variance (`y`, the forward output,
/// masks `dy` when a ReLU was fused).
struct BnBackward {
    d: Dims,
    eps: f64,
    saved: Saved,
    /// γ per channel.
    gamma: Vec<f64>,
    relu: bool,
    /// `dx` into zero-padded planes when given: `(h, w, ph, pw)`, each `h×w` plane at
    /// `(ph, pw)` of an `(h + 2ph)×(w + 2pw)` one.
    pad: Option<(usize, usize, usize, usize)>,
}

impl BnBackward {
    fn run<T: Real>(&self, x: &[T], y: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        if self.relu { self.run_masked::<T, true>(x, y, dy) } else { self.run_masked::<T, false>(x, y, dy) }
    }

    fn run_masked<T: Real, const RELU: bool>(&self, x: &[T], y: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        let Some((mean, var)) = self.saved.get() else {
            candle_core::bail!("batch_norm backward without a recorded forward pass")
        };
        let Dims { n, c, hw } = self.d;
        let m = (n * hw) as f64;
        let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        // `[dx | dγ | dβ]`, every element written below (no zeroing pass).
        if x.len() != n * c * hw || y.len() != x.len() || dy.len() != x.len() {
            candle_core::bail!(
                "batch_norm backward: {} inputs, {} outputs, {} gradients for {n}x{c}x{hw}",
                x.len(),
                y.len(),
                dy.len()
            );
        }
        let (h, w, ph, pw) = self.pad.unwrap_or((1, hw, 0, 0));
        if h * w != hw {
            candle_core::bail!("batch_norm backward: padded planes of {h}x{w} for {hw} values per plane");
        }
        let (hq, wq) = (h + 2 * ph, w + 2 * pw);
        let out_plane = hq * wq;
        let len = n * c * out_plane + 2 * c;
        let mut out: Vec<T> = Vec::with_capacity(len);
        let (dx, rest) = out.spare_capacity_mut()[..len].split_at_mut(n * c * out_plane);
        // One task per channel: its sums Σdy and Σdy·x̂ over every image, then its `dx` planes
        // right after, while the channel's `x`, `y` and `dy` are still in L2 (the sums and
        // `dx` used to run as two parallel sweeps, each reading all three from memory).
        let by_channel = planes_by_channel(dx, out_plane, c, n);
        let sums: Vec<(f64, f64)> = by_channel
            .into_par_iter()
            .enumerate()
            .map(|(ch, planes)| {
                let (s, sx) = simd(GradSums::<T, RELU> { x, y, dy, d: self.d, ch, mean: T::from_f64(mean[ch]) });
                let sx = sx * inv[ch];
                let k = self.gamma[ch] * inv[ch];
                // dx = γ·σ⁻¹·(dy − Σdy/m − x̂·Σ(dy·x̂)/m) = a·dy + b·(x − mean) + e, centred first
                // so a large mean does not cost precision in f32.
                let (a, bx, e) = (T::from_f64(k), T::from_f64(-k * inv[ch] * sx / m), T::from_f64(-k * s / m));
                let mean = T::from_f64(mean[ch]);
                for (plane, dx) in planes {
                    let at = plane * hw..(plane + 1) * hw;
                    let (x, dy, y) = (&x[at.clone()], &dy[at.clone()], &y[at]);
                    if self.pad.is_none() {
                        simd(InputGrad::<T, RELU> { dx, dy, y, x, a, bx, e, mean });
                        continue;
                    }
                    let zero = |d: &mut [MaybeUninit<T>]| {
                        for v in d {
                            v.write(T::zero());
                        }
                    };
                    let (top, rest) = dx.split_at_mut(ph * wq);
                    let (rows, bottom) = rest.split_at_mut(h * wq);
                    zero(top);
                    zero(bottom);
                    for (r, row) in rows.chunks_exact_mut(wq).enumerate() {
                        let (left, rest) = row.split_at_mut(pw);
                        let (mid, right) = rest.split_at_mut(w);
                        zero(left);
                        zero(right);
                        let at = r * w..(r + 1) * w;
                        let (dy, y, x) = (&dy[at.clone()], &y[at.clone()], &x[at]);
                        simd(InputGrad::<T, RELU> { dx: mid, dy, y, x, a, bx, e, mean });
                    }
                }
                (s, sx)
            })
            .collect();
        for ch in 0..c {
            rest[ch].write(T::from_f64(sums[ch].1));
            rest[c + ch].write(T::from_f64(sums[ch].0));
        }
        // SAFETY: every plane of `dx` (the planes tile it; padded ones border and rows) and all
        // `2c` values of `rest` were written above.
        unsafe { out.set_len(len) };
        Ok(out)
    }
}

/// `(Σdy, Σdy·(x − mean))` of one channel over all images, `dy` masked by `y > 0` when `RELU`.
struct GradSums<'a, T, const RELU: bool> {
    x: &'a [T],
    y: &'a [T],
    dy: &'a [T],
    d: Dims,
    ch: usize,
    mean: T,
}

impl<T: Real, const RELU: bool> pulp::WithSimd for GradSums<'_, T, RELU> {
    type Output = (f64, f64);
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, f64) {
        let Dims { n, c, hw } = self.d;
        let (mut s, mut sx) = (0.0, 0.0);
        let mt = self.mean;
        for i in 0..n {
            let r = (i * c + self.ch) * hw..(i * c + self.ch + 1) * hw;
            let (a, b) = masked_sums::<T, RELU>(&self.dy[r.clone()], &self.y[r.clone()], &self.x[r], mt);
            s += a;
            sx += b;
        }
        (s, sx)
    }
}

/// `dy·[y > 0]` when `RELU`, else `dy`.
#[inline(always)]
fn mask<T: Real, const RELU: bool>(d: T, y: T) -> T {
    if !RELU || y > T::zero() { d } else { T::zero() }
}

/// `(Σ m·dy, Σ m·dy·(x − mt))` in one pass (`m` the ReLU mask), eight `T` lanes per sum over
/// blocks of 512 folded into `f64`, as [`block_sum`](crate::kernel::block_sum).
#[inline(always)]
fn masked_sums<T: Real, const RELU: bool>(dy: &[T], y: &[T], x: &[T], mt: T) -> (f64, f64) {
    let (mut s, mut sx) = (0.0f64, 0.0f64);
    for ((bd, by), bx) in dy.chunks(512).zip(y.chunks(512)).zip(x.chunks(512)) {
        let (mut acc, mut accx) = ([T::zero(); 8], [T::zero(); 8]);
        let (mut ld, mut ly, mut lx) = (bd.chunks_exact(8), by.chunks_exact(8), bx.chunks_exact(8));
        for ((cd, cy), cx) in (&mut ld).zip(&mut ly).zip(&mut lx) {
            for l in 0..8 {
                let d = mask::<T, RELU>(cd[l], cy[l]);
                acc[l] += d;
                accx[l] += d * (cx[l] - mt);
            }
        }
        let (mut a, mut b) = (T::zero(), T::zero());
        for ((&d, &v), &u) in ld.remainder().iter().zip(ly.remainder()).zip(lx.remainder()) {
            let d = mask::<T, RELU>(d, v);
            a += d;
            b += d * (u - mt);
        }
        for l in 0..8 {
            a += acc[l];
            b += accx[l];
        }
        s += f64_of(a);
        sx += f64_of(b);
    }
    (s, sx)
}

/// `dx = a·m·dy + bx·(x − mean) + e` over one plane (`m` the ReLU mask when `RELU`).
struct InputGrad<'a, T, const RELU: bool> {
    dx: &'a mut [MaybeUninit<T>],
    dy: &'a [T],
    y: &'a [T],
    x: &'a [T],
    a: T,
    bx: T,
    e: T,
    mean: T,
}

impl<T: Real, const RELU: bool> pulp::WithSimd for InputGrad<'_, T, RELU> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { dx, dy, y, x, a, bx, e, mean } = self;
        for (((o, &d), &w), &v) in dx.iter_mut().zip(dy).zip(y).zip(x) {
            o.write(a * mask::<T, RELU>(d, w) + bx * (v - mean) + e);
        }
    }
}

impl Kernel3 for BnBackward {
    const NAME: &'static str = "batch_norm backward";
    fn kernel<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>> {
        self.run(a, b, c)
    }
}

impl CustomOp3 for BnBackward {
    fn name(&self) -> &'static str {
        "sconce-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, len) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from(len)))
    }
}

fn check_param(p: &Tensor, what: &str, c: usize, dtype: DType) -> Result<()> {
    if p.dims() != [c] {
        return Err(Error::shape(format!("batch_norm {what}"), format!("[{c}] (one per channel)"), p.dims()));
    }
    if p.dtype() != dtype {
        return Err(Error::config(format!("batch_norm {what} dtype"), format!("must match the input's {dtype:?}")));
    }
    Ok(())
}

/// Training-mode batch norm: normalises each channel by the batch's mean and biased variance,
/// then applies `weight` (γ) and `bias` (β). Returns the output and the batch statistics for
/// [`update_running_stats`]. Differentiable in `x`, `weight` and `bias`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((2, 2, 2, 2))?;
/// let (gamma, beta) = (Tensor::ones(2, DType::F32, &Device::Cpu)?, Tensor::zeros(2, DType::F32, &Device::Cpu)?);
/// let (y, stats) = sconce_tensor::batch_norm_train(&x, &gamma, &beta, 1e-5)?;
/// assert_eq!(stats.count, 8);
/// assert!(y.mean_all()?.to_scalar::<f32>()?.abs() < 1e-6);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Shape`] for input other than `[N, C]`/`[N, C, H, W]` or parameters not `[C]`;
/// [`Error::Data`] when a channel has a single value (`N·H·W == 1`: its variance is undefined,
/// as PyTorch refuses too); [`Error::Config`] for `eps ≤ 0`, mixed or non-float dtypes.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, BatchStats)> {
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, as one op: `max(bn(x), 0)` in one pass forward
/// and one backward, without keeping the normalised activation or adding an autograd node for
/// it (ResNet's `relu(bn1(conv1(x)))`, DenseNet's `relu(norm(x))`, every U-Net block).
/// The gradient is PyTorch's: 0 where the output is exactly 0.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((2, 2, 2, 2))?;
/// let (gamma, beta) = (Tensor::ones(2, DType::F32, &Device::Cpu)?, Tensor::zeros(2, DType::F32, &Device::Cpu)?);
/// let (y, _) = sconce_tensor::batch_norm_relu_train(&x, &gamma, &beta, 1e-5)?;
/// assert!(y.min_all()?.to_scalar::<f32>()? == 0.0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`batch_norm_train`].
pub fn batch_norm_relu_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, BatchStats)> {
    train(x, weight, bias, eps, true)
}

fn train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64, relu: bool) -> Result<(Tensor, BatchStats)> {
    float_dtype(x, "batch_norm input")?;
    cpu(x, "batch_norm input")?;
    let op = BnTrain::checked(x.dims(), x.dtype(), weight, bias, eps, relu)?;
    let saved = op.saved.clone();
    let y = x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, BnTrain::stats(&saved, x)?))
}

impl BnTrain {
    /// The op for a training batch norm on input of shape `dims`, after checking the
    /// parameters, `eps` and that every channel has more than one value.
    pub(crate) fn checked(
        dims: &[usize],
        dtype: DType,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<Self> {
        let d = dims_of_shape(dims)?;
        check_param(weight, "weight", d.c, dtype)?;
        check_param(bias, "bias", d.c, dtype)?;
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::config("batch_norm eps", format!("must be a positive number, got {eps}")));
        }
        if d.n * d.hw <= 1 {
            return Err(Error::data(
                "batch_norm input",
                format!(
                    "expected more than 1 value per channel when training, got shape {dims:?}; use a larger batch or eval mode"
                ),
            ));
        }
        Ok(BnTrain { d, eps, saved: Arc::new(OnceLock::new()), relu })
    }

    /// The statistics the forward pass recorded in `saved` (`y` for the device and dtype).
    pub(crate) fn stats(saved: &Saved, y: &Tensor) -> Result<BatchStats> {
        let Some((mean, var)) = saved.get() else {
            return Err(Error::config("batch_norm", "the forward kernel did not record statistics"));
        };
        let (dev, c) = (y.device(), mean.len());
        Ok(BatchStats {
            mean: Tensor::from_slice(mean, c, dev)?.to_dtype(y.dtype())?,
            var: Tensor::from_slice(var, c, dev)?.to_dtype(y.dtype())?,
            count: y.elem_count() / c.max(1),
        })
    }

    /// The shared slot the forward pass records its statistics in.
    pub(crate) fn saved(&self) -> Saved {
        self.saved.clone()
    }

    /// Whether a ReLU follows the batch norm.
    pub(crate) fn relu(&self) -> bool {
        self.relu
    }

    /// Channels.
    pub(crate) fn channels(&self) -> usize {
        self.d.c
    }

    /// The forward output again from the statistics the forward pass recorded (one pass, no
    /// statistics): for ops that keep `x` instead of the output.
    ///
    /// # Errors
    /// Before the forward pass ran, or for an `x` of another size.
    pub(crate) fn replay<T: Real>(&self, x: &[T], g: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let Some((mean, var)) = self.saved.get() else {
            candle_core::bail!("batch_norm: replay without a recorded forward pass")
        };
        let Dims { n, c, hw } = self.d;
        if x.len() != n * c * hw || g.len() != c || b.len() != c {
            candle_core::bail!("batch_norm: replay on {} values for {n}x{c}x{hw}", x.len());
        }
        // The forward pass's coefficients bit for bit, so the replayed ReLU mask is its mask.
        Ok(affine_planes(x, self.d, self.relu, |ch| {
            let scale = (1.0 / (var[ch] + self.eps).sqrt()) * f64_of(g[ch]);
            (T::from_f64(scale), T::from_f64(f64_of(b[ch]) - mean[ch] * scale))
        }))
    }
}

/// Evaluation-mode batch norm with the running statistics:
/// `y = (x − running_mean) / √(running_var + eps) · weight + bias`, differentiable in `x`,
/// `weight` and `bias` (fine-tuning with frozen statistics).
///
/// # Errors
/// As [`batch_norm_train`], except that a single value per channel is fine.
pub fn batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    eval(x, [running_mean, running_var, weight, bias], eps, false)
}

/// [`batch_norm_eval`] followed by a ReLU, in one pass (differentiable as
/// [`batch_norm_relu_train`]).
///
/// # Errors
/// As [`batch_norm_eval`].
pub fn batch_norm_relu_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    eval(x, [running_mean, running_var, weight, bias], eps, true)
}

fn eval(x: &Tensor, params: [&Tensor; 4], eps: f64, relu: bool) -> Result<Tensor> {
    let d = dims_of(x)?;
    float_dtype(x, "batch_norm input")?;
    let (scale, shift) = eval_coefficients(d.c, x.dtype(), params, eps)?;
    Ok(x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ScaleShift { d, relu })?)
}

/// The per-channel `(scale, shift)` of an eval-mode batch norm over `c` channels of `dtype`,
/// after checking the parameters (`[running_mean, running_var, weight, bias]`) and `eps`.
pub(crate) fn eval_coefficients(c: usize, dtype: DType, params: [&Tensor; 4], eps: f64) -> Result<(Tensor, Tensor)> {
    let [running_mean, running_var, weight, bias] = params;
    let d = Dims { n: 1, c, hw: 1 };
    for (p, what) in [(running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")]
    {
        check_param(p, what, d.c, dtype)?;
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::config("batch_norm eps", format!("must be a positive number, got {eps}")));
    }
    let min_var = running_var.to_dtype(DType::F64)?.min(0)?.to_scalar::<f64>()?;
    if min_var.is_nan() || min_var < 0.0 {
        return Err(Error::data("batch_norm running_var", format!("variances must be ≥ 0, found {min_var}")));
    }
    let scale = (weight * (running_var + eps)?.sqrt()?.recip()?)?;
    let shift = (bias - (running_mean * &scale)?)?;
    Ok((scale, shift))
}

/// `y = x·scale[c] + shift[c]` in one pass (candle's `broadcast_mul` then `broadcast_add` took
/// two passes through its generic broadcasting path, a quarter of a ResNet50 inference step).
pub(crate) struct ScaleShift {
    d: Dims,
    relu: bool,
}

impl ScaleShift {
    /// The op for `[N, C, H, W]` input of shape `dims` (checked by the caller).
    pub(crate) fn for_shape(dims: &[usize], relu: bool) -> Result<Self> {
        Ok(Self { d: dims_of_shape(dims)?, relu })
    }
}

impl ScaleShift {
    fn run<T: Real>(&self, x: &[T], scale: &[T], shift: &[T]) -> Vec<T> {
        affine_planes(x, self.d, self.relu, |ch| (scale[ch], shift[ch]))
    }
}

impl Kernel3 for ScaleShift {
    const NAME: &'static str = "batch_norm_eval";
    fn kernel<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(self.run(a, b, c))
    }
}

impl CustomOp3 for ScaleShift {
    fn name(&self) -> &'static str {
        "sconce-scale-shift"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    /// `dx = dy·scale`, `dscale = Σ dy·x`, `dshift = Σ dy` (sums over all but the channel axis).
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let masked;
        let grad = if self.relu {
            masked = crate::relu::relu_grad(res, grad)?;
            &masked
        } else {
            grad
        };
        let c = self.d.c;
        let bshape: &[usize] = if x.rank() == 4 { &[1, c, 1, 1] } else { &[1, c] };
        let dx = grad.broadcast_mul(&scale.reshape(bshape)?)?;
        let per_channel = |t: &Tensor| -> candle_core::Result<Tensor> {
            // [N, C, ...] → [C, N·rest] → row sums.
            let n = t.dim(0)?;
            t.reshape((n, c, self.d.hw))?.transpose(0, 1)?.contiguous()?.reshape((c, n * self.d.hw))?.sum(1)
        };
        let dscale = per_channel(&(grad * x)?)?;
        let dshift = per_channel(grad)?;
        Ok((Some(dx), Some(dscale), Some(dshift)))
    }
}

/// PyTorch's running-statistics update after a training step:
/// `running = (1 − f)·running + f·batch` with `f = momentum`, or `f = 1 / num_batches_tracked`
/// when `momentum` is `None` (cumulative average); the variance uses the unbiased batch
/// variance `var · n / (n − 1)`. Returns the new `(running_mean, running_var)`.
///
/// # Errors
/// [`Error::Config`] for a momentum outside `[0, 1]` or `num_batches_tracked == 0` without
/// momentum; shape errors for mismatched statistics.
pub fn update_running_stats(
    running_mean: &Tensor,
    running_var: &Tensor,
    stats: &BatchStats,
    momentum: Option<f64>,
    num_batches_tracked: u64,
) -> Result<(Tensor, Tensor)> {
    let f = match momentum {
        Some(m) if (0.0..=1.0).contains(&m) => m,
        Some(m) => return Err(Error::config("batch_norm momentum", format!("must be in [0, 1], got {m}"))),
        None if num_batches_tracked > 0 => 1.0 / num_batches_tracked as f64,
        None => {
            return Err(Error::config(
                "batch_norm num_batches_tracked",
                "must be > 0 for the cumulative average (momentum None); increment it before updating",
            ));
        }
    };
    if running_mean.dims() != stats.mean.dims() || running_var.dims() != stats.var.dims() {
        return Err(Error::shape("batch_norm running stats", format!("{:?}", stats.mean.dims()), running_mean.dims()));
    }
    let n = stats.count as f64;
    let unbiased = (&stats.var * (n / (n - 1.0).max(1.0)))?;
    let mean = ((running_mean * (1.0 - f))? + (&stats.mean.detach() * f)?)?;
    let var = ((running_var * (1.0 - f))? + (unbiased.detach() * f)?)?;
    Ok((mean.detach(), var.detach()))
}
