//! LIBSVM 3.x's SMO solver (Fan, Chen & Lin 2005): second-order working-set selection,
//! shrinking, the `f32` column cache, and the nu variant with its per-class pairs.
//!
//! Solves `min ½αᵀQα + pᵀα` subject to `yᵀα = Δ`, `0 ≤ αᵢ ≤ Cp (yᵢ=+1)`, `0 ≤ αᵢ ≤ Cn (yᵢ=−1)`.
//! The arithmetic follows `svm.cpp` statement by statement so that the iterates, and hence the
//! support vectors, objective and rho, are LIBSVM's.

use crate::cache::Cache;
use crate::kernel::KernelRows;

const TAU: f64 = 1e-12;
const INF: f64 = f64::INFINITY;

/// Which Q matrix: `yᵢyⱼK` (SVC), `K` (one-class), or the doubled SVR matrix.
enum QKind {
    Svc { y: Vec<i8> },
    OneClass,
    Svr { sign: Vec<i8>, index: Vec<usize>, buf: [Vec<f32>; 2], next: usize },
}

/// A handle to a fetched column.
#[derive(Clone, Copy)]
pub(crate) enum Col {
    Cached(usize),
    Buf(usize),
}

/// The Q matrix of one formulation, with its cache and diagonal.
pub(crate) struct QMat<'a> {
    rows: KernelRows<'a>,
    cache: Cache,
    qd: Vec<f64>,
    kind: QKind,
    /// Kernel columns computed (cache misses), for diagnostics.
    pub(crate) computed: usize,
}

impl<'a> QMat<'a> {
    /// `Q = y yᵀ ∘ K` (C-SVC, nu-SVC).
    pub(crate) fn svc(rows: KernelRows<'a>, y: &[i8], cache_bytes: usize) -> Self {
        let l = rows.len();
        let qd = (0..l).map(|i| rows.diag(i)).collect();
        Self { cache: Cache::new(l, cache_bytes), rows, qd, kind: QKind::Svc { y: y.to_vec() }, computed: 0 }
    }

    /// `Q = K` (one-class).
    pub(crate) fn one_class(rows: KernelRows<'a>, cache_bytes: usize) -> Self {
        let l = rows.len();
        let qd = (0..l).map(|i| rows.diag(i)).collect();
        Self { cache: Cache::new(l, cache_bytes), rows, qd, kind: QKind::OneClass, computed: 0 }
    }

    /// The `2l × 2l` SVR matrix `[K −K; −K K]`, columns cached at length `l`.
    pub(crate) fn svr(rows: KernelRows<'a>, cache_bytes: usize) -> Self {
        let l = rows.len();
        let d: Vec<f64> = (0..l).map(|i| rows.diag(i)).collect();
        let qd = d.iter().chain(d.iter()).copied().collect();
        let sign = (0..2 * l).map(|k| if k < l { 1 } else { -1 }).collect();
        let index = (0..2 * l).map(|k| k % l).collect();
        Self {
            cache: Cache::new(l, cache_bytes),
            rows,
            qd,
            kind: QKind::Svr { sign, index, buf: [vec![0.0; 2 * l], vec![0.0; 2 * l]], next: 0 },
            computed: 0,
        }
    }

    fn qd(&self) -> &[f64] {
        &self.qd
    }

    /// Column `i`, entries `0..len`.
    fn fetch(&mut self, i: usize, len: usize) -> Col {
        let Self { rows, cache, kind, computed, .. } = self;
        match kind {
            QKind::Svc { y } => {
                let start = cache.get(i, len);
                if start < len {
                    *computed += 1;
                    rows.fill(i, start, &mut cache.column_mut(i)[start..len], Some(y));
                }
                Col::Cached(i)
            }
            QKind::OneClass => {
                let start = cache.get(i, len);
                if start < len {
                    *computed += 1;
                    rows.fill(i, start, &mut cache.column_mut(i)[start..len], None);
                }
                Col::Cached(i)
            }
            QKind::Svr { sign, index, buf, next } => {
                let l = rows.len();
                let real = index[i];
                let start = cache.get(real, l);
                if start < l {
                    *computed += 1;
                    rows.fill(real, start, &mut cache.column_mut(real)[start..l], None);
                }
                let data = cache.column(real);
                let b = *next;
                *next = 1 - b;
                let si = sign[i] as f32;
                for (j, o) in buf[b][..len].iter_mut().enumerate() {
                    *o = si * sign[j] as f32 * data[index[j]];
                }
                Col::Buf(b)
            }
        }
    }

    /// Applies deferred cache swaps (after shrinking).
    fn flush(&mut self) {
        self.cache.flush();
    }

    fn col(&self, c: Col) -> &[f32] {
        match (c, &self.kind) {
            (Col::Cached(i), _) => self.cache.column(i),
            (Col::Buf(b), QKind::Svr { buf, .. }) => &buf[b],
            (Col::Buf(_), _) => &[],
        }
    }

