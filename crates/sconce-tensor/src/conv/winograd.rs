//! Winograd F(2×2, 3×3) for stride-1 3×3 convolutions in `f32`: each 2×2 output tile is
//! `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` over the 4×4 input tile `d`, so the products take 16 multiplies
//! per tile and channel pair instead of 36 (2.25× fewer flops), as 16 matrix products
//! `M_k = U_k · V_k` on the AVX-512 kernel. Used for the forward pass, the stride-1 input
//! gradient (itself a 3×3 convolution) and the weight gradient (`dW = Gᵀ (Σ Z_k V_kᵀ) G`);
//! `SCONCE_NO_WINOGRAD=1` turns it off.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::Geom;
use super::shift::Epilogue;
use crate::sgemm::{Columns, MR, NR, PackedView, PrePacked, Strided, kblocks, packed_a_len, sgemm, sgemm_packed_view};

/// Fewest input and output channels for Winograd: with 16 the transforms outweigh the
/// products (forward, batch 4 at 250², min of 9 alternating: 6.4 vs 4.6 ms direct), with 32
/// they do not (batch 4 at 125²: 4.9 vs 6.4 ms).
const MIN_CHANNELS: usize = 32;
/// Most input plus output channels for tasks of tile rows that run every step on their own
/// tiles, which (`16·(C + O)` values each, at least a panel of them) must stay in L2; wider
/// convolutions run as [`Geom::forward_wide`] instead. Such tasks, forward + backward at
/// batch 2, alternating (an Intel VM): 256 → 256 at 63² 74 vs 94 ms direct, 384 → 128 at 63²
/// 53 vs 75, 256 → 128 at 28² (batch 8) 34 vs 43; but 768 → 128 at 32² 49 vs 45, 512 → 512 at
/// 31² 127 vs 103, 3072 → 256 at 16² (smp's first decoder block on ResNet50) 212 vs 108.
const MAX_CHANNELS: usize = 512;
/// Fewest 2×2 tiles per tile row for the transforms' runs of 16 tiles of a row; rows of at
/// most 8 tiles go two to a vector instead (the `*_pairs` transforms). In one process against
/// the direct path (ms, min of 3, medians of 7–9 alternating rounds; forward unless noted):
/// 256 → 256 at 14² (7 per row, batch 8) 5.8 vs 8.5, backward 13.4 vs 18.6 (with 16-tile runs
/// it was 13.3 vs 11.0 forward); at 15² (batch 2) 2.8 vs 3.0; at 16² backward 7.0 vs 6.7.
const MIN_TILE_COLS: usize = L / 2 + 1;
/// ... and for two rows per vector at least this many tiles per row and [`MIN_PAIR_OUT`] output
/// channels: 128 → 32 (DenseNet's growth convolution, batch 8) at 14² ran 0.77 vs 0.62 ms, at
/// 7² 0.53 vs 0.70 (noisy, min 0.51 vs 0.34); at 28² (16-tile runs) 1.78 vs 2.06.
const MIN_PAIR_COLS: usize = 7;
/// See [`MIN_PAIR_COLS`].
const MIN_PAIR_OUT: usize = 64;
/// Values of the task's transformed input and product (`16·(C + O)` per tile) kept in L2.
const BLOCK_VALUES: usize = 384 * 1024;
/// Values of a group's transformed input and product in the wide passes
/// ([`Geom::winograd_wide`]): each group reads all of `U` (`16·O·C` values) once.
const WIDE_VALUES: usize = 8 << 20;
/// Values of one block of transformed filters (`16·C` per output channel) in a wide forward
/// pass of one group ([`Geom::forward_wide`]), and most values of its transformed input for
/// blocks. 512 → 512 at 7², batch 8, 15 alternating runs in one process (ms, medians): forward
/// 4.04/4.12 → 3.83/3.84, input gradient 4.68/4.76 → 4.56/4.64; at 4², 1.66/1.75 → 1.59/1.64.
/// With 3072 input channels (blocks of 16 output channels, `V` re-read 16 times from memory)
/// the forward took 23 ms instead of 13: hence the bound on `V`.
const WIDE_FILTER_VALUES: usize = 1 << 20;
/// Fewest multiplies per channel pair a wide convolution must save ([`Geom::wide_pays`]) to
/// run its forward pass (and input gradient) as Winograd. Against the direct path (ms, min
/// of alternating runs, 2 threads on an AMD EPYC Zen 5 VM), forward, with the saving: 512 →
/// 512 at 7², batch 2 (370) 1.55 vs 2.0; at 4², batch 8 (640) 1.8 vs 4.7; at 7², batch 8
/// (1 480) 4.0 vs 4.7; 3072 → 256 at 16², batch 1 (1 280) 9.3 vs 13.5, batch 2 (2 560) 14.4
/// vs 24.3; 1024 → 512 there (2 560) 8.2 vs 15.8.
const WIDE_MIN_SAVED: usize = 360;
/// ... and to run its weight gradient as Winograd ([`Geom::winograd_dw_applies`]). Forward +
/// backward with a Winograd forward, weight gradient by Winograd vs direct: 512 → 512 at 7²,
/// batch 2 (370) 10.2 vs 7.2; at 4², batch 8 (640) 10.7 vs 8.2, batch 16 (1 280) 13.3 vs
/// 12.4; 3072 → 256 at 16², batch 1 (1 280) 38.5 vs 37.0; 512 → 512 at 7², batch 8 (1 480)
/// 17.5 vs 17.0; 1024 → 512 at 16², batch 2 (2 560) 35.0 vs 38.3.
const WIDE_DW_MIN_SAVED: usize = 2048;

/// `0..n` in about eight runs per thread, for the wide passes' transforms.
fn channel_runs(n: usize) -> Vec<Range<usize>> {
    let per = n.div_ceil(8 * rayon::current_num_threads().max(1)).max(1);
    (0..n).step_by(per).map(|a| a..(a + per).min(n)).collect()
}

/// Tests switch the path off to compare it with the direct one.
#[cfg(test)]
static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the Winograd path may run (not switched off by `SCONCE_NO_WINOGRAD`).
pub(super) fn enabled() -> bool {
    #[cfg(test)]
    if OFF.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| !std::env::var("SCONCE_NO_WINOGRAD").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// One image's input as the tiles read it: channel `c`, row `y`, column `x` of the zero-padded
/// input is `data[c·plane + (y − top)·rs + (x − left)]` inside `rows × cols`, zero outside.
#[derive(Clone, Copy)]
pub(super) struct Src {
    pub(super) plane: usize,
    pub(super) rs: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) top: usize,
    pub(super) left: usize,
}

/// One image's output gradient: row `y` of channel `o` at `data[o·plane + off + y·rs]`, its
/// first `OW` values (a compact map, or [`super::Geom::padded_dy_layout`]'s padded planes).
#[derive(Clone, Copy)]
pub(super) struct DySrc {
    pub(super) plane: usize,
    pub(super) rs: usize,
    pub(super) off: usize,
}

/// The arithmetic the filter transforms need, on one value or on 16 kernels' values at once.
trait Lane: Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> {
    fn half(self) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn half(self) -> Self {
        0.5 * self
    }
}

/// 16 kernels' values of one position, lane by lane (vectorised where the caller enables
/// AVX-512).
#[derive(Clone, Copy)]
struct Lanes([f32; L]);

impl std::ops::Add for Lanes {
    type Output = Self;
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Lanes(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
}

impl std::ops::Sub for Lanes {
    type Output = Self;
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Lanes(std::array::from_fn(|i| self.0[i] - b.0[i]))
    }
}

impl Lane for Lanes {
    #[inline(always)]
    fn half(self) -> Self {
        Lanes(self.0.map(|v| 0.5 * v))
    }
}

/// `Gᵀ u G` for one transformed gradient `u` (4×4, row-major): the 3×3 kernel's gradient
/// (the adjoint of [`filter_tile`]).
#[inline(always)]
fn filter_grad_tile<T: Lane>(u: [T; 16]) -> [T; 9] {
    // Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]]: t = Gᵀ u (3×4), then t G (3×3).
    let col = |a: T, b: T, c: T, d: T| [a + (b + c).half(), (b - c).half(), (b + c).half() + d];
    let t: [[T; 3]; 4] = std::array::from_fn(|s| col(u[s], u[4 + s], u[8 + s], u[12 + s]));
    let mut g = [u[0]; 9];
    for i in 0..3 {
        let [a, b, c, d] = [t[0][i], t[1][i], t[2][i], t[3][i]];
        let row = col(a, b, c, d);
        g[3 * i..3 * i + 3].copy_from_slice(&row);
    }
    g
}

/// The transformed filters `U_k = (G g Gᵀ)[k]` (`O×C` each, `U_k[o][c]` from kernel
/// `g[o][c]`), packed for the kernel one after another in [`packed_a_len`]'s layout.
pub(super) struct Filters {
    data: Vec<f32>,
    o: usize,
    c: usize,
}

impl Filters {
    /// `U_k` as a products' left operand.
    fn u(&self, k: usize) -> PackedView<'_> {
        let (per, stride) = (packed_a_len(self.o, self.c), filter_stride(self.o, self.c));
        PackedView { data: &self.data[k * stride..k * stride + per], m: self.o, k: self.c }
    }
}

/// Values from one packed `U_k` to the next in [`Filters`] ([`k_stride`]).
fn filter_stride(o: usize, c: usize) -> usize {
    k_stride(packed_a_len(o, c))
}

/// Values from one of 16 matrices of `len` values (`U_k`, `V_k`, `M_k`, `Z_k`, `dU_k`) to the
/// next: `len` rounded up to 4 KiB, plus one cache line. The transforms load or store all 16
/// at once; 16 matrices a multiple of 4 KiB apart (512 × 512 filters: 1 MiB each; 512 channels
/// × 128 tiles) put those 16 accesses in one L1 set of 12 ways. The filter transform of 512 →
/// 512 channels ran 0.48 → 0.23 ms with the gaps.
fn k_stride(len: usize) -> usize {
    len.next_multiple_of(1024) + L
}

