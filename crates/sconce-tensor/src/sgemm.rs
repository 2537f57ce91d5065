//! An `f32` matrix product on our own AVX-512 micro-kernel (an 8×48 register tile, ~240
//! GFLOP/s per core on the Zen 5 of `docs/benchmarks.md`, near its FMA peak), with both
//! operands packed through traits ([`PackA`], [`PackB`]) so that a convolution packs straight
//! from its (padded) input and output gradient instead of materialising im2col or copies.
//!
//! Layout follows BLIS: the left operand is packed once into `MR`-row panels per `KC` block, the
//! right operand `KC×NC` block by block into `NR`-column panels, and the micro-kernel keeps the
//! 8×48 tile of `C` in 24 `zmm` registers. Used only when the CPU has AVX-512F (checked at run
//! time; `SCONCE_NO_AVX512=1` turns it off); otherwise `matmul` calls the `gemm` crate.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of the register tile (a divisor of the usual channel counts 64…2048, so that no
/// tile of a convolution is partial in its rows).
pub(crate) const MR: usize = 8;
/// `zmm` vectors per tile row.
const NV: usize = 3;
/// Columns of the register tile.
pub(crate) const NR: usize = 16 * NV;
/// Largest depth block (a `KC×NR` panel of B, 37.5 KiB, and an `MR`-row panel of A stay in a
/// 48 KiB L1). 200 rather than 192 lets depths of 8·196 (a batch of 14² maps) and 2·196 run in
/// 8 and 2 blocks instead of 9 and 3: 15 alternating runs in one process (ms, medians), batch
/// 8, the weight gradient of 1×1 1024 → 256 at 14² 2.07 → 1.91 and 1.96 → 1.92 in two runs;
/// 14 other passes (3×3 and 1×1, 7² to 125²) within ±2 %.
const KC: usize = 200;
/// Products with at most this many rows read B in place instead of packing it (see
/// [`kernel_rows`]).
const DIRECT_ROWS: usize = 32;
/// ... and with several taps of a convolution ([`Shifted`] rows: a channel's taps read three
/// rows of its plane, one panel's worth of them in L1), this many. Forwards alternating with
/// the packed path, min of 3, medians of 10 rounds, batch 8 unless given: 3×3 64 → 64 at 56²
/// 8.92 → 8.43 ms, 128 → 128 at 28² 8.31 → 7.95, 64 → 64 at 125² (batch 4) 19.61 → 17.87;
/// 256 and 512 rows (14², 62², 31²) were no faster, nor was a 1×1 with 64 rows (4.32 vs 5.39:
/// its rows are 192 whole planes apart).
const DIRECT_ROWS_TAPS: usize = 128;
/// Columns of B packed per block (the `KC×NC` block stays in L2).
const NC: usize = 768;

/// Whether the AVX-512 kernel runs on this CPU (and is not switched off by `SCONCE_NO_AVX512`).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("SCONCE_NO_AVX512").is_ok_and(|v| !v.is_empty() && v != "0");
        #[cfg(target_arch = "x86_64")]
        let cpu = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        cpu && !off
    })
}

/// A right operand that packs itself: rows `k0..k0+kc` and columns `j0..j0+nc` of the `k×n`
/// matrix B into `nc.div_ceil(NR)` consecutive panels of `kc×NR` (panel row `p` holds
/// `B[k0+p][j..j+NR]`), with zeros in the columns past `nc`.
pub(crate) trait PackB: Sync {
    /// Checks once that every element of a `k×n` product lies inside the operand.
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()>;
    /// Packs one block (see the trait); `dst` holds exactly `kc · nc.div_ceil(NR) · NR` values.
    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]);
    /// For operands whose rows can be read in place: the data, with `offs[p]` set so that
    /// `B[k0 + p][j] = data[offs[p] + j]` for `p < kc` (`offs` holds `kc` values).
    fn rows(&self, _k0: usize, _offs: &mut [usize]) -> Option<&[f32]> {
        None
    }
    /// Products with at most this many rows read B in place ([`Self::rows`]) rather than
    /// packing it.
    fn direct_rows(&self) -> usize {
        DIRECT_ROWS
    }
    /// For an operand packed ahead ([`PrePacked`]): the block [`Self::pack`] would write for
    /// `(k0, kc, j0, nc)`, read in place; `None` to pack it.
    fn prepacked(&self, _k0: usize, _kc: usize, _j0: usize, _nc: usize) -> Option<&[f32]> {
        None
    }
}

/// A right operand packed once, every block that a one-task product of all its `n` columns
/// packs ([`run`]: column blocks of `NC`, each in depth blocks), for several products with the
/// same `B`: a Winograd `V_k` that every block of output channels multiplies
/// (`winograd::Geom::forward_wide`), packed once instead of once per block.
pub(crate) struct PrePacked {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl PrePacked {
    /// `b` (`k×n`) packed.
    pub(crate) fn new<B: PackB + ?Sized>(b: &B, k: usize, n: usize) -> candle_core::Result<Self> {
        b.check(k, n)?;
        let len = n.div_ceil(NC) * k * NC.min(n.div_ceil(NR) * NR);
        let mut data = vec![0f32; len];
        for j0 in (0..n).step_by(NC) {
            let nc = NC.min(n - j0);
            for (k0, kc) in kblocks(k) {
                let at = Self::block_at(k, j0, k0, nc);
                b.pack(k0, kc, j0, nc, &mut data[at..at + kc * nc.div_ceil(NR) * NR]);
            }
        }
        Ok(Self { data, k, n })
    }

    /// Where block `(j0, k0)` starts: the column blocks before it hold `k·NC` values each.
    fn block_at(k: usize, j0: usize, k0: usize, nc: usize) -> usize {
        j0 / NC * k * NC + k0 * nc.div_ceil(NR) * NR
    }
}

impl PackB for PrePacked {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        if k != self.k || n > self.n {
            candle_core::bail!("sgemm: a {k}×{n} product of an operand packed as {}×{}", self.k, self.n);
        }
        Ok(())
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        // Blocks the packed layout does not hold as such (other column splits): element by
        // element from the same depth block (`run` cuts the depth by `kblocks(k)` too).
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    let j = j0 + jp * NR + c;
                    *v = if jp * NR + c < nc {
                        let jb = j / NC * NC;
                        let jj = j - jb;
                        let block = Self::block_at(self.k, jb, k0, NC.min(self.n - jb));
                        self.data[block + (jj / NR) * kc * NR + p * NR + jj % NR]
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    fn prepacked(&self, k0: usize, kc: usize, j0: usize, nc: usize) -> Option<&[f32]> {
        let aligned = j0.is_multiple_of(NC) && nc == NC.min(self.n - j0) && kblocks(self.k).any(|b| b == (k0, kc));
        aligned.then(|| {
            let at = Self::block_at(self.k, j0, k0, nc);
            &self.data[at..at + kc * nc.div_ceil(NR) * NR]
        })
    }
}

/// A row-major matrix seen through strides: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl Strided<'_> {
    fn check_dims(&self, rows: usize, cols: usize, what: &str) -> candle_core::Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        if last >= self.data.len() {
            candle_core::bail!("sgemm: {what} of {rows}x{cols} needs index {last}, has {}", self.data.len());
        }
        Ok(())
    }
}

impl PackB for Strided<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        self.check_dims(k, n, "right operand")
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j = j0 + jp * NR;
            let w = NR.min(j0 + nc - j);
            if self.cs == 1 {
                // SAFETY: packers only run inside `sgemm`, which checked `available()`.
                unsafe { copy_rows(panel, w, |p| &self.data[(k0 + p) * self.rs + j..]) };
            } else if self.rs == 1 {
                pack_transposed(self.data, |jj| jj * self.cs, k0, kc, j, w, panel);
            } else {
                if w < NR {
                    panel.fill(0.0);
                }
                for jj in 0..w {
                    let base = (j + jj) * self.cs + k0 * self.rs;
                    for p in 0..kc {
                        panel[p * NR + jj] = self.data[base + p * self.rs];
                    }
                }
            }
        }
    }
}

/// A right operand stored by columns: `B[k][j] = data[offs[j] + k]`. For a stride-1
/// convolution's weight gradient, `offs[c·taps + t] = c·plane + offs_t` makes B the transposed
/// im2col matrix of the padded input, read in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) offs: &'a [usize],
}

impl PackB for Columns<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        if k == 0 || n == 0 {
            return Ok(());
        }
        if self.offs.len() < n {
            candle_core::bail!("sgemm: {n} columns but {} column offsets", self.offs.len());
        }
        if self.offs[..n].iter().any(|&o| o + k > self.data.len()) {
            candle_core::bail!("sgemm: a column of {k} runs past the operand's {} values", self.data.len());
        }
        Ok(())
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j = j0 + jp * NR;
            pack_transposed(self.data, |jj| self.offs[jj], k0, kc, j, NR.min(j0 + nc - j), panel);
        }
    }
}

/// [`Columns`] of several images laid one after another along the depth, each image's depth
/// in `runs` runs of `seg` contiguous values: depth index `d = (i·runs + r)·seg + q`
/// (`r < runs`, `q < seg`) of column `j` reads `data[i·stride + r·run_stride + offs[j] + q]`.
/// A batch's weight gradient over small maps as one product (depth `N·runs·seg`) instead of
/// one per image, each of which read and wrote the whole `dW` for a depth of a few dozen
/// positions; with one run per output row, the depth holds only the output positions, not the
/// padding columns of a padded input's grid.
pub(crate) struct ImageColumns<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) offs: &'a [usize],
    pub(crate) seg: usize,
    pub(crate) runs: usize,
    pub(crate) run_stride: usize,
    pub(crate) stride: usize,
}

impl ImageColumns<'_> {
    /// Where depth index `d`'s run starts in `data` (before a column's offset), and `d`'s
    /// place in its run.
    fn run_at(&self, d: usize) -> (usize, usize) {
        run_at(d, self.seg, self.runs, self.run_stride, self.stride)
    }
}

/// Where depth index `d = (i·runs + r)·seg + q` of an operand whose depth runs over images
/// ([`ImageColumns`], [`ImageRows`]) starts its run, `i·stride + r·run_stride`, and `q`.
fn run_at(d: usize, seg: usize, runs: usize, run_stride: usize, stride: usize) -> (usize, usize) {
    let (run, q) = (d / seg, d % seg);
    ((run / runs) * stride + (run % runs) * run_stride, q)
}

/// Checks a depth of `k` that runs over images in `runs` runs of `seg` values `run_stride`
/// apart: whole images, runs that do not overlap.
fn check_runs(k: usize, seg: usize, runs: usize, run_stride: usize) -> candle_core::Result<()> {
    let per_image = seg * runs;
    if per_image == 0 || !k.is_multiple_of(per_image) {
        candle_core::bail!("sgemm: a depth of {k} is not a whole number of images of {per_image}");
    }
    // The runs start in order (`run_stride ≥ seg`), so the last run reads furthest.
    if runs > 1 && run_stride < seg {
        candle_core::bail!("sgemm: runs of {seg} values {run_stride} apart overlap");
    }
    Ok(())
}

impl PackB for ImageColumns<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        if k == 0 || n == 0 {
            return Ok(());
        }
        check_runs(k, self.seg, self.runs, self.run_stride)?;
        if self.offs.len() < n {
            candle_core::bail!("sgemm: {n} columns but {} column offsets", self.offs.len());
        }
        let (last, _) = self.run_at(k - 1);
        if self.offs[..n].iter().any(|&o| last + o + self.seg > self.data.len()) {
            candle_core::bail!("sgemm: the last image's columns run past the operand's {} values", self.data.len());
        }
        Ok(())
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j = j0 + jp * NR;
            let w = NR.min(j0 + nc - j);
            // The block's depth rows, run by run.
            let mut d = k0;
            while d < k0 + kc {
                let (start, q) = self.run_at(d);
                let len = (self.seg - q).min(k0 + kc - d);
                let rows = &mut panel[(d - k0) * NR..(d - k0 + len) * NR];
                pack_transposed(&self.data[start..], |jj| self.offs[jj], q, len, j, w, rows);
                d += len;
            }
        }
    }
}

/// Values ahead in each source row that the transposing packs ([`pack_transposed`],
/// [`ImageRows`]) ask for. 15 alternating runs in one process (ms, medians), batch 8, weight
/// gradients: 1×1 1024 → 256 at 14² 2.74 → 2.50, 256 → 64 at 56² 3.29 → 3.12, 64 → 256 at
/// 56² 3.07 → 2.95, 3×3 512 → 512 at 7² 5.63 → 5.44; 1×1 2048 → 512 at 7² even (2.34).
const PF_T: usize = 32;

/// Asks for the cache line at `p` (never faults).
#[inline]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One `kc×NR` panel from columns stored contiguously: `panel[p][c] = data[col(j + c) + k0 + p]`
/// for `c < w`, zero for `c ≥ w`; 16×16 blocks go through registers.
fn pack_transposed(
    data: &[f32],
    col: impl Fn(usize) -> usize,
    k0: usize,
    kc: usize,
    j: usize,
    w: usize,
    panel: &mut [f32],
) {
    for g in 0..NV {
        let c0 = g * 16;
        let cw = 16.min(w.saturating_sub(c0));
        let srcs: [usize; 16] = std::array::from_fn(|c| if c < cw { col(j + c0 + c) + k0 } else { 0 });
        let mut p = 0;
        if cw == 16 && srcs.iter().all(|&s| s + kc <= data.len()) {
            while p + 16 <= kc {
                // Each source row's values `PF_T` on: 16 rows per transpose, 48 per panel, are
                // more streams than the hardware prefetcher follows.
                for &s in &srcs {
                    prefetch(data.as_ptr().wrapping_add(s + p + PF_T));
                }
                // SAFETY: every source row holds `kc` values from `srcs[c]` (checked just above),
                // and rows `p..p+16`, columns `c0..c0+16` lie inside the `kc×NR` panel.
                unsafe {
                    let rows = std::array::from_fn(|c| data.as_ptr().add(srcs[c] + p));
                    transpose16(rows, panel.as_mut_ptr().add(p * NR + c0), NR, 0xffff, 16);
                }
                p += 16;
            }
            // A short last block (runs of 7 or 14 values: a small map's rows) through registers
            // too, when every source has 16 values to read from there.
            if p < kc && srcs.iter().all(|&s| s + p + 16 <= data.len()) {
                // SAFETY: every source row is readable for 16 values from `srcs[c] + p` (just
                // checked), and rows `p..kc`, columns `c0..c0+16` lie inside the panel.
                unsafe {
                    let rows = std::array::from_fn(|c| data.as_ptr().add(srcs[c] + p));
                    transpose16(rows, panel.as_mut_ptr().add(p * NR + c0), NR, 0xffff, kc - p);
                }
                p = kc;
            }
        }
        for q in p..kc {
            let row = &mut panel[q * NR + c0..q * NR + c0 + 16];
            for (c, v) in row.iter_mut().enumerate() {
                *v = if c < cw { data[srcs[c] + q] } else { 0.0 };
            }
        }
    }
}