    fn swap_index(&mut self, i: usize, j: usize) {
        match &mut self.kind {
            QKind::Svc { y } => {
                self.cache.swap_index(i, j);
                self.rows.swap(i, j);
                y.swap(i, j);
            }
            QKind::OneClass => {
                self.cache.swap_index(i, j);
                self.rows.swap(i, j);
            }
            QKind::Svr { sign, index, .. } => {
                sign.swap(i, j);
                index.swap(i, j);
            }
        }
        self.qd.swap(i, j);
    }
}

/// The solution and what LIBSVM reports about it.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    pub(crate) alpha: Vec<f64>,
    pub(crate) obj: f64,
    pub(crate) rho: f64,
    /// Solver_NU's `r` (0 for the plain solver).
    pub(crate) r: f64,
    pub(crate) iterations: usize,
    pub(crate) converged: bool,
    pub(crate) columns_computed: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Status {
    Lower,
    Upper,
    Free,
}

/// The settings of one solve.
pub(crate) struct SolveOptions {
    pub(crate) eps: f64,
    pub(crate) shrinking: bool,
    pub(crate) nu: bool,
    pub(crate) max_iter: Option<usize>,
}

struct State {
    l: usize,
    active_size: usize,
    y: Vec<i8>,
    g: Vec<f64>,
    status: Vec<Status>,
    alpha: Vec<f64>,
    eps: f64,
    cp: f64,
    cn: f64,
    p: Vec<f64>,
    active_set: Vec<usize>,
    g_bar: Vec<f64>,
    unshrink: bool,
    nu: bool,
    /// Reused buffers of the vectorised working-set selection.
    scratch_up: Vec<f64>,
    scratch_obj: Vec<f64>,
}

impl State {
    fn c(&self, i: usize) -> f64 {
        if self.y[i] > 0 { self.cp } else { self.cn }
    }

    fn update_status(&mut self, i: usize) {
        self.status[i] = if self.alpha[i] >= self.c(i) {
            Status::Upper
        } else if self.alpha[i] <= 0.0 {
            Status::Lower
        } else {
            Status::Free
        };
    }

    fn upper(&self, i: usize) -> bool {
        self.status[i] == Status::Upper
    }
    fn lower(&self, i: usize) -> bool {
        self.status[i] == Status::Lower
    }
    fn free(&self, i: usize) -> bool {
        self.status[i] == Status::Free
    }

    fn swap_index(&mut self, q: &mut QMat<'_>, i: usize, j: usize) {
        q.swap_index(i, j);
        self.y.swap(i, j);
        self.g.swap(i, j);
        self.status.swap(i, j);
        self.alpha.swap(i, j);
        self.p.swap(i, j);
        self.active_set.swap(i, j);
        self.g_bar.swap(i, j);
    }

    fn reconstruct_gradient(&mut self, q: &mut QMat<'_>) {
        let (l, act) = (self.l, self.active_size);
        if act == l {
            return;
        }
        for j in act..l {
            self.g[j] = self.g_bar[j] + self.p[j];
        }
        let nr_free = (0..act).filter(|&j| self.free(j)).count();
        if 2 * nr_free < act {
            tracing::debug!("SMO: fewer than half of the active variables are free; shrinking=false may be faster");
        }
        if nr_free * l > 2 * act * (l - act) {
            for i in act..l {
                let c = q.fetch(i, act);
                let qi = q.col(c);
                for j in 0..act {
                    if self.free(j) {
                        self.g[i] += self.alpha[j] * f64::from(qi[j]);
                    }
                }
            }
        } else {
            for i in 0..act {
                if self.free(i) {
                    let c = q.fetch(i, l);
                    let qi = q.col(c);
                    let ai = self.alpha[i];
                    for j in act..l {
                        self.g[j] += ai * f64::from(qi[j]);
                    }
                }
            }
        }
    }

    /// WSS3; `None` when optimal on the active set.
    fn select(&mut self, q: &mut QMat<'_>) -> Option<(usize, usize)> {
        if self.nu {
            return self.select_nu_vectorised(q);
        }
        self.select_vectorised(q)
    }

    /// WSS3 as [`State::select_scalar`] computes it — the same `>=` / `<=` tie rules (the
    /// last index among equal values wins) and the same arithmetic — as branch-free passes
    /// that vectorise: a masked maximum, then a backward search for its last occurrence.
    fn select_vectorised(&mut self, q: &mut QMat<'_>) -> Option<(usize, usize)> {
        let act = self.active_size;
        let mut up = std::mem::take(&mut self.scratch_up);
        let mut obj = std::mem::take(&mut self.scratch_obj);
        up.resize(act, 0.0);
        obj.resize(act, 0.0);
        let r = self.select_with(q, &mut up[..act], &mut obj[..act]);
        self.scratch_up = up;
        self.scratch_obj = obj;
        r
    }

