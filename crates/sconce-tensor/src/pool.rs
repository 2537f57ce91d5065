//! Max, average, adaptive and global pooling over `[N, C, H, W]` with PyTorch's semantics
//! (kernel, stride, padding, dilation, `ceil_mode`, `count_include_pad`, `divisor_override`)
//! and correct backward passes for any H×W.
//!
//! candle 0.11.1's own pooling backward refuses kernel ≠ stride and scales max-pool gradients
//! by 1/(kh·kw); these ops route the gradient exactly as PyTorch does: max pooling to the
//! arg-max of each window (the first one on ties), average pooling spread over the window.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::{Real, contiguous_slice, nchw};
use crate::separable::{SeparableMap, Taps};

/// Configuration of a max pooling window (`torch.nn.MaxPool2d`).
///
/// ```
/// use sconce_tensor::{MaxPool2d, max_pool2d};
/// # fn main() -> sconce_core::Result<()> {
/// // The ResNet/DenseNet stem: 3×3, stride 2, padding 1.
/// let x = candle_core::Tensor::zeros((1, 64, 125, 125), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let y = max_pool2d(&x, &MaxPool2d::new(3).stride(2).padding(1))?;
/// assert_eq!(y.dims(), &[1, 64, 63, 63]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step `(sh, sw)`; defaults to the kernel size.
    pub stride: (usize, usize),
    /// Implicit −∞ padding on each side `(ph, pw)`; at most half the effective kernel.
    pub padding: (usize, usize),
    /// Spacing between window elements `(dh, dw)`.
    pub dilation: (usize, usize),
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
}

impl MaxPool2d {
    /// A square `k×k` window with stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        Self { kernel: (k, k), stride: (k, k), padding: (0, 0), dilation: (1, 1), ceil_mode: false }
    }
    /// Sets a square stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// Sets a square padding.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// Sets a square dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
}

/// Configuration of an average pooling window (`torch.nn.AvgPool2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Window size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step `(sh, sw)`; defaults to the kernel size.
    pub stride: (usize, usize),
    /// Implicit zero padding on each side; at most half the kernel.
    pub padding: (usize, usize),
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// Count padded zeros in the divisor (PyTorch's default `true`).
    pub count_include_pad: bool,
    /// Divide every window sum by this instead.
    pub divisor_override: Option<usize>,
}

