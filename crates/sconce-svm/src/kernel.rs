//! Kernel functions (LIBSVM's five plus OpenCV's chi-squared and histogram intersection), the
//! `gamma` defaults, and the vectorised, multi-threaded kernel-column fill the solver uses.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::features::{Features, Row};

/// The kernel family. Numbers follow LIBSVM's `-t` (0–4) and extend it with 5 and 6.
///
/// | kernel | `K(u, v)` |
/// |---|---|
/// | `Linear` (0) | `u·v` |
/// | `Poly` (1) | `(γ u·v + coef0)^degree` |
/// | `Rbf` (2) | `exp(−γ‖u−v‖²)` |
/// | `Sigmoid` (3) | `tanh(γ u·v + coef0)` (not positive semi-definite in general) |
/// | `Precomputed` (4) | the value in column `id(v)` of row `u` (LIBSVM's `0:id` layout) |
/// | `Chi2` (5) | `exp(−γ Σ (u−v)²/(u+v))`, terms with `u+v = 0` skipped (OpenCV, scikit-learn) |
/// | `Intersection` (6) | `Σ min(u, v)` (OpenCV's `INTER`) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelType {
    /// `u·v`.
    Linear,
    /// `(γ u·v + coef0)^degree`.
    Poly,
    /// `exp(−γ‖u−v‖²)`.
    Rbf,
    /// `tanh(γ u·v + coef0)`.
    Sigmoid,
    /// Kernel values supplied by the user.
    Precomputed,
    /// `exp(−γ Σ (u−v)²/(u+v))`, for non-negative features (histograms).
    Chi2,
    /// `Σ min(u, v)`, for non-negative features (histograms).
    Intersection,
}

impl KernelType {
    /// LIBSVM's `-t` number (5 and 6 are sconce's extensions).
    pub fn code(self) -> u8 {
        match self {
            Self::Linear => 0,
            Self::Poly => 1,
            Self::Rbf => 2,
            Self::Sigmoid => 3,
            Self::Precomputed => 4,
            Self::Chi2 => 5,
            Self::Intersection => 6,
        }
    }

    /// The kernel for a `-t` number.
    pub fn from_code(t: i64) -> Option<Self> {
        Some(match t {
            0 => Self::Linear,
            1 => Self::Poly,
            2 => Self::Rbf,
            3 => Self::Sigmoid,
            4 => Self::Precomputed,
            5 => Self::Chi2,
            6 => Self::Intersection,
            _ => return None,
        })
    }

    /// The name in a LIBSVM model file (`chi2` and `intersection` are sconce's extensions).
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Poly => "polynomial",
            Self::Rbf => "rbf",
            Self::Sigmoid => "sigmoid",
            Self::Precomputed => "precomputed",
            Self::Chi2 => "chi2",
            Self::Intersection => "intersection",
        }
    }

    /// The kernel for a model-file name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Linear, Self::Poly, Self::Rbf, Self::Sigmoid, Self::Precomputed, Self::Chi2, Self::Intersection]
            .into_iter()
            .find(|k| k.name() == s)
    }

    /// Whether `gamma` enters the kernel.
    pub fn uses_gamma(self) -> bool {
        matches!(self, Self::Poly | Self::Rbf | Self::Sigmoid | Self::Chi2)
    }

    /// Whether `coef0` enters the kernel.
    pub fn uses_coef0(self) -> bool {
        matches!(self, Self::Poly | Self::Sigmoid)
    }
}

/// How `gamma` is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gamma {
    /// This value.
    Value(f64),
    /// scikit-learn's default `'scale'`: `1 / (n_features · Var(X))`.
    Scale,
    /// LIBSVM's default (scikit-learn's `'auto'`): `1 / n_features`, where LIBSVM's
    /// "number of features" is the largest feature index in the training data.
    InvFeatures,
}