    fn select_with(&self, q: &mut QMat<'_>, up: &mut [f64], obj: &mut [f64]) -> Option<(usize, usize)> {
        let act = self.active_size;
        let (y, g, st) = (&self.y[..act], &self.g[..act], &self.status[..act]);
        let gmax = pulp::Arch::new().dispatch(MaskedUp { y, g, st, out: up });
        if gmax == -INF {
            return None;
        }
        let i = up.iter().rposition(|&v| v == gmax)?;
        let c = q.fetch(i, act);
        let qi = &q.col(c)[..act];
        let qd = &q.qd()[..act];
        let gmax2 = pulp::Arch::new().dispatch(MaskedLow { y, g, st, qi, qd, i, gmax, out: obj });
        let min = obj.iter().copied().fold(INF, f64::min);
        if gmax + gmax2 < self.eps || min == INF {
            return None;
        }
        let j = obj.iter().rposition(|&v| v == min)?;
        Some((i, j))
    }

    /// LIBSVM's `select_working_set` loop as written in `svm.cpp`: the reference that
    /// [`State::select_vectorised`] is tested against.
    #[cfg(test)]
    fn select_scalar(&self, q: &mut QMat<'_>) -> Option<(usize, usize)> {
        let (mut gmax, mut gmax2) = (-INF, -INF);
        let (mut gmax_idx, mut gmin_idx) = (usize::MAX, usize::MAX);
        let mut obj_diff_min = INF;
        for t in 0..self.active_size {
            if self.y[t] == 1 {
                if !self.upper(t) && -self.g[t] >= gmax {
                    gmax = -self.g[t];
                    gmax_idx = t;
                }
            } else if !self.lower(t) && self.g[t] >= gmax {
                gmax = self.g[t];
                gmax_idx = t;
            }
        }
        let i = gmax_idx;
        if i == usize::MAX {
            return None;
        }
        let c = q.fetch(i, self.active_size);
        let qi = q.col(c);
        let qd = q.qd();
        let yi = f64::from(self.y[i]);
        for j in 0..self.active_size {
            if self.y[j] == 1 {
                if !self.lower(j) {
                    let grad_diff = gmax + self.g[j];
                    if self.g[j] >= gmax2 {
                        gmax2 = self.g[j];
                    }
                    if grad_diff > 0.0 {
                        let quad = qd[i] + qd[j] - 2.0 * yi * f64::from(qi[j]);
                        let obj_diff =
                            if quad > 0.0 { -(grad_diff * grad_diff) / quad } else { -(grad_diff * grad_diff) / TAU };
                        if obj_diff <= obj_diff_min {
                            gmin_idx = j;
                            obj_diff_min = obj_diff;
                        }
                    }
                }
            } else if !self.upper(j) {
                let grad_diff = gmax - self.g[j];
                if -self.g[j] >= gmax2 {
                    gmax2 = -self.g[j];
                }
                if grad_diff > 0.0 {
                    let quad = qd[i] + qd[j] + 2.0 * yi * f64::from(qi[j]);
                    let obj_diff =
                        if quad > 0.0 { -(grad_diff * grad_diff) / quad } else { -(grad_diff * grad_diff) / TAU };
                    if obj_diff <= obj_diff_min {
                        gmin_idx = j;
                        obj_diff_min = obj_diff;
                    }
                }
            }
        }
        if gmax + gmax2 < self.eps || gmin_idx == usize::MAX {
            return None;
        }
        Some((gmax_idx, gmin_idx))
    }

    /// `Solver_NU::select_working_set` as masked vector passes (see [`State::select_vectorised`]).
    fn select_nu_vectorised(&mut self, q: &mut QMat<'_>) -> Option<(usize, usize)> {
        let act = self.active_size;
        let mut up = std::mem::take(&mut self.scratch_up);
        let mut obj = std::mem::take(&mut self.scratch_obj);
        up.resize(2 * act, 0.0);
        obj.resize(act, 0.0);
        let r = self.select_nu_with(q, &mut up[..2 * act], &mut obj[..act]);
        self.scratch_up = up;
        self.scratch_obj = obj;
        r
    }