impl AvgPool2d {
    /// A square `k×k` window with stride `k`, no padding, PyTorch's defaults otherwise.
    pub fn new(k: usize) -> Self {
        Self {
            kernel: (k, k),
            stride: (k, k),
            padding: (0, 0),
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
    /// Sets a square stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// Sets a square padding.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
    /// Sets `count_include_pad`.
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }
    /// Sets `divisor_override`.
    pub fn divisor_override(mut self, d: Option<usize>) -> Self {
        self.divisor_override = d;
        self
    }
}

/// PyTorch's `pooling_output_shape` along one axis.
pub(crate) fn pooled_len(axis: &str, len: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Result<usize> {
    if k == 0 || s == 0 || d == 0 {
        return Err(Error::config(
            format!("pool {axis}"),
            format!("kernel, stride and dilation must be > 0, got {k}, {s}, {d}"),
        ));
    }
    // PyTorch: "pad should be smaller than or equal to half of kernel size" (undilated).
    if p > k / 2 {
        return Err(Error::config(
            format!("pool {axis} padding"),
            format!("padding {p} must be at most half the kernel size {k} (PyTorch's rule)"),
        ));
    }
    if len == 0 {
        return Err(Error::config(format!("pool {axis}"), "the input is empty along this axis"));
    }
    let eff = d * (k - 1) + 1;
    let span = len + 2 * p;
    // With ceil_mode a kernel may overhang the padded input, as long as one window starts in it.
    let reach = span + if ceil { s - 1 } else { 0 };
    if reach < eff {
        return Err(Error::config(
            format!("pool {axis}"),
            format!("effective kernel {eff} is larger than the padded input {span} (input {len} + 2×{p})"),
        ));
    }
    let mut out = (reach - eff) / s + 1;
    // The last window must start inside the input or the left padding.
    if ceil && (out - 1) * s >= len + p {
        out -= 1;
    }
    Ok(out)
}

/// Max windows along one axis: for each output, the first valid input index and the count.
fn max_windows(len: usize, out: usize, k: usize, s: usize, p: usize, d: usize) -> (Vec<usize>, Vec<usize>) {
    let mut first = Vec::with_capacity(out);
    let mut count = Vec::with_capacity(out);
    for o in 0..out {
        let start = (o * s) as isize - p as isize;
        let i0 = if start < 0 { ((-start) as usize).div_ceil(d) } else { 0 };
        let last = (len as isize - 1 - start).div_euclid(d as isize);
        let i1 = (k as isize - 1).min(last);
        if i1 < i0 as isize {
            first.push(0);
            count.push(0);
        } else {
            first.push((start + (i0 * d) as isize) as usize);
            count.push(i1 as usize - i0 + 1);
        }
    }
    (first, count)
}

/// Max over rectangular windows given per axis as (first index, count, step); records the
/// arg-max of each window so the backward pass can route the gradient there.
#[derive(Debug, Clone)]
struct MaxWindows {
    name: &'static str,
    in_hw: (usize, usize),
    h: (Arc<Vec<usize>>, Arc<Vec<usize>>, usize),
    w: (Arc<Vec<usize>>, Arc<Vec<usize>>, usize),
    /// Plane-local arg-max indices, filled by the forward pass when a gradient is needed.
    argmax: Arc<OnceLock<Arc<Vec<u32>>>>,
    save: bool,
}

impl MaxWindows {
    /// Max (and arg-max) of every window, separably: each input row is first reduced over the
    /// horizontal windows (`hv`, with the arg-max column in `ha`), then each output row is the
    /// max of its window's rows of `hv`. Scanning rows in order and, within a row, columns in
    /// order with a strict `>` keeps PyTorch's first-in-row-major-order arg-max; a NaN wins over
    /// any number and the first NaN stays. Both passes are branch-free loops over contiguous
    /// rows that the compiler vectorises (the window-by-window loop mispredicted its
    /// data-dependent branch on about every other element).
    fn run<T: Real>(&self, x: &[T], n: usize, c: usize) -> (Vec<T>, Vec<u32>) {
        let (ih, iw) = self.in_hw;
        let (oh, ow) = (self.h.0.len(), self.w.0.len());
        let plane_out = oh * ow;
        let mut out = vec![T::zero(); n * c * plane_out];
        let mut idx = vec![0u32; if self.save { n * c * plane_out } else { 0 }];
        let scratch = || (vec![T::zero(); ih * ow + iw], vec![0u32; ih * ow + iw]);
        if self.save {
            out.par_chunks_mut(plane_out)
                .zip(idx.par_chunks_mut(plane_out))
                .zip(x.par_chunks(ih * iw))
                .for_each_init(scratch, |(fv, fi), ((o, i), x)| self.plane::<T, true>(x, o, i, fv, fi));
        } else {
            out.par_chunks_mut(plane_out)
                .zip(x.par_chunks(ih * iw))
                .for_each_init(scratch, |(fv, fi), (o, x)| self.plane::<T, false>(x, o, &mut [], fv, fi));
        }
        (out, idx)
    }

    /// One plane of [`Self::run`]; `fv`/`fi` are scratch of `ih·ow + iw` elements.
    fn plane<T: Real, const SAVE: bool>(&self, x: &[T], o: &mut [T], i: &mut [u32], fv: &mut [T], fi: &mut [u32]) {
        let (ih, iw) = self.in_hw;
        let (hf, hc, hs) = (&self.h.0, &self.h.1, self.h.2);
        let (wf, wc, ws) = (&self.w.0, &self.w.1, self.w.2);
        let ow = wf.len();
        let (hv, row_best) = fv.split_at_mut(ih * ow);
        let (ha, row_arg) = fi.split_at_mut(ih * ow);
        // Full-width windows start at 0..full; their maxima come from one vectorised pass.
        let kmax = wc.iter().copied().max().unwrap_or(0);
        let full = iw.saturating_sub(kmax.saturating_sub(1) * ws);
        for (r, xr) in x.chunks_exact(iw).enumerate() {
            let (hvr, har) = (&mut hv[r * ow..(r + 1) * ow], &mut ha[r * ow..(r + 1) * ow]);
            if full > 0 {
                pulp::Arch::new().dispatch(RowMax::<T, SAVE> {
                    row: xr,
                    best: &mut row_best[..full],
                    arg: &mut row_arg[..full],
                    k: kmax,
                    step: ws,
                });
            }
            for b in 0..ow {
                let (start, count) = (wf[b], wc[b]);
                if count == kmax && start < full {
                    hvr[b] = row_best[start];
                    har[b] = (start + row_arg[start] as usize * ws) as u32;
                } else {
                    let (mut best, mut arg) = (xr[start], start);
                    for q in 1..count {
                        let j = start + q * ws;
                        if take(xr[j], best) {
                            best = xr[j];
                            arg = j;
                        }
                    }
                    hvr[b] = best;
                    har[b] = arg as u32;
                }
            }
        }
        for (a, orow) in o.chunks_exact_mut(ow).enumerate() {
            let r0 = hf[a];
            orow.copy_from_slice(&hv[r0 * ow..(r0 + 1) * ow]);
            if SAVE {
                for (d, &h) in i[a * ow..(a + 1) * ow].iter_mut().zip(&ha[r0 * ow..(r0 + 1) * ow]) {
                    *d = (r0 * iw) as u32 + h;
                }
            }
            for p in 1..hc[a] {
                let r = hf[a] + p * hs;
                pulp::Arch::new().dispatch(RowsMax::<T, SAVE> {
                    best: orow,
                    arg: if SAVE { &mut i[a * ow..(a + 1) * ow] } else { &mut [] },
                    v: &hv[r * ow..(r + 1) * ow],
                    va: if SAVE { &ha[r * ow..(r + 1) * ow] } else { &[] },
                    base: (r * iw) as u32,
                });
            }
        }
    }
}

/// Whether `v` replaces the running maximum `best`: larger, or the first NaN.
#[inline(always)]
fn take<T: Real>(v: T, best: T) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// `best[j] = max_q row[j + q·step]` over `q < k` (arg-max `q` in `arg`), for every start `j`.
struct RowMax<'a, T, const SAVE: bool> {
    row: &'a [T],
    best: &'a mut [T],
    arg: &'a mut [u32],
    k: usize,
    step: usize,
}

impl<T: Real, const SAVE: bool> pulp::WithSimd for RowMax<'_, T, SAVE> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let len = self.best.len();
        self.best.copy_from_slice(&self.row[..len]);
        if SAVE {
            self.arg.fill(0);
        }
        for q in 1..self.k {
            let src = &self.row[q * self.step..q * self.step + len];
            if SAVE {
                for ((b, a), &v) in self.best.iter_mut().zip(self.arg.iter_mut()).zip(src) {
                    let t = take(v, *b);
                    *b = if t { v } else { *b };
                    *a = if t { q as u32 } else { *a };
                }
            } else {
                for (b, &v) in self.best.iter_mut().zip(src) {
                    *b = if take(v, *b) { v } else { *b };
                }
            }
        }
    }
}