/// The filters `wt` (`O·C·3·3`) transformed and packed ([`Filters`]), each panel of 8 output
/// channels by one task, straight into the packed layout: no `16·O·C` intermediate to write,
/// read back and pack (which with the transform took 27 % of a 512 → 512 forward at 7²).
/// With `adjoint`, `wt` is the weights `W` (`C·O·3·3`) of the convolution whose input gradient
/// this one computes, read as its kernel `W[c][o]` turned by 180°, with no flipped copy. Only
/// the output channels `ocs` (all `0..o` for the whole `U`), as `ocs.len()` rows.
pub(super) fn transform_filters(
    o: usize,
    c: usize,
    wt: &[f32],
    adjoint: bool,
    ocs: Range<usize>,
) -> candle_core::Result<Filters> {
    if wt.len() != o * c * 9 {
        candle_core::bail!("winograd: {} weights for {o}×{c}×3×3", wt.len());
    }
    if ocs.is_empty() || ocs.end > o {
        candle_core::bail!("winograd: output channels {ocs:?} of {o}");
    }
    let (o0, m) = (ocs.start, ocs.len());
    if !crate::sgemm::available() {
        candle_core::bail!("winograd: this CPU has no AVX-512F");
    }
    let (per, stride) = (packed_a_len(m, c), filter_stride(m, c));
    let mut data: Vec<f32> = Vec::with_capacity(16 * stride);
    let spare = &mut data.spare_capacity_mut()[..16 * stride];
    // The gaps between the operands.
    for gap in spare.chunks_exact_mut(stride) {
        gap[per..].fill(MaybeUninit::new(0.0));
    }
    let up = SharedOut(spare.as_mut_ptr().cast::<f32>());
    let panels = m.div_ceil(MR);
    let per_task = if adjoint { ADJOINT_PANELS } else { 1 };
    (0..panels.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let ips = t * per_task..(t * per_task + per_task).min(panels);
        // SAFETY: the CPU has AVX-512F (checked above); `data` has capacity for the 16 packed
        // operands `stride` apart, and only this task writes panels `ips` of each.
        unsafe { transform_panels(wt, o, c, o0, m, ips, up, adjoint) };
    });
    // SAFETY: the panels cover every value of the 16 packed operands (padding rows included),
    // and the loop above wrote the gaps.
    unsafe { data.set_len(16 * stride) };
    Ok(Filters { data, o: m, c })
}

/// `[a, (a + b + c)/2, (a − b + c)/2, c]`: `G` applied to one column `(a, b, c)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn g_col(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
    c: std::arch::x86_64::__m512,
) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let half = _mm512_set1_ps(0.5);
    let ac = _mm512_add_ps(a, c);
    [a, _mm512_mul_ps(_mm512_add_ps(ac, b), half), _mm512_mul_ps(_mm512_sub_ps(ac, b), half), c]
}

/// Panels `ips` (panel `ip`: output channels `o0 + 8·ip ..` of the `m` from `o0`) of every
/// packed `U_k` ([`transform_filters`]), the panels inner: per
/// depth block, two input channels at a time, lane `l` = kernel `(8·ip + l % 8, c + l / 8)`,
/// so that each `U_k`'s 16 values are one contiguous store of the packed panel (`G g Gᵀ`:
/// [`g_col`] on the columns of `g`, then on the rows of `G g`). Rows past `O` are zeros.
/// The 16 kernels come in as one masked load of their 9 values each and a 16×16 transpose in
/// registers (nine 16-lane gathers took 2.5× as long). With `adjoint`, `wt` holds the weights
/// `W` (`C·O·3·3`) of the convolution whose input gradient this one is, and kernel `(o, c)` is
/// `W[c][o]` turned by 180°.
///
/// # Safety
/// The CPU has AVX-512F; `wt` holds `O·C·9` values and `o0 + m ≤ O`; `u` is valid for writes
/// of `16·filter_stride(m, C)` values, and no other thread writes the panels `ips`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_panels(
    wt: &[f32],
    o: usize,
    c: usize,
    o0: usize,
    m: usize,
    ips: Range<usize>,
    u: SharedOut,
    adjoint: bool,
) {
    use crate::sgemm::transpose16_regs;
    use std::arch::x86_64::*;
    let (stride, mp) = (filter_stride(m, c), m.div_ceil(MR) * MR);
    // Where kernel `(o_, c_)`'s 9 values start in `wt`.
    let kernel_at = |o_: usize, c_: usize| if adjoint { (c_ * o + o_) * 9 } else { (o_ * c + c_) * 9 };
    for (k0, kc) in kblocks(c) {
        for q in (0..kc).step_by(2) {
            for ip in ips.clone() {
                let rows = (m - ip * MR).min(MR);
                let pair = if q + 1 < kc { lanes_mask(L) } else { lanes_mask(MR) };
                // The weights a few steps on: `W` is rarely in cache (9.4 MB for 512 → 512), and
                // without these the loads below waited on memory (see [`PF_COLS`]).
                let base = wt.as_ptr();
                if adjoint {
                    // The panel's 8 kernels (288 bytes: 5 lines) of both rows `PF_ROWS` on.
                    for dc in 0..2 {
                        let at = kernel_at(o0 + ip * MR, k0 + q + dc + PF_ROWS);
                        for line in 0..5 {
                            _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(at + 16 * line).cast());
                        }
                    }
                } else {
                    // Each row's next 72 bytes, `PF_COLS` input channels on.
                    for row in 0..rows {
                        let at = kernel_at(o0 + ip * MR + row, k0 + q + PF_COLS);
                        _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(at).cast());
                        _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(at + 16).cast());
                    }
                }
                let r: [__m512; L] = std::array::from_fn(|l| {
                    let (row, dc) = (l % MR, l / MR);
                    if row < rows && q + dc < kc {
                        // SAFETY: kernel `(o0 + 8·ip + row < O, k0 + q + dc < C)` lies inside `wt`
                        // (`O·C·9` values); the load reads its 9 values only.
                        unsafe {
                            _mm512_maskz_loadu_ps(0x1ff, wt.as_ptr().add(kernel_at(o0 + ip * MR + row, k0 + q + dc)))
                        }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                // Row `e` of the transpose: value `e` of each lane's kernel.
                let t = transpose16_regs(r);
                let g: [__m512; 9] = std::array::from_fn(|e| if adjoint { t[8 - e] } else { t[e] });
                let (t0, t1, t2) = (g_col(g[0], g[3], g[6]), g_col(g[1], g[4], g[7]), g_col(g[2], g[5], g[8]));
                for (i, ((a, b), c)) in t0.into_iter().zip(t1).zip(t2).enumerate() {
                    for (j, v) in g_col(a, b, c).into_iter().enumerate() {
                        let at = (4 * i + j) * stride + k0 * mp + ip * kc * MR + q * MR;
                        // SAFETY: depths `q, q + 1 < kc` (the second only in `pair`) of panel `ip`
                        // in block `k0` of `U_{4i+j}`: inside the operands (the caller's contract).
                        unsafe { _mm512_mask_storeu_ps(u.at(at), pair, v) };
                    }
                }
            }
        }
    }
}

/// Stand-in off x86-64, where [`transform_filters`] refuses to run.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_panels(_: &[f32], _: usize, _: usize, _: usize, _: usize, _: Range<usize>, _: SharedOut, _: bool) {}

/// Values of each of `M`'s 16 rows that the output transforms ask for ahead of their loads,
/// and ([`PF_CH`]) channels on whose input rows the input transforms ask for: 16 rows of `M`
/// and the input planes of 8 images are more streams than the hardware prefetcher follows.
/// 15 alternating runs in one process (ms, medians), batch 8, forward / input gradient /
/// weight gradient: 64 → 64 at 56² 3.48 → 3.14, 3.35 → 3.02, 4.56 → 4.26; 128 → 128 at 28²
/// 2.92 → 2.68, 2.79 → 2.61, 3.37 → 3.09; 32 → 32 at 125² (batch 4) 3.21 → 2.71, 3.01 → 2.66,
/// 3.10 → 3.10; 512 → 512 at 7² 3.69 → 3.54, 4.55 → 4.37, 4.47 → 4.44 (direct); 256 → 256 at
/// 14² 3.21 → 3.15, 3.30 → 3.24, 3.99 → 3.93.
const PF_M: usize = 256;

/// Asks for the input rows that tile rows `r0..r1` of channel `ch` read ([`PF_M`]). A channel
/// past the last asks for lines it does not need, harmlessly: a prefetch never faults.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn prefetch_rows(x: &[f32], img_len: usize, src: &Src, ch: usize, th: usize, r0: usize, r1: usize) {
    use std::arch::x86_64::*;
    if src.rows == 0 || r1 <= r0 {
        return;
    }
    for img in r0 / th..=(r1 - 1) / th {
        let (lo, hi) = (r0.max(img * th) - img * th, r1.min((img + 1) * th) - img * th);
        // Input rows `2·lo .. 2·hi + 2` of the padded map, less the padding above.
        let y0 = (2 * lo).saturating_sub(src.top).min(src.rows);
        let y1 = (2 * hi + 2).saturating_sub(src.top).min(src.rows);
        if y1 <= y0 {
            continue;
        }
        let at = img * img_len + ch * src.plane + y0 * src.rs;
        let span = (y1 - y0 - 1) * src.rs + src.cols;
        for line in (0..span).step_by(16) {
            _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(at + line).cast());
        }
    }
}

/// See [`PF_M`].
const PF_CH: usize = 2;

/// Rows of `W` ahead that the adjoint filter transform prefetches (see [`PF_COLS`]).
const PF_ROWS: usize = 8;
/// Input channels ahead that the filter transform prefetches in each of its 8 rows of `W`:
/// without prefetches its loads waited on memory (a cold 512 × 512 transform read 9.4 MB in
/// ~1 ms, ~9 GB/s). 15 alternating runs in one process (ms, medians), batch 8, 512 → 512 at
/// 7²: forward 3.89 → 3.49, input gradient 4.18 → 3.67, both gradients 9.25 → 8.82; at 4²
/// 1.34 → 1.20, 1.34 → 1.13 and 3.93 → 3.36. The transform alone, warm (cold): 0.52 → 0.46
/// (0.98 → 0.82), adjoint 0.82 → 0.70 (1.73 → 1.00). 2/8, 4/16 and 16/64 rows/channels ahead
/// gained about as much.
const PF_COLS: usize = 32;

/// Panels per task of the adjoint filter transform, the panels inner: each depth step reads
/// `8·9·ADJOINT_PANELS` contiguous weights of a row of `W` (one panel per task read 72 values
/// per row, rows 18 KiB apart: a new page, unprefetched, at every step). Input gradients, 15
/// alternating runs in one process (ms, medians), one panel vs 8: 512 → 512 at 7² batch 8
/// 5.53/5.73 vs 5.05/5.20, 3072 → 256 at 16² batch 2 15.7/16.1 vs 13.6/14.4; 4 panels were
/// even with 8, 16 and 64 slower.
const ADJOINT_PANELS: usize = 8;

/// Kernels per task of [`filter_grads`].
const FILTER_RUN: usize = 1024;