impl Gamma {
    /// The value for training data `x`.
    pub fn resolve(self, x: &Features) -> f64 {
        match self {
            Self::Value(g) => g,
            Self::Scale => x.gamma_scale(),
            Self::InvFeatures => {
                let m = x.max_index();
                if m == 0 { 1.0 } else { 1.0 / f64::from(m) }
            }
        }
    }
}

/// A kernel with its resolved parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kernel {
    /// The family.
    pub kind: KernelType,
    /// Degree of the polynomial kernel.
    pub degree: i32,
    /// γ (resolved).
    pub gamma: f64,
    /// coef0 of the polynomial and sigmoid kernels.
    pub coef0: f64,
}

/// LIBSVM's `powi`: repeated squaring, bit-for-bit the same rounding as LIBSVM.
#[inline(always)]
pub(crate) fn powi(base: f64, times: i32) -> f64 {
    let (mut tmp, mut ret) = (base, 1.0);
    let mut t = times;
    while t > 0 {
        if t % 2 == 1 {
            ret *= tmp;
        }
        tmp *= tmp;
        t /= 2;
    }
    ret
}

const LOG2E: f64 = std::f64::consts::LOG2_E;
#[allow(clippy::excessive_precision)] // fdlibm's split of ln 2, kept as published
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
#[allow(clippy::excessive_precision)]
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// `eˣ` to about 1 ulp, branch-free so that column loops vectorise (clamped to `[−708, 709]`).
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    let x = x.clamp(-708.0, 709.0);
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵²: rounds to the nearest integer
    let kf = x * LOG2E + MAGIC;
    let k = kf - MAGIC;
    let ki = kf.to_bits() as i64 - MAGIC.to_bits() as i64;
    let r = x - k * LN2_HI - k * LN2_LO;
    // Taylor to r¹³ on |r| ≤ ln2/2: truncation below 1e-17.
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p * f64::from_bits(((ki + 1023) << 52) as u64)
}

/// `a·b` over dense rows, summed in index order (LIBSVM's rounding; the vectorised paths work
/// across samples instead).
#[inline(always)]
pub(crate) fn dot_dense(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// `‖a−b‖²` over dense rows of possibly different lengths (missing values are zeros), in
/// index order as LIBSVM's `k_function`.
#[inline(always)]
fn sqdist_dense(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let mut s = 0.0;
    for (x, y) in a[..n].iter().zip(&b[..n]) {
        let d = x - y;
        s += d * d;
    }
    for v in a[n..].iter().chain(&b[n..]) {
        s += v * v;
    }
    s
}

/// Calls `f(u, v)` for every feature index present in either row (absent values are 0).
#[inline(always)]
fn merge(a: Row<'_>, b: Row<'_>, mut f: impl FnMut(f64, f64)) {
    match (a, b) {
        (Row::Dense(x), Row::Dense(y)) => {
            let n = x.len().min(y.len());
            for k in 0..n {
                f(x[k], y[k]);
            }
            x[n..].iter().for_each(|&u| f(u, 0.0));
            y[n..].iter().for_each(|&v| f(0.0, v));
        }
        _ => {
            let (ai, av) = sparse_view(&a);
            let (bi, bv) = sparse_view(&b);
            let (mut p, mut q) = (0, 0);
            while p < ai.len() && q < bi.len() {
                if ai[p] == bi[q] {
                    f(av[p], bv[q]);
                    p += 1;
                    q += 1;
                } else if ai[p] > bi[q] {
                    f(0.0, bv[q]);
                    q += 1;
                } else {
                    f(av[p], 0.0);
                    p += 1;
                }
            }
            av[p..].iter().for_each(|&u| f(u, 0.0));
            bv[q..].iter().for_each(|&v| f(0.0, v));
        }
    }
}

fn sparse_view<'a>(r: &Row<'a>) -> (std::borrow::Cow<'a, [u32]>, &'a [f64]) {
    match *r {
        Row::Sparse(i, v) => (std::borrow::Cow::Borrowed(i), v),
        Row::Dense(v) => (std::borrow::Cow::Owned((1..=v.len() as u32).collect()), v),
    }
}