/// `best = max(best, v)` element-wise, the arg-max becoming `base + va` where `v` wins.
struct RowsMax<'a, T, const SAVE: bool> {
    best: &'a mut [T],
    arg: &'a mut [u32],
    v: &'a [T],
    va: &'a [u32],
    base: u32,
}

impl<T: Real, const SAVE: bool> pulp::WithSimd for RowsMax<'_, T, SAVE> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        if SAVE {
            for (((b, a), &v), &va) in self.best.iter_mut().zip(self.arg.iter_mut()).zip(self.v).zip(self.va) {
                let t = take(v, *b);
                *b = if t { v } else { *b };
                *a = if t { self.base + va } else { *a };
            }
        } else {
            for (b, &v) in self.best.iter_mut().zip(self.v) {
                *b = if take(v, *b) { v } else { *b };
            }
        }
    }
}

impl CustomOp1 for MaxWindows {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let [n, c, h, w] = <[usize; 4]>::try_from(dims)
            .map_err(|_| candle_core::Error::Msg(format!("{}: expected [N, C, H, W], got {dims:?}", self.name)))?;
        if (h, w) != self.in_hw {
            candle_core::bail!("{}: input plane {h}x{w} does not match the configured {:?}", self.name, self.in_hw);
        }
        let shape = Shape::from((n, c, self.h.0.len(), self.w.0.len()));
        let (st, idx) = match storage {
            CpuStorage::F32(_) => {
                let (o, i) = self.run(contiguous_slice::<f32>(storage, layout, self.name)?, n, c);
                (CpuStorage::F32(o), i)
            }
            CpuStorage::F64(_) => {
                let (o, i) = self.run(contiguous_slice::<f64>(storage, layout, self.name)?, n, c);
                (CpuStorage::F64(o), i)
            }
            other => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name, other.dtype()),
        };
        if self.save {
            // A second forward through the same op instance never happens; ignore if set.
            let _ = self.argmax.set(Arc::new(idx));
        }
        Ok((st, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some(idx) = self.argmax.get() else {
            candle_core::bail!("{}: backward without a recorded forward pass", self.name)
        };
        let scatter = ScatterToArgmax { name: self.name, in_hw: self.in_hw, argmax: idx.clone() };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&scatter)?))
    }
}