    fn select_nu_with(&self, q: &mut QMat<'_>, up: &mut [f64], obj: &mut [f64]) -> Option<(usize, usize)> {
        let act = self.active_size;
        let (y, g, st) = (&self.y[..act], &self.g[..act], &self.status[..act]);
        let (upp, upn) = up.split_at_mut(act);
        let (gmaxp, gmaxn) = pulp::Arch::new().dispatch(MaskedUpNu { y, g, st, outp: upp, outn: upn });
        let ip = if gmaxp == -INF { None } else { upp.iter().rposition(|&v| v == gmaxp) };
        let inn = if gmaxn == -INF { None } else { upn.iter().rposition(|&v| v == gmaxn) };
        // Both columns stay valid: the cache keeps the two most recent columns and SVR's two
        // buffers alternate.
        let cip = ip.map(|t| q.fetch(t, act));
        let cin = inn.map(|t| q.fetch(t, act));
        let zeros = vec![0f32; act];
        let qip: &[f32] = cip.map_or(&zeros[..], |c| &q.col(c)[..act]);
        let qin: &[f32] = cin.map_or(&zeros[..], |c| &q.col(c)[..act]);
        let qd = &q.qd()[..act];
        let (qdp, qdn) = (ip.map_or(0.0, |t| qd[t]), inn.map_or(0.0, |t| qd[t]));
        let (gmaxp2, gmaxn2) =
            pulp::Arch::new().dispatch(MaskedLowNu { y, g, st, qip, qin, qd, qdp, qdn, gmaxp, gmaxn, out: obj });
        let min = obj.iter().copied().fold(INF, f64::min);
        if f64::max(gmaxp + gmaxp2, gmaxn + gmaxn2) < self.eps || min == INF {
            return None;
        }
        let j = obj.iter().rposition(|&v| v == min)?;
        let i = if y[j] == 1 { ip } else { inn }?;
        Some((i, j))
    }

    #[cfg(test)]
    fn select_nu(&self, q: &mut QMat<'_>) -> Option<(usize, usize)> {
        let (mut gmaxp, mut gmaxp2, mut gmaxp_idx) = (-INF, -INF, usize::MAX);
        let (mut gmaxn, mut gmaxn2, mut gmaxn_idx) = (-INF, -INF, usize::MAX);
        let (mut gmin_idx, mut obj_diff_min) = (usize::MAX, INF);
        for t in 0..self.active_size {
            if self.y[t] == 1 {
                if !self.upper(t) && -self.g[t] >= gmaxp {
                    gmaxp = -self.g[t];
                    gmaxp_idx = t;
                }
            } else if !self.lower(t) && self.g[t] >= gmaxn {
                gmaxn = self.g[t];
                gmaxn_idx = t;
            }
        }
        let (ip, inn) = (gmaxp_idx, gmaxn_idx);
        // Both columns stay valid: the cache keeps the two most recent columns and SVR's two
        // buffers alternate.
        let cip = (ip != usize::MAX).then(|| q.fetch(ip, self.active_size));
        let cin = (inn != usize::MAX).then(|| q.fetch(inn, self.active_size));
        let qip: &[f32] = cip.map_or(&[], |c| q.col(c));
        let qin: &[f32] = cin.map_or(&[], |c| q.col(c));
        let qd = q.qd();
        for j in 0..self.active_size {
            if self.y[j] == 1 {
                if !self.lower(j) {
                    let grad_diff = gmaxp + self.g[j];
                    if self.g[j] >= gmaxp2 {
                        gmaxp2 = self.g[j];
                    }
                    if grad_diff > 0.0 {
                        let quad = qd[ip] + qd[j] - 2.0 * f64::from(qip[j]);
                        let obj_diff =
                            if quad > 0.0 { -(grad_diff * grad_diff) / quad } else { -(grad_diff * grad_diff) / TAU };
                        if obj_diff <= obj_diff_min {
                            gmin_idx = j;
                            obj_diff_min = obj_diff;
                        }
                    }
                }
            } else if !self.upper(j) {
                let grad_diff = gmaxn - self.g[j];
                if -self.g[j] >= gmaxn2 {
                    gmaxn2 = -self.g[j];
                }
                if grad_diff > 0.0 {
                    let quad = qd[inn] + qd[j] - 2.0 * f64::from(qin[j]);
                    let obj_diff =
                        if quad > 0.0 { -(grad_diff * grad_diff) / quad } else { -(grad_diff * grad_diff) / TAU };
                    if obj_diff <= obj_diff_min {
                        gmin_idx = j;
                        obj_diff_min = obj_diff;
                    }
                }
            }
        }
        if f64::max(gmaxp + gmaxp2, gmaxn + gmaxn2) < self.eps || gmin_idx == usize::MAX {
            return None;
        }
        let out_i = if self.y[gmin_idx] == 1 { gmaxp_idx } else { gmaxn_idx };
        Some((out_i, gmin_idx))
    }

    fn be_shrunk(&self, i: usize, g1: f64, g2: f64) -> bool {
        if self.upper(i) {
            if self.y[i] == 1 { -self.g[i] > g1 } else { -self.g[i] > g2 }
        } else if self.lower(i) {
            if self.y[i] == 1 { self.g[i] > g2 } else { self.g[i] > g1 }
        } else {
            false
        }
    }

    fn be_shrunk_nu(&self, i: usize, m: [f64; 4]) -> bool {
        if self.upper(i) {
            if self.y[i] == 1 { -self.g[i] > m[0] } else { -self.g[i] > m[3] }
        } else if self.lower(i) {
            if self.y[i] == 1 { self.g[i] > m[1] } else { self.g[i] > m[2] }
        } else {
            false
        }
    }

