//! 2-D convolution forward and backward (input, weight and bias gradients) on the CPU:
//! im2col + `gemm`, parallel over the batch, for any H×W, stride, padding, dilation and groups
//! (`f32` convolutions skip im2col on AVX-512 CPUs: see `shift`).
//!
//! candle 0.11.1 computes the input gradient with a naive transposed-convolution loop (slow)
//! and gets its shape wrong for stride > 1 on non-square inputs; here the input gradient is
//! `col2im(Wᵀ · dY)` and the weight gradient `dY · colsᵀ`, both through the same gemm.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::kernel::{Kernel2, Kernel3, Real, contiguous_slice, cpu, cpu_fwd2, cpu_fwd3, float_dtype};
use crate::matmul::{Op, gemm};

mod shift;
mod winograd;

pub(crate) use shift::Epilogue;

/// Stride, padding, dilation and groups of a 2-D convolution (`torch.nn.Conv2d`'s arguments).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{Conv2dConfig, conv2d};
/// # fn main() -> sconce_core::Result<()> {
/// // ResNet's stem on a 250×250 image: 7×7, stride 2, padding 3 → 125×125.
/// let x = Tensor::zeros((1, 3, 250, 250), DType::F32, &Device::Cpu)?;
/// let w = Tensor::zeros((64, 3, 7, 7), DType::F32, &Device::Cpu)?;
/// let y = conv2d(&x, &w, None, &Conv2dConfig::default().stride(2).padding(3))?;
/// assert_eq!(y.dims(), &[1, 64, 125, 125]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step `(sh, sw)`.
    pub stride: (usize, usize),
    /// Zero padding on each side `(ph, pw)`.
    pub padding: (usize, usize),
    /// Spacing between kernel taps `(dh, dw)`.
    pub dilation: (usize, usize),
    /// Number of channel groups (`C` and `O` must be divisible by it).
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl Conv2dConfig {
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
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Every size of one convolution, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) g: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Geom {
    /// The geometry of `conv2d(x, w)`, after checking ranks, dtypes and the device.
    pub(crate) fn checked(x: &Tensor, w: &Tensor, cfg: &Conv2dConfig) -> Result<Self> {
        let xd = sconce_core::check::dims::<4>(x, "conv2d input", "[N, C, H, W]")?;
        let wd = sconce_core::check::dims::<4>(w, "conv2d weight", "[O, C/groups, kh, kw]")?;
        float_dtype(x, "conv2d input")?;
        cpu(x, "conv2d input")?;
        if w.dtype() != x.dtype() {
            return Err(Error::config(
                "conv2d weight dtype",
                format!("must match the input's {:?}, got {:?}", x.dtype(), w.dtype()),
            ));
        }
        Self::new(&xd, &wd, cfg)
    }

    pub(crate) fn new(x: &[usize; 4], wt: &[usize; 4], cfg: &Conv2dConfig) -> Result<Self> {
        let [n, c, h, w] = *x;
        let [o, cg, kh, kw] = *wt;
        let Conv2dConfig { stride: (sh, sw), padding: (ph, pw), dilation: (dh, dw), groups: g } = *cfg;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || g == 0 {
            return Err(Error::config("conv2d", format!("stride, dilation and groups must be > 0, got {cfg:?}")));
        }
        if kh == 0 || kw == 0 || o == 0 || cg == 0 {
            return Err(Error::shape("conv2d weight", "[O, C/groups, kh, kw] with no zero size", wt));
        }
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::shape("conv2d input", "[N, C, H, W] with non-zero C, H and W", x));
        }
        if c % g != 0 || o % g != 0 {
            return Err(Error::config(
                "conv2d groups",
                format!("{g} groups must divide the input channels {c} and output channels {o}"),
            ));
        }
        if cg * g != c {
            return Err(Error::shape(
                "conv2d weight",
                format!("[{o}, {} (= input channels {c} / groups {g}), kh, kw]", c / g),
                wt,
            ));
        }
        let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
        if h + 2 * ph < eh || w + 2 * pw < ew {
            return Err(Error::config(
                "conv2d kernel",
                format!(
                    "effective kernel {eh}x{ew} is larger than the padded input {}x{} (input {h}x{w}, padding {ph}x{pw})",
                    h + 2 * ph,
                    w + 2 * pw
                ),
            ));
        }
        let oh = (h + 2 * ph - eh) / sh + 1;
        let ow = (w + 2 * pw - ew) / sw + 1;
        Ok(Geom { n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, g, oh, ow })
    }

    fn cg(&self) -> usize {
        self.c / self.g
    }
    fn og(&self) -> usize {
        self.o / self.g
    }
    /// Rows of the column matrix: `C/g · kh · kw`.
    fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded convolution reads its input as the column matrix directly.
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    pub(crate) fn weight_len(&self) -> usize {
        self.o * self.k()
    }
    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The output columns `[lo, hi)` whose input column `ow·sw + off` lies inside `[0, w)`.
    #[inline]
    fn valid_cols(&self, off: isize) -> (usize, usize) {
        let (sw, w, ow) = (self.sw as isize, self.w as isize, self.ow as isize);
        let lo = if off < 0 { (-off + sw - 1) / sw } else { 0 };
        let hi = if w - off <= 0 { 0 } else { ((w - off) + sw - 1) / sw };
        let hi = hi.min(ow);
        let lo = lo.min(hi);
        (lo as usize, hi as usize)
    }

    /// Fills `cols` `[K, P]` from one group's channels `x` `[C/g, H, W]`.
    fn im2col<T: Real>(&self, x: &[T], cols: &mut [T]) {
        let (p, hw) = (self.p(), self.h * self.w);
        for c in 0..self.cg() {
            let xc = &x[c * hw..(c + 1) * hw];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &mut cols[((c * self.kh + i) * self.kw + j) * p..][..p];
                    let off = (j * self.dw) as isize - self.pw as isize;
                    let (lo, hi) = self.valid_cols(off);
                    for oh in 0..self.oh {
                        let dst = &mut row[oh * self.ow..(oh + 1) * self.ow];
                        let ih = (oh * self.sh + i * self.dh) as isize - self.ph as isize;
                        if ih < 0 || ih >= self.h as isize || lo >= hi {
                            dst.iter_mut().for_each(|v| *v = T::zero());
                            continue;
                        }
                        let xrow = &xc[ih as usize * self.w..(ih as usize + 1) * self.w];
                        dst[..lo].iter_mut().for_each(|v| *v = T::zero());
                        dst[hi..].iter_mut().for_each(|v| *v = T::zero());
                        let start = (lo * self.sw) as isize + off;
                        if self.sw == 1 {
                            dst[lo..hi].copy_from_slice(&xrow[start as usize..start as usize + (hi - lo)]);
                        } else {
                            for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = xrow[start as usize + k * self.sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds `cols` `[K, P]` back into one group's input gradient `dx` `[C/g, H, W]`.
    fn col2im<T: Real>(&self, cols: &[T], dx: &mut [T]) {
        self.col2im_ld(cols, self.p(), dx);
    }

    /// [`Self::col2im`] from rows `ld` apart (one image's columns of a whole batch's matrix).
    fn col2im_ld<T: Real>(&self, cols: &[T], ld: usize, dx: &mut [T]) {
        let (p, hw) = (self.p(), self.h * self.w);
        for c in 0..self.cg() {
            let xc = &mut dx[c * hw..(c + 1) * hw];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &cols[((c * self.kh + i) * self.kw + j) * ld..][..p];
                    let off = (j * self.dw) as isize - self.pw as isize;
                    let (lo, hi) = self.valid_cols(off);
                    if lo >= hi {
                        continue;
                    }
                    for oh in 0..self.oh {
                        let ih = (oh * self.sh + i * self.dh) as isize - self.ph as isize;
                        if ih < 0 || ih >= self.h as isize {
                            continue;
                        }
                        let src = &row[oh * self.ow..(oh + 1) * self.ow];
                        let xrow = &mut xc[ih as usize * self.w..(ih as usize + 1) * self.w];
                        let start = ((lo * self.sw) as isize + off) as usize;
                        if self.sw == 1 {
                            for (d, &s) in xrow[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                                *d += s;
                            }
                        } else {
                            for (k, &s) in src[lo..hi].iter().enumerate() {
                                xrow[start + k * self.sw] += s;
                            }
                        }
                    }
                }
            }
        }
    }

    /// How to spread work over the pool: images in parallel (each gemm on one thread) when
    /// there are enough of them, otherwise one image at a time with gemm on every thread.
    fn plan(&self) -> (usize, usize) {
        let threads = rayon::current_num_threads().max(1);
        if self.n >= threads { (threads, 1) } else { (1, threads) }
    }

    /// The output's shape `[N, O, OH, OW]`.
    pub(crate) fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.o, self.oh, self.ow))
    }

    /// Forward: `y[n, o, p] = Σ_k W[o, k] · cols_n[k, p]` per group.
    pub(crate) fn forward<T: Real>(&self, x: &[T], wt: &[T]) -> candle_core::Result<Vec<T>> {
        self.forward_with(x, wt, None)
    }

    /// [`Self::forward`], then `y = y·scale[o] + shift[o]` (and a ReLU) per output channel when
    /// `epi` is given: on the AVX-512 path image by image, right after each image's product,
    /// while its output is still in cache.
    pub(crate) fn forward_with<T: Real>(
        &self,
        x: &[T],
        wt: &[T],
        epi: Option<shift::Epilogue<'_, T>>,
    ) -> candle_core::Result<Vec<T>> {
        let len = self.n * self.o * self.p();
        if let Some(sp) = self.shift_plan()
            && let (Some(xf), Some(wf)) = (T::as_f32(x), T::as_f32(wt))
        {
            let epi32 = match &epi {
                None => None,
                Some(e) => {
                    let residual = match e.residual {
                        None => None,
                        Some(r) => match T::as_f32(r) {
                            Some(r) => Some(r),
                            None => candle_core::bail!("conv2d: residual of another dtype"),
                        },
                    };
                    match (T::as_f32(e.scale), T::as_f32(e.shift)) {
                        (Some(scale), Some(shift)) => Some(shift::Epilogue { scale, shift, relu: e.relu, residual }),
                        _ => candle_core::bail!("conv2d: epilogue of another dtype"),
                    }
                }
            };
            // The AVX-512 path writes every output element: no zeroing pass over the output.
            let mut out: Vec<f32> = Vec::with_capacity(len);
            self.forward_shifted_with(xf, wf, &mut out.spare_capacity_mut()[..len], &sp, epi32.as_ref(), None)?;
            // SAFETY: `forward_shifted` wrote all `len` elements (or returned an error above).
            unsafe { out.set_len(len) };
            if let Some(out) = T::from_f32_vec(out) {
                return Ok(out);
            }
        }
        let mut out = vec![T::zero(); len];
        self.forward_into(x, wt, &mut out)?;
        if let Some(e) = epi {
            for (img, image) in out.chunks_exact_mut(self.o * self.p()).enumerate() {
                e.apply(img, image, self.p());
            }
        }
        Ok(out)
    }

    /// [`Self::forward`] into a caller's buffer of `N·O·OH·OW` elements.
    fn forward_into<T: Real>(&self, x: &[T], wt: &[T], out: &mut [T]) -> candle_core::Result<()> {
        if let Some(sp) = self.shift_plan()
            && let (Some(x), Some(wt)) = (T::as_f32(x), T::as_f32(wt))
            && let Some(out) = T::as_f32_mut(out)
        {
            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and `forward_shifted` only ever
            // writes initialised values through it.
            let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<f32>>(), out.len()) };
            return self.forward_shifted(x, wt, out, &sp);
        }
        let (k, p, og, cg) = (self.k(), self.p(), self.og(), self.cg());
        let hw = self.h * self.w;
        if out.len() != self.n * self.o * p {
            candle_core::bail!("conv2d: output buffer of {} for {} elements", out.len(), self.n * self.o * p);
        }
        let (_, gemm_threads) = self.plan();
        let pointwise = self.pointwise();
        let run = |cols: &mut [T], (y, x): (&mut [T], &[T])| -> candle_core::Result<()> {
            for gi in 0..self.g {
                let xg = &x[gi * cg * hw..(gi + 1) * cg * hw];
                let rhs: &[T] = if pointwise {
                    xg
                } else {
                    self.im2col(xg, cols);
                    &*cols
                };
                let wg = &wt[gi * og * k..(gi + 1) * og * k];
                gemm(og, p, k, &mut y[gi * og * p..(gi + 1) * og * p], false, wg, Op::N, rhs, Op::N, gemm_threads)?;
            }
            Ok(())
        };
        let cols_len = if pointwise { 0 } else { k * p };
        if gemm_threads > 1 {
            T::with_scratch(cols_len, |cols| -> candle_core::Result<()> {
                for pair in out.chunks_mut(self.o * p).zip(x.chunks(self.image_len())) {
                    run(cols, pair)?;
                }
                Ok(())
            })?;
        } else {
            out.par_chunks_mut(self.o * p)
                .zip(x.par_chunks(self.image_len()))
                .try_for_each(|pair| T::with_scratch(cols_len, |cols| run(cols, pair)))?;
        }
        Ok(())
    }

    /// For a stride-1 convolution, the input gradient is itself a convolution: `dY` padded by
    /// `d·(k−1) − p` and correlated with the spatially flipped, channel-transposed kernel. That
    /// runs through the fast forward path (a gemm with a short output and a long inner
    /// dimension) instead of `col2im(Wᵀ · dY)`, whose gemm writes a `K×P` matrix with `k = O/g`.
    fn input_grad_as_conv(&self) -> Option<Geom> {
        if self.pointwise() { None } else { self.adjoint_conv() }
    }

    /// `(ph, pw)` when this convolution's backward can take its output gradient as zero-padded
    /// planes ([`Conv2dBackward::with_padded_dy`]): the AVX-512 path, stride 1, one group, an
    /// output as large as the input with some padding, and a padded `dY` plane that is both the
    /// input gradient's padded input and the weight gradient's grid — a "same" convolution
    /// (`2·ph = dh·(kh − 1)`, likewise in width), as every 3×3 convolution of a U-Net.
    pub(crate) fn padded_dy_layout(&self) -> Option<(usize, usize)> {
        let same = 2 * self.ph == self.dh * (self.kh - 1) && 2 * self.pw == self.dw * (self.kw - 1);
        let ok = crate::sgemm::available()
            && self.sh == 1
            && self.sw == 1
            && self.g == 1
            && self.oh == self.h
            && self.ow == self.w
            && (self.ph > 0 || self.pw > 0)
            && same
            && self.shift_plan().is_some();
        ok.then_some((self.ph, self.pw))
    }

    /// The convolution of [`Self::input_grad_as_conv`], pointwise ones included (for those the
    /// im2col path multiplies by `Wᵀ` directly).
    fn adjoint_conv(&self) -> Option<Geom> {
        let (eh, ew) = (self.dh * (self.kh - 1), self.dw * (self.kw - 1));
        if self.sh != 1 || self.sw != 1 || self.ph > eh || self.pw > ew {
            return None;
        }
        let mut t = *self;
        (t.c, t.h, t.w, t.o) = (self.o, self.oh, self.ow, self.c);
        (t.ph, t.pw) = (eh - self.ph, ew - self.pw);
        (t.oh, t.ow) = (self.h, self.w);
        Some(t)
    }

    /// `W[o, c, i, j]` per group → `W'[c, o, kh−1−i, kw−1−j]` (the kernel of [`Self::input_grad_as_conv`]).
    fn flip_transpose<T: Real>(&self, wt: &[T]) -> Vec<T> {
        let (og, cg, kk) = (self.og(), self.cg(), self.kh * self.kw);
        let mut out: Vec<T> = Vec::with_capacity(wt.len());
        // One output row `(g, c)` — `og` flipped kernels — per task, both cores busy; the rows
        // of one group read the same `og` cache lines of `wt` one after the other.
        out.spare_capacity_mut()[..wt.len()].par_chunks_mut(og * kk).enumerate().for_each(|(row, dst)| {
            let (gi, c) = (row / cg, row % cg);
            for (o, d) in dst.chunks_exact_mut(kk).enumerate() {
                let src = &wt[((gi * og + o) * cg + c) * kk..][..kk];
                for (d, &s) in d.iter_mut().zip(src.iter().rev()) {
                    d.write(s);
                }
            }
        });
        // SAFETY: the `g·cg` rows of `og·kk` tile `wt.len()` and every element was written.
        unsafe { out.set_len(wt.len()) };
        out
    }

    /// Backward: the input gradient into `dx_out` and `dW` into `dw_out`, each when given.
    /// Both buffers must be zeroed.
    pub(crate) fn backward_into<T: Real>(
        &self,
        x: &[T],
        wt: &[T],
        dy: &[T],
        dx_out: Option<&mut [T]>,
        dw_out: Option<&mut [T]>,
    ) -> candle_core::Result<()> {
        if let Some(dx) = dx_out {
            self.input_grad_into(wt, dy, dx)?;
        }
        if let Some(dw) = dw_out {
            self.weight_grad_into(x, dy, dw)?;
        }
        Ok(())
    }

    /// `dX` (zeroed, `N·C·H·W`) from `dY`: a convolution with the flipped kernel for stride 1,
    /// else `dX_n = col2im(Wᵀ · dY_n)` per image, images in parallel — for output maps of at
    /// most [`BATCH_MAX_P`] pixels one product over the whole batch, then `col2im` per image. This is also the forward
    /// pass of the transposed convolution.
    pub(crate) fn input_grad_into<T: Real>(&self, wt: &[T], dy: &[T], dx: &mut [T]) -> candle_core::Result<()> {
        if let Some(t) = self.input_grad_as_conv() {
            return t.forward_into(dy, &self.flip_transpose(wt), dx);
        }
        let (k, p, og, cg) = (self.k(), self.p(), self.og(), self.cg());
        let hw = self.h * self.w;
        let pointwise = self.pointwise();
        let (chunks, gemm_threads) = self.plan();
        let per_chunk = self.n.div_ceil(chunks).max(1);
        let (img_len, out_len) = (self.image_len(), self.o * p);
        if dx.len() != self.n * img_len || dy.len() != self.n * out_len {
            candle_core::bail!("conv2d backward: buffers do not match the geometry {self:?}");
        }
        if !pointwise && self.g == 1 && self.n > 1 && p <= BATCH_MAX_P {
            // Small maps (a deep strided layer): one product over the whole batch,
            // `Wᵀ · [dY_1 … dY_N]`. Per image, its few columns (49 at 7×7) filled one panel and a
            // sliver, and every image streamed all of `W` again.
            // At most ~2048 columns per product, so that the column matrix stays bounded for
            // large batches.
            let per = (2048 / p).clamp(1, self.n);
            for (dx, dy) in dx.chunks_mut(per * img_len).zip(dy.chunks(per * out_len)) {
                let np = dy.len() / out_len * p;
                let mut dyt = vec![T::zero(); og * np];
                for (img, dyi) in dy.chunks_exact(out_len).enumerate() {
                    for (o, row) in dyi.chunks_exact(p).enumerate() {
                        dyt[o * np + img * p..][..p].copy_from_slice(row);
                    }
                }
                let mut dcols = vec![T::zero(); k * np];
                gemm(k, np, og, &mut dcols, false, wt, Op::T, &dyt, Op::N, rayon::current_num_threads())?;
                dx.par_chunks_mut(img_len)
                    .enumerate()
                    .for_each(|(img, dxi)| self.col2im_ld(&dcols[img * p..], np, dxi));
            }
            return Ok(());
        }
        dx.par_chunks_mut(per_chunk * img_len).zip(dy.par_chunks(per_chunk * out_len)).try_for_each(
            |(dx, dy)| -> candle_core::Result<()> {
                T::with_scratch(if pointwise { 0 } else { k * p }, |dcols| {
                    for (dx_img, dy_img) in dx.chunks_mut(img_len).zip(dy.chunks(out_len)) {
                        for gi in 0..self.g {
                            let dyg = &dy_img[gi * og * p..(gi + 1) * og * p];
                            let wg = &wt[gi * og * k..(gi + 1) * og * k];
                            let dxg = &mut dx_img[gi * cg * hw..(gi + 1) * cg * hw];
                            if pointwise {
                                gemm(k, p, og, dxg, false, wg, Op::T, dyg, Op::N, gemm_threads)?;
                            } else {
                                gemm(k, p, og, dcols, false, wg, Op::T, dyg, Op::N, gemm_threads)?;
                                self.col2im(dcols, dxg);
                            }
                        }
                    }
                    Ok(())
                })
            },
        )
    }

    /// `dW = Σ_n dY_n · cols_nᵀ` into `dw` (`O·C/g·kh·kw`): one partial sum per chunk of
    /// images, added up at the end.
    pub(crate) fn weight_grad_into<T: Real>(&self, x: &[T], dy: &[T], dw: &mut [T]) -> candle_core::Result<()> {
        if let Some(sp) = self.shift_plan()
            && let (Some(x), Some(dy)) = (T::as_f32(x), T::as_f32(dy))
            && let Some(dw) = T::as_f32_mut(dw)
        {
            return self.weight_grad_shifted(x, dy, dw, &sp);
        }
        let (k, p, og, cg) = (self.k(), self.p(), self.og(), self.cg());
        let hw = self.h * self.w;
        let pointwise = self.pointwise();
        let (chunks, gemm_threads) = self.plan();
        let per_chunk = self.n.div_ceil(chunks).max(1);
        let (img_len, out_len) = (self.image_len(), self.o * p);
        if x.len() != self.n * img_len || dy.len() != self.n * out_len || dw.len() != self.weight_len() {
            candle_core::bail!("conv2d backward: buffers do not match the geometry {self:?}");
        }
        let partials: Vec<Vec<T>> = x
            .par_chunks(per_chunk * img_len)
            .zip(dy.par_chunks(per_chunk * out_len))
            .map(|(x, dy)| -> candle_core::Result<Vec<T>> {
                let mut part = vec![T::zero(); self.weight_len()];
                T::with_scratch(if pointwise { 0 } else { k * p }, |cols| -> candle_core::Result<()> {
                    for (x_img, dy_img) in x.chunks(img_len).zip(dy.chunks(out_len)) {
                        for gi in 0..self.g {
                            let xg = &x_img[gi * cg * hw..(gi + 1) * cg * hw];
                            let dyg = &dy_img[gi * og * p..(gi + 1) * og * p];
                            let rhs: &[T] = if pointwise {
                                xg
                            } else {
                                self.im2col(xg, cols);
                                &*cols
                            };
                            let dwg = &mut part[gi * og * k..(gi + 1) * og * k];
                            gemm(og, k, p, dwg, true, dyg, Op::N, rhs, Op::T, gemm_threads)?;
                        }
                    }
                    Ok(())
                })?;
                Ok(part)
            })
            .collect::<candle_core::Result<_>>()?;
        for part in partials {
            for (d, v) in dw.iter_mut().zip(part) {
                *d += v;
            }
        }
        Ok(())
    }
}