/// The max-pool backward: each output gradient is added at its window's arg-max.
struct ScatterToArgmax {
    name: &'static str,
    in_hw: (usize, usize),
    argmax: Arc<Vec<u32>>,
}

impl ScatterToArgmax {
    fn run<T: Real>(&self, g: &[T], n: usize, c: usize, plane_out: usize) -> Vec<T> {
        let plane_in = self.in_hw.0 * self.in_hw.1;
        let mut out = vec![T::zero(); n * c * plane_in];
        out.par_chunks_mut(plane_in).zip(g.par_chunks(plane_out)).zip(self.argmax.par_chunks(plane_out)).for_each(
            |((o, g), idx)| {
                for (&gv, &j) in g.iter().zip(idx) {
                    o[j as usize] += gv;
                }
            },
        );
        out
    }
}

impl CustomOp1 for ScatterToArgmax {
    fn name(&self) -> &'static str {
        "max-pool-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let [n, c, h, w] = <[usize; 4]>::try_from(dims)
            .map_err(|_| candle_core::Error::Msg(format!("{}: bad gradient shape {dims:?}", self.name)))?;
        if self.argmax.len() != n * c * h * w {
            candle_core::bail!("{}: gradient shape {dims:?} does not match the forward output", self.name);
        }
        let shape = Shape::from((n, c, self.in_hw.0, self.in_hw.1));
        match storage {
            CpuStorage::F32(_) => Ok((
                CpuStorage::F32(self.run(contiguous_slice::<f32>(storage, layout, self.name)?, n, c, h * w)),
                shape,
            )),
            CpuStorage::F64(_) => Ok((
                CpuStorage::F64(self.run(contiguous_slice::<f64>(storage, layout, self.name)?, n, c, h * w)),
                shape,
            )),
            other => candle_core::bail!("{}: expected f32 or f64, got {:?}", self.name, other.dtype()),
        }
    }
}