/// Writes the first `rows` rows of the transpose of the 16×16 block whose rows start at
/// `src[i]` to `dst` (row stride `ld`), only the lanes set in `mask` of each row.
///
/// # Safety
/// Every `src[i]` is readable for 16 floats, `dst` writable for the masked lanes of `rows ≤ 16`
/// rows, and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: [*const f32; 16], dst: *mut f32, ld: usize, mask: u16, rows: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers the loads and stores.
    unsafe {
        let t = transpose16_regs(std::array::from_fn(|i| _mm512_loadu_ps(src[i])));
        for (i, &v) in t.iter().enumerate().take(rows) {
            _mm512_mask_storeu_ps(dst.add(i * ld), mask, v);
        }
    }
}

/// The transpose of the 16×16 block whose row `i` is `r[i]`: lane `j` of row `i` of the result
/// is lane `i` of `r[j]`. Four rounds of in-register shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn transpose16_regs(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (low and high pairs of each 128-bit lane).
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
    });
    // u[4i+q], lane L: column 4L+q of rows 4i..4i+4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (base, q) = (i & !3, i & 3);
        let (a, b) = (_mm512_castps_pd(t[base + (q >> 1)]), _mm512_castps_pd(t[base + 2 + (q >> 1)]));
        _mm512_castpd_ps(if q & 1 == 0 { _mm512_unpacklo_pd(a, b) } else { _mm512_unpackhi_pd(a, b) })
    });
    let mut out = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let v1 = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
        let v2 = _mm512_shuffle_f32x4::<0xdd>(u[q], u[4 + q]);
        let w1 = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
        let w2 = _mm512_shuffle_f32x4::<0xdd>(u[8 + q], u[12 + q]);
        out[q] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        out[4 + q] = _mm512_shuffle_f32x4::<0x88>(v2, w2);
        out[8 + q] = _mm512_shuffle_f32x4::<0xdd>(v1, w1);
        out[12 + q] = _mm512_shuffle_f32x4::<0xdd>(v2, w2);
    }
    out
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose16(_src: [*const f32; 16], _dst: *mut f32, _ld: usize, _mask: u16, _rows: usize) {}

/// Rows of B taken from shifted windows of planes: row `r = c·taps + t` is
/// `data[c·plane + offs[t] ..]`. For a stride-1 convolution over an input padded to `Hp×Wp`,
/// with `offs[t] = (i·dh)·Wp + j·dw` for tap `(i, j)`, this is the im2col matrix over the
/// `Hp×Wp` grid, read in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shifted<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) plane: usize,
    pub(crate) offs: &'a [usize],
}

impl PackB for Shifted<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        let taps = self.offs.len();
        if k == 0 || n == 0 {
            return Ok(());
        }
        if taps == 0 || !k.is_multiple_of(taps) {
            candle_core::bail!("sgemm: {k} rows are not a multiple of {taps} taps");
        }
        let max_off = self.offs.iter().copied().max().unwrap_or(0);
        let last = (k / taps - 1) * self.plane + max_off + n - 1;
        if last >= self.data.len() {
            candle_core::bail!("sgemm: shifted operand needs index {last}, has {}", self.data.len());
        }
        Ok(())
    }

    /// With several taps, up to [`DIRECT_ROWS_TAPS`] rows: the taps of a channel read the same
    /// few lines of its plane, so a panel's rows stay in L1 for every row tile.
    fn direct_rows(&self) -> usize {
        if self.offs.len() > 1 { DIRECT_ROWS_TAPS } else { DIRECT_ROWS }
    }

    fn rows(&self, k0: usize, offs: &mut [usize]) -> Option<&[f32]> {
        let taps = self.offs.len();
        for (p, o) in offs.iter_mut().enumerate() {
            let r = k0 + p;
            *o = (r / taps) * self.plane + self.offs[r % taps];
        }
        Some(self.data)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let taps = self.offs.len();
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j = j0 + jp * NR;
            let w = NR.min(j0 + nc - j);
            // SAFETY: packers only run inside `sgemm`, which checked `available()`.
            unsafe {
                copy_rows(panel, w, |p| {
                    let r = k0 + p;
                    &self.data[(r / taps) * self.plane + self.offs[r % taps] + j..]
                })
            };
        }
    }
}

/// [`Shifted`] rows over gathered columns: row `r = c·taps + t`, column `j` is
/// `data[c·plane + offs[t] + base[j]]`. Columns whose bases follow each other (one output row
/// of one image) are copied as runs. A batch of small maps as one product over only the
/// output positions: per image, a 7×7 map's 49 columns (61 on its padded grid) filled one
/// 48-column panel and a sliver and streamed the whole weight matrix again.
pub(crate) struct Gathered<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) plane: usize,
    pub(crate) offs: &'a [usize],
    pub(crate) base: &'a [usize],
}

impl PackB for Gathered<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        let taps = self.offs.len();
        if k == 0 || n == 0 {
            return Ok(());
        }
        if taps == 0 || !k.is_multiple_of(taps) || self.base.len() < n {
            candle_core::bail!("sgemm: {k} rows over {taps} taps, {n} columns over {} bases", self.base.len());
        }
        let max_off = self.offs.iter().copied().max().unwrap_or(0);
        let max_base = self.base[..n].iter().copied().max().unwrap_or(0);
        let last = (k / taps - 1) * self.plane + max_off + max_base;
        if last >= self.data.len() {
            candle_core::bail!("sgemm: gathered operand needs index {last}, has {}", self.data.len());
        }
        Ok(())
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let taps = self.offs.len();
        for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j = j0 + jp * NR;
            let w = NR.min(j0 + nc - j);
            // (panel column, base, length) of each run of consecutive bases.
            let mut runs = [(0usize, 0usize, 0usize); NR];
            let mut nr = 0;
            for (c, &b) in self.base[j..j + w].iter().enumerate() {
                if nr > 0 && runs[nr - 1].1 + runs[nr - 1].2 == b {
                    runs[nr - 1].2 += 1;
                } else {
                    runs[nr] = (c, b, 1);
                    nr += 1;
                }
            }
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                let r = k0 + p;
                let src = &self.data[(r / taps) * self.plane + self.offs[r % taps]..];
                for &(c0, b0, len) in &runs[..nr] {
                    row[c0..c0 + len].copy_from_slice(&src[b0..b0 + len]);
                }
                row[w..].fill(0.0);
            }
        }
    }
}

/// Row `k` of a [`CatRows`] operand: one channel of one input of a concatenation, image `i`'s
/// plane at `data[part][offset + i·stride ..]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatRow {
    pub(crate) part: usize,
    pub(crate) offset: usize,
    pub(crate) stride: usize,
}

/// The input of a 1×1 convolution over `relu(bn(cat(parts)))` without the concatenation or the
/// activation in memory: `B[k][i·p + q] = max(x·scale[k] + shift[k], 0)` (no `max` without
/// `relu`) for `x = data[part][offset + i·stride + q]` of row `k`'s [`CatRow`], applied while
/// packing. Columns run over the `images` images' `p` positions each. DenseNet's layers each
/// concatenated every earlier feature map and wrote its batch norm's output before the product
/// read it: two copies of an input that grows with every layer.
pub(crate) struct CatRows<'a> {
    pub(crate) data: &'a [&'a [f32]],
    pub(crate) rows: &'a [CatRow],
    pub(crate) p: usize,
    pub(crate) images: usize,
    pub(crate) scale: &'a [f32],
    pub(crate) shift: &'a [f32],
    pub(crate) relu: bool,
}

impl PackB for CatRows<'_> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        if k == 0 || n == 0 {
            return Ok(());
        }
        if k > self.rows.len() || k > self.scale.len() || k > self.shift.len() || n > self.images * self.p {
            candle_core::bail!(
                "sgemm: {k}x{n} product over {} rows ({} scales, {} shifts) of {} images of {}",
                self.rows.len(),
                self.scale.len(),
                self.shift.len(),
                self.images,
                self.p
            );
        }
        let last_image = (n - 1) / self.p;
        for r in &self.rows[..k] {
            let Some(d) = self.data.get(r.part) else {
                candle_core::bail!("sgemm: row of part {} of {}", r.part, self.data.len())
            };
            if r.offset + last_image * r.stride + self.p > d.len() {
                candle_core::bail!("sgemm: a concatenated row runs past its part's {} values", d.len());
            }
        }
        Ok(())
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        // SAFETY: packers only run inside `sgemm`, which checked `available()`.
        unsafe { self.pack_avx512(k0, kc, j0, nc, dst) }
    }
}

impl CatRows<'_> {
    /// [`PackB::pack`], compiled for AVX-512 so that [`affine_into`] inlines: a full row is
    /// three loads, multiply-adds, maxima and stores.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    unsafe fn pack_avx512(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        // (panel, panel column, image, position, length) of each run within one image, then row
        // by row across all panels: each row of the block is read front to back (a stream the
        // prefetcher follows), not one panel's slice of every row at a time.
        let mut runs = Vec::with_capacity(nc.div_ceil(NR) + nc.div_ceil(self.p.max(1)) + 1);
        for (jp, j) in (j0..j0 + nc).step_by(NR).enumerate() {
            let w = NR.min(j0 + nc - j);
            let mut c = 0;
            while c < w {
                let (img, q) = ((j + c) / self.p, (j + c) % self.p);
                let len = (self.p - q).min(w - c);
                runs.push((jp, c, img, q, len));
                c += len;
            }
        }
        let last = nc - (nc.div_ceil(NR) - 1) * NR;
        for pr in 0..kc {
            let k = k0 + pr;
            let r = self.rows[k];
            let src = self.data[r.part];
            let (s, t) = (self.scale[k], self.shift[k]);
            for &(jp, c0, img, q, len) in &runs {
                let row = &mut dst[(jp * kc + pr) * NR..][..NR];
                let from = &src[r.offset + img * r.stride + q..][..len];
                affine_into(&mut row[c0..c0 + len], from, s, t, self.relu);
            }
            if last < NR {
                let jp = nc.div_ceil(NR) - 1;
                dst[(jp * kc + pr) * NR + last..][..NR - last].fill(0.0);
            }
        }
    }
}

/// `dst[i] = src[i]·s + t`, then `max(·, 0)` when `relu` (NaN to 0, as the batch-norm kernels);
/// a fixed-size loop for full panel rows.
#[inline(always)]
fn affine_into(dst: &mut [f32], src: &[f32], s: f32, t: f32, relu: bool) {
    #[inline(always)]
    fn run(dst: &mut [f32], src: &[f32], s: f32, t: f32, relu: bool) {
        if relu {
            for (d, &v) in dst.iter_mut().zip(src) {
                let a = v * s + t;
                *d = if a > 0.0 { a } else { 0.0 };
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * s + t;
            }
        }
    }
    if dst.len() == NR
        && let (Some(d), Some(x)) = (dst.first_chunk_mut::<NR>(), src.first_chunk::<NR>())
    {
        run(d, x, s, t, relu);
    } else {
        run(dst, src, s, t, relu);
    }
}

/// `row[..w] = src[..w]`, zeros after: a fixed-size (inlined, vectorised) copy for full rows.
#[inline(always)]
fn copy_row(row: &mut [f32], src: &[f32], w: usize) {
    if w == NR
        && let (Ok(dst), Some(src)) = (<&mut [f32; NR]>::try_from(&mut *row), src.first_chunk::<NR>())
    {
        *dst = *src;
        return;
    }
    row[..w].copy_from_slice(&src[..w]);
    row[w..].fill(0.0);
}

/// Fills each `NR`-wide row `p` of `panel` from `src(p)` ([`copy_row`]), compiled for AVX-512
/// so that full rows are three register moves rather than a `memcpy` call.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn copy_rows<'a>(panel: &mut [f32], w: usize, src: impl Fn(usize) -> &'a [f32]) {
    for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
        copy_row(row, src(p), w);
    }
}

thread_local! {
    static APACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BPACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's reusable 64-byte-aligned buffer of `len` floats (contents
/// unspecified). A nested call on the same thread gets a fresh buffer.
fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.with(|c| c.take());
    if buf.len() < len + 16 {
        buf = vec![0.0; len + 16];
    }
    let off = buf.as_ptr().align_offset(64).min(16);
    let r = f(&mut buf[off..off + len]);
    key.with(|c| {
        let mut cur = c.borrow_mut();
        if cur.len() < buf.len() {
            *cur = buf;
        }
    });
    r
}

/// The depth blocks `(start, len)`: `k` cut into equal blocks of at most `KC`.
pub(crate) fn kblocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let nb = k.div_ceil(KC).max(1);
    let base = k.div_ceil(nb);
    (0..nb).map(move |b| (b * base, base.min(k.saturating_sub(b * base)))).filter(|&(_, l)| l > 0)
}