/// `dW[o][c] += Gᵀ dU[·][o][c] G` for the `O·C` kernels of `dw`, `dU_k` at `du[k·ks..]`.
fn filter_grads(du: &[f32], ks: usize, dw: &mut [f32]) {
    dw.par_chunks_mut(9 * FILTER_RUN).enumerate().for_each(|(run, d)| {
        // SAFETY: the CPU has AVX-512F (`winograd_applies`).
        unsafe { filter_grad_run(du, ks, run * FILTER_RUN, d) };
    });
}

/// `dw[oc] += Gᵀ dU[·][oc] G` for kernels `first ..` (`d` holds their `9` values each), `dU_k`
/// at `du[k·ks..]`: 16 kernels at a time in `zmm` lanes.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn filter_grad_run(du: &[f32], ks: usize, first: usize, d: &mut [f32]) {
    let n = d.len() / 9;
    let mut i = 0;
    while i + L <= n {
        let u: [Lanes; 16] = std::array::from_fn(|k| Lanes(std::array::from_fn(|l| du[k * ks + first + i + l])));
        let g = filter_grad_tile(u);
        for l in 0..L {
            for (e, ge) in g.iter().enumerate() {
                d[(i + l) * 9 + e] += ge.0[l];
            }
        }
        i += L;
    }
    for j in i..n {
        let u: [f32; 16] = std::array::from_fn(|k| du[k * ks + first + j]);
        for (dv, g) in d[j * 9..j * 9 + 9].iter_mut().zip(filter_grad_tile(u)) {
            *dv += g;
        }
    }
}

/// A `*mut f32` shared by the tasks, which write disjoint elements (output rows, or runs of
/// transformed kernels).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint elements: the output rows of their own tile rows
// (`forward_winograd`), or their own runs of transformed kernels (`transform_filters`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `i` values on (a method, so that closures capture the whole `Sync` value).
    ///
    /// # Safety
    /// As [`pointer::add`]: `i` stays inside the allocation.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i) }
    }
}

impl Geom {
    /// Whether this convolution runs as Winograd F(2×2, 3×3): `f32` on the AVX-512 kernel, one
    /// group, 3×3, stride 1, no dilation, at least [`MIN_CHANNELS`] input and output channels,
    /// and either at most [`MAX_CHANNELS`] of both together with at least [`MIN_TILE_COLS`]
    /// tiles per tile row (or [`MIN_PAIR_COLS`] with [`MIN_PAIR_OUT`] output channels), or more
    /// channels ([`Self::winograd_wide`]) on a map large enough that the saved products pay
    /// for the transformed filters ([`Self::wide_pays`]).
    pub(super) fn winograd_applies(&self) -> bool {
        enabled()
            && crate::sgemm::available()
            && self.g == 1
            && (self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) == (3, 3, 1, 1, 1, 1)
            && self.c >= MIN_CHANNELS
            && self.o >= MIN_CHANNELS
            && if self.winograd_wide() {
                self.wide_pays()
            } else {
                self.ow.div_ceil(2) >= MIN_TILE_COLS || (self.ow.div_ceil(2) >= MIN_PAIR_COLS && self.o >= MIN_PAIR_OUT)
            }
    }

    /// Tile rows per task: `16·(C + O)` values per tile within [`BLOCK_VALUES`], at least one
    /// row and about one panel of columns (two panels put 256 + 256 channels' tiles past L2:
    /// 256 → 256 at 63², batch 2, forward + backward 74 → 47 ms with one).
    fn winograd_rows(&self, tw: usize) -> usize {
        let tiles = (BLOCK_VALUES / (16 * (self.c + self.o))).max(NR);
        (tiles / tw).max(1)
    }