/// `Σ (u−v)²/(u+v)` over the features of either row, terms with `u+v = 0` skipped (OpenCV's chi²).
#[inline(always)]
fn chi2_sum(a: Row<'_>, b: Row<'_>) -> f64 {
    let mut s = 0.0;
    merge(a, b, |u, v| {
        let den = u + v;
        if den != 0.0 {
            let d = u - v;
            s += d * d / den;
        }
    });
    s
}

/// `u·v` of two rows in any representation (LIBSVM's sparse `dot`).
#[inline(always)]
pub(crate) fn dot(a: Row<'_>, b: Row<'_>) -> f64 {
    match (a, b) {
        (Row::Dense(x), Row::Dense(y)) => dot_dense(x, y),
        (Row::Sparse(ai, av), Row::Sparse(bi, bv)) => {
            let (mut p, mut q, mut s) = (0, 0, 0.0);
            while p < ai.len() && q < bi.len() {
                if ai[p] == bi[q] {
                    s += av[p] * bv[q];
                    p += 1;
                    q += 1;
                } else if ai[p] > bi[q] {
                    q += 1;
                } else {
                    p += 1;
                }
            }
            s
        }
        (Row::Sparse(ai, av), Row::Dense(y)) | (Row::Dense(y), Row::Sparse(ai, av)) => ai
            .iter()
            .zip(av)
            .filter(|(i, _)| **i >= 1 && (**i as usize) <= y.len())
            .map(|(i, v)| v * y[*i as usize - 1])
            .sum(),
    }
}

impl Kernel {
    /// `K(a, b)` exactly as LIBSVM's `k_function` computes it (RBF from the squared
    /// differences; precomputed: `a`'s value at `b`'s id).
    pub fn eval(&self, a: Row<'_>, b: Row<'_>) -> f64 {
        match self.kind {
            KernelType::Linear => dot(a, b),
            KernelType::Poly => powi(self.gamma * dot(a, b) + self.coef0, self.degree),
            KernelType::Sigmoid => (self.gamma * dot(a, b) + self.coef0).tanh(),
            KernelType::Rbf => {
                let s = match (a, b) {
                    (Row::Dense(x), Row::Dense(y)) => sqdist_dense(x, y),
                    _ => {
                        let mut s = 0.0;
                        merge(a, b, |u, v| {
                            let d = u - v;
                            s += d * d;
                        });
                        s
                    }
                };
                (-self.gamma * s).exp()
            }
            KernelType::Precomputed => a.get(b.get(0) as u32),
            KernelType::Chi2 => (-self.gamma * chi2_sum(a, b)).exp(),
            KernelType::Intersection => {
                let mut s = 0.0;
                merge(a, b, |u, v| s += u.min(v));
                s
            }
        }
    }
}

/// Samples per panel of the dense training copy.
const PANEL: usize = 16;

/// Index of position `p`, feature `k` in the panel layout.
#[inline(always)]
fn panel_at(p: usize, k: usize, cols: usize) -> usize {
    (p / PANEL) * PANEL * cols + k * PANEL + p % PANEL
}

/// Whether sparse data is better handled as dense rows (most entries present).
pub(crate) fn prefer_dense(x: &Features) -> Option<usize> {
    match x {
        Features::Dense { cols, .. } => Some(*cols),
        Features::Sparse { values, .. } => {
            let cols = x.max_index() as usize;
            (cols > 0 && x.rows() * cols <= values.len() * 3 / 2).then_some(cols)
        }
    }
}