/// Largest output map (pixels per image) whose input gradient, when it is not a stride-1
/// convolution, is one product over the whole batch.
const BATCH_MAX_P: usize = 256;

/// The forward op: `x` `[N, C, H, W]` ⊛ `w` `[O, C/g, kh, kw]`.
pub(crate) struct Conv2dOp {
    pub(crate) geom: Geom,
}

impl Kernel2 for Conv2dOp {
    const NAME: &'static str = "conv2d";
    fn kernel<T: Real>(&self, x: &[T], w: &[T]) -> candle_core::Result<Vec<T>> {
        self.geom.forward(x, w)
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "sconce-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((cpu_fwd2(self, (s1, l1), (s2, l2))?, self.geom.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Conv2dBackward::new(self.geom, x.track_op(), w.track_op()).grads(x, w, grad)
    }
}

/// The backward kernel: `(x, w, dy) → [dx (if needed) | dw (if needed)]` as one flat buffer.
/// With `transposed`, `geom` is the convolution whose adjoint the forward pass computed, and
/// the roles of input and output swap: `dx = conv(dy, w)`, `dw = weight_grad(dy, x)`.
pub(crate) struct Conv2dBackward {
    geom: Geom,
    need_dx: bool,
    need_dw: bool,
    transposed: bool,
    /// `dy` comes as zero-padded planes ([`Geom::padded_dy_layout`]).
    dy_padded: bool,
    /// `x` comes as the forward pass's padded planes ([`Geom::pad_batch`]; with `dy_padded`).
    x_padded: bool,
}