    /// The forward pass by Winograd into `out` (`N·O·OH·OW`, every element written), reading
    /// image `n`'s input at `x[n·img_len..]` through `src`; the epilogue, if any, per image
    /// once its output is complete. With `adjoint`, `wt` is the weights of the convolution
    /// whose input gradient this pass computes ([`transform_filters`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_winograd(
        &self,
        x: &[f32],
        img_len: usize,
        src: Src,
        wt: &[f32],
        adjoint: bool,
        out: &mut [MaybeUninit<f32>],
        epi: Option<&Epilogue<'_, f32>>,
    ) -> candle_core::Result<()> {
        let (n, c, o, oh, ow) = (self.n, self.c, self.o, self.oh, self.ow);
        if out.len() != n * o * oh * ow || x.len() != n * img_len {
            candle_core::bail!("winograd: buffers do not match the geometry {self:?}");
        }
        // Every read of the source stays inside each image's slice.
        if src.rows > 0 && src.cols > 0 && (c - 1) * src.plane + (src.rows - 1) * src.rs + src.cols > img_len {
            candle_core::bail!("winograd: input layout {}×{} outside an image of {img_len}", src.rows, src.cols);
        }
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let y = SharedOut(out.as_mut_ptr().cast::<f32>());
        if self.winograd_wide() {
            self.forward_wide(x, img_len, &src, wt, adjoint, y, self.wide_rows(tw))?;
            return self.apply_epilogue(out, epi);
        }
        let packed = transform_filters(o, c, wt, adjoint, 0..o)?;
        let rows = self.winograd_rows(tw);
        // Tasks take `rows` tile rows of the batch at a time (image `G / th`, row `G % th` for
        // row `G`), small maps several images' worth.
        let tasks: Vec<usize> = (0..n * th).step_by(rows).collect();
        tasks.par_iter().try_for_each(|&r0| -> candle_core::Result<()> {
            let r1 = (r0 + rows).min(n * th);
            let tb = (r1 - r0) * tw;
            let (ksc, kso) = (k_stride(c * tb), k_stride(o * tb));
            <f32 as crate::kernel::Real>::with_scratch(16 * (ksc + kso), |buf| {
                let (v, m) = buf.split_at_mut(16 * ksc);
                // SAFETY: the CPU has AVX-512F (`winograd_applies`); `v` holds `16·k_stride(C·tb)` values
                // and every read of `xi` lies inside it (checked above).
                unsafe { input_transform(x, img_len, &src, c, 0..c, th, tw, r0, r1, SharedOut(v.as_mut_ptr())) };
                for k in 0..16 {
                    let b = Strided { data: &v[k * ksc..k * ksc + c * tb], rs: tb, cs: 1 };
                    sgemm_packed_view(tb, &mut m[k * kso..k * kso + o * tb], tb, false, packed.u(k), &b, 1)?;
                }
                // SAFETY: as above; `m` holds `16·k_stride(O·tb)` values, and the task writes the output
                // rows of its own tile rows only, inside `out` (checked above).
                unsafe { output_transform(m, y, o, 0..o, oh, ow, th, tw, r0, r1) };
                Ok(())
            })
        })?;
        self.apply_epilogue(out, epi)
    }

    /// The epilogue, if any, on each image of the finished output `out` (every element
    /// written).
    fn apply_epilogue(&self, out: &mut [MaybeUninit<f32>], epi: Option<&Epilogue<'_, f32>>) -> candle_core::Result<()> {
        let len = self.o * self.oh * self.ow;
        if let Some(e) = epi {
            // SAFETY: the caller wrote every output element; `MaybeUninit<f32>` has `f32`'s
            // layout.
            let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [f32]) };
            out.par_chunks_exact_mut(len).enumerate().for_each(|(img, yi)| e.apply(img, yi, self.oh * self.ow));
        }
        Ok(())
    }

    /// Whether this convolution's channels are too many for one task's tiles to keep all
    /// of them in L2 ([`MAX_CHANNELS`]): then each pass runs over a group of tiles at a time,
    /// the transforms split by channels and the products by `k` ([`Self::forward_wide`]).
    fn winograd_wide(&self) -> bool {
        self.c + self.o > MAX_CHANNELS
    }

    /// Whether a [`Self::winograd_wide`] convolution saves enough products to pay for its
    /// transformed filters (`16·O·C` values written and read on every pass): at least
    /// [`WIDE_MIN_SAVED`] fewer multiplies per channel pair than the direct path's
    /// `9·N·OH·OW`.
    fn wide_pays(&self) -> bool {
        self.wide_saved() >= WIDE_MIN_SAVED
    }

    /// Multiplies per channel pair that Winograd saves over the direct path: `9·N·OH·OW`
    /// against 16 per tile.
    fn wide_saved(&self) -> usize {
        let tiles = self.n * self.oh.div_ceil(2) * self.ow.div_ceil(2);
        (9 * self.n * self.oh * self.ow).saturating_sub(16 * tiles)
    }

    /// Whether the weight gradient runs as Winograd: as [`Self::winograd_applies`], and for a
    /// wide convolution with at least [`WIDE_DW_MIN_SAVED`] saved multiplies (its products
    /// `dU_k += Z_k·V_kᵀ` have the tiles as their depth, and `dU` is `16·O·C` values).
    pub(super) fn winograd_dw_applies(&self) -> bool {
        self.winograd_applies() && (!self.winograd_wide() || self.wide_saved() >= WIDE_DW_MIN_SAVED)
    }

    /// Tile rows per group of the wide passes: `16·(C + O)` values per tile within
    /// [`WIDE_VALUES`], at least one row.
    fn wide_rows(&self, tw: usize) -> usize {
        (WIDE_VALUES / (16 * (self.c + self.o) * tw)).max(1)
    }

    /// [`Self::forward_winograd`] for [`Self::winograd_wide`] convolutions, into `y` (the
    /// whole batch's output, every element written), with the filters `wt` (read as
    /// [`transform_filters`] does with `adjoint`). Per group of `rows` tile rows: the input
    /// transform with the channels split over the pool, the 16 products `M_k = U_k·V_k` one
    /// per task, the output transform with the output channels split. With one group, the
    /// filters are transformed a block of output channels at a time ([`WIDE_FILTER_VALUES`])
    /// right before that block's products and output transform, so that `U` (16 MiB for 512 →
    /// 512 channels) is read back from cache rather than memory; with several groups, each of
    /// which reads all of `U`, once for all.
    #[allow(clippy::too_many_arguments)]
    fn forward_wide(
        &self,
        x: &[f32],
        img_len: usize,
        src: &Src,
        wt: &[f32],
        adjoint: bool,
        y: SharedOut,
        rows: usize,
    ) -> candle_core::Result<()> {
        let (n, c, o, oh, ow) = (self.n, self.c, self.o, self.oh, self.ow);
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let rows = rows.max(1);
        // Blocks re-read the transformed input `V` (`16·C·tb` values) once each: only when it
        // is no larger than a block of filters.
        let tbs = rows.min(n * th) * tw;
        let blocked = rows >= n * th && 16 * c * tbs <= WIDE_FILTER_VALUES;
        let block = if blocked { (WIDE_FILTER_VALUES / (16 * c)) / MR * MR } else { o };
        let block = block.clamp(MR, o.max(MR));
        let whole = if block >= o { Some(transform_filters(o, c, wt, adjoint, 0..o)?) } else { None };
        let cs = channel_runs(c);
        for r0 in (0..n * th).step_by(rows) {
            let r1 = (r0 + rows).min(n * th);
            let tb = (r1 - r0) * tw;
            let (ksc, kso) = (k_stride(c * tb), k_stride(o * tb));
            <f32 as crate::kernel::Real>::with_scratch(16 * (ksc + kso), |buf| -> candle_core::Result<()> {
                let (v, m) = buf.split_at_mut(16 * ksc);
                let vp = SharedOut(v.as_mut_ptr());
                cs.par_iter().for_each(|chs| {
                    // SAFETY: the CPU has AVX-512F (`winograd_applies`); `v` holds `16·k_stride(C·tb)`
                    // values, each task writes the rows of its own channels, and every read of
                    // `x` lies inside it (checked by the caller).
                    unsafe { input_transform(x, img_len, src, c, chs.clone(), th, tw, r0, r1, vp) };
                });
                let v = &*v;
                let v_k = |k: usize| Strided { data: &v[k * ksc..k * ksc + c * tb], rs: tb, cs: 1 };
                // With blocks, each `V_k` packed once for all of them (512 → 512 at 7², batch 8,
                // 15 alternating runs, medians in ms: forward 4.03/3.79 → 3.79/3.70, input
                // gradient 4.25/4.37 → 4.10/4.08).
                let pre = match whole {
                    Some(_) => None,
                    None => Some(
                        (0..16)
                            .into_par_iter()
                            .map(|k| PrePacked::new(&v_k(k), c, tb))
                            .collect::<candle_core::Result<Vec<_>>>()?,
                    ),
                };
                for o0 in (0..o).step_by(block) {
                    let o1 = (o0 + block).min(o);
                    let owned;
                    let packed = match &whole {
                        Some(f) => f,
                        None => {
                            owned = transform_filters(o, c, wt, adjoint, o0..o1)?;
                            &owned
                        }
                    };
                    m.par_chunks_mut(kso).enumerate().try_for_each(|(k, mk)| {
                        let mk = &mut mk[o0 * tb..o1 * tb];
                        match &pre {
                            Some(pre) => sgemm_packed_view(tb, mk, tb, false, packed.u(k), &pre[k], 1),
                            None => sgemm_packed_view(tb, mk, tb, false, packed.u(k), &v_k(k), 1),
                        }
                    })?;
                    let m = &*m;
                    channel_runs(o1 - o0).par_iter().for_each(|ocs| {
                        // SAFETY: as above; `m` holds `16·k_stride(O·tb)` values (rows `o0..o1`
                        // of each `M_k` written just above), and each task writes its own
                        // channels' rows of this group's tile rows, inside `y` (the caller's
                        // contract).
                        unsafe { output_transform(m, y, o, o0 + ocs.start..o0 + ocs.end, oh, ow, th, tw, r0, r1) };
                    });
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The weight gradient by Winograd, added into `dw` (`O·C·3·3`): per task of tile rows,
    /// `dU_k += Z_k · V_kᵀ` with `V` the input's tiles (as [`Self::forward_winograd`]) and
    /// `Z = A dY Aᵀ` the output gradient's 2×2 tiles (zero past the map), then
    /// `dW = Gᵀ (Σ dU) G`. Image `n`'s `dY` is read at `dy[n·dy_len..]` through `dsrc`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn weight_grad_winograd(
        &self,
        x: &[f32],
        img_len: usize,
        src: Src,
        dy: &[f32],
        dy_len: usize,
        dsrc: DySrc,
        dw: &mut [f32],
    ) -> candle_core::Result<()> {
        let (n, c, o, oh, ow) = (self.n, self.c, self.o, self.oh, self.ow);
        if x.len() != n * img_len || dy.len() != n * dy_len || dw.len() != o * c * 9 {
            candle_core::bail!("winograd: buffers do not match the geometry {self:?}");
        }
        if src.rows > 0 && src.cols > 0 && (c - 1) * src.plane + (src.rows - 1) * src.rs + src.cols > img_len {
            candle_core::bail!("winograd: input layout {}×{} outside an image of {img_len}", src.rows, src.cols);
        }
        if (o - 1) * dsrc.plane + dsrc.off + (oh - 1) * dsrc.rs + ow > dy_len {
            candle_core::bail!("winograd: output gradient layout outside an image of {dy_len}");
        }
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        if self.winograd_wide() {
            return self.weight_grad_wide(x, img_len, &src, dy, dy_len, &dsrc, dw, self.wide_rows(tw));
        }
        let rows = self.winograd_rows(tw);
        let tasks: Vec<usize> = (0..n * th).step_by(rows).collect();
        // One partial `dU` per thread over a fixed run of tasks, added in order: the same
        // sums in the same order on every run (rayon's fold splits where work is stolen).
        let parts = rayon::current_num_threads().clamp(1, tasks.len().max(1));
        let ksd = k_stride(o * c);
        let per = tasks.len().div_ceil(parts).max(1);
        let partials = tasks
            .par_chunks(per)
            .map(|run| -> candle_core::Result<Vec<f32>> {
                let mut du = vec![0f32; 16 * ksd];
                for &r0 in run {
                    let r1 = (r0 + rows).min(n * th);
                    let tb = (r1 - r0) * tw;
                    let cols: Vec<usize> = (0..c).map(|ch| ch * tb).collect();
                    let (ksc, kso) = (k_stride(c * tb), k_stride(o * tb));
                    <f32 as crate::kernel::Real>::with_scratch(16 * (ksc + kso), |buf| -> candle_core::Result<()> {
                        let (v, z) = buf.split_at_mut(16 * ksc);
                        // SAFETY: the CPU has AVX-512F (`winograd_applies`); `v` holds `16·k_stride(C·tb)`
                        // and `z` `16·k_stride(O·tb)` values; the reads of `x` and `dy` lie inside them
                        // (checked above).
                        unsafe {
                            input_transform(x, img_len, &src, c, 0..c, th, tw, r0, r1, SharedOut(v.as_mut_ptr()));
                            output_grad_transform(
                                dy,
                                dy_len,
                                &dsrc,
                                o,
                                0..o,
                                oh,
                                ow,
                                th,
                                tw,
                                r0,
                                r1,
                                SharedOut(z.as_mut_ptr()),
                            );
                        }
                        for k in 0..16 {
                            let a = Strided { data: &z[k * kso..k * kso + o * tb], rs: tb, cs: 1 };
                            let b = Columns { data: &v[k * ksc..k * ksc + c * tb], offs: &cols };
                            sgemm(o, c, tb, &mut du[k * ksd..k * ksd + o * c], c, true, &a, &b, 1)?;
                        }
                        Ok(())
                    })?;
                }
                Ok(du)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut du = vec![0f32; 16 * ksd];
        for part in &partials {
            for (p, q) in du.iter_mut().zip(part) {
                *p += q;
            }
        }
        filter_grads(&du, ksd, dw);
        Ok(())
    }

    /// [`Self::weight_grad_winograd`] for [`Self::winograd_wide`] convolutions: per group of
    /// `rows` tile rows (as [`Self::forward_wide`]) the transforms split by channels, then
    /// `dU_k += Z_k · V_kᵀ` one `k` per task (each `dU_k` summed in the same order on every
    /// run).
    #[allow(clippy::too_many_arguments)]
    fn weight_grad_wide(
        &self,
        x: &[f32],
        img_len: usize,
        src: &Src,
        dy: &[f32],
        dy_len: usize,
        dsrc: &DySrc,
        dw: &mut [f32],
        rows: usize,
    ) -> candle_core::Result<()> {
        let (n, c, o, oh, ow) = (self.n, self.c, self.o, self.oh, self.ow);
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let rows = rows.max(1);
        let (cs, os) = (channel_runs(c), channel_runs(o));
        let tbm = rows.min(n * th) * tw;
        let ksd = k_stride(o * c);
        let scratch = 16 * (ksd + k_stride(c * tbm) + k_stride(o * tbm));
        <f32 as crate::kernel::Real>::with_scratch(scratch, |buf| -> candle_core::Result<()> {
            let (du, vz) = buf.split_at_mut(16 * ksd);
            for (group, r0) in (0..n * th).step_by(rows).enumerate() {
                let r1 = (r0 + rows).min(n * th);
                let tb = (r1 - r0) * tw;
                let cols: Vec<usize> = (0..c).map(|ch| ch * tb).collect();
                let (ksc, kso) = (k_stride(c * tb), k_stride(o * tb));
                let (v, z) = vz[..16 * (ksc + kso)].split_at_mut(16 * ksc);
                let (vp, zp) = (SharedOut(v.as_mut_ptr()), SharedOut(z.as_mut_ptr()));
                cs.par_iter().for_each(|chs| {
                    // SAFETY: the CPU has AVX-512F (`winograd_applies`); `v` holds `16·k_stride(C·tb)`
                    // values, each task writes its own channels' rows, and the reads of `x`
                    // lie inside it (checked by the caller).
                    unsafe { input_transform(x, img_len, src, c, chs.clone(), th, tw, r0, r1, vp) };
                });
                os.par_iter().for_each(|ocs| {
                    // SAFETY: as above for `z` (`16·k_stride(O·tb)` values) and the reads of `dy`.
                    unsafe { output_grad_transform(dy, dy_len, dsrc, o, ocs.clone(), oh, ow, th, tw, r0, r1, zp) };
                });
                let (v, z) = (&*v, &*z);
                du.par_chunks_mut(ksd).enumerate().try_for_each(|(k, duk)| {
                    let a = Strided { data: &z[k * kso..k * kso + o * tb], rs: tb, cs: 1 };
                    let b = Columns { data: &v[k * ksc..k * ksc + c * tb], offs: &cols };
                    sgemm(o, c, tb, &mut duk[..o * c], c, group > 0, &a, &b, 1)
                })?;
            }
            filter_grads(du, ksd, dw);
            Ok(())
        })
    }
}

/// Lanes of a `zmm` register of `f32`: tiles per chunk of the transforms.
const L: usize = 16;

/// The first `n` (≤ 16) lanes.
#[inline(always)]
fn lanes_mask(n: usize) -> u16 {
    if n >= L { u16::MAX } else { ((1u32 << n) - 1) as u16 }
}

/// The even and the odd lanes of the 32 values `lo ‖ hi`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn even_odd(lo: std::arch::x86_64::__m512, hi: std::arch::x86_64::__m512) -> [std::arch::x86_64::__m512; 2] {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    [_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi)]
}

/// `d·B` of one input row for 16 tiles, from the row's padded columns `[lo, hi]` (from the
/// tiles' first column) and `[lo2, hi2]` (two columns on): `(a, b, c, d)` = columns
/// `(2t, 2t+1, 2t+2, 2t+3)` of tile `t`, and `d·B = [a − c, b + c, c − b, b − d]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn row_t([lo, hi, lo2, hi2]: [std::arch::x86_64::__m512; 4]) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let [a, b] = even_odd(lo, hi);
    let [c, d] = even_odd(lo2, hi2);
    [_mm512_sub_ps(a, c), _mm512_add_ps(b, c), _mm512_sub_ps(c, b), _mm512_sub_ps(b, d)]
}

/// `V = Bᵀ (d B)` from the four rows' [`row_t`], in the order `k = 4·row + column`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn bt_rows([q0, q1, q2, q3]: [[std::arch::x86_64::__m512; 4]; 4]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let mut v = [_mm512_setzero_ps(); 16];
    for s in 0..4 {
        v[s] = _mm512_sub_ps(q0[s], q2[s]);
        v[4 + s] = _mm512_add_ps(q1[s], q2[s]);
        v[8 + s] = _mm512_sub_ps(q2[s], q1[s]);
        v[12 + s] = _mm512_sub_ps(q1[s], q3[s]);
    }
    v
}

/// `Y = Aᵀ M A` for 16 tiles from `M` (`k = 4·row + column`): per output row `i`, its two
/// columns interleaved, lanes 0–7 then lanes 8–15 (`[first half, second half]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn at_m_a(m: [std::arch::x86_64::__m512; 16]) -> [[std::arch::x86_64::__m512; 2]; 2] {
    use std::arch::x86_64::*;
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    // T = Aᵀ M: rows (M0 + M1 + M2, M1 − M2 − M3) per column s; then Y = T A likewise.
    let mut t = [[_mm512_setzero_ps(); 4]; 2];
    for s in 0..4 {
        let (a, b, c, d) = (m[s], m[4 + s], m[8 + s], m[12 + s]);
        t[0][s] = _mm512_add_ps(_mm512_add_ps(a, b), c);
        t[1][s] = _mm512_sub_ps(_mm512_sub_ps(b, c), d);
    }
    let mut out = [[_mm512_setzero_ps(); 2]; 2];
    for (o, [p0, p1, p2, p3]) in out.iter_mut().zip(t) {
        let y0 = _mm512_add_ps(_mm512_add_ps(p0, p1), p2);
        let y1 = _mm512_sub_ps(_mm512_sub_ps(p1, p2), p3);
        *o = [_mm512_permutex2var_ps(y0, lo_idx, y1), _mm512_permutex2var_ps(y0, hi_idx, y1)];
    }
    out
}

/// `Z = A dY Aᵀ` for 16 tiles from `dY`'s `[[y00, y01], [y10, y11]]` (row, column), in the order
/// `k = 4·row + column`: `A dY` (4×2), then `[u0, u0 + u1, u0 − u1, −u1]` per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn a_dy_at([[y00, y01], [y10, y11]]: [[std::arch::x86_64::__m512; 2]; 2]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    let rows = [
        (y00, y01),
        (_mm512_add_ps(y00, y10), _mm512_add_ps(y01, y11)),
        (_mm512_sub_ps(y00, y10), _mm512_sub_ps(y01, y11)),
        (_mm512_sub_ps(zero, y10), _mm512_sub_ps(zero, y11)),
    ];
    let mut z = [zero; 16];
    for (r, (u0, u1)) in rows.into_iter().enumerate() {
        z[4 * r..4 * r + 4].copy_from_slice(&[
            u0,
            _mm512_add_ps(u0, u1),
            _mm512_sub_ps(u0, u1),
            _mm512_sub_ps(zero, u1),
        ]);
    }
    z
}