/// A left operand that packs itself: rows `k0..k0 + kc` of every `MR`-row panel of the `m×k`
/// matrix A (see [`pack_a`]).
pub(crate) trait PackA: Sync {
    /// Checks once that every element of an `m×k` operand lies inside the data.
    fn check(&self, m: usize, k: usize) -> candle_core::Result<()>;
    /// Packs depth block `(k0, kc)` into `block` (`m.div_ceil(MR)` panels of `kc×MR`).
    fn pack_block(&self, m: usize, k0: usize, kc: usize, block: &mut [f32]);
}

impl PackA for Strided<'_> {
    fn check(&self, m: usize, k: usize) -> candle_core::Result<()> {
        self.check_dims(m, k, "left operand")
    }

    fn pack_block(&self, m: usize, k0: usize, kc: usize, block: &mut [f32]) {
        pack_a_block(m, k0, kc, self, block);
    }
}

/// A left operand whose depth runs over images in runs of `seg` contiguous values: depth index
/// `d = (i·runs + r)·seg + q` (`r < runs`, `q < seg`) of row `ii` reads
/// `data[i·stride + r·run_stride + ii·rs + q]`. The output gradient of a batch, `O` rows of
/// `N·OH·OW` depth (a batched weight gradient), read in place from `[N, O, …]` planes instead of
/// copied into one `O × N·OH·OW` matrix first (a serial copy of the whole gradient).
pub(crate) struct ImageRows<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) seg: usize,
    pub(crate) runs: usize,
    pub(crate) run_stride: usize,
    pub(crate) stride: usize,
}

impl ImageRows<'_> {
    /// Where depth index `d`'s run starts in `data` (row 0), and `d`'s place in its run.
    fn run_at(&self, d: usize) -> (usize, usize) {
        run_at(d, self.seg, self.runs, self.run_stride, self.stride)
    }
}

impl PackA for ImageRows<'_> {
    fn check(&self, m: usize, k: usize) -> candle_core::Result<()> {
        if m == 0 || k == 0 {
            return Ok(());
        }
        check_runs(k, self.seg, self.runs, self.run_stride)?;
        // The runs start in order, so the last row of the last run reads furthest.
        let (last, _) = self.run_at(k - 1);
        if last + (m - 1) * self.rs + self.seg > self.data.len() {
            candle_core::bail!("sgemm: the last image's rows run past the operand's {} values", self.data.len());
        }
        Ok(())
    }

    fn pack_block(&self, m: usize, k0: usize, kc: usize, block: &mut [f32]) {
        for (ip, panel) in block.chunks_exact_mut(kc * MR).enumerate() {
            let i0 = ip * MR;
            let h = MR.min(m - i0);
            if h < MR {
                panel.fill(0.0);
            }
            let mut d = k0;
            while d < k0 + kc {
                let (start, q) = self.run_at(d);
                let len = (self.seg - q).min(k0 + kc - d);
                let base = start + i0 * self.rs + q;
                let out = &mut panel[(d - k0) * MR..(d - k0 + len) * MR];
                let mut p = 0;
                if h == MR {
                    // 16 depth steps of the 8 rows at a time (rows 8..15 repeat rows 0..7, each
                    // output row cut to its first 8 lanes), the run's tail as a partial block
                    // where 16 values can be read.
                    let srcs: [usize; 16] = std::array::from_fn(|r| base + (r % MR) * self.rs);
                    while p < len {
                        let rows = (len - p).min(16);
                        if srcs.iter().any(|&s| s + p + 16 > self.data.len()) {
                            break;
                        }
                        // The next rows' lines ahead of the transposes (see [`PF_T`]).
                        for &s in &srcs[..MR] {
                            prefetch(self.data.as_ptr().wrapping_add(s + p + PF_T));
                        }
                        // SAFETY: each row is readable for 16 values from `srcs[r] + p`
                        // (checked); `rows` output rows of `MR` lanes lie in `out`.
                        unsafe {
                            let ptrs = std::array::from_fn(|r| self.data.as_ptr().add(srcs[r] + p));
                            transpose16(ptrs, out.as_mut_ptr().add(p * MR), MR, 0x00ff, rows);
                        }
                        p += rows;
                    }
                }
                for ii in 0..h {
                    let row = &self.data[base + ii * self.rs..];
                    for qq in p..len {
                        out[qq * MR + ii] = row[qq];
                    }
                }
                d += len;
            }
        }
    }
}

/// Packs the `m×k` left operand: for each depth block, `m.div_ceil(MR)` panels of `kc×MR`
/// (panel row `p` holds `A[i..i+MR][k0+p]`), zero rows past `m`. Block `b` starts at `k0·mp`.
fn pack_a<A: PackA + ?Sized>(m: usize, k: usize, a: &A, dst: &mut [f32]) {
    let mp = m.div_ceil(MR) * MR;
    for (k0, kc) in kblocks(k) {
        a.pack_block(m, k0, kc, &mut dst[k0 * mp..(k0 + kc) * mp]);
    }
}

/// [`pack_a`] with the depth blocks spread over rayon's pool when the operand is large (a
/// layer's weights: 2.4 M values for a 3×3 512-channel convolution, packed on one core while
/// the other waited).
fn pack_a_par<A: PackA + ?Sized>(m: usize, k: usize, a: &A, dst: &mut [f32]) {
    if m * k < 1 << 16 || rayon::current_num_threads() < 2 {
        pack_a(m, k, a, dst);
        return;
    }
    let mp = m.div_ceil(MR) * MR;
    let mut jobs = Vec::new();
    let mut rest = dst;
    for (k0, kc) in kblocks(k) {
        let (block, tail) = rest.split_at_mut(kc * mp);
        jobs.push((k0, kc, block));
        rest = tail;
    }
    jobs.into_par_iter().for_each(|(k0, kc, block)| a.pack_block(m, k0, kc, block));
}

/// One depth block of [`pack_a`]: rows `k0..k0 + kc` of every panel, into `block`.
fn pack_a_block(m: usize, k0: usize, kc: usize, a: &Strided<'_>, block: &mut [f32]) {
    for (ip, panel) in block.chunks_exact_mut(kc * MR).enumerate() {
        let i0 = ip * MR;
        let h = MR.min(m - i0);
        if h < MR {
            panel.fill(0.0);
        }
        let mut p = 0;
        if a.rs == 1 && a.cs >= h {
            // A transposed (a weight matrix read as `Wᵀ` for an input gradient): each depth
            // step's `h` values lie side by side. Copied as runs instead of gathered row by
            // row with stride `cs` (11 % of the samples of a 1×1 2048 → 512 at 7², batch 8):
            // its forward + backward 9.0 → 7.6 ms.
            let steps = panel.as_chunks_mut::<MR>().0;
            if h == MR && (k0 + kc - 1) * a.cs + i0 + MR <= a.data.len() {
                // Whole runs in a loop of their own: a fixed-length copy of 8 values is two
                // moves; in one loop with the partial runs below, LLVM merged both into a call
                // to `memcpy` per run.
                for (q, dst) in steps.iter_mut().enumerate() {
                    let s = (k0 + q) * a.cs + i0;
                    if let Some(run) = a.data.get(s..s + MR).and_then(|r| <&[f32; MR]>::try_from(r).ok()) {
                        *dst = *run;
                    }
                }
            } else {
                for (q, dst) in steps.iter_mut().enumerate() {
                    let s = (k0 + q) * a.cs + i0;
                    dst[..h].copy_from_slice(&a.data[s..s + h]);
                }
            }
            continue;
        }
        if h == MR && a.cs == 1 {
            // 16 columns of the 8 rows at a time: the 16×16 transpose with rows 8..15
            // repeating rows 0..7, each output row cut to its first 8 lanes.
            let srcs: [usize; 16] = std::array::from_fn(|r| (i0 + r % MR) * a.rs + k0);
            if srcs.iter().all(|&s| s + kc <= a.data.len()) {
                while p + 16 <= kc {
                    // SAFETY: each row holds `kc` values from `srcs[r]` (checked above); the
                    // 16 masked rows of 8 lanes fill `panel[p·MR..(p+16)·MR]`.
                    unsafe {
                        let rows = std::array::from_fn(|r| a.data.as_ptr().add(srcs[r] + p));
                        transpose16(rows, panel.as_mut_ptr().add(p * MR), MR, 0x00ff, 16);
                    }
                    p += 16;
                }
            }
        }
        for ii in 0..h {
            let base = (i0 + ii) * a.rs + k0 * a.cs;
            if a.cs == 1 {
                for (q, &v) in a.data[base + p..base + kc].iter().enumerate() {
                    panel[(p + q) * MR + ii] = v;
                }
            } else {
                for q in p..kc {
                    panel[q * MR + ii] = a.data[base + q * a.cs];
                }
            }
        }
    }
}

/// The product's output: initialised floats, or memory the product overwrites completely
/// (only without `accumulate`), so a fresh output needs no zeroing pass.
pub(crate) enum Out<'a> {
    Init(&'a mut [f32]),
    Uninit(&'a mut [MaybeUninit<f32>]),
}

impl<'a> From<&'a mut [f32]> for Out<'a> {
    fn from(c: &'a mut [f32]) -> Self {
        Out::Init(c)
    }
}

impl<'a> From<&'a mut [MaybeUninit<f32>]> for Out<'a> {
    fn from(c: &'a mut [MaybeUninit<f32>]) -> Self {
        Out::Uninit(c)
    }
}

/// Where a product's logical columns land in its output rows: a convolution on a padded grid
/// computes `wq` columns per output row, of which the first `ow` are kept. Logical column
/// `g` is output column `(g / wq)·rs + g % wq`, and is dropped when `g % wq ≥ ow`. The tiles
/// write straight into the compact output instead of a grid that is then copied (a full
/// read and write of the output per convolution). With `rs = ow` ([`Grid::compact`]) the
/// kept runs of a row follow each other; with `rs ≥ m·ldc` ([`Grid::images`]) each run goes
/// to its own block of all `m` rows: a product over several images' positions writing each
/// image's `[m][ow]` block of the output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub(crate) wq: usize,
    pub(crate) ow: usize,
    pub(crate) rs: usize,
}

impl Grid {
    /// Rows of `wq` logical columns, the first `ow` kept, one after another.
    pub(crate) fn compact(wq: usize, ow: usize) -> Self {
        Self { wq, ow, rs: ow }
    }

    /// Runs of `p` columns (one image's positions), run `r` at output column `r·block`.
    pub(crate) fn images(p: usize, block: usize) -> Self {
        Self { wq: p, ow: p, rs: block }
    }

    /// Output columns per row for `n` logical columns.
    fn physical(self, n: usize) -> usize {
        if n == 0 { 0 } else { (n - 1) / self.wq * self.rs + ((n - 1) % self.wq).min(self.ow - 1) + 1 }
    }
}

/// Where one 16-lane vector of a tile row goes in a [`Grid`] output: lanes of `mask[s]` at
/// `row + off[s] + lane` (`s = 0`: the lanes in the first grid row, `s = 1`: those in the next;
/// dropped columns in neither mask).
#[derive(Clone, Copy, Default)]
struct VecDst {
    off: [isize; 2],
    mask: [u16; 2],
}

impl Grid {
    /// The destinations of the `16·V` columns from logical column `j` (all inside the
    /// product), or `None` when a vector can span more than two grid rows (`wq < 16`).
    fn vec_dsts<const V: usize>(self, j: usize) -> Option<[VecDst; V]> {
        let Grid { wq, ow, rs } = self;
        if wq < 16 {
            return None;
        }
        let mut out = [VecDst::default(); V];
        for (v, d) in out.iter_mut().enumerate() {
            let g0 = j + 16 * v;
            let (r, c0) = (g0 / wq, g0 % wq);
            // Lanes before `b` lie in grid row `r`, the others in row `r + 1` (column `l − b`).
            let b = (wq - c0).min(16);
            let lanes =
                |lo: usize, hi: usize| -> u16 { if hi <= lo { 0 } else { (((1u32 << (hi - lo)) - 1) << lo) as u16 } };
            if c0 < ow {
                d.off[0] = (r * rs + c0) as isize;
                d.mask[0] = lanes(0, b.min(ow - c0));
            }
            if b < 16 {
                d.off[1] = ((r + 1) * rs) as isize - b as isize;
                d.mask[1] = lanes(b, 16.min(b + ow));
            }
        }
        Some(out)
    }
}

/// A `*mut f32` that rayon tasks may share: each task writes a disjoint set of columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32, Option<Grid>);
// SAFETY: tasks write disjoint column ranges of the output (see `sgemm`), never the same element.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// `C[m×n] (+)= A[m×k] · B[k×n]` with `C` row-major (row stride `ldc`), `A` and `B` packing
/// themselves. `threads > 1` splits the columns over rayon's pool.
///
/// # Errors
/// When an operand is shorter than its shape needs (an internal bug; never UB), or when the
/// CPU lacks AVX-512 (callers check [`available`] first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm<'c, A: PackA + ?Sized, B: PackB + ?Sized>(
    m: usize,
    n: usize,
    k: usize,
    c: impl Into<Out<'c>>,
    ldc: usize,
    accumulate: bool,
    a: &A,
    b: &B,
    threads: usize,
) -> candle_core::Result<()> {
    let Some(out) = prepare(m, n, k, c.into(), ldc, accumulate, None)? else { return Ok(()) };
    a.check(m, k)?;
    b.check(k, n)?;
    let mp = m.div_ceil(MR) * MR;
    if threads <= 1 && mp * k > LAZY_A_VALUES && k > KC {
        // A long left operand (a weight gradient's `dY` over a 56² image: 256 × 3136 values)
        // packed block by block right before its products, from L2, instead of all of it
        // first: packed whole it went out to L3 and back. 15 alternating runs in one process
        // (ms, medians), batch 8: the weight gradient of 1×1 64 → 256 at 56² 3.54 → 2.89,
        // 128 → 512 at 28² 2.36 → 2.14; 3×3 layers (Winograd's products) within ±2 %.
        with_buf(&APACK, mp * KC, |apack| {
            for (k0, kc) in kblocks(k) {
                let block = &mut apack[..mp * kc];
                a.pack_block(m, k0, kc, block);
                let b = DepthFrom { b, k0 };
                product(m, n, kc, out, ldc, accumulate || k0 > 0, ALeft::packed(block), &b, 1);
            }
        });
        return Ok(());
    }
    with_buf(&APACK, mp * k, |apack| {
        if threads > 1 {
            pack_a_par(m, k, a, apack);
        } else {
            pack_a(m, k, a, apack);
        }
        product(m, n, k, out, ldc, accumulate, ALeft::packed(apack), b, threads);
    });
    Ok(())
}