fn apply_max(
    x: &Tensor,
    name: &'static str,
    h: (Vec<usize>, Vec<usize>, usize),
    w: (Vec<usize>, Vec<usize>, usize),
) -> Result<Tensor> {
    if h.1.contains(&0) || w.1.contains(&0) {
        return Err(Error::config(name, "a pooling window lies entirely in the padding; reduce the padding"));
    }
    let [_, _, ih, iw] = nchw(x, name)?;
    let op = MaxWindows {
        name,
        in_hw: (ih, iw),
        h: (Arc::new(h.0), Arc::new(h.1), h.2),
        w: (Arc::new(w.0), Arc::new(w.1), w.2),
        argmax: Arc::new(OnceLock::new()),
        save: x.track_op(),
    };
    let x = x.contiguous()?;
    Ok(if op.save { x.apply_op1(op)? } else { x.apply_op1_no_bwd(&op)? })
}

/// Max pooling with PyTorch's `max_pool2d` semantics; the gradient goes to the arg-max of each
/// window (NaN propagates, as in PyTorch).
///
/// # Errors
/// [`Error::Shape`] for input that is not `[N, C, H, W]`; [`Error::Config`] for zero sizes, too
/// much padding, a kernel larger than the padded input, or a non-float dtype.
pub fn max_pool2d(x: &Tensor, cfg: &MaxPool2d) -> Result<Tensor> {
    let [_, _, ih, iw] = nchw(x, "max_pool2d input")?;
    let (kh, kw) = cfg.kernel;
    let (sh, sw) = cfg.stride;
    let (ph, pw) = cfg.padding;
    let (dh, dw) = cfg.dilation;
    let oh = pooled_len("height", ih, kh, sh, ph, dh, cfg.ceil_mode)?;
    let ow = pooled_len("width", iw, kw, sw, pw, dw, cfg.ceil_mode)?;
    let (hf, hc) = max_windows(ih, oh, kh, sh, ph, dh);
    let (wf, wc) = max_windows(iw, ow, kw, sw, pw, dw);
    apply_max(x, "max_pool2d", (hf, hc, dh), (wf, wc, dw))
}

/// PyTorch's adaptive window `[floor(o·L/O), ceil((o+1)·L/O))` along one axis.
fn adaptive_range(o: usize, len: usize, out: usize) -> (usize, usize) {
    let start = (o * len) / out;
    let end = ((o + 1) * len).div_ceil(out);
    (start, end)
}

fn check_out_size(out: (usize, usize), what: &str) -> Result<()> {
    if out.0 == 0 || out.1 == 0 {
        return Err(Error::config(format!("{what} output size"), format!("must be positive, got {out:?}")));
    }
    Ok(())
}

/// Adaptive max pooling to `out = (oh, ow)` (`torch.nn.functional.adaptive_max_pool2d`).
///
/// # Errors
/// As [`max_pool2d`]; a zero output size is a config error.
pub fn adaptive_max_pool2d(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    let [_, _, ih, iw] = nchw(x, "adaptive_max_pool2d input")?;
    check_out_size(out, "adaptive_max_pool2d")?;
    let axis = |len: usize, o_len: usize| {
        let (f, c): (Vec<usize>, Vec<usize>) = (0..o_len)
            .map(|o| {
                let (s, e) = adaptive_range(o, len, o_len);
                (s, e - s)
            })
            .unzip();
        (f, c, 1)
    };
    apply_max(x, "adaptive_max_pool2d", axis(ih, out.0), axis(iw, out.1))
}

/// Taps of PyTorch's `avg_pool2d` along one axis.
fn avg_taps(len: usize, out: usize, k: usize, s: usize, p: usize, include_pad: bool, unit: bool) -> Taps {
    Taps::from_lists(
        len,
        (0..out).map(|o| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((len + p) as isize);
            let pool = (end - start) as f64;
            let (a, b) = (start.max(0) as usize, end.min(len as isize).max(0) as usize);
            let valid = b.saturating_sub(a) as f64;
            let w = if unit {
                1.0
            } else if include_pad {
                1.0 / pool
            } else {
                1.0 / valid
            };
            (a..b).map(|i| (i, w)).collect()
        }),
    )
}