/// One tile row in a vector: tile row `gr` of the batch (image `gr / th`, row `gr % th`), its
/// `n` tiles (0: no row) at lanes `lane ..` of the vector.
#[derive(Clone, Copy)]
struct Seg {
    gr: usize,
    n: usize,
    lane: usize,
}

/// The vectors the `*_pairs` transforms run over for tile rows `r0..r1` of `tw ≤ 8` tiles: two
/// rows per vector (lanes 0.. and 8..), so that small maps do not leave most lanes empty; the
/// second with `n = 0` when `r1 − r0` is odd.
fn pairs(r0: usize, r1: usize, tw: usize) -> Vec<[Seg; 2]> {
    (r0..r1)
        .step_by(2)
        .map(|gr| {
            let second = Seg { gr: gr + 1, n: if gr + 1 < r1 { tw } else { 0 }, lane: L / 2 };
            [Seg { gr, n: tw, lane: 0 }, second]
        })
        .collect()
}

/// `V[k][c][t] = (Bᵀ d B)[k]` for the tiles `t` of the batch's tile rows `r0..r1` (row `G`:
/// image `G / th`, its tile row `G % th`; image `n`'s input at `x[n·img_len..]`) (`Bᵀ = [[1,0,−1,0],
/// [0,1,1,0],[0,−1,1,0],[0,1,0,−1]]`), `V` laid out `[16][C][tb]` ([`k_stride`] apart), one vector of [`pairs`] at a
/// time.
///
/// # Safety
/// The CPU has AVX-512F; `v` is valid for writes of `16·C·(r1 − r0)·tw` values, and no other
/// thread writes the rows `(k, ch)` of the channels `chs ⊆ 0..C` this call transforms; every
/// element of each image's `C` channels' `rows × cols` windows described by `src` lies inside
/// `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_transform_pairs(
    x: &[f32],
    img_len: usize,
    src: &Src,
    c: usize,
    chs: Range<usize>,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
    v: SharedOut,
) {
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let left = src.left as isize;
    let vp = v.0;
    let vecs = pairs(r0, r1, tw);
    for ch in chs {
        prefetch_rows(x, img_len, src, ch + PF_CH, th, r0, r1);
        for segs in &vecs {
            // 16 padded columns of input row `r` of half `h`'s tile row, from its column `e`;
            // zero outside the input.
            let load = |h: usize, r: usize, e: usize| -> __m512 {
                let seg = segs[h];
                if seg.n == 0 {
                    return _mm512_setzero_ps();
                }
                let (img, ti) = (seg.gr / th, seg.gr % th);
                let y = 2 * ti + r;
                if y < src.top || y - src.top >= src.rows {
                    return _mm512_setzero_ps();
                }
                let row = x.as_ptr().wrapping_add(img * img_len + ch * src.plane + (y - src.top) * src.rs);
                let x0 = e as isize - left;
                let lo = (-x0).clamp(0, 16) as usize;
                let hi = (src.cols as isize - x0).clamp(0, 16) as usize;
                let mask = if hi > lo { lanes_mask(hi) & !lanes_mask(lo) } else { 0 };
                // SAFETY: only the lanes in `mask` are read, all inside the row (columns
                // `0 .. cols`); the others are not accessed.
                unsafe { _mm512_maskz_loadu_ps(mask, row.wrapping_offset(x0)) }
            };
            // (a, b, c, d) = columns (2t, 2t+1, 2t+2, 2t+3) of tile t, then d·B =
            // [a − c, b + c, c − b, b − d] for each of the four input rows.
            let mut q = [[_mm512_setzero_ps(); 4]; 4];
            for (r, qr) in q.iter_mut().enumerate() {
                *qr = row_t([load(0, r, 0), load(1, r, 0), load(0, r, 2), load(1, r, 2)]);
            }
            let put = |k: usize, val: __m512| {
                for seg in segs.iter().filter(|s| s.n > 0) {
                    let at = k * k_stride(c * tb) + ch * tb + (seg.gr - r0) * tw;
                    // SAFETY: row `(k, ch)` of `V` has `tb` values from `k·k_stride(C·tb) + ch·tb`; lanes
                    // `lane .. lane + n` go to `at .. at + n ≤ tb` (the pointer is moved back by
                    // `lane` so that lane `lane` lands at `at`; the other lanes are masked off).
                    unsafe {
                        _mm512_mask_storeu_ps(
                            vp.wrapping_add(at).wrapping_sub(seg.lane),
                            lanes_mask(seg.n) << seg.lane,
                            val,
                        )
                    }
                }
            };
            for (k, val) in bt_rows(q).into_iter().enumerate() {
                put(k, val);
            }
        }
    }
}

/// `y = Aᵀ M A` per tile (`Aᵀ = [[1,1,1,0],[0,1,−1,−1]]`) for the batch's tile rows `r0..r1`
/// (as [`input_transform`]), `M` laid out `[16][O][tb]` ([`k_stride`] apart), into their output rows in the batch's
/// output `y` (`N·O·OH·OW`; rows and columns past the map dropped).
///
/// # Safety
/// The CPU has AVX-512F; `m` holds `16·O·(r1 − r0)·tw` values; `y` is valid for writes of the
/// whole batch's output, and no other thread writes these rows of the channels `ocs ⊆ 0..O`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform_pairs(
    m: &[f32],
    y: SharedOut,
    o: usize,
    ocs: Range<usize>,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
) {
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let mp = m.as_ptr();
    let vecs = pairs(r0, r1, tw);
    for oc in ocs {
        for segs in &vecs {
            // `M`'s 16 rows `PF_M` values on.
            let at = oc * tb + (segs[0].gr - r0) * tw + PF_M;
            for k in 0..16 {
                _mm_prefetch::<_MM_HINT_T0>(mp.wrapping_add(k * k_stride(o * tb) + at).cast());
            }
            // Row `(k, oc)` of `M` at each run's tiles, into the run's lanes.
            let ld = |k: usize| {
                let mut v = _mm512_setzero_ps();
                for seg in segs.iter().filter(|s| s.n > 0) {
                    let at = k * k_stride(o * tb) + oc * tb + (seg.gr - r0) * tw;
                    // SAFETY: row `(k, oc)` of `M` has `tb` values from `k·k_stride(O·tb) + oc·tb`; only
                    // lanes `lane .. lane + n`, at `at .. at + n ≤ tb`, are read.
                    v = unsafe {
                        _mm512_mask_loadu_ps(
                            v,
                            lanes_mask(seg.n) << seg.lane,
                            mp.wrapping_add(at).wrapping_sub(seg.lane),
                        )
                    };
                }
                v
            };
            let mut mv = [_mm512_setzero_ps(); 16];
            for (k, v) in mv.iter_mut().enumerate() {
                *v = ld(k);
            }
            let rows = at_m_a(mv);
            for (i, halves) in rows.into_iter().enumerate() {
                for (h, val) in halves.into_iter().enumerate() {
                    let seg = segs[h];
                    let (img, ti) = (seg.gr / th, seg.gr % th);
                    let oy = 2 * ti + i;
                    if seg.n == 0 || oy >= oh {
                        continue;
                    }
                    // SAFETY: the `OW ≤ 16` columns of row `oy < OH` are inside the
                    // output, and only this task writes the rows of its tile rows.
                    unsafe {
                        let row = y.0.add(((img * o + oc) * oh + oy) * ow);
                        _mm512_mask_storeu_ps(row, lanes_mask(ow), val);
                    }
                }
            }
        }
    }
}

