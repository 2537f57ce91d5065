//! Prediction kernels: support vectors packed in panels of 16 (feature-major inside a panel)
//! so that the kernel values of a block of samples to all support vectors vectorise across
//! support vectors, while every single value is summed in feature-index order exactly as
//! LIBSVM's `k_function` sums it (and `exp`/`tanh` are the C library's), so predictions are
//! LIBSVM's to the last bit.

use std::ops::Range;

use crate::features::Features;
use crate::kernel::{Kernel, KernelType, powi};

const PANEL: usize = 16;

/// Support vectors in panels.
pub(crate) struct SvPanels {
    kernel: Kernel,
    cols: usize,
    nsv: usize,
    /// Panel `b`, feature `k`, lane `t` at `(b·cols + k)·16 + t`.
    data: Vec<f64>,
}

impl SvPanels {
    /// Packs `sv` for predicting `x`, or `None` when the per-pair path is the right one
    /// (sparse data, precomputed / chi² / intersection kernels).
    pub(crate) fn new(sv: &Features, x: &Features, kernel: Kernel) -> Option<Self> {
        if !matches!(kernel.kind, KernelType::Rbf | KernelType::Linear | KernelType::Poly | KernelType::Sigmoid) {
            return None;
        }
        let cols = sv.max_index().max(x.max_index()) as usize;
        let nsv = sv.rows();
        if cols == 0
            || nsv == 0
            || crate::kernel::prefer_dense(sv).is_none()
            || crate::kernel::prefer_dense(x).is_none()
        {
            return None;
        }
        let nb = nsv.div_ceil(PANEL);
        let mut data = vec![0.0; nb * cols * PANEL];
        for s in 0..nsv {
            for (k, v) in sv.row(s).entries() {
                if k >= 1 && (k as usize) <= cols {
                    data[((s / PANEL) * cols + k as usize - 1) * PANEL + s % PANEL] = v;
                }
            }
        }
        Some(Self { kernel, cols, nsv, data })
    }

    /// Kernel values of samples `rows` of `x` to every support vector, row-major into `out`.
    pub(crate) fn kernel_block(&self, x: &Features, rows: Range<usize>, out: &mut [f64]) {
        let cols = self.cols;
        let mut xs = vec![0.0; rows.len() * cols];
        for (r, dst) in rows.zip(xs.chunks_mut(cols)) {
            for (k, v) in x.row(r).entries() {
                if k >= 1 && (k as usize) <= cols {
                    dst[k as usize - 1] = v;
                }
            }
        }
        pulp::Arch::new().dispatch(Block { p: self, xs: &xs, out });
    }
}

struct Block<'a> {
    p: &'a SvPanels,
    xs: &'a [f64],
    out: &'a mut [f64],
}

impl pulp::WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Block { p, xs, out } = self;
        let (cols, nsv) = (p.cols, p.nsv);
        let rbf = p.kernel.kind == KernelType::Rbf;
        let nrows = xs.len() / cols;
        let mut r = 0;
        while r < nrows {
            // Two samples against one panel: eight independent AVX2 accumulators.
            let two = r + 1 < nrows;
            let x0 = &xs[r * cols..(r + 1) * cols];
            let x1 = if two { &xs[(r + 1) * cols..(r + 2) * cols] } else { x0 };
            for (b, panel) in p.data.chunks_exact(cols * PANEL).enumerate() {
                let acc = if rbf { sqdist2(x0, x1, panel) } else { dot2(x0, x1, panel) };
                let s0 = b * PANEL;
                let n = PANEL.min(nsv - s0);
                for (q, accq) in acc.iter().enumerate().take(if two { 2 } else { 1 }) {
                    let row = &mut out[(r + q) * nsv + s0..(r + q) * nsv + s0 + n];
                    for (o, &a) in row.iter_mut().zip(accq) {
                        *o = finish(&p.kernel, a);
                    }
                }
            }
            r += 2;
        }
    }
}

/// `Σₖ (xₖ − svₖ)²` in index order for two samples and one panel.
#[inline(always)]
fn sqdist2(x0: &[f64], x1: &[f64], panel: &[f64]) -> [[f64; PANEL]; 2] {
    let mut acc = [[0.0f64; PANEL]; 2];
    let n = x0.len().min(x1.len()).min(panel.len() / PANEL);
    let (x0, x1) = (&x0[..n], &x1[..n]);
    let v = &panel.as_chunks::<PANEL>().0[..n];
    for k in 0..n {
        let (a0, a1) = (x0[k], x1[k]);
        for t in 0..PANEL {
            let d0 = a0 - v[k][t];
            let d1 = a1 - v[k][t];
            acc[0][t] += d0 * d0;
            acc[1][t] += d1 * d1;
        }
    }
    acc
}

/// `Σₖ xₖ·svₖ` in index order for two samples and one panel.
#[inline(always)]
fn dot2(x0: &[f64], x1: &[f64], panel: &[f64]) -> [[f64; PANEL]; 2] {
    let mut acc = [[0.0f64; PANEL]; 2];
    let n = x0.len().min(x1.len()).min(panel.len() / PANEL);
    let (x0, x1) = (&x0[..n], &x1[..n]);
    let v = &panel.as_chunks::<PANEL>().0[..n];
    for k in 0..n {
        let (a0, a1) = (x0[k], x1[k]);
        for t in 0..PANEL {
            acc[0][t] += a0 * v[k][t];
            acc[1][t] += a1 * v[k][t];
        }
    }
    acc
}

/// The kernel value from the squared distance (RBF) or the dot product (others).
#[inline(always)]
fn finish(k: &Kernel, a: f64) -> f64 {
    match k.kind {
        KernelType::Rbf => (-k.gamma * a).exp(),
        KernelType::Linear => a,
        KernelType::Poly => powi(k.gamma * a + k.coef0, k.degree),
        _ => (k.gamma * a + k.coef0).tanh(),
    }
}
