//! Convolutions in `f32` on the AVX-512 kernel without an im2col matrix: the input is padded
//! once per image (and split into `s×s` phases for stride `s`), and tap `(i, j)` of the kernel
//! reads those planes shifted by a constant offset. The product then runs over a grid as wide
//! as a padded phase row (the few extra columns of each row are computed and dropped), so
//! im2col's rows are windows of the padded input, packed straight into the micro-kernel's panels.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Geom;
use super::winograd::{DySrc, Src};
use crate::sgemm::{
    Columns, Gathered, Grid, ImageColumns, ImageRows, NR, PackedA, Shifted, Strided, sgemm, sgemm_nt_rows,
    sgemm_packed, sgemm_packed_grid,
};

/// Weight gradients with at most this many output channels (per group) run as dot products
/// along the image ([`sgemm_nt_rows`]).
/// (3×3 weight gradients measured against the packed product, same binary, alternating: 3 → 16
/// channels at 250×250 4.53 → 1.85 ms, 16 → 16 8.78 → 6.20, 32 → 32 at 125×125 9.84 → 6.35.
/// Since the packed product takes whole images per task, 64 output channels are faster packed
/// (min of 3, medians of 8 rounds: 64 → 64 at 56² batch 8 12.81 → 10.21 ms, at 125² batch 4
/// 29.0 → 24.8, 128 → 64 at 125² batch 2 31.8 → 26.4; at 250² batch 2 46.4 → 45.5), 32 about
/// even (7.35 vs 6.86 ms), 16 not (9.18 vs 11.25).)
const DOT_MAX_O: usize = 32;
/// ... and at least this many grid positions per image, with more than one tap: on short
/// images the 16-lane partial sums of every output outweigh the products (3×3 128 → 32 at
/// 14×14, batch 8: 1.67 → 2.31 ms; at 7×7 0.87 → 1.67; at 28×28 4.68 → 4.39; at 56×56 18.1 →
/// 14.3), and 1×1 weight gradients were as fast or faster packed (64 → 64 at 56×56 1.73 vs
/// 1.94 ms, 512 → 32 at 14×14 0.81 vs 1.00).
const DOT_MIN_LEN: usize = 512;
/// Weight gradients whose grid has at most this many positions per image run as one product
/// over the whole batch ([`ImageColumns`]): per image, a depth of 49…222 positions read and
/// wrote all of `dW` (ResNet50's last stages: 512·4608 values per 3×3 layer and image).
const BATCH_MAX_GRID: usize = 256;
/// Forward products (and stride-1 input gradients) whose output maps have at most this many
/// pixels run as one product over the batch's output positions ([`Gathered`]). ResNet50's
/// 7×7 stage at batch 8, same binary, alternating: 3×3 512 → 512 forward 15.0/13.9 →
/// 12.5/11.6 ms, 1×1 2048 → 512 6.0/5.7 → 5.1/5.1 ms; at 14×14 it was no faster (3×3 256:
/// 11.1/9.6 vs 10.8/10.8 ms; 1×1 1024 → 256: 4.3/3.9 vs 4.6/4.8 ms), the per-image grid
/// wasting fewer columns there (222 of 256 used vs 61 of 96 at 7×7).
const GATHER_MAX_P: usize = 64;
/// Columns (forward) or depth (weight gradient) of one batched product of small maps: the
/// images are taken in chunks of at most this many positions.
const BATCH_COLS: usize = 4096;
/// ... and at most this many values of (padded) input per chunk (64 MiB).
const BATCH_SOURCE: usize = 1 << 24;

/// `y = y·scale[o] + shift[o]` (`+ residual`), then `max(·, 0)` when `relu`, over an image's
/// `O` planes: a batch norm in eval mode folded into the convolution that feeds it, and a
/// residual block's `relu(bn(conv(x)) + shortcut)` when `residual` (the whole batch's) is given.
pub(crate) struct Epilogue<'a, T> {
    pub(crate) scale: &'a [T],
    pub(crate) shift: &'a [T],
    pub(crate) relu: bool,
    pub(crate) residual: Option<&'a [T]>,
}

impl<T: crate::kernel::Real> Epilogue<'_, T> {
    /// Applies the map to image `img` of the batch (`O` planes of `plane` values).
    pub(crate) fn apply(&self, img: usize, image: &mut [T], plane: usize) {
        let len = image.len();
        let mut r = self.residual.map(|r| r[img * len..(img + 1) * len].chunks_exact(plane));
        for ((y, &s), &t) in image.chunks_exact_mut(plane).zip(self.scale).zip(self.shift) {
            let r = r.as_mut().and_then(Iterator::next);
            pulp::Arch::new().dispatch(AffineInPlace { y, s, t, relu: self.relu, r });
        }
    }
}

/// One plane of [`Epilogue::apply`], compiled for the CPU's widest vectors.
struct AffineInPlace<'a, T> {
    y: &'a mut [T],
    s: T,
    t: T,
    relu: bool,
    r: Option<&'a [T]>,
}

impl<T: crate::kernel::Real> pulp::WithSimd for AffineInPlace<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (s, t, zero) = (self.s, self.t, T::zero());
        match (self.r, self.relu) {
            (Some(r), true) => {
                for (v, &r) in self.y.iter_mut().zip(r) {
                    let a = *v * s + t + r;
                    *v = if a > zero { a } else { zero };
                }
            }
            (Some(r), false) => {
                for (v, &r) in self.y.iter_mut().zip(r) {
                    *v = *v * s + t + r;
                }
            }
            (None, true) => {
                for v in self.y.iter_mut() {
                    let a = *v * s + t;
                    *v = if a > zero { a } else { zero };
                }
            }
            (None, false) => {
                for v in self.y.iter_mut() {
                    *v = *v * s + t;
                }
            }
        }
    }
}