/// `Z[k][o][t] = (A dY_t Aᵀ)[k]` for the tiles `t` of the batch's tile rows `r0..r1` (as
/// [`input_transform`]; image `n`'s `dY` at `dy[n·dy_len..]`) (`A = [[1,0],[1,1],
/// [1,−1],[0,−1]]`; the 2×2 tile of `dY` at rows `2·ti..`, columns `2·tj..`, zero past the
/// map), `Z` laid out `[16][O][tb]` ([`k_stride`] apart).
///
/// # Safety
/// The CPU has AVX-512F; `z` is valid for writes of `16·O·(r1 − r0)·tw` values, and no other
/// thread writes the rows `(k, oc)` of the channels `ocs ⊆ 0..O` this call transforms; every
/// row `y < OH` of the `O` channels described by `dsrc` has `OW` values inside `dy`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_transform_pairs(
    dy: &[f32],
    dy_len: usize,
    dsrc: &DySrc,
    o: usize,
    ocs: Range<usize>,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
    z: SharedOut,
) {
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let zp = z.0;
    let vecs = pairs(r0, r1, tw);
    for oc in ocs {
        for segs in &vecs {
            // Row `2·ti + i` of half `h`'s tile row (`OW ≤ 16` columns);
            // zero past the map.
            let load = |h: usize, i: usize| -> __m512 {
                let seg = segs[h];
                let (img, ti) = (seg.gr / th, seg.gr % th);
                let yy = 2 * ti + i;
                if seg.n == 0 || yy >= oh {
                    return _mm512_setzero_ps();
                }
                let row = dy.as_ptr().wrapping_add(img * dy_len + oc * dsrc.plane + dsrc.off + yy * dsrc.rs);
                // SAFETY: only the `OW` columns of row `yy < OH` are read.
                unsafe { _mm512_maskz_loadu_ps(lanes_mask(ow), row) }
            };
            // (even, odd) columns = the tiles' (left, right) columns, rows 2·ti and 2·ti + 1.
            let yv: [[__m512; 2]; 2] = std::array::from_fn(|i| {
                let (lo, hi) = (load(0, i), load(1, i));
                even_odd(lo, hi)
            });
            for (k, val) in a_dy_at(yv).into_iter().enumerate() {
                for seg in segs.iter().filter(|s| s.n > 0) {
                    let at = k * k_stride(o * tb) + oc * tb + (seg.gr - r0) * tw;
                    // SAFETY: row `(k, oc)` of `Z` has `tb` values from `k·k_stride(O·tb) + oc·tb`;
                    // lanes `lane .. lane + n` go to `at .. at + n ≤ tb`.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            zp.wrapping_add(at).wrapping_sub(seg.lane),
                            lanes_mask(seg.n) << seg.lane,
                            val,
                        )
                    };
                }
            }
        }
    }
}

/// `V[k][c][t] = (Bᵀ d B)[k]` for the tiles `t` of the batch's tile rows `r0..r1` (row `G`:
/// image `G / th`, its tile row `G % th`; image `n`'s input at `x[n·img_len..]`) (`Bᵀ = [[1,0,−1,0],
/// [0,1,1,0],[0,−1,1,0],[0,1,0,−1]]`), `V` laid out `[16][C][tb]` ([`k_stride`] apart), `L` tiles at a time.
///
/// # Safety
/// The CPU has AVX-512F; `v` is valid for writes of `16·C·(r1 − r0)·tw` values, and no other
/// thread writes the rows `(k, ch)` of the channels `chs ⊆ 0..C` this call transforms; every
/// element of each image's `C` channels' `rows × cols` windows described by `src` lies inside
/// `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_transform(
    x: &[f32],
    img_len: usize,
    src: &Src,
    c: usize,
    chs: Range<usize>,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
    v: SharedOut,
) {
    if tw <= L / 2 {
        // SAFETY: the caller's contract, which is this function's.
        return unsafe { input_transform_pairs(x, img_len, src, c, chs, th, tw, r0, r1, v) };
    }
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let left = src.left as isize;
    let vp = v.0;
    for ch in chs {
        prefetch_rows(x, img_len, src, ch + PF_CH, th, r0, r1);
        for gr in r0..r1 {
            let (img, ti) = (gr / th, gr % th);
            let plane = x.as_ptr().wrapping_add(img * img_len + ch * src.plane);
            let t0 = (gr - r0) * tw;
            let mut j = 0;
            while j < tw {
                // Padded columns 2j .. 2j+34 of rows 2·ti .. 2·ti+3: (a, b, c, d) = columns
                // (2t, 2t+1, 2t+2, 2t+3) of tile t, then d·B = [a − c, b + c, c − b, b − d].
                let mut q = [[_mm512_setzero_ps(); 4]; 4];
                for (r, qr) in q.iter_mut().enumerate() {
                    let y = 2 * ti + r;
                    if y < src.top || y - src.top >= src.rows {
                        continue;
                    }
                    let row = plane.wrapping_add((y - src.top) * src.rs);
                    // 16 padded columns from `p`, zero outside the input row.
                    let load = |p: isize| {
                        let x0 = p - left;
                        let lo = (-x0).clamp(0, 16) as usize;
                        let hi = (src.cols as isize - x0).clamp(0, 16) as usize;
                        let mask = if hi > lo { lanes_mask(hi) & !lanes_mask(lo) } else { 0 };
                        // SAFETY: only the lanes in `mask` are read, all inside the row
                        // (columns `0 .. cols`); the others are not accessed.
                        unsafe { _mm512_maskz_loadu_ps(mask, row.wrapping_offset(x0)) }
                    };
                    let p = 2 * j as isize;
                    *qr = row_t([load(p), load(p + 16), load(p + 2), load(p + 18)]);
                }
                let mask = lanes_mask(tw - j);
                let put = |k: usize, val: __m512| {
                    // SAFETY: row `(k, ch)` of `V` has `tb` values from `k·k_stride(C·tb) + ch·tb`, and
                    // lanes `t0 + j ..` up to `t0 + tw ≤ tb` are stored.
                    unsafe { _mm512_mask_storeu_ps(vp.add(k * k_stride(c * tb) + ch * tb + t0 + j), mask, val) }
                };
                for (k, val) in bt_rows(q).into_iter().enumerate() {
                    put(k, val);
                }
                j += L;
            }
        }
    }
}

/// `y = Aᵀ M A` per tile (`Aᵀ = [[1,1,1,0],[0,1,−1,−1]]`) for the batch's tile rows `r0..r1`
/// (as [`input_transform`]), `M` laid out `[16][O][tb]` ([`k_stride`] apart), into their output rows in the batch's
/// output `y` (`N·O·OH·OW`; rows and columns past the map dropped).
///
/// # Safety
/// The CPU has AVX-512F; `m` holds `16·O·(r1 − r0)·tw` values; `y` is valid for writes of the
/// whole batch's output, and no other thread writes these rows of the channels `ocs ⊆ 0..O`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    m: &[f32],
    y: SharedOut,
    o: usize,
    ocs: Range<usize>,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
) {
    if tw <= L / 2 {
        // SAFETY: the caller's contract, which is this function's.
        return unsafe { output_transform_pairs(m, y, o, ocs, oh, ow, th, tw, r0, r1) };
    }
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let mp = m.as_ptr();
    for oc in ocs {
        for gr in r0..r1 {
            let (img, ti) = (gr / th, gr % th);
            let t0 = (gr - r0) * tw;
            let mut j = 0;
            while j < tw {
                let mask = lanes_mask(tw - j);
                // `M`'s 16 rows `PF_M` values on.
                for k in 0..16 {
                    let at = k * k_stride(o * tb) + oc * tb + t0 + j + PF_M;
                    _mm_prefetch::<_MM_HINT_T0>(mp.wrapping_add(at).cast());
                }
                // SAFETY: row `(k, oc)` of `M` has `tb` values from `k·k_stride(O·tb) + oc·tb`; lanes up
                // to `t0 + tw ≤ tb` are read.
                let ld =
                    |k: usize| unsafe { _mm512_maskz_loadu_ps(mask, mp.add(k * k_stride(o * tb) + oc * tb + t0 + j)) };
                let mut mv = [_mm512_setzero_ps(); 16];
                for (k, v) in mv.iter_mut().enumerate() {
                    *v = ld(k);
                }
                let rows = at_m_a(mv);
                for (i, [lo, hi]) in rows.into_iter().enumerate() {
                    let oy = 2 * ti + i;
                    if oy >= oh {
                        break;
                    }
                    let valid = ow - 2 * j;
                    // SAFETY: columns `2j .. 2j + valid` of row `oy < OH` are inside the output.
                    unsafe {
                        let row = y.0.add(((img * o + oc) * oh + oy) * ow + 2 * j);
                        _mm512_mask_storeu_ps(row, lanes_mask(valid), lo);
                        if valid > L {
                            _mm512_mask_storeu_ps(row.add(L), lanes_mask(valid - L), hi);
                        }
                    }
                }
                j += L;
            }
        }
    }
}