/// Packed left operands larger than this many values are packed one depth block at a time by
/// a one-task [`sgemm`] (512 KiB: half of a core's L2).
const LAZY_A_VALUES: usize = 1 << 17;

/// Rows `k0..` of a right operand: depth block `(k0', kc)` of the view is `(k0 + k0', kc)` of
/// `b` (one depth block of a product run on its own).
struct DepthFrom<'a, B: ?Sized> {
    b: &'a B,
    k0: usize,
}

impl<B: PackB + ?Sized> PackB for DepthFrom<'_, B> {
    fn check(&self, k: usize, n: usize) -> candle_core::Result<()> {
        self.b.check(self.k0 + k, n)
    }

    fn pack(&self, k0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        self.b.pack(self.k0 + k0, kc, j0, nc, dst);
    }

    fn rows(&self, k0: usize, offs: &mut [usize]) -> Option<&[f32]> {
        self.b.rows(self.k0 + k0, offs)
    }

    fn direct_rows(&self) -> usize {
        self.b.direct_rows()
    }

    fn prepacked(&self, k0: usize, kc: usize, j0: usize, nc: usize) -> Option<&[f32]> {
        self.b.prepacked(self.k0 + k0, kc, j0, nc)
    }
}

/// A left operand packed once for several products (a convolution's weights, shared by every
/// image of the batch), or, rows along the depth and long enough ([`IN_PLACE_MIN_DEPTH`]),
/// read in place by every product.
pub(crate) struct PackedA<'a> {
    /// A buffer from [`APOOL`] of at least `len` values; the packed operand is `data[..len]`.
    data: Vec<f32>,
    len: usize,
    m: usize,
    k: usize,
    /// Or read in place: the operand's values and its row stride.
    in_place: Option<(&'a [f32], usize)>,
}

/// Fewest values per row for which a left operand with rows along the depth (a layer's
/// weights for its forward pass) is read in place by the micro-kernel instead of packed, when
/// it has more rows than any product reads B in place for ([`DIRECT_ROWS_TAPS`]) and whole
/// panels of them. Packing such weights is a pass over all of them per call, and it waited on
/// memory: 15 alternating runs in one process (ms, medians), batch 8, forward 1×1 2048 → 512
/// at 7² 2.18 → 2.00 and (a slower phase of the VM) 2.83 → 2.16, 512 → 2048 2.14 → 1.94 and
/// 2.77 → 2.17, 1024 → 256 at 14² 1.90 → 1.94 and 2.20 → 1.96; candle's `fwd_bwd` of 2048 → 512
/// 7.94 → 7.19, of 1024 → 256 7.28 → 7.04; ResNet50's stride-2 3×3 512 → 512 at 14² (direct,
/// depth 4608) forward 6.48 → 5.23, `fwd_bwd` 20.97 → 19.31. Shorter rows gained nothing
/// (512 → 128 at 28²: 2.26 vs 2.27) or lost (3×3 direct over 16 and 24 channels, depth 144 and
/// 216: +2 %).
const IN_PLACE_MIN_DEPTH: usize = 512;

/// Buffers kept per thread for [`PackedA`]: a convolution packs its weights on every call (for
/// ResNet50's forward pass 100 MB), and a fresh zeroed buffer each time cost a memset as long
/// as the packing (2 % of an inference step).
const APOOL_MAX: usize = 4;
/// ... holding at most this many values in all (64 MiB per thread).
const APOOL_MAX_VALUES: usize = 1 << 24;

thread_local! {
    static APOOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

impl<'a> PackedA<'a> {
    /// Packs the `m×k` operand `a`, or keeps it to be read in place ([`IN_PLACE_MIN_DEPTH`]).
    ///
    /// # Errors
    /// When `a` is shorter than `m×k` needs.
    pub(crate) fn new(m: usize, k: usize, a: &Strided<'a>) -> candle_core::Result<Self> {
        a.check_dims(m, k, "left operand")?;
        if a.cs == 1 && m > DIRECT_ROWS_TAPS && k >= IN_PLACE_MIN_DEPTH && m.is_multiple_of(MR) {
            return Ok(PackedA { data: Vec::new(), len: 0, m, k, in_place: Some((a.data, a.rs)) });
        }
        let len = packed_a_len(m, k);
        // The smallest pooled buffer that is large enough, else a new one.
        let pooled = APOOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let best = (0..pool.len()).filter(|&i| pool[i].len() >= len).min_by_key(|&i| pool[i].len());
            best.map(|i| pool.swap_remove(i))
        });
        let mut data = pooled.unwrap_or_else(|| vec![0f32; len]);
        pack_a_par(m, k, a, &mut data[..len]);
        Ok(PackedA { data, len, m, k, in_place: None })
    }

    /// The packed operand, or the operand itself when it is read in place.
    fn packed(&self) -> &[f32] {
        match self.in_place {
            Some((data, _)) => data,
            None => &self.data[..self.len],
        }
    }
}

impl Drop for PackedA<'_> {
    /// Returns the buffer to this thread's pool, which keeps the largest [`APOOL_MAX`] up to
    /// [`APOOL_MAX_VALUES`] in all (at thread exit the buffer is simply freed).
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.is_empty() || data.len() > APOOL_MAX_VALUES {
            return;
        }
        let _ = APOOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() >= APOOL_MAX {
                // Replace the smallest buffer if this one is larger.
                match (0..pool.len()).min_by_key(|&i| pool[i].len()) {
                    Some(i) if pool[i].len() < data.len() => {
                        pool.swap_remove(i);
                    }
                    _ => return,
                }
            }
            pool.push(data);
            // Then drop the smallest buffers until the pool fits its budget.
            while pool.iter().map(Vec::len).sum::<usize>() > APOOL_MAX_VALUES {
                match (0..pool.len()).min_by_key(|&i| pool[i].len()) {
                    Some(i) => {
                        pool.swap_remove(i);
                    }
                    None => break,
                }
            }
        });
    }
}

/// Values of an `m×k` left operand in the packed layout: per depth block `(k0, kc)` of
/// [`kblocks`], at `k0·mp` (`mp` = `m` rounded up to [`MR`]), panels of `MR` rows, panel `ip`'s
/// value `(ip·MR + ii, k0 + q)` at `ip·kc·MR + q·MR + ii` (rows past `m` zero).
pub(crate) fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * MR * k
}

/// A left operand packed by its owner in [`packed_a_len`]'s layout (several operands in one
/// buffer: Winograd's 16 transformed filter matrices).
#[derive(Clone, Copy)]
pub(crate) struct PackedView<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
}

/// A product's left operand as the micro-kernel reads it: packed ([`packed_a_len`]'s layout),
/// or in place with row `i` at depth `d` at `data[i·ra + d]` (`ra = Some(..)`).
#[derive(Clone, Copy)]
struct ALeft<'a> {
    data: &'a [f32],
    ra: Option<usize>,
}

impl<'a> ALeft<'a> {
    fn packed(data: &'a [f32]) -> Self {
        ALeft { data, ra: None }
    }
}

/// [`sgemm_packed`] with a [`PackedView`].
///
/// # Errors
/// As [`sgemm_packed`], and for a view whose length is not [`packed_a_len`].
pub(crate) fn sgemm_packed_view<'c, B: PackB + ?Sized>(
    n: usize,
    c: impl Into<Out<'c>>,
    ldc: usize,
    accumulate: bool,
    a: PackedView<'_>,
    b: &B,
    threads: usize,
) -> candle_core::Result<()> {
    if a.data.len() != packed_a_len(a.m, a.k) {
        candle_core::bail!("sgemm: {} packed values for a {}×{} operand", a.data.len(), a.m, a.k);
    }
    packed_product(n, c.into(), ldc, accumulate, (a.m, a.k, ALeft::packed(a.data)), b, threads, None)
}

/// [`sgemm`] with a left operand packed beforehand.
///
/// # Errors
/// As [`sgemm`].
pub(crate) fn sgemm_packed<'c, B: PackB + ?Sized>(
    n: usize,
    c: impl Into<Out<'c>>,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: &B,
    threads: usize,
) -> candle_core::Result<()> {
    sgemm_packed_grid(n, c, ldc, accumulate, a, b, threads, None)
}

/// [`sgemm_packed`] with the logical columns mapped onto the output rows by `grid` (see
/// [`Grid`]; `ldc` then bounds the output columns, `grid.physical(n)`).
///
/// # Errors
/// As [`sgemm_packed`], and for a grid with `ow = 0` or `ow > wq`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_packed_grid<'c, B: PackB + ?Sized>(
    n: usize,
    c: impl Into<Out<'c>>,
    ldc: usize,
    accumulate: bool,
    a: &PackedA,
    b: &B,
    threads: usize,
    grid: Option<Grid>,
) -> candle_core::Result<()> {
    if let Some(g) = grid
        && (g.ow == 0 || g.ow > g.wq || g.rs < g.ow)
    {
        candle_core::bail!("sgemm: grid {g:?} keeps no or too many columns, or overlaps its runs");
    }
    let left = ALeft { data: a.packed(), ra: a.in_place.map(|(_, ra)| ra) };
    packed_product(n, c.into(), ldc, accumulate, (a.m, a.k, left), b, threads, grid)
}