/// Where the taps read: the phase planes of the padded input, each tap's offset, the grid.
pub(super) struct ShiftPlan {
    /// Row length of a phase plane, `⌈Wp / sw⌉` (the grid's row stride).
    wq: usize,
    /// Rows of a phase plane, `⌈Hp / sh⌉`.
    hq: usize,
    /// The phases `(py, px)` some tap reads (`(0, 0)` alone for stride 1).
    phases: Vec<(usize, usize)>,
    /// Values per channel: all its phase planes.
    plane: usize,
    /// Offset of tap `t = i·kw + j` in a channel's planes.
    offs: Vec<usize>,
    /// Grid columns computed per output channel: `(OH − 1)·wq + OW`.
    n_grid: usize,
    /// Whether the taps read padded planes (any padding or stride): a padded copy of the input,
    /// or the input itself when it comes padded ([`Self::input_padded`]).
    pad: bool,
    /// Whether the grid has extra columns to drop (`wq ≠ OW`).
    compact: bool,
    /// The forward input is given already padded (`[N, C, planes]`, as [`Geom::pad_into`]
    /// lays it out): a convolution over a padded `dz` that its producer wrote in place.
    pub(super) input_padded: bool,
    /// The weight gradient's `dY` is given as padded planes of `hq×wq` per channel (for a
    /// stride-1 convolution whose output is as large as its input, `dY` on the grid is such a
    /// plane read from [`Self::dy_off`]).
    pub(super) dy_padded: bool,
    /// Where the output grid starts in a padded `dY` plane: `ph·wq + pw`.
    dy_off: usize,
}

impl Geom {
    /// The plan when the AVX-512 kernel is available: any stride-1 convolution, and strided
    /// ones without dilation. A stride `s` splits the padded input into `s×s` phases
    /// (`x[s·i + py][s·j + px]`); tap `(i, j)` then reads phase `(i mod s, j mod s)` shifted by
    /// `(i / s, j / s)`, a stride-1 window again.
    pub(super) fn shift_plan(&self) -> Option<ShiftPlan> {
        let (sh, sw) = (self.sh, self.sw);
        if !crate::sgemm::available() || ((sh > 1 || sw > 1) && (self.dh != 1 || self.dw != 1)) {
            return None;
        }
        let (hp, wp) = (self.h + 2 * self.ph, self.w + 2 * self.pw);
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let (py_n, px_n) = (sh.min(self.kh), sw.min(self.kw));
        let phases: Vec<(usize, usize)> = (0..py_n).flat_map(|py| (0..px_n).map(move |px| (py, px))).collect();
        let (dh, dw, kw) = (self.dh, self.dw, self.kw);
        let offs = (0..self.kh)
            .flat_map(|i| {
                (0..kw).map(move |j| ((i % sh) * px_n + j % sw) * hq * wq + (i / sh) * dh * wq + (j / sw) * dw)
            })
            .collect();
        Some(ShiftPlan {
            wq,
            hq,
            plane: phases.len() * hq * wq,
            phases,
            offs,
            n_grid: (self.oh - 1) * wq + self.ow,
            pad: self.ph > 0 || self.pw > 0 || sh > 1 || sw > 1,
            compact: wq != self.ow,
            input_padded: false,
            dy_padded: false,
            dy_off: self.ph * wq + self.pw,
        })
    }

    /// How the Winograd transforms read one image's input as this plan gives it: the padded
    /// planes themselves, or the input with the padding supplied by masked loads.
    fn winograd_src(&self, sp: &ShiftPlan) -> Src {
        if sp.input_padded {
            Src { plane: sp.plane, rs: sp.wq, rows: sp.hq, cols: sp.wq, top: 0, left: 0 }
        } else {
            Src { plane: self.h * self.w, rs: self.w, rows: self.h, cols: self.w, top: self.ph, left: self.pw }
        }
    }

    /// One group's channels `[C/g, H, W]` into zero-padded phase planes `[C/g, phases, hq, wq]`.
    fn pad_into(&self, x: &[f32], xp: &mut [f32], sp: &ShiftPlan) {
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and `pad_uninit` writes only
        // initialised values, so `xp` stays initialised.
        let xp = unsafe { &mut *(std::ptr::from_mut(xp) as *mut [MaybeUninit<f32>]) };
        self.pad_uninit(x, xp, sp);
    }