/// `Z[k][o][t] = (A dY_t Aᵀ)[k]` for the tiles `t` of the batch's tile rows `r0..r1` (as
/// [`input_transform`]; image `n`'s `dY` at `dy[n·dy_len..]`) (`A = [[1,0],[1,1],
/// [1,−1],[0,−1]]`; the 2×2 tile of `dY` at rows `2·ti..`, columns `2·tj..`, zero past the
/// map), `Z` laid out `[16][O][tb]` ([`k_stride`] apart).
///
/// # Safety
/// The CPU has AVX-512F; `z` is valid for writes of `16·O·(r1 − r0)·tw` values, and no other
/// thread writes the rows `(k, oc)` of the channels `ocs ⊆ 0..O` this call transforms; every
/// row `y < OH` of the `O` channels described by `dsrc` has `OW` values inside `dy`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_transform(
    dy: &[f32],
    dy_len: usize,
    dsrc: &DySrc,
    o: usize,
    ocs: Range<usize>,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
    r0: usize,
    r1: usize,
    z: SharedOut,
) {
    if tw <= L / 2 {
        // SAFETY: the caller's contract, which is this function's.
        return unsafe { output_grad_transform_pairs(dy, dy_len, dsrc, o, ocs, oh, ow, th, tw, r0, r1, z) };
    }
    use std::arch::x86_64::*;
    let tb = (r1 - r0) * tw;
    let zp = z.0;
    for oc in ocs {
        for gr in r0..r1 {
            let (img, ti) = (gr / th, gr % th);
            let t0 = (gr - r0) * tw;
            let mut j = 0;
            while j < tw {
                // Columns 2j .. 2j+32 of rows 2·ti and 2·ti + 1: (even, odd) = the tiles'
                // (left, right) columns.
                let mut yv = [[_mm512_setzero_ps(); 2]; 2];
                for (i, yi) in yv.iter_mut().enumerate() {
                    let y = 2 * ti + i;
                    if y >= oh {
                        continue;
                    }
                    let row = dy.as_ptr().wrapping_add(img * dy_len + oc * dsrc.plane + dsrc.off + y * dsrc.rs + 2 * j);
                    let valid = ow - 2 * j;
                    // SAFETY: only columns `2j .. OW` of row `y < OH` are read.
                    let (lo, hi) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(lanes_mask(valid), row),
                            _mm512_maskz_loadu_ps(lanes_mask(valid.saturating_sub(L)), row.wrapping_add(L)),
                        )
                    };
                    *yi = even_odd(lo, hi);
                }
                let mask = lanes_mask(tw - j);
                for (k, val) in a_dy_at(yv).into_iter().enumerate() {
                    // SAFETY: row `(k, oc)` of `Z` has `tb` values from `k·k_stride(O·tb) + oc·tb`; lanes up
                    // to `t0 + tw ≤ tb` are stored.
                    unsafe { _mm512_mask_storeu_ps(zp.add(k * k_stride(o * tb) + oc * tb + t0 + j), mask, val) };
                }
                j += L;
            }
        }
    }
}