    fn do_shrinking(&mut self, q: &mut QMat<'_>) {
        if self.nu {
            return self.do_shrinking_nu(q);
        }
        let (mut g1, mut g2) = (-INF, -INF);
        for i in 0..self.active_size {
            if self.y[i] == 1 {
                if !self.upper(i) && -self.g[i] >= g1 {
                    g1 = -self.g[i];
                }
                if !self.lower(i) && self.g[i] >= g2 {
                    g2 = self.g[i];
                }
            } else {
                if !self.upper(i) && -self.g[i] >= g2 {
                    g2 = -self.g[i];
                }
                if !self.lower(i) && self.g[i] >= g1 {
                    g1 = self.g[i];
                }
            }
        }
        if !self.unshrink && g1 + g2 <= self.eps * 10.0 {
            self.unshrink = true;
            self.reconstruct_gradient(q);
            self.active_size = self.l;
        }
        let mut i = 0;
        while i < self.active_size {
            if self.be_shrunk(i, g1, g2) {
                self.active_size -= 1;
                while self.active_size > i {
                    if !self.be_shrunk(self.active_size, g1, g2) {
                        let a = self.active_size;
                        self.swap_index(q, i, a);
                        break;
                    }
                    self.active_size -= 1;
                }
            }
            i += 1;
        }
    }

    fn do_shrinking_nu(&mut self, q: &mut QMat<'_>) {
        let mut m = [-INF; 4];
        for i in 0..self.active_size {
            if !self.upper(i) {
                if self.y[i] == 1 {
                    if -self.g[i] > m[0] {
                        m[0] = -self.g[i];
                    }
                } else if -self.g[i] > m[3] {
                    m[3] = -self.g[i];
                }
            }
            if !self.lower(i) {
                if self.y[i] == 1 {
                    if self.g[i] > m[1] {
                        m[1] = self.g[i];
                    }
                } else if self.g[i] > m[2] {
                    m[2] = self.g[i];
                }
            }
        }
        if !self.unshrink && f64::max(m[0] + m[1], m[2] + m[3]) <= self.eps * 10.0 {
            self.unshrink = true;
            self.reconstruct_gradient(q);
            self.active_size = self.l;
        }
        let mut i = 0;
        while i < self.active_size {
            if self.be_shrunk_nu(i, m) {
                self.active_size -= 1;
                while self.active_size > i {
                    if !self.be_shrunk_nu(self.active_size, m) {
                        let a = self.active_size;
                        self.swap_index(q, i, a);
                        break;
                    }
                    self.active_size -= 1;
                }
            }
            i += 1;
        }
    }

    fn calculate_rho(&self) -> (f64, f64) {
        if self.nu {
            return self.calculate_rho_nu();
        }
        let (mut nr_free, mut ub, mut lb, mut sum_free) = (0usize, INF, -INF, 0.0);
        for i in 0..self.active_size {
            let yg = f64::from(self.y[i]) * self.g[i];
            if self.upper(i) {
                if self.y[i] == -1 {
                    ub = ub.min(yg);
                } else {
                    lb = lb.max(yg);
                }
            } else if self.lower(i) {
                if self.y[i] == 1 {
                    ub = ub.min(yg);
                } else {
                    lb = lb.max(yg);
                }
            } else {
                nr_free += 1;
                sum_free += yg;
            }
        }
        let r = if nr_free > 0 { sum_free / nr_free as f64 } else { (ub + lb) / 2.0 };
        (r, 0.0)
    }

    fn calculate_rho_nu(&self) -> (f64, f64) {
        let (mut nf1, mut nf2) = (0usize, 0usize);
        let (mut ub1, mut ub2, mut lb1, mut lb2) = (INF, INF, -INF, -INF);
        let (mut s1, mut s2) = (0.0, 0.0);
        for i in 0..self.active_size {
            let g = self.g[i];
            if self.y[i] == 1 {
                if self.upper(i) {
                    lb1 = lb1.max(g);
                } else if self.lower(i) {
                    ub1 = ub1.min(g);
                } else {
                    nf1 += 1;
                    s1 += g;
                }
            } else if self.upper(i) {
                lb2 = lb2.max(g);
            } else if self.lower(i) {
                ub2 = ub2.min(g);
            } else {
                nf2 += 1;
                s2 += g;
            }
        }
        let r1 = if nf1 > 0 { s1 / nf1 as f64 } else { (ub1 + lb1) / 2.0 };
        let r2 = if nf2 > 0 { s2 / nf2 as f64 } else { (ub2 + lb2) / 2.0 };
        ((r1 - r2) / 2.0, (r1 + r2) / 2.0)
    }
}