/// Average pooling with PyTorch's `avg_pool2d` semantics, forward and backward.
///
/// ```
/// use sconce_tensor::{AvgPool2d, avg_pool2d};
/// # fn main() -> sconce_core::Result<()> {
/// // DenseNet's transition on an odd map: 2×2 stride 2 floors 63 → 31.
/// let x = candle_core::Tensor::ones((1, 8, 63, 63), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let y = avg_pool2d(&x, &AvgPool2d::new(2))?;
/// assert_eq!(y.dims(), &[1, 8, 31, 31]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`max_pool2d`]; `divisor_override = Some(0)` is a config error.
pub fn avg_pool2d(x: &Tensor, cfg: &AvgPool2d) -> Result<Tensor> {
    let [_, _, ih, iw] = nchw(x, "avg_pool2d input")?;
    let (kh, kw) = cfg.kernel;
    let (sh, sw) = cfg.stride;
    let (ph, pw) = cfg.padding;
    // PyTorch: "pad should be at most half of kernel size" (no dilation for average pooling).
    let oh = pooled_len("height", ih, kh, sh, ph, 1, cfg.ceil_mode)?;
    let ow = pooled_len("width", iw, kw, sw, pw, 1, cfg.ceil_mode)?;
    let (unit, scale) = match cfg.divisor_override {
        Some(0) => return Err(Error::config("avg_pool2d divisor_override", "must be > 0")),
        Some(d) => (true, 1.0 / d as f64),
        None => (false, 1.0),
    };
    let map = SeparableMap {
        name: "avg_pool2d",
        h: Arc::new(avg_taps(ih, oh, kh, sh, ph, cfg.count_include_pad, unit)),
        w: Arc::new(avg_taps(iw, ow, kw, sw, pw, cfg.count_include_pad, unit)),
        scale,
        transposed: false,
    };
    Ok(map.apply(x)?)
}

/// Adaptive average pooling to `out = (oh, ow)` (`torch.nn.functional.adaptive_avg_pool2d`).
///
/// # Errors
/// As [`avg_pool2d`]; a zero output size is a config error.
pub fn adaptive_avg_pool2d(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    let [_, _, ih, iw] = nchw(x, "adaptive_avg_pool2d input")?;
    check_out_size(out, "adaptive_avg_pool2d")?;
    let taps = |len: usize, o_len: usize| {
        Taps::from_lists(
            len,
            (0..o_len).map(|o| {
                let (s, e) = adaptive_range(o, len, o_len);
                let w = 1.0 / (e - s) as f64;
                (s..e).map(|i| (i, w)).collect()
            }),
        )
    };
    let map = SeparableMap {
        name: "adaptive_avg_pool2d",
        h: Arc::new(taps(ih, out.0)),
        w: Arc::new(taps(iw, out.1)),
        scale: 1.0,
        transposed: false,
    };
    Ok(map.apply(x)?)
}