/// Dense training samples in solver order, packed in panels of 16 samples stored
/// feature-major (`[panel][feature][16]`, GEMM's packing), swapped physically when SMO shrinks.
/// A kernel column then streams through memory once and vectorises across the 16 samples of
/// a panel, while each dot product still sums its features in index order — the same rounding
/// as LIBSVM's sparse `dot`.
struct Panels {
    kernel: Kernel,
    cols: usize,
    /// `f64` values (empty in single-precision mode).
    dense: Vec<f64>,
    /// `f32` values (single-precision mode only).
    dense32: Vec<f32>,
    /// `‖x‖²` per position (RBF), padded with zeros to whole panels.
    sq: Vec<f64>,
}

impl Panels {
    fn row(&self, p: usize) -> Vec<f64> {
        if self.dense32.is_empty() {
            (0..self.cols).map(|k| self.dense[panel_at(p, k, self.cols)]).collect()
        } else {
            (0..self.cols).map(|k| f64::from(self.dense32[panel_at(p, k, self.cols)])).collect()
        }
    }

    fn swap(&mut self, i: usize, j: usize) {
        for k in 0..self.cols {
            let (a, b) = (panel_at(i, k, self.cols), panel_at(j, k, self.cols));
            if self.dense32.is_empty() {
                self.dense.swap(a, b);
            } else {
                self.dense32.swap(a, b);
            }
        }
        if !self.sq.is_empty() {
            self.sq.swap(i, j);
        }
    }

    /// `out[j − start] = sign(j)·K(i, j)` as `f32` for `j ∈ start..start+out.len()`, where `a`
    /// is row `i` and `sign` is `(yᵢ, y)`.
    fn fill(&self, i: usize, a: &[f64], start: usize, out: &mut [f32], sign: Option<(i8, &[i8])>) {
        pulp::Arch::new().dispatch(Fill { p: self, i, a, start, out, sign });
    }
}

/// One dense column range on the current thread.
struct Fill<'p, 'o> {
    p: &'p Panels,
    i: usize,
    a: &'o [f64],
    start: usize,
    out: &'o mut [f32],
    sign: Option<(i8, &'o [i8])>,
}

impl pulp::WithSimd for Fill<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Fill { p, i, a, start, out, sign } = self;
        let cols = p.cols;
        let end = start + out.len();
        let (p0, p1) = (start / PANEL, end.div_ceil(PANEL));
        let mut pb = p0;
        if !p.dense32.is_empty() {
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let panel = |b: usize| &p.dense32[b * PANEL * cols..(b + 1) * PANEL * cols];
            while pb + 4 <= p1 {
                let acc = dot_panels::<f32, 4>(&a32, [panel(pb), panel(pb + 1), panel(pb + 2), panel(pb + 3)]);
                for (q, acc) in acc.iter().enumerate() {
                    emit(p, i, sign, start, out, pb + q, &acc.map(f64::from));
                }
                pb += 4;
            }
            while pb < p1 {
                let acc = dot_panels::<f32, 1>(&a32, [panel(pb)]);
                emit(p, i, sign, start, out, pb, &acc[0].map(f64::from));
                pb += 1;
            }
            return;
        }
        let panel = |b: usize| &p.dense[b * PANEL * cols..(b + 1) * PANEL * cols];
        // Two panels at a time: eight independent AVX2 accumulators hide the add latency.
        // (`emit` is a function, not a closure: closures are not inlined into the dispatched
        // body and would compile without the CPU's vector extensions.)
        while pb + 2 <= p1 {
            let acc = dot_panels::<f64, 2>(a, [panel(pb), panel(pb + 1)]);
            for (q, acc) in acc.iter().enumerate() {
                emit(p, i, sign, start, out, pb + q, acc);
            }
            pb += 2;
        }
        while pb < p1 {
            let acc = dot_panels::<f64, 1>(a, [panel(pb)]);
            emit(p, i, sign, start, out, pb, &acc[0]);
            pb += 1;
        }
    }
}