/// Stand-ins off x86-64, where [`Geom::winograd_applies`] is false (no AVX-512 kernel).
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn input_transform(
    _: &[f32],
    _: usize,
    _: &Src,
    _: usize,
    _: Range<usize>,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: SharedOut,
) {
}
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_transform(
    _: &[f32],
    _: usize,
    _: &DySrc,
    _: usize,
    _: Range<usize>,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: SharedOut,
) {
}
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    _: &[f32],
    _: SharedOut,
    _: usize,
    _: Range<usize>,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
) {
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dConfig;

    /// Deterministic values in [−1, 1).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i + seed) * 7919 + seed * 31) % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    /// The convolution by its definition, in f64.
    fn reference(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.o * g.oh * g.ow];
        for n in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0f64;
                        for c in 0..g.c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (yy, xx) =
                                        ((oy + i) as isize - g.ph as isize, (ox + j) as isize - g.pw as isize);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < g.h && (xx as usize) < g.w {
                                        let xv = x[((n * g.c + c) * g.h + yy as usize) * g.w + xx as usize];
                                        acc += f64::from(xv) * f64::from(w[((o * g.c + c) * 3 + i) * 3 + j]);
                                    }
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!((f64::from(a) - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}: element {i}: {a} vs {b}");
        }
    }

    /// Runs [`Geom::forward_winograd`] on `x` (unpadded, or as padded planes with `planes`).
    fn winograd(g: &Geom, x: &[f32], w: &[f32], planes: bool, epi: Option<&Epilogue<'_, f32>>) -> Vec<f32> {
        let len = g.n * g.o * g.oh * g.ow;
        let mut out: Vec<MaybeUninit<f32>> = vec![MaybeUninit::new(f32::NAN); len];
        if planes {
            let (hp, wp) = (g.h + 2 * g.ph, g.w + 2 * g.pw);
            let mut xp = vec![0f32; g.n * g.c * hp * wp];
            for (nc, plane) in x.chunks_exact(g.h * g.w).enumerate() {
                for (r, row) in plane.chunks_exact(g.w).enumerate() {
                    let at = (nc * hp + r + g.ph) * wp + g.pw;
                    xp[at..at + g.w].copy_from_slice(row);
                }
            }
            let src = Src { plane: hp * wp, rs: wp, rows: hp, cols: wp, top: 0, left: 0 };
            g.forward_winograd(&xp, g.c * hp * wp, src, w, false, &mut out, epi).unwrap();
        } else {
            let src = Src { plane: g.h * g.w, rs: g.w, rows: g.h, cols: g.w, top: g.ph, left: g.pw };
            g.forward_winograd(x, g.c * g.h * g.w, src, w, false, &mut out, epi).unwrap();
        }
        out.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        if !crate::sgemm::available() {
            return;
        }
        // (n, c, h, w, o, padding): odd and even maps, partial chunks (tw = 19: 16 + 3 tiles),
        // several tasks per image (23×23 tiles over 384-tile blocks), no padding and padding 2.
        for (n, c, h, w, o, p) in [
            (2, 32, 17, 21, 40, 1),
            (1, 8, 8, 8, 16, 1),
            (2, 16, 37, 10, 8, 1),
            (1, 32, 45, 45, 32, 1),
            (2, 24, 12, 9, 16, 0),
            (1, 16, 11, 14, 24, 2),
            (1, 9, 10, 12, 7, 1),
        ] {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(p)).unwrap();
            let (x, wt) = (values(n * c * h * w, 1), values(o * c * 9, 2));
            let want = reference(&g, &x, &wt);
            let what = format!("{n}×{c}×{h}×{w} → {o}, padding {p}");
            assert_close(&winograd(&g, &x, &wt, false, None), &want, &what);
            assert_close(&winograd(&g, &x, &wt, true, None), &want, &format!("{what}, padded planes"));
        }
    }

    #[test]
    fn wide_forward_matches_the_definition() {
        if !crate::sgemm::available() {
            return;
        }
        // (n, c, h, w, o, padding, rows per group): more than `MAX_CHANNELS` channels; two rows
        // per vector (tw = 4, 5) and runs of 16 (tw = 18: 16 + 2 tiles); one group (filters in
        // blocks of 216 + 24 output channels, also for the adjoint), groups of one tile row, of
        // 3 rows across images.
        for (n, c, h, w, o, p, rows) in [
            (2, 300, 7, 9, 240, 1, 64),
            (2, 300, 7, 9, 240, 1, 1),
            (3, 520, 7, 7, 40, 1, 3),
            (1, 264, 6, 35, 256, 1, 2),
            (2, 40, 9, 8, 480, 0, 2),
        ] {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(p)).unwrap();
            assert!(g.winograd_wide());
            let (x, wt) = (values(n * c * h * w, 21), values(o * c * 9, 22));
            let want = reference(&g, &x, &wt);
            let mut out: Vec<MaybeUninit<f32>> = vec![MaybeUninit::new(f32::NAN); n * o * g.oh * g.ow];
            let src = Src { plane: h * w, rs: w, rows: h, cols: w, top: p, left: p };
            g.forward_wide(&x, c * h * w, &src, &wt, false, SharedOut(out.as_mut_ptr().cast()), rows).unwrap();
            let got: Vec<f32> = out.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_close(&got, &want, &format!("{n}×{c}×{h}×{w} → {o}, padding {p}, {rows} rows per group"));
            // The same filters given as the weights (`C·O·3·3`) of the convolution whose input
            // gradient this one is.
            let w_adj = g.flip_transpose(&wt);
            let mut out: Vec<MaybeUninit<f32>> = vec![MaybeUninit::new(f32::NAN); n * o * g.oh * g.ow];
            g.forward_wide(&x, c * h * w, &src, &w_adj, true, SharedOut(out.as_mut_ptr().cast()), rows).unwrap();
            let got: Vec<f32> = out.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_close(&got, &want, &format!("{n}×{c}×{h}×{w} → {o} adjoint, {rows} rows per group"));
        }
    }

    /// The adjoint filter transform (an input gradient's kernel read from `W` flipped and
    /// transposed in place) packs exactly what the transform of the flipped copy packs: odd
    /// channel counts (partial panels, an odd depth), and two depth blocks.
    #[test]
    fn adjoint_filters_are_the_flipped_copys() {
        if !crate::sgemm::available() {
            return;
        }
        for (o, c) in [(13, 7), (8, 2), (17, 33), (40, 200), (1, 1)] {
            // The convolution whose input gradient has `o` output and `c` input channels.
            let g = Geom::new(&[1, o, 5, 5], &[c, o, 3, 3], &Conv2dConfig::default().padding(1)).unwrap();
            let w = values(c * o * 9, o + c);
            let flipped = g.flip_transpose(&w);
            for ocs in [0..o, o / 3..o, 0..o.div_ceil(2)] {
                let got = transform_filters(o, c, &w, true, ocs.clone()).unwrap();
                let want = transform_filters(o, c, &flipped, false, ocs.clone()).unwrap();
                assert_eq!(got.data.len(), want.data.len());
                let same = got.data.iter().zip(&want.data).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{o}×{c}, {ocs:?}: the adjoint transform differs from the flipped copy's");
            }
        }
    }

    /// `U_k[o][c]` from the packed layout of [`Filters`].
    fn unpacked(f: &Filters, k: usize, o: usize, c: usize) -> f32 {
        let (stride, mp) = (filter_stride(f.o, f.c), f.o.div_ceil(MR) * MR);
        let (k0, kc) = kblocks(f.c).find(|&(k0, kc)| c < k0 + kc).unwrap();
        f.data[k * stride + k0 * mp + (o / MR) * kc * MR + (c - k0) * MR + o % MR]
    }

    /// A block of output channels transforms to the same `U_k` rows as the whole, from any
    /// first channel, over one or two depth blocks; an empty or out-of-range block is an error.
    #[test]
    fn filter_blocks_are_rows_of_the_whole() {
        if !crate::sgemm::available() {
            return;
        }
        for (o, c) in [(30, 7), (17, 200)] {
            let w = values(o * c * 9, o);
            let whole = transform_filters(o, c, &w, false, 0..o).unwrap();
            for ocs in [3..11, 8..o, 0..1] {
                let block = transform_filters(o, c, &w, false, ocs.clone()).unwrap();
                for k in 0..16 {
                    for (r, oc) in ocs.clone().enumerate() {
                        for ch in 0..c {
                            let (got, want) = (unpacked(&block, k, r, ch), unpacked(&whole, k, oc, ch));
                            assert_eq!(got.to_bits(), want.to_bits(), "{o}×{c} {ocs:?}: U_{k}[{oc}][{ch}]");
                        }
                    }
                }
            }
            assert!(transform_filters(o, c, &w, false, 4..4).is_err());
            assert!(transform_filters(o, c, &w, false, 0..o + 1).is_err());
        }
    }

    /// The weight gradient by its definition, in f64.
    fn weight_grad_reference(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let mut dw = vec![0f64; g.o * g.c * 9];
        for n in 0..g.n {
            for o in 0..g.o {
                for c in 0..g.c {
                    for i in 0..3 {
                        for j in 0..3 {
                            let mut acc = 0f64;
                            for oy in 0..g.oh {
                                for ox in 0..g.ow {
                                    let (yy, xx) =
                                        ((oy + i) as isize - g.ph as isize, (ox + j) as isize - g.pw as isize);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < g.h && (xx as usize) < g.w {
                                        let xv = x[((n * g.c + c) * g.h + yy as usize) * g.w + xx as usize];
                                        acc += f64::from(xv) * f64::from(dy[((n * g.o + o) * g.oh + oy) * g.ow + ox]);
                                    }
                                }
                            }
                            dw[((o * g.c + c) * 3 + i) * 3 + j] += acc;
                        }
                    }
                }
            }
        }
        dw
    }

    /// `[N, C, H, W]` as zero-padded planes `[N, C, H + 2ph, W + 2pw]`.
    fn pad(x: &[f32], h: usize, w: usize, ph: usize, pw: usize) -> Vec<f32> {
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let mut xp = vec![0f32; x.len() / (h * w) * hp * wp];
        for (nc, plane) in x.chunks_exact(h * w).enumerate() {
            for (r, row) in plane.chunks_exact(w).enumerate() {
                let at = (nc * hp + r + ph) * wp + pw;
                xp[at..at + w].copy_from_slice(row);
            }
        }
        xp
    }

    #[test]
    fn weight_gradient_matches_the_definition() {
        if !crate::sgemm::available() {
            return;
        }
        for (n, c, h, w, o, p) in [
            (2, 32, 17, 21, 40, 1),
            (3, 16, 37, 10, 8, 1),
            (1, 32, 45, 45, 32, 1),
            (2, 24, 12, 9, 16, 0),
            (2, 9, 10, 12, 7, 1),
        ] {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(p)).unwrap();
            let (x, dy) = (values(n * c * h * w, 11), values(n * o * g.oh * g.ow, 12));
            let want: Vec<f64> = weight_grad_reference(&g, &x, &dy).iter().map(|v| v + 0.25).collect();
            let what = format!("{n}×{c}×{h}×{w} → {o}, padding {p}");
            // Compact input and dY; the gradient is added to what `dw` holds.
            let src = Src { plane: h * w, rs: w, rows: h, cols: w, top: p, left: p };
            let dsrc = DySrc { plane: g.oh * g.ow, rs: g.ow, off: 0 };
            let mut dw = vec![0.25f32; o * c * 9];
            g.weight_grad_winograd(&x, c * h * w, src, &dy, o * g.oh * g.ow, dsrc, &mut dw).unwrap();
            assert_close(&dw, &want, &what);
            // Padded input planes and a padded dY (one ring of zeros wider than `dY`'s own
            // padding, so that the layout's offset and row stride are exercised).
            let xp = pad(&x, h, w, p, p);
            let (hp, wp) = (h + 2 * p, w + 2 * p);
            let src = Src { plane: hp * wp, rs: wp, rows: hp, cols: wp, top: 0, left: 0 };
            let dyp = pad(&dy, g.oh, g.ow, 2, 3);
            let (dh, dwid) = (g.oh + 4, g.ow + 6);
            let dsrc = DySrc { plane: dh * dwid, rs: dwid, off: 2 * dwid + 3 };
            let mut dw = vec![0.25f32; o * c * 9];
            g.weight_grad_winograd(&xp, c * hp * wp, src, &dyp, o * dh * dwid, dsrc, &mut dw).unwrap();
            assert_close(&dw, &want, &format!("{what}, padded planes"));
        }
    }

    #[test]
    fn wide_weight_gradient_matches_the_definition() {
        if !crate::sgemm::available() {
            return;
        }
        // As `wide_forward_matches_the_definition`: one group, and groups of 1 and 3 tile rows
        // (the later groups add to the first's `dU`).
        for (n, c, h, w, o, p, rows) in [
            (2, 300, 7, 9, 240, 1, 64),
            (2, 300, 7, 9, 240, 1, 1),
            (3, 40, 7, 7, 520, 1, 3),
            (1, 264, 6, 35, 256, 1, 2),
        ] {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(p)).unwrap();
            assert!(g.winograd_wide());
            let (x, dy) = (values(n * c * h * w, 23), values(n * o * g.oh * g.ow, 24));
            // The gradient is added to what `dw` holds. dW sums up to 2·63 products of values
            // up to 1: compared after scaling by that.
            let scale = (n * g.oh * g.ow) as f64;
            let want: Vec<f64> = weight_grad_reference(&g, &x, &dy).iter().map(|v| (v + 0.25) / scale).collect();
            let src = Src { plane: h * w, rs: w, rows: h, cols: w, top: p, left: p };
            let dsrc = DySrc { plane: g.oh * g.ow, rs: g.ow, off: 0 };
            let mut dw = vec![0.25f32; o * c * 9];
            g.weight_grad_wide(&x, c * h * w, &src, &dy, o * g.oh * g.ow, &dsrc, &mut dw, rows).unwrap();
            let got: Vec<f32> = dw.iter().map(|v| (f64::from(*v) / scale) as f32).collect();
            assert_close(&got, &want, &format!("{n}×{c}×{h}×{w} → {o}, padding {p}, {rows} rows per group"));
        }
    }

    #[test]
    fn weight_gradient_is_the_same_on_every_run() {
        if !crate::sgemm::available() {
            return;
        }
        // 4 images × 23 tile rows of 23 tiles in tasks of 4 rows: many tasks per thread.
        let (n, c, h, w, o) = (4, 32, 45, 45, 48);
        let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(1)).unwrap();
        let (x, dy) = (values(n * c * h * w, 13), values(n * o * h * w, 14));
        let src = Src { plane: h * w, rs: w, rows: h, cols: w, top: 1, left: 1 };
        let dsrc = DySrc { plane: h * w, rs: w, off: 0 };
        let run = || {
            let mut dw = vec![0f32; o * c * 9];
            g.weight_grad_winograd(&x, c * h * w, src, &dy, o * h * w, dsrc, &mut dw).unwrap();
            dw
        };
        let first = run();
        // A busy thread beside the pool's makes the tasks' timing (and rayon's splits) vary.
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut v = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v = std::hint::black_box(v.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
            for _ in 0..12 {
                let again = run();
                if again != first {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    panic!("a second run summed in another order");
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    #[test]
    fn epilogue_applies_per_channel() {
        if !crate::sgemm::available() {
            return;
        }
        let (n, c, h, w, o) = (2, 16, 13, 11, 8);
        let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], &Conv2dConfig::default().padding(1)).unwrap();
        let (x, wt) = (values(n * c * h * w, 3), values(o * c * 9, 4));
        let (scale, shift) = (values(o, 5), values(o, 6));
        let residual = values(n * o * h * w, 7);
        let epi = Epilogue { scale: &scale, shift: &shift, relu: true, residual: Some(&residual) };
        let got = winograd(&g, &x, &wt, false, Some(&epi));
        let want: Vec<f64> = reference(&g, &x, &wt)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = i / (h * w) % o;
                (v * f64::from(scale[ch]) + f64::from(shift[ch]) + f64::from(residual[i])).max(0.0)
            })
            .collect();
        assert_close(&got, &want, "epilogue");
    }

    #[test]
    fn conv2d_and_its_gradients_take_the_winograd_path_and_agree_with_the_direct_one() {
        // 32 → 40 channels on 2×23×25 (12×13 tiles), and a wide convolution (300 → 240 on
        // 2×16×16): the Winograd forward and gradients.
        check_against_direct(2, 32, 23, 25, 40, false);
        check_against_direct(2, 300, 16, 16, 240, true);
    }

    fn check_against_direct(n: usize, c: usize, h: usize, width: usize, o: usize, wide: bool) {
        use candle_core::{Device, Tensor, Var};
        use std::sync::atomic::Ordering;
        let g = Geom::new(&[n, c, h, width], &[o, c, 3, 3], &Conv2dConfig::default().padding(1)).unwrap();
        if !crate::sgemm::available() || !enabled() {
            return;
        }
        assert!(g.winograd_applies(), "the shape must take the Winograd path");
        assert_eq!(g.winograd_wide(), wide);
        let x = Var::from_vec(values(n * c * h * width, 8), (n, c, h, width), &Device::Cpu).unwrap();
        let w = Var::from_vec(values(o * c * 9, 9), (o, c, 3, 3), &Device::Cpu).unwrap();
        let dy = Tensor::from_vec(values(n * o * h * width, 10), (n, o, h, width), &Device::Cpu).unwrap();
        let run = || {
            let y = crate::conv2d(x.as_tensor(), w.as_tensor(), None, &Conv2dConfig::default().padding(1)).unwrap();
            let grads = (y.clone() * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (flat(&y), flat(grads.get(x.as_tensor()).unwrap()), flat(grads.get(w.as_tensor()).unwrap()))
        };
        let (y_w, dx_w, dw_w) = run();
        OFF.store(true, Ordering::Relaxed);
        let (y_d, dx_d, dw_d) = run();
        OFF.store(false, Ordering::Relaxed);
        // Y sums C·9 products of values up to 1, dX O·9 and dW N·H·W: each compared relative
        // to that scale.
        let check = |got: &[f32], want: &[f32], scale: usize, what: &str| {
            let s = scale as f32;
            let got: Vec<f32> = got.iter().map(|v| v / s).collect();
            let want: Vec<f64> = want.iter().map(|&v| f64::from(v / s)).collect();
            assert_close(&got, &want, what);
        };
        check(&y_w, &y_d, c * 9, "forward");
        check(&dx_w, &dx_d, o * 9, "input gradient");
        check(&dw_w, &dw_d, n * h * width, "weight gradient");
        // The two paths are different arithmetic: some results differ in their last bits.
        assert!(y_w.iter().zip(&y_d).any(|(a, b)| a != b), "both runs took the same path");
    }
}