/// Runs SMO from the feasible starting point `alpha0`.
pub(crate) fn solve(
    q: &mut QMat<'_>,
    p: &[f64],
    y: &[i8],
    alpha0: &[f64],
    cp: f64,
    cn: f64,
    opts: &SolveOptions,
) -> Solution {
    let l = p.len();
    let mut s = State {
        l,
        active_size: l,
        y: y.to_vec(),
        g: vec![0.0; l],
        status: vec![Status::Lower; l],
        alpha: alpha0.to_vec(),
        eps: opts.eps,
        cp,
        cn,
        p: p.to_vec(),
        active_set: (0..l).collect(),
        g_bar: vec![0.0; l],
        unshrink: false,
        nu: opts.nu,
        scratch_up: Vec::new(),
        scratch_obj: Vec::new(),
    };
    for i in 0..l {
        s.update_status(i);
    }
    // Gradient at the starting point.
    s.g.copy_from_slice(p);
    for i in 0..l {
        if !s.lower(i) {
            let c = q.fetch(i, l);
            let qi = q.col(c);
            let ai = s.alpha[i];
            for j in 0..l {
                s.g[j] += ai * f64::from(qi[j]);
            }
            if s.upper(i) {
                let ci = s.c(i);
                for j in 0..l {
                    s.g_bar[j] += ci * f64::from(qi[j]);
                }
            }
        }
    }

    let max_iter = opts.max_iter.unwrap_or_else(|| 10_000_000usize.max(l.saturating_mul(100)));
    let mut iter = 0usize;
    let mut counter = l.min(1000) + 1;
    while iter < max_iter {
        counter -= 1;
        if counter == 0 {
            counter = l.min(1000);
            if opts.shrinking {
                s.do_shrinking(q);
                q.flush();
            }
        }
        let (i, j) = match s.select(q) {
            Some(ij) => ij,
            None => {
                s.reconstruct_gradient(q);
                s.active_size = l;
                match s.select(q) {
                    Some(ij) => {
                        counter = 1;
                        ij
                    }
                    None => break,
                }
            }
        };
        iter += 1;
        step(&mut s, q, i, j);
    }
    let converged = iter < max_iter;
    if !converged {
        if s.active_size < l {
            s.reconstruct_gradient(q);
            s.active_size = l;
        }
        tracing::warn!(
            "SMO reached its iteration limit ({max_iter}) before the tolerance {}: the model is usable but not optimal; raise max_iter, scale the features or loosen eps",
            opts.eps
        );
    }
    let (rho, r) = s.calculate_rho();
    let obj = (0..l).map(|i| s.alpha[i] * (s.g[i] + s.p[i])).sum::<f64>() / 2.0;
    let mut alpha = vec![0.0; l];
    for i in 0..l {
        alpha[s.active_set[i]] = s.alpha[i];
    }
    Solution { alpha, obj, rho, r, iterations: iter, converged, columns_computed: q.computed }
}

/// One two-variable update (`Solver::Solve`'s loop body).
fn step(s: &mut State, q: &mut QMat<'_>, i: usize, j: usize) {
    let act = s.active_size;
    let ci_ref = q.fetch(i, act);
    // SVR columns live in two alternating buffers and the cache keeps both columns, so both
    // handles stay valid until the next fetch.
    let cj_ref = q.fetch(j, act);
    let (c_i, c_j) = (s.c(i), s.c(j));
    let (old_ai, old_aj) = (s.alpha[i], s.alpha[j]);
    {
        let qd = q.qd();
        let qi = q.col(ci_ref);
        let (mut ai, mut aj) = (s.alpha[i], s.alpha[j]);
        if s.y[i] != s.y[j] {
            let mut quad = qd[i] + qd[j] + 2.0 * f64::from(qi[j]);
            if quad <= 0.0 {
                quad = TAU;
            }
            let delta = (-s.g[i] - s.g[j]) / quad;
            let diff = ai - aj;
            ai += delta;
            aj += delta;
            if diff > 0.0 {
                if aj < 0.0 {
                    aj = 0.0;
                    ai = diff;
                }
            } else if ai < 0.0 {
                ai = 0.0;
                aj = -diff;
            }
            if diff > c_i - c_j {
                if ai > c_i {
                    ai = c_i;
                    aj = c_i - diff;
                }
            } else if aj > c_j {
                aj = c_j;
                ai = c_j + diff;
            }
        } else {
            let mut quad = qd[i] + qd[j] - 2.0 * f64::from(qi[j]);
            if quad <= 0.0 {
                quad = TAU;
            }
            let delta = (s.g[i] - s.g[j]) / quad;
            let sum = ai + aj;
            ai -= delta;
            aj += delta;
            if sum > c_i {
                if ai > c_i {
                    ai = c_i;
                    aj = sum - c_i;
                }
            } else if aj < 0.0 {
                aj = 0.0;
                ai = sum;
            }
            if sum > c_j {
                if aj > c_j {
                    aj = c_j;
                    ai = sum - c_j;
                }
            } else if ai < 0.0 {
                ai = 0.0;
                aj = sum;
            }
        }
        s.alpha[i] = ai;
        s.alpha[j] = aj;
        let (dai, daj) = (ai - old_ai, aj - old_aj);
        let qj = q.col(cj_ref);
        update_gradient(&mut s.g[..act], &qi[..act], &qj[..act], dai, daj);
    }
    let (ui, uj) = (s.upper(i), s.upper(j));
    s.update_status(i);
    s.update_status(j);
    let l = s.l;
    if ui != s.upper(i) {
        let c = q.fetch(i, l);
        let qi = q.col(c);
        let f = if ui { -c_i } else { c_i };
        for k in 0..l {
            s.g_bar[k] += f * f64::from(qi[k]);
        }
    }
    if uj != s.upper(j) {
        let c = q.fetch(j, l);
        let qj = q.col(c);
        let f = if uj { -c_j } else { c_j };
        for k in 0..l {
            s.g_bar[k] += f * f64::from(qj[k]);
        }
    }
}