/// Dot products of one sample `a` with the 16 samples of each of `R` panels, features
/// summed in index order (`f64` panels, or `f32` ones in single-precision mode).
#[inline(always)]
fn dot_panels<T, const R: usize>(a: &[T], panels: [&[T]; R]) -> [[T; PANEL]; R]
where
    T: Copy + Default + std::ops::Mul<Output = T> + std::ops::AddAssign,
{
    let mut acc = [[T::default(); PANEL]; R];
    let n = panels.iter().map(|p| p.len() / PANEL).fold(a.len(), usize::min);
    let a = &a[..n];
    // Slicing everything to `n` first lets the compiler drop the bounds checks.
    let vs: [&[[T; PANEL]]; R] = panels.map(|p| &p.as_chunks::<PANEL>().0[..n]);
    for k in 0..n {
        let ak = a[k];
        for q in 0..R {
            let v = &vs[q][k];
            for t in 0..PANEL {
                acc[q][t] += ak * v[t];
            }
        }
    }
    acc
}

/// Writes the kernel values of panel `pb` (dot products `acc` with position `i`) into the
/// part of `out` (positions from `start`) that the panel covers.
#[inline(always)]
fn emit(p: &Panels, i: usize, sign: Option<(i8, &[i8])>, start: usize, out: &mut [f32], pb: usize, acc: &[f64; PANEL]) {
    let j0 = pb * PANEL;
    let end = start + out.len();
    let k = p.kernel;
    let mut sg = [1.0f64; PANEL];
    if let Some((yi, y)) = sign {
        for t in 0..PANEL {
            sg[t] = f64::from(yi) * f64::from(y.get(j0 + t).copied().unwrap_or(1));
        }
    }
    // Branch-free over the whole panel so that exp vectorises.
    let mut vals = [0.0f32; PANEL];
    match k.kind {
        KernelType::Rbf => {
            let sqp = &p.sq[j0..j0 + PANEL];
            let sqi = p.sq[i];
            for t in 0..PANEL {
                vals[t] = (sg[t] * exp(-k.gamma * (sqi + sqp[t] - 2.0 * acc[t]))) as f32;
            }
        }
        KernelType::Linear => {
            for t in 0..PANEL {
                vals[t] = (sg[t] * acc[t]) as f32;
            }
        }
        KernelType::Poly => {
            for t in 0..PANEL {
                vals[t] = (sg[t] * powi(k.gamma * acc[t] + k.coef0, k.degree)) as f32;
            }
        }
        _ => {
            for t in 0..PANEL {
                vals[t] = (sg[t] * (k.gamma * acc[t] + k.coef0).tanh()) as f32;
            }
        }
    }
    let (lo, hi) = (start.max(j0), end.min(j0 + PANEL));
    out[lo - start..hi - start].copy_from_slice(&vals[lo - j0..hi - j0]);
}