/// The product of an `m×k` left operand packed beforehand (or read in place) and `b` into `c`
/// (see [`sgemm_packed_grid`]).
#[allow(clippy::too_many_arguments)]
fn packed_product<B: PackB + ?Sized>(
    n: usize,
    c: Out<'_>,
    ldc: usize,
    accumulate: bool,
    (m, k, a): (usize, usize, ALeft<'_>),
    b: &B,
    threads: usize,
    grid: Option<Grid>,
) -> candle_core::Result<()> {
    let Some(out) = prepare(m, n, k, c, ldc, accumulate, grid)? else { return Ok(()) };
    b.check(k, n)?;
    product(m, n, k, out, ldc, accumulate, a, b, threads);
    Ok(())
}

/// Checks the output and handles the empty cases (zeros for `k = 0`); `Some(output)` when there
/// is a product to compute.
fn prepare(
    m: usize,
    n: usize,
    k: usize,
    c: Out<'_>,
    ldc: usize,
    accumulate: bool,
    grid: Option<Grid>,
) -> candle_core::Result<Option<SharedOut>> {
    if !available() {
        candle_core::bail!("sgemm: this CPU has no AVX-512F");
    }
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let (c_ptr, c_len, init) = match c {
        Out::Init(c) => (c.as_mut_ptr(), c.len(), true),
        Out::Uninit(c) => (c.as_mut_ptr().cast::<f32>(), c.len(), false),
    };
    if accumulate && !init {
        candle_core::bail!("sgemm: cannot accumulate into uninitialised memory");
    }
    let cols = grid.map_or(n, |g| g.physical(n));
    // The rows' outputs must not overlap: each row's columns before the next row, or (a grid
    // of separate runs) each run's `m` rows of `ow` before the next run.
    let apart = match grid {
        Some(g) if g.rs != g.ow => ldc >= g.ow && g.rs >= m * ldc,
        _ => ldc >= cols,
    };
    if !apart || c_len < (m - 1) * ldc + cols {
        candle_core::bail!("sgemm: output of {c_len} (row stride {ldc}) for {m}x{n} ({cols} output columns)");
    }
    if k == 0 {
        if !accumulate {
            // The kept columns: runs of at most `ow` from each grid row's start.
            let (wq, ow, rs) = grid.map_or((n, n, n), |g| (g.wq, g.ow, g.rs));
            for i in 0..m {
                for r in 0..n.div_ceil(wq) {
                    let len = ow.min(n - r * wq);
                    // SAFETY: the run ends at or before row `i`'s last output column, inside
                    // the `c_len` checked above.
                    unsafe { std::ptr::write_bytes(c_ptr.add(i * ldc + r * rs), 0, len) };
                }
            }
        }
        return Ok(None);
    }
    Ok(Some(SharedOut(c_ptr, grid)))
}

/// The product proper, columns split over `threads` rayon tasks.
#[allow(clippy::too_many_arguments)]
fn product<B: PackB + ?Sized>(
    m: usize,
    n: usize,
    k: usize,
    out: SharedOut,
    ldc: usize,
    accumulate: bool,
    apack: ALeft<'_>,
    b: &B,
    threads: usize,
) {
    let tasks = if threads > 1 { threads.min(n.div_ceil(2 * NR)) } else { 1 };
    let all = 0..m.div_ceil(MR);
    if tasks <= 1 {
        // SAFETY: `prepare` bounded every index `run` writes by `(m−1)·ldc + n`, `b.check`
        // passed, and `apack` is `pack_a`'s output for `m×k`.
        unsafe { run(m, k, 0, n, all, out, ldc, accumulate, apack, b) };
        return;
    }
    let (full, sliver) = (n / NR, n % NR);
    if (1..=16).contains(&sliver) && full.is_multiple_of(tasks) && all.end >= tasks {
        // Whole panels split evenly, and the last sliver of columns (≤ 16) split by rows: its
        // one-vector tiles cost about a third of a whole one each, so 392 columns (8 images of
        // 7×7) split on vectors, 208 | 184, left one task a third of a panel behind.
        (0..tasks).into_par_iter().for_each(|t| {
            let (lo, hi) = (t * full / tasks * NR, (t + 1) * full / tasks * NR);
            let rows = t * all.end / tasks..(t + 1) * all.end / tasks;
            // SAFETY: as above; tasks own disjoint column ranges `[lo, hi)` of whole panels,
            // and disjoint row panels `rows` of the sliver's columns `[full·NR, n)`.
            unsafe {
                run(m, k, lo, hi, all.clone(), out, ldc, accumulate, apack, b);
                run(m, k, full * NR, n, rows, out, ldc, accumulate, apack, b);
            }
        });
        return;
    }
    // Task boundaries on 16-column vectors, not whole panels: 392 columns (a batch of 7×7
    // maps) split 240 | 152 by panels left one core idle a sixth of the time.
    let bound = |t: usize| if t == tasks { n } else { (t * n / tasks).div_ceil(16) * 16 };
    (0..tasks).into_par_iter().for_each(|t| {
        let (lo, hi) = (bound(t), bound(t + 1).min(n));
        if lo < hi {
            // SAFETY: as above; tasks own disjoint column ranges `[lo, hi)`.
            unsafe { run(m, k, lo, hi, all.clone(), out, ldc, accumulate, apack, b) };
        }
    });
}

/// Columns `[j_lo, j_hi)` of the row panels `row_panels` (rows `ip·MR..(ip + 1)·MR`, cut at
/// `m`) of the product into `c`.
///
/// # Safety
/// `c` must be valid for writes at `i·ldc + j` for `i < m`, `j < j_hi` (with a [`Grid`] in `c`:
/// `j < grid.physical(j_hi)`), with no other writer to those rows and columns; `apack` is
/// `pack_a`'s output for `m×k`; `b.check(k, n)` passed with `n ≥ j_hi`; the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
unsafe fn run<B: PackB + ?Sized>(
    m: usize,
    k: usize,
    j_lo: usize,
    j_hi: usize,
    row_panels: std::ops::Range<usize>,
    c: SharedOut,
    ldc: usize,
    accumulate: bool,
    a: ALeft<'_>,
    b: &B,
) {
    let mp = m.div_ceil(MR) * MR;
    // Row panel `ip` of depth block `(k0, kc)`, and A's row stride (0: packed).
    let a_at = |ip: usize, k0: usize, kc: usize| -> (*const f32, usize) {
        match a.ra {
            None => (a.data[k0 * mp + ip * kc * MR..].as_ptr(), 0),
            Some(ra) => (a.data[ip * MR * ra + k0..].as_ptr(), ra),
        }
    };
    let width = NC.min((j_hi - j_lo).div_ceil(NR) * NR);
    let mut roffs = [0usize; KC];
    let direct_rows = b.direct_rows();
    with_buf(&BPACK, KC * width, |bpack| {
        let mut jc = j_lo;
        while jc < j_hi {
            let nc = NC.min(j_hi - jc);
            let panels = nc.div_ceil(NR);
            for (k0, kc) in kblocks(k) {
                let overwrite = k0 == 0 && !accumulate;
                // Few rows: full panels read B in place, only a narrow last panel is packed.
                if m <= direct_rows
                    && a.ra.is_none()
                    && let Some(data) = b.rows(k0, &mut roffs[..kc])
                    && roffs[..kc].iter().all(|&o| o + j_hi <= data.len())
                {
                    for jp in 0..panels {
                        let j = jc + jp * NR;
                        let cols = NR.min(nc - jp * NR);
                        if cols < NR {
                            let bp = &mut bpack[..kc * NR];
                            b.pack(k0, kc, j, cols, bp);
                            for ip in row_panels.clone() {
                                let (ap, ra) = a_at(ip, k0, kc);
                                let rows = MR.min(m - ip * MR);
                                // SAFETY: as in the packed loop below.
                                unsafe {
                                    tile_at(kc, ap, ra, bp.as_ptr(), c, ip * MR, ldc, j, rows, cols, overwrite);
                                }
                            }
                            continue;
                        }
                        for ip in row_panels.clone() {
                            let (ap, ra) = a_at(ip, k0, kc);
                            let rows = MR.min(m - ip * MR);
                            // SAFETY: every row offset plus `j + NR ≤ j_hi` lies inside `data`
                            // (checked for this block above); the tile lies in the caller's columns.
                            unsafe {
                                if rows == MR {
                                    let bj = data.as_ptr().add(j);
                                    let row = c.0.add(ip * MR * ldc);
                                    match c.1.map(|g| (g, g.vec_dsts::<NV>(j))) {
                                        None => {
                                            kernel_rows(kc, ap, bj, roffs.as_ptr(), row.add(j), ldc, overwrite, None)
                                        }
                                        Some((_, Some(d))) => {
                                            kernel_rows(kc, ap, bj, roffs.as_ptr(), row, ldc, overwrite, Some(&d))
                                        }
                                        Some((grid, None)) => {
                                            let mut buf = [0f32; MR * NR];
                                            kernel_rows(kc, ap, bj, roffs.as_ptr(), buf.as_mut_ptr(), NR, true, None);
                                            scatter(&buf, row, ldc, j, MR, NR, grid, overwrite);
                                        }
                                    }
                                } else {
                                    let bp = &mut bpack[..kc * NR];
                                    b.pack(k0, kc, j, cols, bp);
                                    tile_at(kc, ap, ra, bp.as_ptr(), c, ip * MR, ldc, j, rows, cols, overwrite);
                                }
                            }
                        }
                    }
                    continue;
                }
                let bp: &[f32] = match b.prepacked(k0, kc, jc, nc) {
                    Some(p) if p.len() >= kc * panels * NR => p,
                    _ => {
                        let bp = &mut bpack[..kc * panels * NR];
                        b.pack(k0, kc, jc, nc, bp);
                        bp
                    }
                };
                for jp in 0..panels {
                    let cols = NR.min(nc - jp * NR);
                    let bpanel = bp[jp * kc * NR..].as_ptr();
                    for ip in row_panels.clone() {
                        let (ap, ra) = a_at(ip, k0, kc);
                        let rows = MR.min(m - ip * MR);
                        // SAFETY: the panels hold `kc·MR` and `kc·NR` values; the tile's
                        // `rows×cols` elements lie in the caller's columns (see `run`'s contract).
                        unsafe {
                            tile_at(kc, ap, ra, bpanel, c, ip * MR, ldc, jc + jp * NR, rows, cols, overwrite);
                        }
                    }
                }
            }
            jc += nc;
        }
    });
}

/// [`tile`] at output row `row0`, logical column `j`: through [`scatter`] when the output is a
/// [`Grid`].
///
/// # Safety
/// As [`tile`], for the tile's elements of `c` after the grid mapping.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile_at(
    kc: usize,
    a: *const f32,
    ra: usize,
    b: *const f32,
    c: SharedOut,
    row0: usize,
    ldc: usize,
    j: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match c.1 {
            None => tile(kc, a, ra, b, c.0.add(row0 * ldc + j), ldc, rows, cols, overwrite),
            Some(grid) => {
                let row = c.0.add(row0 * ldc);
                let full = rows == MR && cols.is_multiple_of(16);
                match cols / 16 {
                    1 if full && let Some(d) = grid.vec_dsts::<1>(j) => {
                        if ra > 0 {
                            kernel::<1, true>(kc, a, ra, b, row, ldc, overwrite, Some(&d))
                        } else {
                            kernel::<1, false>(kc, a, 0, b, row, ldc, overwrite, Some(&d))
                        }
                    }
                    2 if full && let Some(d) = grid.vec_dsts::<2>(j) => {
                        if ra > 0 {
                            kernel::<2, true>(kc, a, ra, b, row, ldc, overwrite, Some(&d))
                        } else {
                            kernel::<2, false>(kc, a, 0, b, row, ldc, overwrite, Some(&d))
                        }
                    }
                    NV if full && let Some(d) = grid.vec_dsts::<NV>(j) => {
                        if ra > 0 {
                            kernel::<NV, true>(kc, a, ra, b, row, ldc, overwrite, Some(&d))
                        } else {
                            kernel::<NV, false>(kc, a, 0, b, row, ldc, overwrite, Some(&d))
                        }
                    }
                    _ => {
                        let mut buf = [0f32; MR * NR];
                        tile(kc, a, ra, b, buf.as_mut_ptr(), NR, MR, cols, true);
                        scatter(&buf, row, ldc, j, rows, cols, grid, overwrite);
                    }
                }
            }
        }
    }
}

/// Writes (or adds) a `rows×cols` tile held in `buf` (row stride `NR`) at logical columns
/// `j..j + cols` of the rows at `c` (stride `ldc`), mapped by `grid`: each run of columns
/// inside one grid row goes to its output row, the grid's extra columns are dropped.
///
/// # Safety
/// `c` is valid for `rows` rows of `grid.physical(j + cols)` floats with stride `ldc`, with
/// no other writer to the tile's output columns.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn scatter(
    buf: &[f32; MR * NR],
    c: *mut f32,
    ldc: usize,
    j: usize,
    rows: usize,
    cols: usize,
    grid: Grid,
    overwrite: bool,
) {
    let Grid { wq, ow, rs } = grid;
    let mut g = j;
    while g < j + cols {
        let (r, col) = (g / wq, g % wq);
        let end = (j + cols).min((r + 1) * wq);
        if col < ow {
            let len = ow.min(col + end - g) - col;
            let (src, dst) = (g - j, r * rs + col);
            for i in 0..rows {
                let from = &buf[i * NR + src..][..len];
                // SAFETY: `dst + len ≤ grid.physical(j + cols)` on row `i < rows` (contract).
                // Raw pointers, no slice: without `accumulate` the output may be uninitialised.
                unsafe {
                    let to = c.add(i * ldc + dst);
                    if overwrite {
                        std::ptr::copy_nonoverlapping(from.as_ptr(), to, len);
                    } else {
                        for (q, &f) in from.iter().enumerate() {
                            *to.add(q) += f;
                        }
                    }
                }
            }
        }
        g = end;
    }
}

/// One `rows×cols` (≤ MR×NR) tile of `C`: straight into `C` when full, else through a buffer.
/// A is a packed panel, or (`ra > 0`) `MR` rows `ra` apart read in place ([`kernel`]).
///
/// # Safety
/// As [`kernel`], for the `rows×cols` elements at `c`.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    ra: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    // Only as many 16-lane vectors as the tile's columns need: the narrow last panel of a
    // product (n = 64 gives panels of 48 and 16) then costs a third of a full one.
    let nv = cols.div_ceil(16);
    type Run = unsafe fn(usize, *const f32, usize, *const f32, *mut f32, usize, bool);
    let run: Run = match (nv, ra > 0) {
        (1, false) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<1, false>(kc, a, ra, b, c, ldc, o, None) },
        (2, false) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<2, false>(kc, a, ra, b, c, ldc, o, None) },
        (_, false) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<NV, false>(kc, a, ra, b, c, ldc, o, None) },
        (1, true) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<1, true>(kc, a, ra, b, c, ldc, o, None) },
        (2, true) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<2, true>(kc, a, ra, b, c, ldc, o, None) },
        (_, true) => |kc, a, ra, b, c, ldc, o| unsafe { kernel::<NV, true>(kc, a, ra, b, c, ldc, o, None) },
    };
    if rows == MR && cols == nv * 16 {
        // SAFETY: forwarded contract; the kernel writes `MR` rows of `16·nv = cols` floats.
        unsafe { run(kc, a, ra, b, c, ldc, overwrite) };
        return;
    }
    let mut buf = [0f32; MR * NR];
    // SAFETY: `buf` is a full MR×NR tile with row stride NR.
    unsafe { run(kc, a, ra, b, buf.as_mut_ptr(), NR, true) };
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: `i < rows`, `j < cols`: inside the caller's tile.
            unsafe {
                let p = c.add(i * ldc + j);
                *p = if overwrite { buf[i * NR + j] } else { *p + buf[i * NR + j] };
            }
        }
    }
}

/// The micro-kernel: `C[MR×16·V] (+)= Σ_p a[p][0..MR] ⊗ b[p][0..16·V]` (B panels keep their
/// row stride `NR`; `V ≤ NV`). A packed panel holds `a[p][i]` at `a[p·MR + i]`; with `RS` A is
/// read in place, `a[p][i]` at `a[i·ra + p]` (`ra` is ignored otherwise).
///
/// # Safety
/// `a` holds `kc·MR` readable floats (with `RS`: `MR` rows of `kc`, `ra` apart) and `b` `kc·NR`,
/// `c` is valid for `MR` rows of `16·V` floats with row stride `ldc`, and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const V: usize, const RS: bool>(
    kc: usize,
    a: *const f32,
    ra: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    overwrite: bool,
    dst: Option<&[VecDst; V]>,
) {
    use std::arch::x86_64::*;
    // Where A's value of row `i` lies from a depth step's pointer, and the step to the next
    // depth: packed panels (`MR` values per depth), or rows `ra` apart read in place.
    let (row, sa) = if RS { (ra, 1) } else { (1, MR) };
    // SAFETY: the caller's contract covers every pointer offset below.
    unsafe {
        // Ask for the C tile's lines now, so that their misses (a fresh output is rarely in
        // cache) overlap the FMA loop instead of stalling the stores at its end.
        prefetch_tile(c, ldc, V, dst.map(|d| &d[..]));
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        let (mut a, mut b) = (a, b);
        // One depth step: the B row's vectors times each broadcast A value.
        let step = |acc: &mut [[__m512; V]; MR], a: *const f32, b: *const f32| {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b.add(16 * v));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i * row));
                for (r, &bv) in acc_row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, bv, *r);
                }
            }
        };
        // Four steps per iteration: the loop's pointer and counter updates would otherwise
        // take issue slots on the FMA ports once per 24 FMAs.
        for _ in 0..kc / 4 {
            step(&mut acc, a, b);
            step(&mut acc, a.add(sa), b.add(NR));
            step(&mut acc, a.add(2 * sa), b.add(2 * NR));
            step(&mut acc, a.add(3 * sa), b.add(3 * NR));
            a = a.add(4 * sa);
            b = b.add(4 * NR);
        }
        for _ in 0..kc % 4 {
            step(&mut acc, a, b);
            a = a.add(sa);
            b = b.add(NR);
        }
        if let Some(dst) = dst {
            store_grid(&acc, c, ldc, overwrite, dst);
            return;
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &r) in row.iter().enumerate() {
                let p = c.add(i * ldc + 16 * v);
                if overwrite {
                    _mm512_storeu_ps(p, r);
                } else {
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), r));
                }
            }
        }
    }
}