/// `G += Qᵢ·Δαᵢ + Qⱼ·Δαⱼ`, vectorised.
fn update_gradient(g: &mut [f64], qi: &[f32], qj: &[f32], dai: f64, daj: f64) {
    struct K<'a> {
        g: &'a mut [f64],
        qi: &'a [f32],
        qj: &'a [f32],
        dai: f64,
        daj: f64,
    }
    impl pulp::WithSimd for K<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            for ((g, a), b) in self.g.iter_mut().zip(self.qi).zip(self.qj) {
                *g += f64::from(*a) * self.dai + f64::from(*b) * self.daj;
            }
        }
    }
    pulp::Arch::new().dispatch(K { g, qi, qj, dai, daj });
}

/// ν-solver pass 1: `−G_t` for `y_t = +1, α_t < C` and `G_t` for `y_t = −1, α_t > 0` (else −∞),
/// in two arrays; returns both maxima.
struct MaskedUpNu<'a> {
    y: &'a [i8],
    g: &'a [f64],
    st: &'a [Status],
    outp: &'a mut [f64],
    outn: &'a mut [f64],
}

impl pulp::WithSimd for MaskedUpNu<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, f64) {
        let MaskedUpNu { y, g, st, outp, outn } = self;
        let (mut mp, mut mn) = ([-INF; 8], [-INF; 8]);
        for t in 0..outp.len() {
            let pos = y[t] == 1;
            let vp = if pos && st[t] != Status::Upper { -g[t] } else { -INF };
            let vn = if !pos && st[t] != Status::Lower { g[t] } else { -INF };
            outp[t] = vp;
            outn[t] = vn;
            mp[t % 8] = mp[t % 8].max(vp);
            mn[t % 8] = mn[t % 8].max(vn);
        }
        (mp.iter().copied().fold(-INF, f64::max), mn.iter().copied().fold(-INF, f64::max))
    }
}

/// ν-solver pass 2: LIBSVM's `obj_diff` per candidate `j` against the same-class `i` (+∞ when
/// not a candidate); returns `(Gmaxp2, Gmaxn2)`.
struct MaskedLowNu<'a> {
    y: &'a [i8],
    g: &'a [f64],
    st: &'a [Status],
    qip: &'a [f32],
    qin: &'a [f32],
    qd: &'a [f64],
    qdp: f64,
    qdn: f64,
    gmaxp: f64,
    gmaxn: f64,
    out: &'a mut [f64],
}

impl pulp::WithSimd for MaskedLowNu<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (f64, f64) {
        let MaskedLowNu { y, g, st, qip, qin, qd, qdp, qdn, gmaxp, gmaxn, out } = self;
        let (mut mp, mut mn) = ([-INF; 8], [-INF; 8]);
        for j in 0..out.len() {
            let pos = y[j] == 1;
            let ok = if pos { st[j] != Status::Lower } else { st[j] != Status::Upper };
            mp[j % 8] = mp[j % 8].max(if pos && ok { g[j] } else { -INF });
            mn[j % 8] = mn[j % 8].max(if !pos && ok { -g[j] } else { -INF });
            let grad_diff = if pos { gmaxp + g[j] } else { gmaxn - g[j] };
            let quad = if pos { qdp + qd[j] - 2.0 * f64::from(qip[j]) } else { qdn + qd[j] - 2.0 * f64::from(qin[j]) };
            let den = if quad > 0.0 { quad } else { TAU };
            let od = -(grad_diff * grad_diff) / den;
            out[j] = if ok && grad_diff > 0.0 { od } else { INF };
        }
        (mp.iter().copied().fold(-INF, f64::max), mn.iter().copied().fold(-INF, f64::max))
    }
}

