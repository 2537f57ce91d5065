//! Plumbing shared by the CPU kernels: the float element trait, contiguous slices out of
//! candle's storage, and argument checks that become `sconce_core::Error`s.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};
use num_traits::Float;
use sconce_core::Error;

/// The element types the kernels run on: `f32` and `f64`.
pub(crate) trait Real: WithDType + Float + std::ops::AddAssign + std::iter::Sum + Send + Sync + 'static {
    /// Runs `f` on this thread's reusable scratch buffer of at least `len` elements (contents
    /// unspecified: `f` must write before it reads). Large temporary buffers (im2col columns)
    /// are then allocated once per thread instead of once per call: in this VM a first touch
    /// of fresh memory costs ~3.5 µs per 4 KiB page, which dominated small-channel convolutions.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// The slice as `f32`, when `Self` is `f32` (for the `f32`-only AVX-512 kernels).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as `f32`, when `Self` is `f32`.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// An `f32` vector as `Vec<Self>`, when `Self` is `f32`.
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>>;
}

thread_local! {
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes the buffer out of the cell (so a nested call on the same thread gets its own, never a
/// shared one), grows it if needed, runs `f`, and puts the larger of the two back.
fn scratch<T: Copy + num_traits::Zero, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = key.with(|c| c.take());
    if buf.len() < len {
        buf = vec![T::zero(); len];
    }
    let r = f(&mut buf[..len]);
    key.with(|c| {
        let mut cur = c.borrow_mut();
        if cur.len() < buf.len() {
            *cur = buf;
        }
    });
    r
}

impl Real for f32 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        scratch(&SCRATCH_F32, len, f)
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>> {
        Some(v)
    }
}

impl Real for f64 {
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        scratch(&SCRATCH_F64, len, f)
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn from_f32_vec(_: Vec<f32>) -> Option<Vec<Self>> {
        None
    }
}

/// `v` as `f64` (candle's conversion; `num_traits`' `to_f64` returns an `Option`).
#[inline]
pub(crate) fn f64_of<T: Real>(v: T) -> f64 {
    <T as WithDType>::to_f64(v)
}

/// The contiguous slice of `storage` that `layout` describes.
pub(crate) fn contiguous_slice<'a, T: Real>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the kernel needs a contiguous input (call .contiguous() first)"),
    }
}

/// A kernel over two contiguous inputs of one dtype, written once for `f32` and `f64`.
pub(crate) trait Kernel2 {
    /// The op's name in error messages.
    const NAME: &'static str;
    /// The flat output for inputs `a`, `b`.
    fn kernel<T: Real>(&self, a: &[T], b: &[T]) -> candle_core::Result<Vec<T>>;
}

/// `CustomOp2::cpu_fwd`'s dtype dispatch for a [`Kernel2`].
pub(crate) fn cpu_fwd2<K: Kernel2>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> candle_core::Result<CpuStorage> {
    let name = K::NAME;
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok(CpuStorage::F32(
            k.kernel(contiguous_slice::<f32>(s1, l1, name)?, contiguous_slice::<f32>(s2, l2, name)?)?,
        )),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => Ok(CpuStorage::F64(
            k.kernel(contiguous_slice::<f64>(s1, l1, name)?, contiguous_slice::<f64>(s2, l2, name)?)?,
        )),
        (a, b) => candle_core::bail!(
            "{name}: both inputs must share the dtype f32 or f64, got {:?} and {:?}",
            a.dtype(),
            b.dtype()
        ),
    }
}

/// A kernel over three contiguous inputs of one dtype, written once for `f32` and `f64`.
pub(crate) trait Kernel3 {
    /// The op's name in error messages.
    const NAME: &'static str;
    /// The flat output for inputs `a`, `b`, `c`.
    fn kernel<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> candle_core::Result<Vec<T>>;
}

/// `CustomOp3::cpu_fwd`'s dtype dispatch for a [`Kernel3`]: the output storage and its length.
pub(crate) fn cpu_fwd3<K: Kernel3>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, usize)> {
    let name = K::NAME;
    match (s1, s2, s3) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
            let v = k.kernel(
                contiguous_slice::<f32>(s1, l1, name)?,
                contiguous_slice::<f32>(s2, l2, name)?,
                contiguous_slice::<f32>(s3, l3, name)?,
            )?;
            let len = v.len();
            Ok((CpuStorage::F32(v), len))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
            let v = k.kernel(
                contiguous_slice::<f64>(s1, l1, name)?,
                contiguous_slice::<f64>(s2, l2, name)?,
                contiguous_slice::<f64>(s3, l3, name)?,
            )?;
            let len = v.len();
            Ok((CpuStorage::F64(v), len))
        }
        (a, b, c) => candle_core::bail!(
            "{name}: the three inputs must share the dtype f32 or f64, got {:?}, {:?} and {:?}",
            a.dtype(),
            b.dtype(),
            c.dtype()
        ),
    }
}

/// Checks that a tensor holds `f32` or `f64` (the kernels' element types).
pub(crate) fn float_dtype(t: &Tensor, what: &str) -> sconce_core::Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::config(
            format!("{what} dtype"),
            format!("expected f32 or f64, got {other:?}; convert with .to_dtype(DType::F32) first"),
        )),
    }
}

/// Checks that a tensor lives on the CPU (the kernels are CPU kernels).
pub(crate) fn cpu(t: &Tensor, what: &str) -> sconce_core::Result<()> {
    if t.device().is_cpu() {
        Ok(())
    } else {
        Err(Error::config(
            format!("{what} device"),
            format!(
                "sconce-tensor's kernels run on the CPU, got {:?}; move the tensor with .to_device(&Device::Cpu)",
                t.device()
            ),
        ))
    }
}

/// Dims of a rank-4 `[N, C, H, W]` float tensor on the CPU.
pub(crate) fn nchw(t: &Tensor, what: &str) -> sconce_core::Result<[usize; 4]> {
    let d = sconce_core::check::dims::<4>(t, what, "[N, C, H, W]")?;
    if d[2] == 0 || d[3] == 0 {
        return Err(Error::shape(what, "a non-empty H×W plane", t.dims()));
    }
    float_dtype(t, what)?;
    cpu(t, what)?;
    Ok(d)
}

/// `Σ f(xᵢ)` in `f64`, fast and accurate: eight independent `T` accumulators over blocks of
/// 512 elements (so the compiler vectorises the inner loop), each block folded into `f64`.
#[inline(always)]
pub(crate) fn block_sum<T: Real>(x: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(512) {
        let mut acc = [T::zero(); 8];
        let mut lanes = block.chunks_exact(8);
        for c in &mut lanes {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f(v);
            }
        }
        let mut s = lanes.remainder().iter().fold(T::zero(), |s, &v| s + f(v));
        for a in acc {
            s += a;
        }
        total += f64_of(s);
    }
    total
}