impl Conv2dBackward {
    /// The backward pass of the (not transposed) convolution `geom`.
    pub(crate) fn new(geom: Geom, need_dx: bool, need_dw: bool) -> Self {
        Self { geom, need_dx, need_dw, transposed: false, dy_padded: false, x_padded: false }
    }

    /// The backward pass of a transposed convolution whose adjoint is `geom` (see the type).
    pub(crate) fn transposed(geom: Geom, need_dx: bool, need_dw: bool) -> Self {
        Self { geom, need_dx, need_dw, transposed: true, dy_padded: false, x_padded: false }
    }

    /// [`Self::new`] for an `f32` output gradient given as zero-padded planes
    /// (`[N, O, OH + 2ph, OW + 2pw]`, for a geometry with [`Geom::padded_dy_layout`]): the input
    /// gradient convolves it as it is and the weight gradient reads it on the grid in place.
    pub(crate) fn with_padded_dy(geom: Geom, need_dx: bool, need_dw: bool) -> Self {
        Self { geom, need_dx, need_dw, transposed: false, dy_padded: true, x_padded: false }
    }

    /// [`Self::with_padded_dy`] with `x` given as [`Geom::pad_batch`]'s planes (see
    /// [`Self::grads_from_padded`]).
    pub(crate) fn with_padded_x_and_dy(geom: Geom, need_dx: bool, need_dw: bool) -> Self {
        Self { geom, need_dx, need_dw, transposed: false, dy_padded: true, x_padded: true }
    }