    /// [`Self::pad_into`] into memory that may start uninitialised: every element of the
    /// planes is written.
    fn pad_uninit(&self, x: &[f32], xp: &mut [MaybeUninit<f32>], sp: &ShiftPlan) {
        let zero = |d: &mut [MaybeUninit<f32>]| {
            for v in d {
                v.write(0.0);
            }
        };
        let (h, w, ph, pw, sh, sw) = (self.h, self.w, self.ph, self.pw, self.sh, self.sw);
        let pl = sp.hq * sp.wq;
        for (xc, pc) in x.chunks_exact(h * w).zip(xp.chunks_exact_mut(sp.plane)) {
            for (&(py, px), plane) in sp.phases.iter().zip(pc.chunks_exact_mut(pl)) {
                for (i, dst) in plane.chunks_exact_mut(sp.wq).enumerate() {
                    let y = (sh * i + py) as isize - ph as isize;
                    if y < 0 || y >= h as isize {
                        zero(dst);
                        continue;
                    }
                    let src = &xc[y as usize * w..(y as usize + 1) * w];
                    if sw == 1 {
                        zero(&mut dst[..pw]);
                        dst[pw..pw + w].write_copy_of_slice(src);
                        zero(&mut dst[pw + w..]);
                    } else {
                        // Column j reads x[sw·j + px − pw]: zeros left of the first j inside the
                        // row and from the first j past it, a strided copy in between.
                        let j_lo = pw.saturating_sub(px).div_ceil(sw).min(dst.len());
                        let j_hi = (w + pw).saturating_sub(px).div_ceil(sw).clamp(j_lo, dst.len());
                        zero(&mut dst[..j_lo]);
                        zero(&mut dst[j_hi..]);
                        if j_lo < j_hi {
                            let first = sw * j_lo + px - pw;
                            for (d, &v) in dst[j_lo..j_hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                                d.write(v);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Self::forward_shifted_with`] for one group and small maps: one product over the whole
    /// batch whose columns are the output positions of every image ([`Gathered`]: no grid
    /// columns computed and dropped), its tiles storing each image's positions straight into
    /// that image's planes ([`Grid::images`]) instead of a scratch product copied out: no
    /// scratch of `O·N·p` values, and 15 alternating runs in one process (ms, medians) of
    /// 1×1 1024 → 128 at 7², batch 8, forward 0.34–0.36 → 0.32, input gradient 0.35–0.36 →
    /// 0.31; 256 → 256 0.20 → 0.18; even for 2048 → 512 (2.12–2.13 vs 2.16–2.17).
    fn forward_gathered(
        &self,
        x: &[f32],
        out: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
        a: &PackedA,
        epi: Option<&Epilogue<'_, f32>>,
    ) -> candle_core::Result<()> {
        let (o, p, img_len) = (self.o, self.p(), self.x_len(sp));
        let src_len = self.source_len(sp);
        let per = self.images_per_product(p, src_len);
        let base: Vec<usize> = (0..per)
            .flat_map(|img| {
                (0..self.oh).flat_map(move |oy| (0..self.ow).map(move |ox| img * src_len + oy * sp.wq + ox))
            })
            .collect();
        let xp_len = if sp.pad && !sp.input_padded { per * src_len } else { 0 };
        <f32 as crate::kernel::Real>::with_scratch(xp_len, |xp| {
            for (chunk, (x, out)) in x.chunks(per * img_len).zip(out.chunks_mut(per * o * p)).enumerate() {
                let cols = x.len() / img_len * p;
                let data = self.sources(x, xp, sp);
                let b = Gathered { data, plane: sp.plane, offs: &sp.offs, base: &base[..cols] };
                let grid = Grid::images(p, o * p);
                sgemm_packed_grid(cols, &mut out[..], p, false, a, &b, rayon::current_num_threads(), Some(grid))?;
                if let Some(e) = epi {
                    // SAFETY: the product wrote every element of `out` (each image's `O` planes of
                    // `p`), and `MaybeUninit<f32>` has `f32`'s layout.
                    let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [f32]) };
                    out.par_chunks_exact_mut(o * p).enumerate().for_each(|(img, y)| e.apply(chunk * per + img, y, p));
                }
            }
            Ok(())
        })
    }

    /// Values per image of the planes the taps read ([`Self::sources`]).
    fn source_len(&self, sp: &ShiftPlan) -> usize {
        if sp.pad { self.c * sp.plane } else { self.image_len() }
    }

    /// Images per batched product of small maps: at most [`BATCH_COLS`] columns (or depth) of
    /// `cols` each and [`BATCH_SOURCE`] values of padded input, so that the scratch stays
    /// bounded for any batch size and image size.
    fn images_per_product(&self, cols: usize, src_len: usize) -> usize {
        let by_cols = BATCH_COLS / cols.max(1);
        let by_source = BATCH_SOURCE / src_len.max(1);
        by_cols.min(by_source).clamp(1, self.n.max(1))
    }

    /// The input planes of a chunk of images (one group), `[N, C, planes]` with a stride of
    /// [`Self::source_len`]: padded into `xp` in parallel, or `x` itself without padding or
    /// when it comes padded ([`ShiftPlan::input_padded`]).
    fn sources<'a>(&self, x: &'a [f32], xp: &'a mut [f32], sp: &ShiftPlan) -> &'a [f32] {
        if !sp.pad || sp.input_padded {
            return x;
        }
        let (src_len, img_len) = (self.source_len(sp), self.image_len());
        let xp = &mut xp[..x.len() / img_len * src_len];
        xp.par_chunks_exact_mut(src_len)
            .zip(x.par_chunks_exact(img_len))
            .for_each(|(xp_img, x_img)| self.pad_into(x_img, xp_img, sp));
        xp
    }

    /// The input planes the taps read: a padded copy in `xp`, or `x` itself without padding.
    fn source<'a>(&self, x: &'a [f32], xp: &'a mut [f32], sp: &ShiftPlan) -> &'a [f32] {
        if sp.pad {
            self.pad_into(x, xp, sp);
            xp
        } else {
            x
        }
    }

    /// Values per image of the forward input as given: padded planes when
    /// [`ShiftPlan::input_padded`], else `C·H·W`.
    fn x_len(&self, sp: &ShiftPlan) -> usize {
        if sp.input_padded { self.source_len(sp) } else { self.image_len() }
    }

    /// Group `gi`'s planes the taps read from one image as given ([`Self::x_len`] values).
    fn group_source<'a>(&self, x_img: &'a [f32], gi: usize, xp: &'a mut [f32], sp: &ShiftPlan) -> &'a [f32] {
        let cg = self.cg();
        if sp.input_padded {
            &x_img[gi * cg * sp.plane..(gi + 1) * cg * sp.plane]
        } else {
            let hw = self.h * self.w;
            self.source(&x_img[gi * cg * hw..(gi + 1) * cg * hw], xp, sp)
        }
    }

    /// Values per output channel of `dY` as given: a padded plane when
    /// [`ShiftPlan::dy_padded`], else `OH·OW`.
    fn dy_stride(&self, sp: &ShiftPlan) -> usize {
        if sp.dy_padded { sp.plane } else { self.p() }
    }

    /// Row stride of `dY` on the grid ([`Self::dy_on_grid`]'s channels).
    fn grid_stride(sp: &ShiftPlan) -> usize {
        if sp.dy_padded { sp.plane } else { sp.n_grid }
    }

    /// Forward pass into `out` (`N·O·OH·OW`, every element written: it may start
    /// uninitialised), images in parallel.
    pub(super) fn forward_shifted(
        &self,
        x: &[f32],
        wt: &[f32],
        out: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
    ) -> candle_core::Result<()> {
        self.forward_shifted_with(x, wt, out, sp, None, None)
    }

    /// [`Self::forward_shifted`] with an optional per-channel epilogue applied to each image's
    /// output as soon as it is complete. `x` is `N·C·H·W`, or padded planes ([`Self::x_len`]
    /// per image) with [`ShiftPlan::input_padded`].
    pub(super) fn forward_shifted_with(
        &self,
        x: &[f32],
        wt: &[f32],
        out: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
        epi: Option<&Epilogue<'_, f32>>,
        packed_weights: Option<&PackedA>,
    ) -> candle_core::Result<()> {
        let (k, p, og, cg) = (self.k(), self.p(), self.og(), self.cg());
        if out.len() != self.n * self.o * p || x.len() != self.n * self.x_len(sp) || wt.len() != self.weight_len() {
            candle_core::bail!("conv2d: buffers do not match the geometry {self:?}");
        }
        if self.winograd_applies() && packed_weights.is_none() {
            return self.forward_winograd(x, self.x_len(sp), self.winograd_src(sp), wt, false, out, epi);
        }
        let xp_len = if sp.pad && !sp.input_padded { cg * sp.plane } else { 0 };
        let (_, gemm_threads) = self.plan();
        // The weights are packed once per group (or by the caller, one group), for every image.
        let owned;
        let packed: &[PackedA] = match packed_weights {
            Some(p) if self.g == 1 => std::slice::from_ref(p),
            _ => {
                owned = (0..self.g)
                    .map(|gi| PackedA::new(og, k, &Strided { data: &wt[gi * og * k..(gi + 1) * og * k], rs: k, cs: 1 }))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                &owned
            }
        };
        // Enough columns for every thread (the product splits only its columns; with fewer,
        // images in parallel keep both cores busy).
        let threads = rayon::current_num_threads();
        if self.n > 1 && self.g == 1 && self.p() <= GATHER_MAX_P && self.n * self.p() >= 2 * NR * threads {
            return self.forward_gathered(x, out, sp, &packed[0], epi);
        }
        let image = |xp: &mut [f32], img: usize, y: &mut [MaybeUninit<f32>], x: &[f32]| -> candle_core::Result<()> {
            for (gi, a) in packed.iter().enumerate() {
                let src = self.group_source(x, gi, xp, sp);
                let b = Shifted { data: src, plane: sp.plane, offs: &sp.offs };
                let yg = &mut y[gi * og * p..(gi + 1) * og * p];
                if sp.compact {
                    // The tiles write the grid's kept columns straight into `y`.
                    let grid = Grid::compact(sp.wq, self.ow);
                    sgemm_packed_grid(sp.n_grid, yg, p, false, a, &b, gemm_threads, Some(grid))?;
                } else {
                    sgemm_packed(p, yg, p, false, a, &b, gemm_threads)?;
                }
            }
            if let Some(e) = epi {
                // SAFETY: the products above wrote every element of `y` (with a grid: its `p` kept columns per channel), and
                // `MaybeUninit<f32>` has `f32`'s layout.
                let y = unsafe { &mut *(std::ptr::from_mut(y) as *mut [f32]) };
                e.apply(img, y, p);
            }
            Ok(())
        };
        let scratch_len = xp_len;
        let (out_len, img_len) = (self.o * p, self.x_len(sp));
        let tail = p % NR;
        if gemm_threads == 1 && self.g == 1 && !sp.pad && !sp.compact && p > NR && (1..16).contains(&tail) {
            return self.forward_tails_gathered(x, out, sp, &packed[0], epi, threads);
        }
        if gemm_threads > 1 {
            <f32 as crate::kernel::Real>::with_scratch(scratch_len, |s| {
                out.chunks_mut(out_len).zip(x.chunks(img_len)).enumerate().try_for_each(|(i, (y, x))| image(s, i, y, x))
            })
        } else {
            out.par_chunks_mut(out_len).zip(x.par_chunks(img_len)).enumerate().try_for_each(|(i, (y, x))| {
                <f32 as crate::kernel::Real>::with_scratch(scratch_len, |s| image(s, i, y, x))
            })
        }
    }

    /// [`Self::forward_shifted_with`] for images of `p` positions (no padding, no grid, one
    /// group) whose last panel of columns is a sliver of less than one vector (`p % NR` < 16,
    /// ResNet50's 14² maps: 196 = 4·48 + 4): each task's images run their whole panels one by
    /// one, then the slivers of all of them as one gathered product (`Grid::images`) instead
    /// of one narrow tile column per image. The 4 columns of a 14² map took ~10 % of a pass
    /// (skipping them: 1×1 1024 → 256 forward 2.36 → 2.07 ms, input gradient 2.10 → 1.89);
    /// gathered, 15 alternating runs in one process (ms, medians), batch 8: 1024 → 256 forward
    /// 1.98 → 1.87, input gradient 1.97 → 1.91; 256 → 1024 1.92 → 1.80 and 2.00 → 1.90. A
    /// sliver of one whole vector (28², 56²: 16 columns) gained nothing.
    fn forward_tails_gathered(
        &self,
        x: &[f32],
        out: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
        a: &PackedA,
        epi: Option<&Epilogue<'_, f32>>,
        threads: usize,
    ) -> candle_core::Result<()> {
        let (o, p, img_len) = (self.o, self.p(), self.x_len(sp));
        let (tail, out_len) = (p % NR, o * p);
        let main = p - tail;
        let per_task = self.n.div_ceil(threads.max(1)).max(1);
        out.par_chunks_mut(per_task * out_len).zip(x.par_chunks(per_task * img_len)).enumerate().try_for_each(
            |(t, (y, x))| -> candle_core::Result<()> {
                for (yi, xi) in y.chunks_mut(out_len).zip(x.chunks(img_len)) {
                    let b = Shifted { data: xi, plane: sp.plane, offs: &sp.offs };
                    sgemm_packed(main, yi, p, false, a, &b, 1)?;
                }
                let images = x.len() / img_len;
                let base: Vec<usize> = (0..images).flat_map(|i| (main..p).map(move |j| i * img_len + j)).collect();
                let b = Gathered { data: x, plane: sp.plane, offs: &sp.offs, base: &base };
                let grid = Grid::images(tail, out_len);
                sgemm_packed_grid(images * tail, &mut y[main..], p, false, a, &b, 1, Some(grid))?;
                if let Some(e) = epi {
                    // SAFETY: the products wrote every element of `y` (each image's whole
                    // panels, then its sliver), and `MaybeUninit<f32>` has `f32`'s layout.
                    let y = unsafe { &mut *(std::ptr::from_mut(y) as *mut [f32]) };
                    for (i, yi) in y.chunks_exact_mut(out_len).enumerate() {
                        e.apply(t * per_task + i, yi, p);
                    }
                }
                Ok(())
            },
        )
    }

    /// When `self` runs by Winograd: `self`'s forward pass over `dy` (as
    /// [`Self::forward_shifted`] reads its input) into `dx`, `self` being the convolution
    /// ([`Geom::adjoint_conv`]) whose forward pass is the input gradient of a convolution with
    /// weights `w`. The filter transform reads `w` flipped and transposed in place, with no
    /// flipped copy (`Geom::flip_transpose`): 15 alternating runs in one process against the
    /// copy, medians in ms, 512 → 512 at 7² batch 8 5.34/5.36 vs 5.66/5.86, batch 2 2.18/2.26
    /// vs 2.87/2.91, 256 → 256 at 14² 3.25/3.29 vs 3.49/3.57, 3072 → 256 at 16² batch 2
    /// 14.05/14.09 vs 15.46/15.48. `false`, with nothing written, otherwise.
    pub(super) fn input_grad_winograd(
        &self,
        dy: &[f32],
        w: &[f32],
        dx: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
    ) -> candle_core::Result<bool> {
        if !self.winograd_applies() {
            return Ok(false);
        }
        // `forward_winograd` checks `dy` and `dx`, the filter transform `w`.
        self.forward_winograd(dy, self.x_len(sp), self.winograd_src(sp), w, true, dx, None)?;
        Ok(true)
    }

    /// The whole batch's input as the zero-padded planes the taps read (`[N, C, planes]`,
    /// [`Self::pad_into`]'s layout), for an `f32` "same" stride-1 convolution with padding
    /// ([`Geom::padded_dy_layout`]); `None` for other geometries. A training step pads once and
    /// both the forward pass ([`Self::forward_from_padded`]) and the weight gradient
    /// ([`ShiftPlan::input_padded`]) read these planes: the weight gradient's own padded copy
    /// of every image is gone.
    pub(crate) fn pad_batch(&self, x: &[f32]) -> candle_core::Result<Option<Vec<f32>>> {
        let Some(sp) = self.shift_plan() else { return Ok(None) };
        if !sp.pad || self.padded_dy_layout().is_none() {
            return Ok(None);
        }
        let (src_len, img_len) = (self.source_len(&sp), self.image_len());
        if x.len() != self.n * img_len {
            candle_core::bail!("conv2d: input of {} values for the geometry {self:?}", x.len());
        }
        let len = self.n * src_len;
        let mut xp: Vec<f32> = Vec::with_capacity(len);
        xp.spare_capacity_mut()[..len]
            .par_chunks_exact_mut(src_len)
            .zip(x.par_chunks_exact(img_len))
            .for_each(|(xp_img, x_img)| self.pad_uninit(x_img, xp_img, &sp));
        // SAFETY: `pad_uninit` wrote every element of each image's planes.
        unsafe { xp.set_len(len) };
        Ok(Some(xp))
    }

    /// The forward pass from [`Self::pad_batch`]'s planes.
    pub(crate) fn forward_from_padded(&self, xp: &[f32], wt: &[f32]) -> candle_core::Result<Vec<f32>> {
        let Some(mut sp) = self.shift_plan() else {
            candle_core::bail!("conv2d: no padded-input plan for the geometry {self:?}")
        };
        sp.input_padded = true;
        let len = self.n * self.o * self.p();
        let mut out: Vec<f32> = Vec::with_capacity(len);
        self.forward_shifted_with(xp, wt, &mut out.spare_capacity_mut()[..len], &sp, None, None)?;
        // SAFETY: `forward_shifted_with` wrote all `len` elements (or returned an error above).
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// One group's output gradient `[O/g, OH·OW]` laid out on the grid (zeros in the extra
    /// columns of each row), in `grid`; `dy` itself when the grid has no extra columns; with
    /// [`ShiftPlan::dy_padded`], a view into the padded planes (channel rows then
    /// [`Self::grid_stride`] = a plane apart instead of `n_grid`).
    fn dy_on_grid<'a>(&self, dyg: &'a [f32], grid: &'a mut [f32], sp: &ShiftPlan) -> &'a [f32] {
        if sp.dy_padded {
            // The padded plane read from the grid's start: the pad columns between its rows
            // are the grid's zero columns.
            return &dyg[sp.dy_off..];
        }
        if !sp.compact {
            return dyg;
        }
        for (o, dyo) in dyg.chunks_exact(self.p()).enumerate() {
            let go = &mut grid[o * sp.n_grid..(o + 1) * sp.n_grid];
            for (oy, row) in dyo.chunks_exact(self.ow).enumerate() {
                let start = oy * sp.wq;
                go[start..start + self.ow].copy_from_slice(row);
                let end = (start + sp.wq).min(sp.n_grid);
                go[start + self.ow..end].fill(0.0);
            }
        }
        grid
    }

    /// [`Self::weight_grad_shifted`] into a fresh `dw` (its contents ignored, every element
    /// written): the batched path for small maps ([`Self::batched_dw_applies`]) writes its
    /// first product straight into `dw` instead of adding to a zeroed one (512 × 4608 weights
    /// of a 3×3 512-channel layer: a 9 MiB memset and a read of the zeros saved); other paths
    /// zero `dw` first.
    pub(super) fn weight_grad_shifted_fresh(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [MaybeUninit<f32>],
        sp: &ShiftPlan,
    ) -> candle_core::Result<()> {
        // Tests see a path that reads `dw` before writing it.
        #[cfg(test)]
        for v in dw.iter_mut() {
            v.write(f32::NAN);
        }
        if self.batched_dw_applies(sp) {
            self.check_dw_buffers(x, dy, dw.len(), sp)?;
            return self.weight_grad_batched(x, dy, dw, true, sp, &self.column_offsets(sp));
        }
        for v in dw.iter_mut() {
            v.write(0.0);
        }
        // SAFETY: every element was just written; `MaybeUninit<f32>` has `f32`'s layout.
        let dw = unsafe { &mut *(std::ptr::from_mut(dw) as *mut [f32]) };
        self.weight_grad_shifted(x, dy, dw, sp)
    }

    /// The weight gradient's buffers against the geometry: `x` as given ([`Self::x_len`] per
    /// image), `dY` ([`Self::dy_stride`] per channel), `dW`.
    fn check_dw_buffers(&self, x: &[f32], dy: &[f32], dw_len: usize, sp: &ShiftPlan) -> candle_core::Result<()> {
        if x.len() != self.n * self.x_len(sp)
            || dy.len() != self.n * self.o * self.dy_stride(sp)
            || dw_len != self.weight_len()
        {
            candle_core::bail!("conv2d backward: buffers do not match the geometry {self:?}");
        }
        Ok(())
    }

    /// Whether [`Self::weight_grad_shifted`] takes [`Self::weight_grad_batched`]: neither
    /// Winograd nor dot products, one group, several images, at least four panels of `dW`
    /// columns and at most [`BATCH_MAX_GRID`] grid positions per image, on a pool of several
    /// threads.
    fn batched_dw_applies(&self, sp: &ShiftPlan) -> bool {
        let winograd = self.winograd_dw_applies() && self.og() > DOT_MAX_O;
        !winograd
            && !self.dot_dw(sp)
            && rayon::current_num_threads() > 1
            && self.k() >= 4 * NR
            && self.n > 1
            && self.g == 1
            && sp.n_grid <= BATCH_MAX_GRID
    }

    /// Whether the weight gradient runs as dot products along the image (few output channels,
    /// several taps, long images).
    fn dot_dw(&self, sp: &ShiftPlan) -> bool {
        self.og() <= DOT_MAX_O && sp.offs.len() > 1 && sp.n_grid >= DOT_MIN_LEN
    }

    /// `dW` column `r = c·taps + t`'s offset in the (padded) input planes of one image.
    fn column_offsets(&self, sp: &ShiftPlan) -> Vec<usize> {
        let taps = sp.offs.len();
        (0..self.k()).map(|r| (r / taps) * sp.plane + sp.offs[r % taps]).collect()
    }

    /// Weight gradient `dW = Σ_n dY_n · colsᵀ` (`dw` zeroed, `O·C/g·kh·kw`): `dY` laid out on
    /// the grid (zeros in the extra columns) times the transposed windows of the padded input.
    /// `dY` is `N·O·OH·OW`, or padded planes ([`Self::dy_stride`] per channel) with
    /// [`ShiftPlan::dy_padded`].
    pub(super) fn weight_grad_shifted(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        sp: &ShiftPlan,
    ) -> candle_core::Result<()> {
        let (k, og, cg) = (self.k(), self.og(), self.cg());
        let (img_len, dys) = (self.x_len(sp), self.dy_stride(sp));
        let out_len = self.o * dys;
        self.check_dw_buffers(x, dy, dw.len(), sp)?;
        // Winograd where the dot products below do not take the gradient (more than
        // `DOT_MAX_O` output channels): 32 → 32 at 125² (batch 4) 6.56 ms vs 5.86 by dot
        // products; 64 → 64 at 56² (batch 8) 8.10 vs 8.48, 128 → 128 at 28² 7.36 vs 8.25,
        // 64 → 64 at 250² (batch 2) 34.6 vs 47.7, 128 → 128 at 125² 28.9 vs 40.8 (min of 3,
        // medians of 7 alternating rounds).
        if self.winograd_dw_applies() && self.og() > DOT_MAX_O {
            let dsrc = if sp.dy_padded {
                DySrc { plane: sp.plane, rs: sp.wq, off: sp.dy_off }
            } else {
                DySrc { plane: self.p(), rs: self.ow, off: 0 }
            };
            return self.weight_grad_winograd(x, img_len, self.winograd_src(sp), dy, out_len, dsrc, dw);
        }
        let rs = Self::grid_stride(sp);
        let boff = self.column_offsets(sp);
        let xp_len = if sp.pad && !sp.input_padded { cg * sp.plane } else { 0 };
        let grid_len = if sp.compact && !sp.dy_padded { og * sp.n_grid } else { 0 };
        let (chunks, _) = self.plan();
        // With enough columns in dW (C/g·kh·kw ≥ 4 panels) and too few images to split over
        // the pool (or weights larger than the input), the images run one after the other and
        // each product's columns are split over the pool, accumulating straight into `dw`: no
        // per-task partial dW to zero and add up (a full copy of the weights each, which
        // dominated at small batches with large weights).
        let threads = rayon::current_num_threads();
        // Few output channels: dot products along the image (`sgemm_nt_rows`), images split
        // over the pool, one partial dW per task (small: O·C·kh·kw ≤ 32·C·kh·kw).
        let dot = self.dot_dw(sp);
        if dot && self.n < threads && threads > 1 {
            // Fewer images than threads: each image's dW columns are split over the pool.
            let a_offs: Vec<usize> = (0..og).map(|o| o * rs).collect();
            return <f32 as crate::kernel::Real>::with_scratch(xp_len + grid_len, |scratch| {
                let (xp, grid) = scratch.split_at_mut(xp_len);
                let per = k.div_ceil(threads).max(1);
                for (x_img, dy_img) in x.chunks(img_len).zip(dy.chunks(out_len)) {
                    for gi in 0..self.g {
                        let src = self.group_source(x_img, gi, xp, sp);
                        let a_data = self.dy_on_grid(&dy_img[gi * og * dys..(gi + 1) * og * dys], grid, sp);
                        let parts = boff
                            .par_chunks(per)
                            .map(|cols| -> candle_core::Result<Vec<f32>> {
                                let mut sub = vec![0f32; og * cols.len()];
                                sgemm_nt_rows(sp.n_grid, a_data, &a_offs, src, cols, &mut sub)?;
                                Ok(sub)
                            })
                            .collect::<candle_core::Result<Vec<_>>>()?;
                        let dwg = &mut dw[gi * og * k..(gi + 1) * og * k];
                        for (t, sub) in parts.iter().enumerate() {
                            let (lo, w) = (t * per, sub.len() / og);
                            for (o, row) in sub.chunks_exact(w).enumerate() {
                                for (d, &v) in dwg[o * k + lo..o * k + lo + w].iter_mut().zip(row) {
                                    *d += v;
                                }
                            }
                        }
                    }
                }
                Ok(())
            });
        }
        if dot {
            let per_chunk = self.n.div_ceil(chunks.max(threads).clamp(1, self.n.max(1))).max(1);
            let a_offs: Vec<usize> = (0..og).map(|o| o * rs).collect();
            let partials: Vec<Vec<f32>> = x
                .par_chunks(per_chunk * img_len)
                .zip(dy.par_chunks(per_chunk * out_len))
                .map(|(x, dy)| -> candle_core::Result<Vec<f32>> {
                    let mut part = vec![0f32; self.weight_len()];
                    <f32 as crate::kernel::Real>::with_scratch(
                        xp_len + grid_len,
                        |scratch| -> candle_core::Result<()> {
                            let (xp, grid) = scratch.split_at_mut(xp_len);
                            for (x_img, dy_img) in x.chunks(img_len).zip(dy.chunks(out_len)) {
                                for gi in 0..self.g {
                                    let src = self.group_source(x_img, gi, xp, sp);
                                    let a_data = self.dy_on_grid(&dy_img[gi * og * dys..(gi + 1) * og * dys], grid, sp);
                                    let dwg = &mut part[gi * og * k..(gi + 1) * og * k];
                                    sgemm_nt_rows(sp.n_grid, a_data, &a_offs, src, &boff, dwg)?;
                                }
                            }
                            Ok(())
                        },
                    )?;
                    Ok(part)
                })
                .collect::<candle_core::Result<_>>()?;
            for part in partials {
                for (d, v) in dw.iter_mut().zip(part) {
                    *d += v;
                }
            }
            return Ok(());
        }
        if self.batched_dw_applies(sp) {
            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the batched path writes only
            // initialised values (it adds to `dw`).
            let dw = unsafe { &mut *(std::ptr::from_mut(dw) as *mut [MaybeUninit<f32>]) };
            return self.weight_grad_batched(x, dy, dw, false, sp, &boff);
        }
        // Enough images to split evenly over the pool, and a dW no larger than the batch's
        // input: each task takes whole images into its own partial dW (below). Splitting each
        // image's columns instead (next) left the pool unbalanced (ResNet50's 1×1 256 → 64
        // layer: 5⅓ column panels over 2 threads) and synchronised it twice per image (pack A,
        // then the product). Alternating, min of 3 per round, 12 rounds, batch 8: 1×1 256 → 64
        // at 56² 5.87 → 4.47 ms (medians), 3×3 128 → 128 at 28² 12.76 → 10.06; 1×1 512 → 128
        // at 28² unchanged (6.77 vs 6.53).
        let by_images = self.n >= threads
            && (self.n.is_multiple_of(threads) || self.n >= 4 * threads)
            && self.weight_len() <= x.len();
        if threads > 1 && k >= 4 * NR && !by_images {
            return <f32 as crate::kernel::Real>::with_scratch(xp_len + grid_len, |scratch| {
                let (xp, grid) = scratch.split_at_mut(xp_len);
                for (x_img, dy_img) in x.chunks(img_len).zip(dy.chunks(out_len)) {
                    for gi in 0..self.g {
                        let src = self.group_source(x_img, gi, xp, sp);
                        let a_data = self.dy_on_grid(&dy_img[gi * og * dys..(gi + 1) * og * dys], grid, sp);
                        let a = Strided { data: a_data, rs, cs: 1 };
                        let b = Columns { data: src, offs: &boff };
                        sgemm(og, k, sp.n_grid, &mut dw[gi * og * k..(gi + 1) * og * k], k, true, &a, &b, threads)?;
                    }
                }
                Ok(())
            });
        }
        let per_chunk = self.n.div_ceil(chunks).max(1);
        let partials: Vec<Vec<f32>> = x
            .par_chunks(per_chunk * img_len)
            .zip(dy.par_chunks(per_chunk * out_len))
            .map(|(x, dy)| -> candle_core::Result<Vec<f32>> {
                let mut part = vec![0f32; self.weight_len()];
                <f32 as crate::kernel::Real>::with_scratch(xp_len + grid_len, |scratch| -> candle_core::Result<()> {
                    let (xp, grid) = scratch.split_at_mut(xp_len);
                    for (x_img, dy_img) in x.chunks(img_len).zip(dy.chunks(out_len)) {
                        for gi in 0..self.g {
                            let src = self.group_source(x_img, gi, xp, sp);
                            let a_data = self.dy_on_grid(&dy_img[gi * og * dys..(gi + 1) * og * dys], grid, sp);
                            let a = Strided { data: a_data, rs, cs: 1 };
                            let b = Columns { data: src, offs: &boff };
                            let dwg = &mut part[gi * og * k..(gi + 1) * og * k];
                            sgemm(og, k, sp.n_grid, dwg, k, true, &a, &b, 1)?;
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

    /// [`Self::weight_grad_shifted`] for one group and small maps: `dW += A·B` with the depth
    /// running over every image's output positions, `A = [dY_0 | dY_1 | …]` (`O × N·OH·OW`,
    /// read in place by [`ImageRows`]: no serial copy of `dY`; 1×1 1024 → 256 at 14², batch 8,
    /// 1.90 → 1.83 ms in alternating runs) and `B` the images' (padded) input windows
    /// read row by row ([`ImageColumns`] runs of `OW`), the columns split over the pool. `dW`
    /// is read and written once instead of once per image, and the depth skips the grid's
    /// padding columns (a fifth of a 7×7 map's 9-wide grid).
    fn weight_grad_batched(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [MaybeUninit<f32>],
        fresh: bool,
        sp: &ShiftPlan,
        boff: &[usize],
    ) -> candle_core::Result<()> {
        let (k, o, p, img_len) = (self.k(), self.o, self.p(), self.x_len(sp));
        let src_len = self.source_len(sp);
        // The chunks of images accumulate into `dw`.
        let per = self.images_per_product(p, src_len);
        let xp_len = if sp.pad && !sp.input_padded { per * src_len } else { 0 };
        let dys = self.dy_stride(sp);
        // Output rows as runs of the depth, or each whole map when its rows are contiguous.
        let (seg, runs, run_stride) = if sp.compact { (self.ow, self.oh, sp.wq) } else { (p, 1, 0) };
        // `dY` read in place as the left operand, each image's rows (or its output rows in
        // padded planes) one run of the depth.
        let dy_off = if sp.dy_padded { sp.dy_off } else { 0 };
        let (dy_seg, dy_runs, dy_run_stride) = if sp.dy_padded { (self.ow, self.oh, sp.wq) } else { (p, 1, 0) };
        let threads = rayon::current_num_threads();
        <f32 as crate::kernel::Real>::with_scratch(xp_len, |xp| {
            for (chunk, (x, dy)) in x.chunks(per * img_len).zip(dy.chunks(per * o * dys)).enumerate() {
                let depth = x.len() / img_len * p;
                let a = ImageRows {
                    data: dy.get(dy_off..).unwrap_or_default(),
                    rs: dys,
                    seg: dy_seg,
                    runs: dy_runs,
                    run_stride: dy_run_stride,
                    stride: o * dys,
                };
                let b =
                    ImageColumns { data: self.sources(x, xp, sp), offs: boff, seg, runs, run_stride, stride: src_len };
                if fresh && chunk == 0 {
                    sgemm(o, k, depth, &mut dw[..o * k], k, false, &a, &b, threads)?;
                } else {
                    // SAFETY: `dw` is initialised (given so, or written whole by the first
                    // chunk's product); `MaybeUninit<f32>` has `f32`'s layout.
                    let dw = unsafe { &mut *(std::ptr::from_mut(&mut dw[..o * k]) as *mut [f32]) };
                    sgemm(o, k, depth, dw, k, true, &a, &b, threads)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dConfig;
    #[test]
    fn strided_padding_puts_every_input_value_in_its_phase() {
        // Every small geometry with stride 2–3, against the per-element rule: phase (py, px),
        // row i, column j holds x[s·i + py − p][s·j + px − p], zero outside the input.
        for w in 1..9usize {
            for h in 1..4usize {
                for k in 1..5usize {
                    for s in 2..4usize {
                        for p in 0..=(k / 2) {
                            let cfg = Conv2dConfig { stride: (s, s), padding: (p, p), ..Default::default() };
                            let Ok(g) = Geom::new(&[1, 2, h, w], &[1, 2, k, k], &cfg) else { continue };
                            let Some(sp) = g.shift_plan() else { continue };
                            let x: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
                            let mut xp = vec![-1f32; sp.plane * 2];
                            g.pad_into(&x, &mut xp, &sp);
                            let pl = sp.hq * sp.wq;
                            for c in 0..2 {
                                for (pi, &(py, px)) in sp.phases.iter().enumerate() {
                                    for i in 0..sp.hq {
                                        for j in 0..sp.wq {
                                            let yy = (s * i + py) as isize - p as isize;
                                            let xx = (s * j + px) as isize - p as isize;
                                            let want = if yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize {
                                                x[c * h * w + yy as usize * w + xx as usize]
                                            } else {
                                                0.0
                                            };
                                            assert_eq!(
                                                xp[c * sp.plane + pi * pl + i * sp.wq + j],
                                                want,
                                                "w{w} h{h} k{k} s{s} p{p}"
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