/// `out[t] = −y_t·G_t` where `t ∈ I_up`, else −∞; returns the maximum.
struct MaskedUp<'a> {
    y: &'a [i8],
    g: &'a [f64],
    st: &'a [Status],
    out: &'a mut [f64],
}

impl pulp::WithSimd for MaskedUp<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let MaskedUp { y, g, st, out } = self;
        let mut m = [-INF; 8];
        for (t, o) in out.iter_mut().enumerate() {
            let pos = y[t] == 1;
            let ok = if pos { st[t] != Status::Upper } else { st[t] != Status::Lower };
            let v = if pos { -g[t] } else { g[t] };
            *o = if ok { v } else { -INF };
            m[t % 8] = m[t % 8].max(*o);
        }
        m.iter().copied().fold(-INF, f64::max)
    }
}

/// For `j ∈ I_low` with `b = Gmax + y_j·G_j > 0`: `out[j] = −b²/a` with LIBSVM's
/// `a = QD_i + QD_j − 2·y_i·y_j·Q_ij` (TAU if ≤ 0), else +∞; returns `max_{I_low} y_j·G_j`.
struct MaskedLow<'a> {
    y: &'a [i8],
    g: &'a [f64],
    st: &'a [Status],
    qi: &'a [f32],
    qd: &'a [f64],
    i: usize,
    gmax: f64,
    out: &'a mut [f64],
}

impl pulp::WithSimd for MaskedLow<'_> {
    type Output = f64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> f64 {
        let MaskedLow { y, g, st, qi, qd, i, gmax, out } = self;
        let (qdi, yi) = (qd[i], f64::from(y[i]));
        let mut m = [-INF; 8];
        for (j, o) in out.iter_mut().enumerate() {
            let pos = y[j] == 1;
            let ok = if pos { st[j] != Status::Lower } else { st[j] != Status::Upper };
            let yg = if pos { g[j] } else { -g[j] };
            m[j % 8] = m[j % 8].max(if ok { yg } else { -INF });
            let grad_diff = gmax + yg;
            // (QD_i + QD_j) − 2·y_i·Q_ij for y_j = +1 and + for y_j = −1, as LIBSVM writes it.
            let t2 = 2.0 * yi * f64::from(qi[j]);
            let base = qdi + qd[j];
            let quad = if pos { base - t2 } else { base + t2 };
            let den = if quad > 0.0 { quad } else { TAU };
            let od = -(grad_diff * grad_diff) / den;
            *o = if ok && grad_diff > 0.0 { od } else { INF };
        }
        m.iter().copied().fold(-INF, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Features;
    use crate::kernel::{Kernel, KernelType};

    #[test]
    fn vectorised_selection_equals_libsvms_loop() {
        let mut rng = sconce_core::SeededRng::new(3);
        let (mut found, mut found_nu) = (0, 0);
        for case in 0..300 {
            let l = 3 + rng.below(80) as usize;
            let x: Vec<f64> = (0..l * 3).map(|_| rng.normal()).collect();
            let f = Features::dense(l, 3, x).unwrap();
            let k = Kernel { kind: KernelType::Rbf, degree: 3, gamma: 0.5, coef0: 0.0 };
            let y: Vec<i8> = (0..l).map(|_| if rng.below(2) == 0 { 1 } else { -1 }).collect();
            let mut q = QMat::svc(KernelRows::with_precision(&f, (0..l).collect(), k, false), &y, 1 << 20);
            // Bounded and free α, gradients on a coarse grid so that ties occur.
            let alpha: Vec<f64> = (0..l)
                .map(|_| match rng.below(3) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.uniform(0.01, 0.99),
                })
                .collect();
            let g: Vec<f64> = (0..l).map(|_| (rng.uniform(-2.0, 2.0) * 4.0).round() / 4.0).collect();
            let mut s = State {
                l,
                active_size: 1 + rng.below(l as u64) as usize,
                y: y.clone(),
                g,
                status: vec![Status::Lower; l],
                alpha,
                eps: if case % 2 == 0 { 1e-3 } else { 0.5 },
                cp: 1.0,
                cn: 1.0,
                p: vec![-1.0; l],
                active_set: (0..l).collect(),
                g_bar: vec![0.0; l],
                unshrink: false,
                nu: false,
                scratch_up: Vec::new(),
                scratch_obj: Vec::new(),
            };
            for i in 0..l {
                s.update_status(i);
            }
            let want = s.select_scalar(&mut q);
            found += usize::from(want.is_some());
            assert_eq!(s.select_vectorised(&mut q), want, "case {case}");
            let want_nu = s.select_nu(&mut q);
            found_nu += usize::from(want_nu.is_some());
            assert_eq!(s.select_nu_vectorised(&mut q), want_nu, "nu case {case}");
        }
        assert!(found > 100 && found_nu > 100, "only {found} / {found_nu} cases selected a pair");
    }
}