/// Global average pooling `[N, C, H, W] → [N, C]` (the classifier input of ResNet/DenseNet).
///
/// # Errors
/// As [`adaptive_avg_pool2d`].
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    Ok(adaptive_avg_pool2d(x, (1, 1))?.flatten_from(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl MaxWindows {
        /// The window-by-window loop this module used before the separable one: the reference the
        /// separable passes are tested against.
        fn run_direct<T: Real>(&self, x: &[T], n: usize, c: usize) -> (Vec<T>, Vec<u32>) {
            let (ih, iw) = self.in_hw;
            let (hf, hc, hs) = (&self.h.0, &self.h.1, self.h.2);
            let (wf, wc, ws) = (&self.w.0, &self.w.1, self.w.2);
            let (oh, ow) = (hf.len(), wf.len());
            let plane_out = oh * ow;
            let mut out = vec![T::zero(); n * c * plane_out];
            let mut idx = vec![0u32; if self.save { n * c * plane_out } else { 0 }];
            let work = |(o, i): (&mut [T], Option<&mut [u32]>), x: &[T]| {
                let mut local = i;
                for a in 0..oh {
                    for b in 0..ow {
                        let mut best = T::neg_infinity();
                        let mut arg = hf[a] * iw + wf[b];
                        for p in 0..hc[a] {
                            let row = (hf[a] + p * hs) * iw;
                            for q in 0..wc[b] {
                                let j = row + wf[b] + q * ws;
                                let v = x[j];
                                if v > best || v.is_nan() {
                                    best = v;
                                    arg = j;
                                    if v.is_nan() {
                                        break;
                                    }
                                }
                            }
                            if best.is_nan() {
                                break;
                            }
                        }
                        o[a * ow + b] = best;
                        if let Some(i) = local.as_deref_mut() {
                            i[a * ow + b] = arg as u32;
                        }
                    }
                }
            };
            if self.save {
                out.par_chunks_mut(plane_out)
                    .zip(idx.par_chunks_mut(plane_out))
                    .zip(x.par_chunks(ih * iw))
                    .for_each(|((o, i), x)| work((o, Some(i)), x));
            } else {
                out.par_chunks_mut(plane_out).zip(x.par_chunks(ih * iw)).for_each(|(o, x)| work((o, None), x));
            }
            (out, idx)
        }
    }

    /// Windows of `max_pool2d` for one configuration, as `apply_max` builds them.
    fn pool_op(ih: usize, iw: usize, cfg: &MaxPool2d, save: bool) -> Result<MaxWindows> {
        let oh = pooled_len("h", ih, cfg.kernel.0, cfg.stride.0, cfg.padding.0, cfg.dilation.0, cfg.ceil_mode)?;
        let ow = pooled_len("w", iw, cfg.kernel.1, cfg.stride.1, cfg.padding.1, cfg.dilation.1, cfg.ceil_mode)?;
        let (hf, hc) = max_windows(ih, oh, cfg.kernel.0, cfg.stride.0, cfg.padding.0, cfg.dilation.0);
        let (wf, wc) = max_windows(iw, ow, cfg.kernel.1, cfg.stride.1, cfg.padding.1, cfg.dilation.1);
        Ok(MaxWindows {
            name: "test",
            in_hw: (ih, iw),
            h: (Arc::new(hf), Arc::new(hc), cfg.dilation.0),
            w: (Arc::new(wf), Arc::new(wc), cfg.dilation.1),
            argmax: Arc::new(OnceLock::new()),
            save,
        })
    }

    #[test]
    fn separable_max_equals_the_window_loop_with_ties_nans_and_infinities() -> Result<()> {
        // Few distinct values (many ties, as after a ReLU), some NaN and -inf: values and
        // arg-max indices must be exactly those of the window-by-window loop.
        let configs = [
            (9, 11, MaxPool2d::new(3).stride(2).padding(1)),
            (112, 112, MaxPool2d::new(3).stride(2).padding(1)),
            (8, 8, MaxPool2d::new(2)),
            (7, 9, MaxPool2d::new(2).ceil_mode(true)),
            (10, 11, MaxPool2d::new(3).stride(1).padding(1).dilation(2)),
            (6, 13, MaxPool2d { kernel: (2, 3), stride: (1, 2), padding: (1, 1), dilation: (1, 1), ceil_mode: true }),
            (5, 5, MaxPool2d::new(1).stride(2)),
            (3, 4, MaxPool2d { kernel: (3, 4), stride: (1, 1), padding: (0, 0), dilation: (1, 1), ceil_mode: false }),
        ];
        let mut seed = 7u64;
        for (ih, iw, cfg) in configs {
            let (n, c) = (2, 3);
            let x: Vec<f32> = (0..n * c * ih * iw)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    match (seed >> 33) % 23 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        r => (r % 5) as f32,
                    }
                })
                .collect();
            for save in [true, false] {
                let op = pool_op(ih, iw, &cfg, save)?;
                let (fast, fast_i) = op.run(&x, n, c);
                let (slow, slow_i) = op.run_direct(&x, n, c);
                let same = fast.iter().zip(&slow).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                assert!(same, "{ih}x{iw} {cfg:?}: values differ");
                assert_eq!(fast_i, slow_i, "{ih}x{iw} {cfg:?}: arg-max differs");
            }
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let op = pool_op(ih, iw, &cfg, true)?;
            assert_eq!(op.run(&x64, n, c).1, op.run_direct(&x64, n, c).1, "f64 {ih}x{iw} {cfg:?}");
        }
        // Adaptive windows (two sizes, overlapping): 7 → 3 and 10 → 4.
        let axis = |len: usize, o_len: usize| {
            let (f, c): (Vec<usize>, Vec<usize>) = (0..o_len)
                .map(|o| {
                    let (s, e) = adaptive_range(o, len, o_len);
                    (s, e - s)
                })
                .unzip();
            (Arc::new(f), Arc::new(c), 1)
        };
        let x: Vec<f32> = (0..70).map(|i| ((i * 37) % 11) as f32).collect();
        let op = MaxWindows {
            name: "test",
            in_hw: (7, 10),
            h: axis(7, 3),
            w: axis(10, 4),
            argmax: Arc::new(OnceLock::new()),
            save: true,
        };
        assert_eq!(op.run(&x, 1, 1), op.run_direct(&x, 1, 1));
        Ok(())
    }

    #[test]
    fn output_sizes_follow_pytorch() -> Result<()> {
        // Values from torch.nn.functional.max_pool2d / avg_pool2d output shapes.
        assert_eq!(pooled_len("h", 125, 3, 2, 1, 1, false)?, 63);
        assert_eq!(pooled_len("h", 112, 3, 2, 1, 1, false)?, 56);
        assert_eq!(pooled_len("h", 250, 2, 2, 0, 1, false)?, 125);
        assert_eq!(pooled_len("h", 125, 2, 2, 0, 1, false)?, 62);
        assert_eq!(pooled_len("h", 125, 2, 2, 0, 1, true)?, 63);
        // ceil_mode drops a window that would start in the right padding: 5, k2 s2 p1 → 3.
        assert_eq!(pooled_len("h", 5, 2, 2, 1, 1, true)?, 3);
        assert_eq!(pooled_len("h", 10, 3, 1, 0, 2, false)?, 6);
        assert!(pooled_len("h", 4, 3, 1, 2, 1, false).is_err());
        // PyTorch: max_pool2d(1×1 input, 2, 2, ceil_mode=True) has one output; padding 2 with
        // kernel 3 is refused even with dilation 2.
        assert_eq!(pooled_len("h", 1, 2, 2, 0, 1, true)?, 1);
        assert!(pooled_len("h", 10, 3, 1, 2, 2, false).is_err());
        assert!(pooled_len("h", 0, 1, 1, 0, 1, false).is_err());
        assert!(pooled_len("h", 2, 5, 1, 1, 1, false).is_err());
        assert!(pooled_len("h", 8, 0, 1, 0, 1, false).is_err());
        Ok(())
    }

    #[test]
    fn max_windows_clip_the_padding() {
        let (f, c) = max_windows(5, 3, 3, 2, 1, 1);
        assert_eq!(f, vec![0, 1, 3]);
        assert_eq!(c, vec![2, 3, 2]);
        // Dilation 2, padding 2: window of output 0 is {-2, 0, 2} → valid {0, 2}.
        let (f, c) = max_windows(6, 2, 3, 3, 2, 2);
        assert_eq!((f[0], c[0]), (0, 2));
        assert_eq!((f[1], c[1]), (1, 3));
    }

    #[test]
    fn adaptive_ranges_overlap_like_pytorch() {
        // 7 → 3: [0,3), [2,5), [4,7).
        let r: Vec<_> = (0..3).map(|o| adaptive_range(o, 7, 3)).collect();
        assert_eq!(r, vec![(0, 3), (2, 5), (4, 7)]);
    }
}