/// Asks for the lines of a tile's `MR` rows of `v` vectors (at their [`VecDst`]s with a grid)
/// before the FMA loop, so that their misses (a fresh output is rarely in cache) overlap it
/// instead of stalling the stores at its end.
///
/// # Safety
/// The CPU has AVX-512F (prefetches never fault; addresses are computed with wrapping offsets).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn prefetch_tile(c: *mut f32, ldc: usize, v: usize, dst: Option<&[VecDst]>) {
    use std::arch::x86_64::*;
    for i in 0..MR {
        let row = c.wrapping_add(i * ldc);
        match dst {
            None => {
                for v in 0..v {
                    _mm_prefetch::<_MM_HINT_ET0>(row.wrapping_add(16 * v).cast::<i8>());
                }
            }
            Some(dst) => {
                for d in dst {
                    for s in 0..2 {
                        if d.mask[s] != 0 {
                            let first = d.mask[s].trailing_zeros() as isize;
                            _mm_prefetch::<_MM_HINT_ET0>(row.wrapping_offset(d.off[s] + first).cast::<i8>());
                        }
                    }
                }
            }
        }
    }
}

/// Stores (or adds) a tile's `MR×V` vectors at their [`VecDst`]s, masked: rows at `c + i·ldc`.
///
/// # Safety
/// Every masked lane's address lies in the caller's output (see [`Grid::vec_dsts`]); the CPU
/// has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_grid<const V: usize>(
    acc: &[[std::arch::x86_64::__m512; V]; MR],
    c: *mut f32,
    ldc: usize,
    overwrite: bool,
    dst: &[VecDst; V],
) {
    use std::arch::x86_64::*;
    for (i, row) in acc.iter().enumerate() {
        for (&r, d) in row.iter().zip(dst) {
            for s in 0..2 {
                let m = d.mask[s];
                if m == 0 {
                    continue;
                }
                // Masked-off lanes are neither read nor written, so the base may lie before
                // the row (the second run's lanes start at lane `b`).
                let p = c.wrapping_offset((i * ldc) as isize + d.off[s]);
                // SAFETY: the unmasked lanes lie in the output (contract).
                unsafe {
                    if overwrite {
                        _mm512_mask_storeu_ps(p, m, r);
                    } else {
                        _mm512_mask_storeu_ps(p, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), r));
                    }
                }
            }
        }
    }
}

/// [`kernel`] for a full `MR×NR` tile reading B in place: depth step `p` reads the row at
/// `b + offs[p]` (unaligned), with no packed panel. For products with few rows (a 16-channel
/// convolution) packing B cost more than the two tiles that then read each panel.
///
/// # Safety
/// `a` holds `kc·MR` readable floats, `offs` `kc` offsets with `b + offs[p]` valid for `NR`
/// floats each, `c` is valid for `MR` rows of `NR` floats with row stride `ldc`, and the CPU
/// has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_rows(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    ldc: usize,
    overwrite: bool,
    dst: Option<&[VecDst; NV]>,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers every pointer offset below.
    unsafe {
        prefetch_tile(c, ldc, NV, dst.map(|d| &d[..]));
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let step = |acc: &mut [[__m512; NV]; MR], a: *const f32, b: *const f32| {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b.add(16 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, bv, *r);
                }
            }
        };
        let mut p = 0;
        while p + 4 <= kc {
            step(&mut acc, a.add(p * MR), b.add(*offs.add(p)));
            step(&mut acc, a.add((p + 1) * MR), b.add(*offs.add(p + 1)));
            step(&mut acc, a.add((p + 2) * MR), b.add(*offs.add(p + 2)));
            step(&mut acc, a.add((p + 3) * MR), b.add(*offs.add(p + 3)));
            p += 4;
        }
        while p < kc {
            step(&mut acc, a.add(p * MR), b.add(*offs.add(p)));
            p += 1;
        }
        if let Some(dst) = dst {
            store_grid(&acc, c, ldc, overwrite, dst);
            return;
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &r) in row.iter().enumerate() {
                let q = c.add(i * ldc + 16 * v);
                if overwrite {
                    _mm512_storeu_ps(q, r);
                } else {
                    _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), r));
                }
            }
        }
    }
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_rows(
    _kc: usize,
    _a: *const f32,
    _b: *const f32,
    _offs: *const usize,
    _c: *mut f32,
    _ldc: usize,
    _overwrite: bool,
    _dst: Option<&[VecDst; NV]>,
) {
}

/// Positions per chunk of [`sgemm_nt_rows`]: the chunk's rows of both operands stay in L2
/// while every tile runs over them.
const DOT_CHUNK: usize = 1024;

/// `c[i][j] += Σ_{p < len} a[a_offs[i] + p] · b[b_offs[j] + p]`, `c` row-major
/// (`a_offs.len() × b_offs.len()`): a product of two operands stored by rows along the depth,
/// computed as dot products 16 positions at a time, with no transposing pack of either operand.
/// For a convolution's weight gradient the depth is the image (tens of thousands of positions)
/// and both `dY` and the input windows are stored position-major: packing them for the outer-
/// product kernel transposed every value, a quarter of the time of a 16-channel layer's pass.
/// Single-threaded: callers split images over the pool.
///
/// # Errors
/// When a row runs past its operand, `c` is too short, or the CPU lacks AVX-512.
pub(crate) fn sgemm_nt_rows(
    len: usize,
    a: &[f32],
    a_offs: &[usize],
    b: &[f32],
    b_offs: &[usize],
    c: &mut [f32],
) -> candle_core::Result<()> {
    if !available() {
        candle_core::bail!("sgemm_nt_rows: this CPU has no AVX-512F");
    }
    let (m, n) = (a_offs.len(), b_offs.len());
    if c.len() < m * n {
        candle_core::bail!("sgemm_nt_rows: output of {} for {m}x{n}", c.len());
    }
    if a_offs.iter().any(|&o| o + len > a.len()) || b_offs.iter().any(|&o| o + len > b.len()) {
        candle_core::bail!("sgemm_nt_rows: a row of {len} runs past its operand");
    }
    if m == 0 || n == 0 || len == 0 {
        return Ok(());
    }
    // 16-lane partial sums per output, reduced once at the end.
    let mut part = vec![0f32; m * n * 16];
    let mut p0 = 0;
    while p0 < len {
        let cl = DOT_CHUNK.min(len - p0);
        let mut i = 0;
        while i < m {
            let it = 4.min(m - i);
            let mut j = 0;
            while j < n {
                let jt = 5.min(n - j);
                // SAFETY: rows `a_offs[i..i+it]`, `b_offs[j..j+jt]` hold `len ≥ p0 + cl` values
                // from their offsets (checked above); the tile's partial sums lie in `part`.
                // The next chunk's rows are asked for while this chunk's first tiles read
                // these rows: A's during its first column block, B's during the first row
                // block. Each row is then read from L2, not from memory (a chunk's rows are
                // short streams, 4 KB each, that the hardware prefetcher picks up late).
                let next = p0 + cl < len;
                let pf = Prefetch { a: next && j == 0, b: next && i == 0, ahead: cl };
                unsafe {
                    let ar = |r: usize| a.as_ptr().add(a_offs[i + r] + p0);
                    let br = |r: usize| b.as_ptr().add(b_offs[j + r] + p0);
                    let pp = part.as_mut_ptr().add((i * n + j) * 16);
                    match (it, jt) {
                        (4, 5) => dot_tile::<4, 5>(cl, std::array::from_fn(ar), std::array::from_fn(br), pp, n, pf),
                        (4, _) => dot_tile_dyn::<4>(cl, std::array::from_fn(ar), jt, br, pp, n, pf),
                        (3, _) => dot_tile_dyn::<3>(cl, std::array::from_fn(ar), jt, br, pp, n, pf),
                        (2, _) => dot_tile_dyn::<2>(cl, std::array::from_fn(ar), jt, br, pp, n, pf),
                        _ => dot_tile_dyn::<1>(cl, std::array::from_fn(ar), jt, br, pp, n, pf),
                    }
                }
                j += jt;
            }
            i += it;
        }
        p0 += cl;
    }
    for (cv, pv) in c[..m * n].iter_mut().zip(part.chunks_exact(16)) {
        *cv += pv.iter().sum::<f32>();
    }
    Ok(())
}

/// [`dot_tile`] for a tile of `jt ≤ 5` columns (the edges of the product).
///
/// # Safety
/// As [`dot_tile`].
unsafe fn dot_tile_dyn<const OT: usize>(
    len: usize,
    a: [*const f32; OT],
    jt: usize,
    br: impl Fn(usize) -> *const f32,
    part: *mut f32,
    n: usize,
    pf: Prefetch,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match jt {
            5 => dot_tile::<OT, 5>(len, a, std::array::from_fn(br), part, n, pf),
            4 => dot_tile::<OT, 4>(len, a, std::array::from_fn(br), part, n, pf),
            3 => dot_tile::<OT, 3>(len, a, std::array::from_fn(br), part, n, pf),
            2 => dot_tile::<OT, 2>(len, a, std::array::from_fn(br), part, n, pf),
            _ => dot_tile::<OT, 1>(len, a, std::array::from_fn(br), part, n, pf),
        }
    }
}

/// Which rows of a [`dot_tile`] to prefetch `ahead` positions on (into L2), one line per
/// 16-position step.
#[derive(Clone, Copy)]
struct Prefetch {
    a: bool,
    b: bool,
    ahead: usize,
}