    /// [`Self::run`] for a padded `dy` (f32 only).
    fn run_padded<T: Real>(&self, x: &[T], w: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        let g = &self.geom;
        let (Some(xf), Some(wf), Some(dyf)) = (T::as_f32(x), T::as_f32(w), T::as_f32(dy)) else {
            candle_core::bail!("conv2d backward: a padded output gradient is f32 only");
        };
        if g.padded_dy_layout().is_none() {
            candle_core::bail!("conv2d backward: no padded output gradient for the geometry {g:?}");
        }
        let dx_len = if self.need_dx { g.n * g.image_len() } else { 0 };
        let dw_len = if self.need_dw { g.weight_len() } else { 0 };
        let mut out: Vec<f32> = Vec::with_capacity(dx_len + dw_len);
        let (dx, dw) = out.spare_capacity_mut()[..dx_len + dw_len].split_at_mut(dx_len);
        if self.need_dx {
            let (Some(conv), Some(_)) = (g.adjoint_conv(), g.shift_plan()) else {
                candle_core::bail!("conv2d backward: no adjoint convolution for {g:?}");
            };
            let Some(mut sp) = conv.shift_plan() else {
                candle_core::bail!("conv2d backward: no shift plan for {g:?}")
            };
            sp.input_padded = true;
            if !conv.input_grad_winograd(dyf, wf, dx, &sp)? {
                conv.forward_shifted_with(dyf, &g.flip_transpose(wf), dx, &sp, None, None)?;
            }
        }
        if self.need_dw {
            let Some(mut sp) = g.shift_plan() else { candle_core::bail!("conv2d backward: no shift plan for {g:?}") };
            sp.dy_padded = true;
            sp.input_padded = self.x_padded;
            g.weight_grad_shifted_fresh(xf, dyf, dw, &sp)?;
        }
        // SAFETY: the forward pass wrote all of `dx` and the block above all of `dw`.
        unsafe { out.set_len(dx_len + dw_len) };
        match T::from_f32_vec(out) {
            Some(v) => Ok(v),
            None => candle_core::bail!("conv2d backward: a padded output gradient is f32 only"),
        }
    }