/// A second thread that computes the upper half of every large kernel column.
///
/// It stays alive for one solve, spinning briefly between columns (a rayon task per column
/// pays a futex wake-up each time), and always takes the same half of the samples, so each
/// core keeps re-reading the rows that sit in its own L2.
struct Helper {
    chan: Arc<Channel>,
    handle: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Channel {
    /// Job number posted by the solver thread.
    posted: AtomicU64,
    /// Job number finished by the helper.
    done: AtomicU64,
    stop: AtomicBool,
    /// `(i, start, end)` of the posted job.
    job: Mutex<(usize, usize, usize)>,
    /// Unsigned `f32` kernel values of the helper's range.
    out: Mutex<Vec<f32>>,
}

impl Helper {
    fn spawn(panels: Arc<RwLock<Panels>>) -> Option<Self> {
        let chan = Arc::new(Channel::default());
        let c = Arc::clone(&chan);
        let handle = std::thread::Builder::new()
            .name("sconce-svm-columns".into())
            .spawn(move || helper_loop(&c, &panels))
            .ok()?;
        Some(Self { chan, handle: Some(handle) })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.chan.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn helper_loop(c: &Channel, panels: &RwLock<Panels>) {
    let mut seen = 0u64;
    let mut idle = 0u32;
    loop {
        let posted = c.posted.load(Ordering::Acquire);
        if posted == seen {
            if c.stop.load(Ordering::Acquire) {
                return;
            }
            idle = idle.saturating_add(1);
            if idle < 50_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        idle = 0;
        seen = posted;
        let (i, start, end) = c.job.lock().map(|g| *g).unwrap_or((0, 0, 0));
        if let (Ok(p), Ok(mut out)) = (panels.read(), c.out.lock()) {
            out.clear();
            out.resize(end - start, 0.0);
            let a = p.row(i);
            p.fill(i, &a, start, &mut out, None);
        }
        c.done.store(seen, Ordering::Release);
    }
}

/// The training samples in the solver's current order (LIBSVM swaps rows when it shrinks),
/// with the squared norms the RBF kernel needs: dense data in [`Panels`] (filled by two
/// threads when columns are long), sparse rows permuted by index.
pub(crate) struct KernelRows<'a> {
    x: &'a Features,
    kernel: Kernel,
    /// Position → sample index in `x`.
    perm: Vec<usize>,
    /// `‖x‖²` per position (RBF, sparse path).
    sq: Vec<f64>,
    panels: Option<Arc<RwLock<Panels>>>,
    helper: Option<Helper>,
    /// Fraction of a split column the solver thread computes, nudged after every split
    /// column so that neither thread waits for the other.
    share: std::cell::Cell<f64>,
}

/// Columns shorter than this are filled by the solver thread alone.
const SPLIT_MIN: usize = 2048;

thread_local! {
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with column helpers disabled on this thread: inside parallel loops (one-vs-one
/// pairs, CV folds, grid points) every core is already busy, and a spinning helper per solve
/// would oversubscribe them.
pub(crate) fn without_helpers<T>(f: impl FnOnce() -> T) -> T {
    let old = SERIAL.with(|c| c.replace(true));
    let out = f();
    SERIAL.with(|c| c.set(old));
    out
}

impl<'a> KernelRows<'a> {
    /// The kernel over samples `idx` of `x` (in that order). With `single` set, dense features
    /// are kept as `f32` panels (half the memory traffic per kernel column, OpenCV's
    /// precision): kernel values then differ from LIBSVM's in the last bits of `f32`, so the
    /// SMO path — not the optimum — may differ.
    pub(crate) fn with_precision(x: &'a Features, idx: Vec<usize>, kernel: Kernel, single: bool) -> Self {
        let dense_cols = if kernel.kind == KernelType::Precomputed { None } else { prefer_dense(x) };
        let mut me =
            Self { x, kernel, perm: idx, sq: Vec::new(), panels: None, helper: None, share: std::cell::Cell::new(0.5) };
        if let Some(cols) = dense_cols {
            let n = me.perm.len();
            let mut d = vec![0.0; n.div_ceil(PANEL) * PANEL * cols];
            for (p, &i) in me.perm.iter().enumerate() {
                for (k, val) in x.row(i).entries() {
                    if k >= 1 && (k as usize) <= cols {
                        d[panel_at(p, k as usize - 1, cols)] = if single { f64::from(val as f32) } else { val };
                    }
                }
            }
            let (dense, dense32) =
                if single { (Vec::new(), d.iter().map(|&v| v as f32).collect()) } else { (d, Vec::new()) };
            let mut panels = Panels { kernel, cols, dense, dense32, sq: Vec::new() };
            if kernel.kind == KernelType::Rbf {
                let mut sq: Vec<f64> = (0..n)
                    .map(|p| {
                        let r = panels.row(p);
                        dot_dense(&r, &r)
                    })
                    .collect();
                sq.resize(n.div_ceil(PANEL) * PANEL, 0.0);
                panels.sq = sq;
            }
            let batched =
                matches!(kernel.kind, KernelType::Rbf | KernelType::Linear | KernelType::Poly | KernelType::Sigmoid);
            if batched {
                let shared = Arc::new(RwLock::new(panels));
                if n >= 2 * SPLIT_MIN && rayon::current_num_threads() > 1 && !SERIAL.with(std::cell::Cell::get) {
                    me.helper = Helper::spawn(Arc::clone(&shared));
                }
                me.panels = Some(shared);
            } else {
                // Chi² / intersection on dense data: per-pair evaluation on the sparse rows.
                me.sq = Vec::new();
            }
        } else if kernel.kind == KernelType::Rbf {
            me.sq = me.perm.iter().map(|&i| dot(x.row(i), x.row(i))).collect();
        }
        me
    }

    pub(crate) fn len(&self) -> usize {
        self.perm.len()
    }

    pub(crate) fn swap(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        self.perm.swap(i, j);
        if !self.sq.is_empty() {
            self.sq.swap(i, j);
        }
        if let Some(p) = &self.panels
            && let Ok(mut g) = p.write()
        {
            g.swap(i, j);
        }
    }

    /// `K(i, i)` for position `i`.
    pub(crate) fn diag(&self, i: usize) -> f64 {
        match &self.panels {
            Some(p) => {
                let g = match p.read() {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
                let r = g.row(i);
                let d = dot_dense(&r, &r);
                match self.kernel.kind {
                    KernelType::Rbf => exp(-self.kernel.gamma * (g.sq[i] + g.sq[i] - 2.0 * d)),
                    KernelType::Linear => d,
                    KernelType::Poly => powi(self.kernel.gamma * d + self.kernel.coef0, self.kernel.degree),
                    _ => (self.kernel.gamma * d + self.kernel.coef0).tanh(),
                }
            }
            None => self.k(i, i),
        }
    }

    /// `K` between positions `i` and `j` on the sparse path, LIBSVM's training-time formula
    /// (RBF via norms).
    fn k(&self, i: usize, j: usize) -> f64 {
        let (a, b) = (self.x.row(self.perm[i]), self.x.row(self.perm[j]));
        match self.kernel.kind {
            KernelType::Rbf => exp(-self.kernel.gamma * (self.sq[i] + self.sq[j] - 2.0 * dot(a, b))),
            // The training fill uses the vectorised exp (results are cached as f32).
            KernelType::Chi2 => exp(-self.kernel.gamma * chi2_sum(a, b)),
            _ => self.kernel.eval(a, b),
        }
    }

    /// Fills `out[j - start] = sign(j) · K(i, j)` as `f32` for positions `j ∈ start..start+out.len()`,
    /// where `sign(j) = y[i]·y[j]` when `y` is given. Long dense columns are split with the
    /// helper thread.
    pub(crate) fn fill(&self, i: usize, start: usize, out: &mut [f32], y: Option<&[i8]>) {
        let Some(panels) = &self.panels else {
            for (o, j) in out.iter_mut().zip(start..) {
                let s = y.map_or(1.0, |y| f64::from(y[i]) * f64::from(y[j]));
                *o = (s * self.k(i, j)) as f32;
            }
            return;
        };
        let g = match panels.read() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        let a = g.row(i);
        let sign = y.map(|y| (y[i], y));
        let n = out.len();
        let split = match &self.helper {
            Some(_) if n >= 2 * SPLIT_MIN => ((n as f64 * self.share.get()) as usize) / PANEL * PANEL,
            _ => n,
        };
        if split == n {
            g.fill(i, &a, start, out, sign);
            return;
        }
        let Some(h) = &self.helper else { return };
        let c = &h.chan;
        if let Ok(mut job) = c.job.lock() {
            *job = (i, start + split, start + n);
        }
        let id = c.posted.load(Ordering::Relaxed) + 1;
        c.posted.store(id, Ordering::Release);
        let (mine, theirs) = out.split_at_mut(split);
        g.fill(i, &a, start, mine, sign);
        let waited = c.done.load(Ordering::Acquire) != id;
        let mut spins = 0u32;
        while c.done.load(Ordering::Acquire) != id {
            // Yield now and then: with fewer free cores than threads the helper needs this one.
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let nudge = if waited { 0.005 } else { -0.005 };
        self.share.set((self.share.get() + nudge).clamp(0.25, 0.75));
        if let Ok(buf) = c.out.lock() {
            // (f32)(±K) = ±(f32)K: applying the sign after the helper's cast is exact.
            for ((o, &v), j) in theirs.iter_mut().zip(buf.iter()).zip(start + split..) {
                *o = match y {
                    Some(y) => f32::from(y[i] * y[j]) * v,
                    None => v,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f64;
        for k in 0..=400_000 {
            let x = -700.0 + 705.0 * f64::from(k) / 400_000.0;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 5e-16, "{worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e6) >= 0.0 && exp(-1e6) < 1e-300);
    }

    #[test]
    fn powi_is_repeated_squaring() {
        assert_eq!(powi(2.0, 10), 1024.0);
        assert_eq!(powi(1.5, 0), 1.0);
        assert_eq!(powi(-3.0, 3), -27.0);
    }

    #[test]
    fn kernels_on_mixed_representations_agree() {
        let d = Features::dense(2, 4, vec![0.5, 0.0, 1.0, 2.0, 1.0, 3.0, 0.0, 0.25]).unwrap();
        let s = d.to_sparse();
        for kind in [
            KernelType::Linear,
            KernelType::Poly,
            KernelType::Rbf,
            KernelType::Sigmoid,
            KernelType::Chi2,
            KernelType::Intersection,
        ] {
            let k = Kernel { kind, degree: 3, gamma: 0.3, coef0: 0.5 };
            let reference = k.eval(d.row(0), d.row(1));
            for (a, b) in [(s.row(0), s.row(1)), (d.row(0), s.row(1)), (s.row(0), d.row(1))] {
                assert!((k.eval(a, b) - reference).abs() < 1e-14, "{kind:?}");
            }
        }
        // Hand values: u·v = 0.5 + 0.5 = 1; ‖u−v‖² = 0.25+9+1+3.0625.
        let lin = Kernel { kind: KernelType::Linear, degree: 3, gamma: 1.0, coef0: 0.0 };
        assert_eq!(lin.eval(d.row(0), d.row(1)), 1.0);
        let rbf = Kernel { kind: KernelType::Rbf, degree: 3, gamma: 0.1, coef0: 0.0 };
        assert!((rbf.eval(d.row(0), d.row(1)) - (-0.1f64 * 13.3125).exp()).abs() < 1e-15);
        // chi2: (0.5−1)²/1.5 + 3 + 1 + (1.75)²/2.25; intersection: 0.5 + 0 + 0 + 0.25.
        let chi = Kernel { kind: KernelType::Chi2, degree: 3, gamma: 0.5, coef0: 0.0 };
        let s = 0.25 / 1.5 + 3.0 + 1.0 + 1.75f64 * 1.75 / 2.25;
        assert!((chi.eval(d.row(0), d.row(1)) - (-0.5 * s).exp()).abs() < 1e-15);
        let int = Kernel { kind: KernelType::Intersection, degree: 3, gamma: 0.0, coef0: 0.0 };
        assert_eq!(int.eval(d.row(0), d.row(1)), 0.75);
    }

    #[test]
    fn gamma_defaults() {
        let x = Features::dense(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        // Var over all four entries = 1.25; scale = 1/(2·1.25).
        assert!((Gamma::Scale.resolve(&x) - 0.4).abs() < 1e-15);
        assert_eq!(Gamma::InvFeatures.resolve(&x), 0.5);
        assert!((Gamma::Scale.resolve(&x.to_sparse()) - 0.4).abs() < 1e-15);
    }
}