/// `part[(r·n + s)·16..][..16] += Σ_q a[r][16q..] ⊙ b[s][16q..]` over `len` positions (the last
/// vector masked): `OT·JT ≤ 20` accumulators and `OT + JT` row vectors stay in registers.
///
/// # Safety
/// Each `a[r]`, `b[s]` is readable for `len` floats; `part` is valid for the tile's partial
/// sums (rows of `n·16` floats); the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_tile<const OT: usize, const JT: usize>(
    len: usize,
    a: [*const f32; OT],
    b: [*const f32; JT],
    part: *mut f32,
    n: usize,
    pf: Prefetch,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers every pointer offset below; the tail uses masked
    // loads, which read nothing past `len`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); JT]; OT];
        for (r, row) in acc.iter_mut().enumerate() {
            for (s, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(part.add((r * n + s) * 16));
            }
        }
        let full = len / 16;
        for q in 0..full {
            // One line of each named row, `pf.ahead` positions on (addresses computed with
            // wrapping offsets: they may lie past the rows, and prefetches never fault).
            if pf.a {
                for p in a {
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(pf.ahead + 16 * q).cast::<i8>());
                }
            }
            if pf.b {
                for p in b {
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(pf.ahead + 16 * q).cast::<i8>());
                }
            }
            let av: [__m512; OT] = std::array::from_fn(|r| _mm512_loadu_ps(a[r].add(16 * q)));
            for s in 0..JT {
                let bv = _mm512_loadu_ps(b[s].add(16 * q));
                for r in 0..OT {
                    acc[r][s] = _mm512_fmadd_ps(av[r], bv, acc[r][s]);
                }
            }
        }
        let rest = len % 16;
        if rest > 0 {
            let k: __mmask16 = (1u16 << rest) - 1;
            let av: [__m512; OT] = std::array::from_fn(|r| _mm512_maskz_loadu_ps(k, a[r].add(16 * full)));
            for s in 0..JT {
                let bv = _mm512_maskz_loadu_ps(k, b[s].add(16 * full));
                for r in 0..OT {
                    acc[r][s] = _mm512_fmadd_ps(av[r], bv, acc[r][s]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (s, &v) in row.iter().enumerate() {
                _mm512_storeu_ps(part.add((r * n + s) * 16), v);
            }
        }
    }
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_tile<const OT: usize, const JT: usize>(
    _len: usize,
    _a: [*const f32; OT],
    _b: [*const f32; JT],
    _part: *mut f32,
    _n: usize,
    _pf: Prefetch,
) {
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const V: usize, const RS: bool>(
    _kc: usize,
    _a: *const f32,
    _ra: usize,
    _b: *const f32,
    _c: *mut f32,
    _ldc: usize,
    _overwrite: bool,
    _dst: Option<&[VecDst; V]>,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// `A·B` in f64 from strided views.
    fn naive(m: usize, n: usize, k: usize, a: &Strided<'_>, b: &Strided<'_>) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a.data[i * a.rs + p * a.cs]) * f64::from(b.data[p * b.rs + j * b.cs]))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_f64_for_awkward_shapes() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // Shapes around the tile and block sizes, both layouts of each operand, both thread
        // counts, overwrite and accumulate.
        for &(m, n, k) in
            &[(1, 1, 1), (12, 32, 1), (13, 33, 257), (64, 800, 576), (25, 1600, 300), (7, 70, 513), (73, 60, 1000)]
        {
            let a_data = lcg(m as u64 * 7 + k as u64, m * k);
            let b_data = lcg(n as u64 * 3 + 1, k * n);
            for a_t in [false, true] {
                for b_t in [false, true] {
                    let a = if a_t {
                        Strided { data: &a_data, rs: 1, cs: m }
                    } else {
                        Strided { data: &a_data, rs: k, cs: 1 }
                    };
                    let b = if b_t {
                        Strided { data: &b_data, rs: 1, cs: k }
                    } else {
                        Strided { data: &b_data, rs: n, cs: 1 }
                    };
                    let want = naive(m, n, k, &a, &b);
                    for threads in [1, 2] {
                        let ldc = n + 3;
                        let mut c = vec![1.0f32; m * ldc];
                        sgemm(m, n, k, &mut c[..], ldc, false, &a, &b, threads)?;
                        sgemm(m, n, k, &mut c[..], ldc, true, &a, &b, threads)?;
                        for i in 0..m {
                            for j in 0..n {
                                let (got, w) = (f64::from(c[i * ldc + j]), 2.0 * want[i * n + j]);
                                assert!(
                                    (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{m}x{n}x{k} {a_t} {b_t} ({i},{j}): {got} vs {w}"
                                );
                            }
                            assert!(
                                c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 1.0),
                                "padding columns untouched"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn columns_operand_is_the_transposed_windows() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // B[k][j] = data[offs[j] + k], overlapping unaligned columns, widths around 16 and NR.
        for &(m, n, k) in &[(3, 5, 7), (8, 48, 16), (9, 50, 40), (16, 97, 200), (2, 17, 400)] {
            let data = lcg(n as u64, n * 13 + k + 3);
            let offs: Vec<usize> = (0..n).map(|j| j * 13 + (j % 3)).collect();
            let a_data = lcg(m as u64 + 1, m * k);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let mut dense = vec![0f32; k * n];
            for p in 0..k {
                for j in 0..n {
                    dense[p * n + j] = data[offs[j] + p];
                }
            }
            let want = naive(m, n, k, &a, &Strided { data: &dense, rs: n, cs: 1 });
            let mut c = vec![0f32; m * n];
            sgemm(m, n, k, &mut c[..], n, false, &a, &Columns { data: &data, offs: &offs }, 1)?;
            for (i, (&g, &w)) in c.iter().zip(&want).enumerate() {
                assert!((f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k} at {i}: {g} vs {w}");
            }
        }
        let data = vec![0f32; 10];
        let mut c = [0f32; 1];
        let a = Strided { data: &data, rs: 10, cs: 1 };
        assert!(sgemm(1, 1, 10, &mut c[..], 1, false, &a, &Columns { data: &data, offs: &[1] }, 1).is_err());
        Ok(())
    }

    /// `A·B` for an operand given element-wise: `B[p][j] = b(p, j)`, in f64.
    fn naive_fn(m: usize, n: usize, k: usize, a: &Strided<'_>, b: impl Fn(usize, usize) -> f32) -> Vec<f64> {
        let mut dense = vec![0f32; k * n];
        for p in 0..k {
            for j in 0..n {
                dense[p * n + j] = b(p, j);
            }
        }
        naive(m, n, k, a, &Strided { data: &dense, rs: n, cs: 1 })
    }

    fn assert_product(what: &str, c: &[f32], want: &[f64]) {
        for (i, (&g, &w)) in c.iter().zip(want).enumerate() {
            assert!((f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what} at {i}: {g} vs {w}");
        }
    }

    #[test]
    fn a_pooled_packed_operand_never_shows_an_earlier_one() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // A large operand of NaNs goes back to this thread's pool; a smaller one with a partial
        // row panel (m % MR != 0) and a partial depth block then reuses its buffer.
        let nan = vec![f32::NAN; 64 * 500];
        drop(PackedA::new(64, 500, &Strided { data: &nan, rs: 500, cs: 1 })?);
        let (m, k, n) = (13, 201, 50);
        let a_data = lcg(5, m * k);
        let b_data = lcg(6, k * n);
        let a = Strided { data: &a_data, rs: k, cs: 1 };
        let b = Strided { data: &b_data, rs: n, cs: 1 };
        let packed = PackedA::new(m, k, &a)?;
        let mut c = vec![0f32; m * n];
        sgemm_packed(n, &mut c[..], n, false, &packed, &b, 1)?;
        assert_product("pooled", &c, &naive(m, n, k, &a, &b));
        Ok(())
    }

    #[test]
    fn image_columns_run_the_depth_over_images() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // B[(i·runs + r)·seg + q][j] = data[i·stride + r·run_stride + offs[j] + q]: segments
        // shorter and longer than a depth block (so blocks start inside an image), one run per
        // image and one per row of a 7×7 or 14×14 map on a 9- or 16-wide grid (runs shorter
        // than the 16-row transposes), widths around NR, both thread counts.
        for &(m, n, seg, runs, run_stride, images) in &[
            (3, 5, 7, 1, 0, 4),
            (8, 48, 61, 1, 0, 8),
            (9, 50, 200, 1, 0, 3),
            (16, 97, 49, 1, 0, 5),
            (8, 48, 7, 7, 9, 8),
            (10, 50, 14, 14, 16, 3),
            (5, 33, 3, 4, 5, 2),
        ] {
            let stride = n * 5 + seg * runs + run_stride * runs + 3;
            let data = lcg(seg as u64, images * stride);
            let offs: Vec<usize> = (0..n).map(|j| j * 5 + (j % 3)).collect();
            let k = images * runs * seg;
            let a_data = lcg(m as u64 + 2, m * k);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let want = naive_fn(m, n, k, &a, |p, j| {
                let (run, q) = (p / seg, p % seg);
                data[(run / runs) * stride + (run % runs) * run_stride + offs[j] + q]
            });
            for threads in [1, 2] {
                let mut c = vec![0f32; m * n];
                let b = ImageColumns { data: &data, offs: &offs, seg, runs, run_stride, stride };
                sgemm(m, n, k, &mut c[..], n, false, &a, &b, threads)?;
                assert_product(&format!("{m}x{n} seg {seg} runs {runs} x{images}"), &c, &want);
            }
        }
        // A depth that is not whole images, a last image running past the data, and
        // overlapping runs: errors.
        let data = vec![0f32; 20];
        let a = Strided { data: &data, rs: 10, cs: 1 };
        let mut c = [0f32; 2];
        let b = |stride| ImageColumns { data: &data, offs: &[0, 1], seg: 5, runs: 1, run_stride: 0, stride };
        assert!(sgemm(1, 2, 7, &mut c[..], 2, false, &a, &b(10), 1).is_err());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a, &b(15), 1).is_err());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a, &b(10), 1).is_ok());
        let rows = |run_stride| ImageColumns { data: &data, offs: &[0, 1], seg: 5, runs: 2, run_stride, stride: 20 };
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a, &rows(4), 1).is_err());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a, &rows(15), 1).is_err());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a, &rows(5), 1).is_ok());
        Ok(())
    }

    /// A one-task product whose packed left operand exceeds [`LAZY_A_VALUES`] packs it one
    /// depth block at a time ([`DepthFrom`] shifting B's rows): against the definition when
    /// overwriting (NaN first), accumulating, into uninitialised memory, and with B read in
    /// place (few rows: [`Shifted::rows`] through the view).
    #[test]
    fn long_left_operands_pack_block_by_block() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        let (m, n, k): (usize, usize, usize) = (70, 50, 2000);
        assert!(m.div_ceil(MR) * MR * k > LAZY_A_VALUES && k > KC);
        let (a_data, b_data) = (lcg(11, m * k), lcg(12, k * n));
        let a = Strided { data: &a_data, rs: k, cs: 1 };
        let b = Strided { data: &b_data, rs: n, cs: 1 };
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![f32::NAN; m * n];
        sgemm(m, n, k, &mut c[..], n, false, &a, &b, 1)?;
        assert_product("overwrite", &c, &want);
        let c0 = lcg(13, m * n);
        let mut c = c0.clone();
        sgemm(m, n, k, &mut c[..], n, true, &a, &b, 1)?;
        let plus: Vec<f64> = want.iter().zip(&c0).map(|(w, &v)| w + f64::from(v)).collect();
        assert_product("accumulate", &c, &plus);
        let mut u = vec![MaybeUninit::<f32>::uninit(); m * n];
        sgemm(m, n, k, &mut u[..], n, false, &a, &b, 1)?;
        // SAFETY: the product wrote every element.
        let u: Vec<f32> = u.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_product("uninit", &u, &want);
        // B read in place: 30 rows, three taps over 1600 planes.
        let (m, taps, planes): (usize, usize, usize) = (30, 3, 1600);
        let (offs, plane) = ([0usize, 1, 5], n + 8);
        let k = taps * planes;
        assert!(m <= DIRECT_ROWS && m.div_ceil(MR) * MR * k > LAZY_A_VALUES);
        let data = lcg(14, planes * plane + 8);
        let a_data = lcg(15, m * k);
        let a = Strided { data: &a_data, rs: k, cs: 1 };
        let want = naive_fn(m, n, k, &a, |r, j| data[(r / taps) * plane + offs[r % taps] + j]);
        let mut c = vec![f32::NAN; m * n];
        sgemm(m, n, k, &mut c[..], n, false, &a, &Shifted { data: &data, plane, offs: &offs }, 1)?;
        assert_product("rows in place", &c, &want);
        Ok(())
    }

    /// [`ImageRows`] as the left operand against the same matrix copied out: runs longer and
    /// shorter than a depth block and than the 16-step transposes, one run per image or per
    /// output row of a map on a wider grid, rows not a multiple of `MR`, and runs whose last
    /// row ends too close to the data's end for a 16-value read (the scalar tail); then the
    /// errors for a depth that is not whole images, a last row past the data, overlapping runs.
    #[test]
    fn image_rows_read_the_depth_in_place() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        for &(m, n, seg, runs, run_stride, images, slack) in &[
            (3, 5, 7, 1, 0, 4, 9),
            (8, 48, 61, 1, 0, 8, 0),
            (16, 50, 196, 1, 0, 3, 2),
            (17, 97, 49, 1, 0, 5, 0),
            (8, 48, 7, 7, 9, 8, 0),
            (24, 50, 14, 14, 16, 3, 5),
            (5, 33, 3, 4, 5, 2, 1),
        ] {
            // Row `r` of image `i` at `i·stride + r·rs`, the runs inside it `run_stride` apart;
            // `slack` values after the last run only.
            let rs = if runs > 1 { (runs - 1) * run_stride + seg + 2 } else { seg + 3 };
            let stride = m * rs + 1;
            let len = (images - 1) * stride + (m - 1) * rs + (runs - 1) * run_stride + seg + slack;
            let data = lcg(seg as u64 + 7, len);
            let k = images * runs * seg;
            let at = |r: usize, d: usize| {
                let (run, q) = (d / seg, d % seg);
                (run / runs) * stride + (run % runs) * run_stride + r * rs + q
            };
            let copy: Vec<f32> = (0..m * k).map(|e| data[at(e / k, e % k)]).collect();
            let b_data = lcg(n as u64, k * n);
            let b = Strided { data: &b_data, rs: n, cs: 1 };
            let plain = Strided { data: &copy, rs: k, cs: 1 };
            let want = naive_fn(m, n, k, &plain, |p, j| b_data[p * n + j]);
            for threads in [1, 2] {
                let mut c = vec![0f32; m * n];
                let a = ImageRows { data: &data, rs, seg, runs, run_stride, stride };
                sgemm(m, n, k, &mut c[..], n, false, &a, &b, threads)?;
                assert_product(&format!("{m}x{n} seg {seg} runs {runs} x{images}"), &c, &want);
            }
        }
        let data = vec![0f32; 20];
        let b_data = vec![0f32; 20];
        let b = Strided { data: &b_data, rs: 2, cs: 1 };
        let mut c = [0f32; 4];
        let a = |stride, runs, run_stride| ImageRows { data: &data, rs: 5, seg: 5, runs, run_stride, stride };
        assert!(sgemm(2, 2, 7, &mut c[..], 2, false, &a(10, 1, 0), &b, 1).is_err());
        assert!(sgemm(2, 2, 10, &mut c[..], 2, false, &a(11, 1, 0), &b, 1).is_err());
        assert!(sgemm(2, 2, 10, &mut c[..], 2, false, &a(10, 1, 0), &b, 1).is_ok());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a(20, 2, 4), &b, 1).is_err());
        assert!(sgemm(1, 2, 10, &mut c[..], 2, false, &a(20, 2, 5), &b, 1).is_ok());
        Ok(())
    }

    /// Weights with long rows along the depth are read in place, not packed
    /// ([`IN_PLACE_MIN_DEPTH`]): the same products as the definition, in a plain output and a
    /// grid of image runs, one task and two, over several depth blocks and a last column
    /// panel of a few columns; rows that are not whole panels, or shorter ones, are packed.
    #[test]
    fn long_weight_rows_are_read_in_place() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        for &(m, k, p, imgs, in_place) in
            &[(136, 520, 49, 3, true), (144, 1030, 20, 2, true), (130, 520, 49, 2, false), (136, 500, 49, 2, false)]
        {
            let n = p * imgs;
            let a_data = lcg(m as u64 + k as u64, m * k);
            let b_data = lcg(p as u64, k * n);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let b = Strided { data: &b_data, rs: n, cs: 1 };
            let want = naive(m, n, k, &a, &b);
            let packed = PackedA::new(m, k, &a)?;
            assert_eq!(packed.in_place.is_some(), in_place, "{m}×{k}");
            for threads in [1, 2] {
                let mut c = vec![0.5f32; m * n];
                sgemm_packed(n, &mut c[..], n, false, &packed, &b, threads)?;
                assert_product(&format!("{m}x{k} t{threads}"), &c, &want);
                let block = m * p;
                let mut c = vec![0.5f32; imgs * block];
                sgemm_packed_grid(n, &mut c[..], p, true, &packed, &b, threads, Some(Grid::images(p, block)))?;
                let got: Vec<f32> = (0..m * n).map(|at| c[(at % n) / p * block + at / n * p + at % p] - 0.5).collect();
                assert_product(&format!("{m}x{k} t{threads} grid"), &got, &want);
            }
        }
        Ok(())
    }

    /// A grid of image runs ([`Grid::images`]) writes run `r` (one image's `p` positions) of
    /// every row into block `r` (`[m][p]`, row stride `p`) and nothing in the gaps between
    /// blocks: runs of 49, 20 and 16, runs shorter than a vector (the scattering fallback),
    /// both thread counts, accumulating or not, and an empty depth (zeros in the runs only).
    #[test]
    fn image_grids_write_each_run_into_its_block() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        for &(m, p, imgs) in &[(8, 49, 3), (17, 20, 4), (5, 7, 5), (40, 16, 2)] {
            let (n, block) = (p * imgs, m * p + 3);
            for k in [37, 0] {
                let a_data = lcg(m as u64, m * k.max(1));
                let b_data = lcg(p as u64, k.max(1) * n);
                let a = Strided { data: &a_data, rs: k.max(1), cs: 1 };
                let b = Strided { data: &b_data, rs: n, cs: 1 };
                let want = naive(m, n, k, &a, &b);
                let packed = PackedA::new(m, k, &a)?;
                for threads in [1, 2] {
                    for accumulate in [false, true] {
                        let mut c = vec![0.5f32; imgs * block];
                        sgemm_packed_grid(
                            n,
                            &mut c[..],
                            p,
                            accumulate,
                            &packed,
                            &b,
                            threads,
                            Some(Grid::images(p, block)),
                        )?;
                        for (at, &got) in c.iter().enumerate() {
                            let (r, i, q) = (at / block, (at % block) / p, (at % block) % p);
                            let what = format!("m{m} p{p} k{k} t{threads} acc{accumulate}: element {at}");
                            if at % block >= m * p {
                                assert_eq!(got, 0.5, "{what}: a gap was written");
                                continue;
                            }
                            let w = want[i * n + r * p + q] + if accumulate { 0.5 } else { 0.0 };
                            assert!((f64::from(got) - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}: {got} vs {w}");
                        }
                    }
                }
            }
            // Blocks that overlap the next run's rows, and runs longer than the row stride.
            let a_data = lcg(1, m * 4);
            let packed = PackedA::new(m, 4, &Strided { data: &a_data, rs: 4, cs: 1 })?;
            let b_data = lcg(2, 4 * n);
            let b = Strided { data: &b_data, rs: n, cs: 1 };
            let mut c = vec![0f32; imgs * block];
            let overlap = Grid::images(p, m * p - 1);
            assert!(sgemm_packed_grid(n, &mut c[..], p, false, &packed, &b, 1, Some(overlap)).is_err());
            assert!(
                sgemm_packed_grid(n, &mut c[..], p - 1, false, &packed, &b, 1, Some(Grid::images(p, block))).is_err()
            );
        }
        Ok(())
    }

    /// An operand packed ahead gives the product of the operand itself: one task (its blocks
    /// read in place) and two (columns split off the packed blocks, packed element by element),
    /// two column blocks and several depth blocks; a product of another shape is an error.
    #[test]
    fn prepacked_operands_give_the_same_products() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        for &(m, n, k) in &[(40, 128, 512), (16, 900, 200), (9, 50, 7)] {
            let a_data = lcg(m as u64, m * k);
            let b_data = lcg(n as u64, k * n);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let b = Strided { data: &b_data, rs: n, cs: 1 };
            let want = naive(m, n, k, &a, &b);
            let packed_a = PackedA::new(m, k, &a)?;
            let pre = PrePacked::new(&b, k, n)?;
            for threads in [1, 2] {
                let mut c = vec![0f32; m * n];
                sgemm_packed(n, &mut c[..], n, false, &packed_a, &pre, threads)?;
                assert_product(&format!("{m}x{n}x{k} t{threads}"), &c, &want);
            }
            let mut c = vec![0f32; m * n];
            assert!(sgemm_packed(n, &mut c[..], n, false, &PackedA::new(m, k - 1, &a)?, &pre, 1).is_err());
        }
        Ok(())
    }

    #[test]
    fn gathered_columns_read_shifted_rows_at_their_bases() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // B[c·taps + t][j] = data[c·plane + offs[t] + base[j]], bases in runs of 7 (a 7×7 map's
        // rows on a 9-wide grid) across images, and a single-column run.
        let (plane, offs) = (100usize, [0usize, 1, 2, 9, 10, 11, 18, 19, 20]);
        let images = 3;
        let mut base: Vec<usize> = (0..images)
            .flat_map(|i| (0..7).flat_map(move |oy| (0..7).map(move |ox| i * 24 * plane + oy * 9 + ox)))
            .collect();
        base.push(5);
        let (m, n, k) = (10, base.len(), 24 * offs.len());
        let data = lcg(11, images * 24 * plane);
        let a_data = lcg(12, m * k);
        let a = Strided { data: &a_data, rs: k, cs: 1 };
        let want = naive_fn(m, n, k, &a, |r, j| data[(r / offs.len()) * plane + offs[r % offs.len()] + base[j]]);
        let packed = PackedA::new(m, k, &a)?;
        for threads in [1, 2] {
            let mut c = vec![0f32; m * n];
            sgemm_packed(
                n,
                &mut c[..],
                n,
                false,
                &packed,
                &Gathered { data: &data, plane, offs: &offs, base: &base },
                threads,
            )?;
            assert_product(&format!("gathered, {threads} threads"), &c, &want);
        }
        // Fewer bases than columns, and a base reading past the data: errors.
        let mut c = vec![0f32; m * n];
        let short = Gathered { data: &data, plane, offs: &offs, base: &base[..n - 1] };
        assert!(sgemm_packed(n, &mut c[..], n, false, &packed, &short, 1).is_err());
        let mut far = base.clone();
        far[0] = data.len();
        let far = Gathered { data: &data, plane, offs: &offs, base: &far };
        assert!(sgemm_packed(n, &mut c[..], n, false, &packed, &far, 1).is_err());
        Ok(())
    }

    #[test]
    fn few_row_products_read_shifted_rows_in_place() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // m ≤ DIRECT_ROWS_TAPS (9 taps) reads full panels in place (m = 17, 20, 33 and 121 also
        // pack for the partial row panel), m = 129 packs; n leaves a narrow last panel; k spans
        // two depth blocks; both thread counts.
        let (planes, plane) = (30, 220);
        let offs = [0usize, 1, 2, 20, 21, 22, 40, 41, 42];
        let k = planes * offs.len();
        let n = 170;
        let data = lcg(11, planes * plane + 60);
        let mut dense = vec![0f32; k * n];
        for r in 0..k {
            for j in 0..n {
                dense[r * n + j] = data[(r / 9) * plane + offs[r % 9] + j];
            }
        }
        for m in [8, 16, 17, 20, 32, 33, 64, 121, 128, 129] {
            let a_data = lcg(m as u64 + 3, m * k);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let want = naive(m, n, k, &a, &Strided { data: &dense, rs: n, cs: 1 });
            for threads in [1, 2] {
                for accumulate in [false, true] {
                    let mut c = vec![0.5f32; m * n];
                    let b = Shifted { data: &data, plane, offs: &offs };
                    sgemm(m, n, k, &mut c[..], n, accumulate, &a, &b, threads)?;
                    for (i, (&g, &w)) in c.iter().zip(&want).enumerate() {
                        let w = w + if accumulate { 0.5 } else { 0.0 };
                        assert!(
                            (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "m{m} t{threads} at {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn grid_outputs_keep_only_each_rows_first_columns() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // A 3×3 window over 30 planes of 20 columns per row: logical column g is output
        // (g / 20)·ow + g % 20 when g % 20 < ow. Rows m read in place (≤ 128 with 9 taps: whole
        // row panels at 8, 32 and 40, a partial one at 17 and 33) and packed (129 with a
        // partial row panel, 136); ow = 18 (two dropped columns), 20 (none dropped), 5
        // (narrower than a vector); k over two depth blocks; both thread counts; overwrite and
        // accumulate. The output carries a sentinel past its last column.
        // wq = 9 < 16: a vector spans up to three grid rows and goes through the buffer.
        // wq = 16: every vector starts a grid row. ow = 2 with wq = 20: the second run's base
        // lies before its row. n = 7·48 + 16: a last panel of one full vector.
        let cases: [(usize, &[usize], usize); 5] = [
            (20, &[18, 20, 5, 2], 17 * 20 + 9),
            (9, &[7, 9, 1], 17 * 9 + 9),
            (16, &[14, 16, 2], 17 * 16 + 9),
            (20, &[18, 3], 7 * 48 + 16),
            (16, &[15], 7 * 48 + 16),
        ];
        for (wq, ows, n) in cases {
            grid_products(wq, ows, n)?;
        }
        Ok(())
    }

    fn grid_products(wq: usize, ows: &[usize], n: usize) -> candle_core::Result<()> {
        let (planes, plane) = (30, 22 * wq);
        let offs = [0usize, 1, 2, wq, wq + 1, wq + 2, 2 * wq, 2 * wq + 1, 2 * wq + 2];
        let k = planes * offs.len();
        let data = lcg(21, planes * plane + 60);
        let b_dense: Vec<f32> = (0..k)
            .flat_map(|r| (0..n).map(move |j| (r, j)))
            .map(|(r, j)| data[(r / 9) * plane + offs[r % 9] + j])
            .collect();
        for m in [8, 17, 32, 33, 40, 129, 136] {
            let a_data = lcg(m as u64 + 5, m * k);
            let a = Strided { data: &a_data, rs: k, cs: 1 };
            let want = naive(m, n, k, &a, &Strided { data: &b_dense, rs: n, cs: 1 });
            let packed = PackedA::new(m, k, &a)?;
            for &ow in ows {
                let grid = Grid::compact(wq, ow);
                let cols = grid.physical(n);
                let last = (0..n).filter(|g| g % wq < ow).map(|g| g / wq * ow + g % wq).max();
                assert_eq!(cols, last.map_or(0, |l| l + 1), "physical extent for wq {wq} ow {ow}");
                let ldc = cols + 3;
                for threads in [1, 2] {
                    for accumulate in [false, true] {
                        let mut c = vec![0.5f32; m * ldc];
                        let b = Shifted { data: &data, plane, offs: &offs };
                        sgemm_packed_grid(n, &mut c[..], ldc, accumulate, &packed, &b, threads, Some(grid))?;
                        for i in 0..m {
                            let mut seen = vec![false; ldc];
                            for g in (0..n).filter(|g| g % wq < ow) {
                                let at = g / wq * ow + g % wq;
                                seen[at] = true;
                                let w = want[i * n + g] + if accumulate { 0.5 } else { 0.0 };
                                let got = f64::from(c[i * ldc + at]);
                                assert!(
                                    (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "wq{wq} n{n} m{m} ow{ow} t{threads} acc{accumulate} row {i} col {g}: {got} vs {w}"
                                );
                            }
                            for (at, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
                                assert_eq!(c[i * ldc + at], 0.5, "m{m} ow{ow} row {i}: column {at} written");
                            }
                        }
                    }
                }
            }
        }
        if wq != 20 || n != 17 * 20 + 9 {
            return Ok(());
        }
        // An output one element short, and a grid that keeps more columns than it has.
        let a_data = lcg(1, 8 * k);
        let packed = PackedA::new(8, k, &Strided { data: &a_data, rs: k, cs: 1 })?;
        let b = Shifted { data: &data, plane, offs: &offs };
        let grid = Grid::compact(wq, 18);
        let mut short = vec![0f32; 7 * grid.physical(n) + grid.physical(n) - 1];
        assert!(sgemm_packed_grid(n, &mut short[..], grid.physical(n), false, &packed, &b, 1, Some(grid)).is_err());
        let mut c = vec![0f32; 8 * n];
        assert!(sgemm_packed_grid(n, &mut c[..], n, false, &packed, &b, 1, Some(Grid::compact(wq, wq + 1))).is_err());
        Ok(())
    }

    #[test]
    fn row_dot_products_match_f64_and_accumulate() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // Row counts around the 4×5 tile, lengths with a masked tail and across chunks,
        // overlapping unaligned rows (shifted windows), accumulation into `c`.
        for &(m, n, len) in &[(1, 1, 1), (4, 5, 16), (7, 13, 37), (16, 144, 2500), (9, 6, 1024), (3, 2, 1041)] {
            let a = lcg(m as u64 * 31 + len as u64, m * len + 7);
            let b = lcg(n as u64 * 17 + 1, n * 3 + len + 5);
            let a_offs: Vec<usize> = (0..m).map(|i| i * len + (i % 3)).filter(|&o| o + len <= a.len()).collect();
            let b_offs: Vec<usize> = (0..n).map(|j| j * 3 + (j % 2)).collect();
            let (m, n) = (a_offs.len(), b_offs.len());
            let mut c = vec![0.25f32; m * n];
            sgemm_nt_rows(len, &a, &a_offs, &b, &b_offs, &mut c)?;
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        0.25 + (0..len).map(|p| f64::from(a[a_offs[i] + p]) * f64::from(b[b_offs[j] + p])).sum::<f64>();
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{m}x{n}x{len} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
        // A row past its operand, or a short output, is refused.
        let a = lcg(1, 20);
        let mut c = vec![0f32; 2];
        assert!(sgemm_nt_rows(10, &a, &[0, 11], &a, &[0], &mut c).is_err());
        assert!(sgemm_nt_rows(10, &a, &[0, 1], &a, &[0, 1], &mut c).is_err());
        Ok(())
    }

    #[test]
    fn shifted_rows_read_windows_of_planes() -> candle_core::Result<()> {
        if !available() {
            return Ok(());
        }
        // 3 planes of 50, taps at offsets 0, 1, 7: B[(c, t)][j] = data[c·50 + offs[t] + j].
        let data = lcg(5, 150);
        let offs = [0usize, 1, 7];
        let (m, n, k) = (5, 40, 9);
        let a_data = lcg(9, m * k);
        let a = Strided { data: &a_data, rs: k, cs: 1 };
        let mut dense = vec![0f32; k * n];
        for r in 0..k {
            for j in 0..n {
                dense[r * n + j] = data[(r / 3) * 50 + offs[r % 3] + j];
            }
        }
        let want = naive(m, n, k, &a, &Strided { data: &dense, rs: n, cs: 1 });
        let mut c = vec![0f32; m * n];
        sgemm(m, n, k, &mut c[..], n, false, &a, &Shifted { data: &data, plane: 50, offs: &offs }, 1)?;
        assert!(c.iter().zip(&want).all(|(&g, &w)| (f64::from(g) - w).abs() < 1e-5));
        // A window past the end is refused, not read.
        let short = Shifted { data: &data[..140], plane: 50, offs: &offs };
        assert!(sgemm(m, n, k, &mut c[..], n, false, &a, &short, 1).is_err());
        Ok(())
    }
}