    fn run<T: Real>(&self, x: &[T], w: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        if self.dy_padded {
            return self.run_padded(x, w, dy);
        }
        let g = &self.geom;
        let x_len = if self.transposed { g.n * g.o * g.p() } else { g.n * g.image_len() };
        let dx_len = if self.need_dx { x_len } else { 0 };
        let dw_len = if self.need_dw { g.weight_len() } else { 0 };
        if let Some(out) = self.run_f32_fresh_dx(x, w, dy, dx_len, dw_len)? {
            return Ok(out);
        }
        // One allocation for both results: no reallocation of the (large) input gradient.
        let mut out = vec![T::zero(); dx_len + dw_len];
        let (dx, dw) = out.split_at_mut(dx_len);
        if self.transposed {
            if self.need_dx {
                g.forward_into(dy, w, dx)?;
            }
            if self.need_dw {
                g.weight_grad_into(dy, x, dw)?;
            }
        } else {
            g.backward_into(x, w, dy, self.need_dx.then_some(dx), self.need_dw.then_some(dw))?;
        }
        Ok(out)
    }

    /// [`Self::run`] when the input gradient is a forward pass on the AVX-512 path in `f32`:
    /// that pass writes every element, so the (large) `dx` part of the buffer is not zeroed
    /// first. `None` when it does not apply.
    fn run_f32_fresh_dx<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        dx_len: usize,
        dw_len: usize,
    ) -> candle_core::Result<Option<Vec<T>>> {
        let g = &self.geom;
        if !self.need_dx {
            return Ok(None);
        }
        let (Some(xf), Some(wf), Some(dyf)) = (T::as_f32(x), T::as_f32(w), T::as_f32(dy)) else {
            return Ok(None);
        };
        // The convolution whose forward pass is dx; its kernel is flipped only once it is known
        // to be used.
        let Some(conv) = (if self.transposed { Some(*g) } else { g.adjoint_conv() }) else { return Ok(None) };
        let Some(sp) = conv.shift_plan() else { return Ok(None) };
        // A pointwise convolution's adjoint kernel is `Wᵀ`: packed straight from `W` with swapped
        // strides, no flipped copy.
        let pointwise_t = if !self.transposed && g.kh * g.kw == 1 && g.g == 1 {
            Some(crate::sgemm::PackedA::new(g.c, g.o, &crate::sgemm::Strided { data: wf, rs: 1, cs: g.c })?)
        } else {
            None
        };
        let mut out: Vec<f32> = Vec::with_capacity(dx_len + dw_len);
        let (dx, dw) = out.spare_capacity_mut()[..dx_len + dw_len].split_at_mut(dx_len);
        // By Winograd, the filter transform reads `W` flipped and transposed in place.
        if self.transposed || pointwise_t.is_some() || !conv.input_grad_winograd(dyf, wf, dx, &sp)? {
            let kernel: std::borrow::Cow<'_, [f32]> = if self.transposed || pointwise_t.is_some() {
                std::borrow::Cow::Borrowed(wf)
            } else {
                std::borrow::Cow::Owned(g.flip_transpose(wf))
            };
            conv.forward_shifted_with(dyf, &kernel, dx, &sp, None, pointwise_t.as_ref())?;
        }
        if self.need_dw {
            self.fresh_weight_grad(xf, dyf, dw)?;
        }
        // SAFETY: `forward_shifted` wrote all of `dx` and `fresh_weight_grad` all of `dw`.
        unsafe { out.set_len(dx_len + dw_len) };
        Ok(T::from_f32_vec(out))
    }

    /// The weight gradient into `dw` (its contents ignored, every element written).
    fn fresh_weight_grad(&self, xf: &[f32], dyf: &[f32], dw: &mut [MaybeUninit<f32>]) -> candle_core::Result<()> {
        let g = &self.geom;
        let sp = if self.transposed { None } else { g.shift_plan() };
        if let Some(sp) = sp {
            return g.weight_grad_shifted_fresh(xf, dyf, dw, &sp);
        }
        dw.iter_mut().for_each(|v| {
            v.write(0.0);
        });
        // SAFETY: every element of `dw` was just written; `MaybeUninit<f32>` has `f32`'s layout.
        let dw = unsafe { std::slice::from_raw_parts_mut(dw.as_mut_ptr().cast::<f32>(), dw.len()) };
        if self.transposed { g.weight_grad_into(dyf, xf, dw) } else { g.weight_grad_into(xf, dyf, dw) }
    }

    /// Applies the kernel and splits its buffer into `(dx, dw)` shaped like `x` and `w`.
    pub(crate) fn grads(
        self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads_from_padded(x.shape(), x, w, grad)
    }

    /// [`Self::grads`] reading the input from `xp` (the padded planes for
    /// [`Self::with_padded_x_and_dy`], else the input itself); `dx` gets the input's shape
    /// `x_shape`.
    pub(crate) fn grads_from_padded(
        self,
        x_shape: &Shape,
        xp: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !self.need_dx && !self.need_dw {
            return Ok((None, None));
        }
        let (need_dx, need_dw) = (self.need_dx, self.need_dw);
        let both = xp.apply_op3_no_bwd(w, &grad.contiguous()?, &self)?;
        let dx_len = if need_dx { x_shape.elem_count() } else { 0 };
        let dx = if need_dx { Some(both.narrow(0, 0, dx_len)?.reshape(x_shape)?) } else { None };
        let dw = if need_dw { Some(both.narrow(0, dx_len, w.elem_count())?.reshape(w.shape())?) } else { None };
        Ok((dx, dw))
    }
}

impl Kernel3 for Conv2dBackward {
    const NAME: &'static str = "conv2d backward";
    fn kernel<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>> {
        self.run(a, b, c)
    }
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "sconce-conv2d-backward"
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

/// 2-D convolution (cross-correlation, as `torch.nn.functional.conv2d`) with optional bias,
/// differentiable in the input, the weight and the bias.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`; `w`: `[O, C/groups, kh, kw]`; `bias`: `[O]`
/// - output: `[N, O, (H + 2ph − dh(kh−1) − 1)/sh + 1, (W + 2pw − dw(kw−1) − 1)/sw + 1]`
///
/// # Errors
/// [`Error::Shape`] for wrong ranks or channel counts; [`Error::Config`] for zero strides,
/// groups that do not divide the channels, a kernel larger than the padded input, mixed or
/// non-float dtypes, or a non-CPU device.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv2dConfig) -> Result<Tensor> {
    let geom = Geom::checked(x, w, cfg)?;
    let y = x.contiguous()?.apply_op2(&w.contiguous()?, Conv2dOp { geom })?;
    match bias {
        None => Ok(y),
        Some(b) => crate::bias::add_channel_bias(&y, b, "conv2d"),
    }
}

/// Stride, padding, output padding, dilation and groups of a transposed convolution
/// (`torch.nn.ConvTranspose2d`'s arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dConfig {
    /// Upsampling step `(sh, sw)`.
    pub stride: (usize, usize),
    /// Implicit padding removed from each side of the output.
    pub padding: (usize, usize),
    /// Extra rows/columns added to one side of the output (to pick among the sizes that a
    /// strided convolution maps to the same input size); must be < stride.
    pub output_padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Number of channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose2dConfig {
    fn default() -> Self {
        Self { stride: (1, 1), padding: (0, 0), output_padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl ConvTranspose2dConfig {
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
    /// Sets a square output padding.
    pub fn output_padding(mut self, p: usize) -> Self {
        self.output_padding = (p, p);
        self
    }
    /// Sets a square dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// The transposed-convolution op: the adjoint of the convolution `geom`.
struct ConvTranspose2dOp {
    geom: Geom,
}

impl CustomOp2 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "sconce-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let shape = Shape::from((g.n, g.c, g.h, g.w));
        let len = g.n * g.image_len();
        let name = "conv_transpose2d";
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let mut y = vec![0f32; len];
                g.input_grad_into(
                    contiguous_slice::<f32>(s2, l2, name)?,
                    contiguous_slice::<f32>(s1, l1, name)?,
                    &mut y,
                )?;
                Ok((CpuStorage::F32(y), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let mut y = vec![0f64; len];
                g.input_grad_into(
                    contiguous_slice::<f64>(s2, l2, name)?,
                    contiguous_slice::<f64>(s1, l1, name)?,
                    &mut y,
                )?;
                Ok((CpuStorage::F64(y), shape))
            }
            (a, b) => candle_core::bail!(
                "{name}: input {:?} and weight {:?} must both be f32 or both f64",
                a.dtype(),
                b.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Conv2dBackward::transposed(self.geom, x.track_op(), w.track_op()).grads(x, w, grad)
    }
}

/// 2-D transposed convolution (`torch.nn.functional.conv_transpose2d`), the U-Net "up-conv",
/// differentiable in the input, the weight and the bias.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{ConvTranspose2dConfig, conv_transpose2d};
/// # fn main() -> sconce_core::Result<()> {
/// // The classic U-Net's 2×2, stride-2 up-convolution: 31×31 → 62×62, 128 → 64 channels.
/// let x = Tensor::zeros((1, 128, 31, 31), DType::F32, &Device::Cpu)?;
/// let w = Tensor::zeros((128, 64, 2, 2), DType::F32, &Device::Cpu)?;
/// let y = conv_transpose2d(&x, &w, None, &ConvTranspose2dConfig::default().stride(2))?;
/// assert_eq!(y.dims(), &[1, 64, 62, 62]);
/// # Ok(()) }
/// ```
///
/// # Shapes
/// - `x`: `[N, Cin, H, W]`; `w`: `[Cin, Cout/groups, kh, kw]`; `bias`: `[Cout]`
/// - output: `[N, Cout, (H−1)·sh − 2ph + dh(kh−1) + oph + 1, …]`
///
/// # Errors
/// As [`conv2d`], plus [`Error::Config`] for an output padding not smaller than the stride
/// (PyTorch also accepts one below the dilation; sconce does not), or an empty output.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &ConvTranspose2dConfig) -> Result<Tensor> {
    let [n, cin, h, wd] = sconce_core::check::dims::<4>(x, "conv_transpose2d input", "[N, Cin, H, W]")?;
    let wdims = sconce_core::check::dims::<4>(w, "conv_transpose2d weight", "[Cin, Cout/groups, kh, kw]")?;
    float_dtype(x, "conv_transpose2d input")?;
    cpu(x, "conv_transpose2d input")?;
    if w.dtype() != x.dtype() {
        return Err(Error::config(
            "conv_transpose2d weight dtype",
            format!("must match the input's {:?}, got {:?}", x.dtype(), w.dtype()),
        ));
    }
    let [wcin, coutg, kh, kw] = wdims;
    let ConvTranspose2dConfig {
        stride: (sh, sw),
        padding: (ph, pw),
        output_padding: (oph, opw),
        dilation: (dh, dw),
        groups,
    } = *cfg;
    if groups == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
        return Err(Error::config(
            "conv_transpose2d",
            format!("stride, dilation, groups and kernel must be > 0, got {cfg:?}"),
        ));
    }
    if wcin != cin {
        return Err(Error::shape(
            "conv_transpose2d weight",
            format!("[{cin} (input channels), Cout/groups, kh, kw]"),
            &wdims,
        ));
    }
    if h == 0 || wd == 0 {
        return Err(Error::shape("conv_transpose2d input", "a non-empty H×W plane", x.dims()));
    }
    if oph >= sh || opw >= sw {
        return Err(Error::config(
            "conv_transpose2d output_padding",
            format!("{:?} must be smaller than the stride {:?}", cfg.output_padding, cfg.stride),
        ));
    }
    let span = |len: usize, s: usize, p: usize, d: usize, k: usize, op: usize| -> Option<usize> {
        ((len - 1) * s + d * (k - 1) + op + 1).checked_sub(2 * p).filter(|v| *v > 0)
    };
    let (Some(ho), Some(wo)) = (span(h, sh, ph, dh, kh, oph), span(wd, sw, pw, dw, kw, opw)) else {
        return Err(Error::config("conv_transpose2d", format!("the output is empty for input {h}x{wd} and {cfg:?}")));
    };
    let conv_cfg = Conv2dConfig { stride: cfg.stride, padding: cfg.padding, dilation: cfg.dilation, groups };
    let geom = Geom::new(&[n, coutg * groups, ho, wo], &wdims, &conv_cfg)?;
    if (geom.oh, geom.ow) != (h, wd) {
        return Err(Error::config("conv_transpose2d", format!("inconsistent geometry for input {h}x{wd} and {cfg:?}")));
    }
    match bias {
        None => Ok(x.contiguous()?.apply_op2(&w.contiguous()?, ConvTranspose2dOp { geom })?),
        Some(b) => {
            crate::bias::check_bias(b, geom.c, x.dtype(), "conv_transpose2d")?;
            // One op: the bias goes onto the fresh output, and the output before the bias is
            // not a graph node (no gradient buffer, zero fill and add, of its own).
            Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, ConvTranspose2dBiasOp { geom })?)
        }
    }
}

/// `conv_transpose2d(x, w) + b` as one op (`b` per output channel).
struct ConvTranspose2dBiasOp {
    geom: Geom,
}

impl Kernel3 for ConvTranspose2dBiasOp {
    const NAME: &'static str = "conv_transpose2d";
    fn kernel<T: Real>(&self, x: &[T], w: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let g = &self.geom;
        if b.len() != g.c {
            candle_core::bail!("{}: {} biases for {} output channels", Self::NAME, b.len(), g.c);
        }
        let mut y = vec![T::zero(); g.n * g.image_len()];
        g.input_grad_into(w, x, &mut y)?;
        crate::bias::add_in_place(&mut y, b, g.h * g.w);
        Ok(y)
    }
}

impl CustomOp3 for ConvTranspose2dBiasOp {
    fn name(&self) -> &'static str {
        "sconce-conv-transpose2d-bias"
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
        let g = &self.geom;
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom;
        let (dx, dw) = Conv2dBackward::transposed(g, x.track_op(), w.track_op()).grads(x, w, grad)?;
        let db = if b.track_op() { Some(crate::bias::bias_grad(grad, g.c, g.h * g.w, b.dtype())?) } else { None };
        Ok((dx, dw, db))
    }
}
