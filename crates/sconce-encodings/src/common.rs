//! Helpers shared by the encodings: label checks, moving the code axis, cross-entropy from
//! class log-probabilities.

use candle_core::{DType, Tensor};
use sconce_core::{Error, Result};

/// Validates `n ≥ 2` classes.
pub(crate) fn check_classes(n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::config("num_classes", format!("an encoding needs at least 2 classes, got {n}")));
    }
    Ok(())
}

/// Checks that axis 1 of `logits` has `len` entries.
pub(crate) fn check_code_axis(logits: &Tensor, len: usize, what: &str) -> Result<()> {
    if logits.rank() < 2 || logits.dims()[1] != len {
        return Err(Error::shape("logits", format!("[N, {len}, ...] ({what})"), logits.dims()));
    }
    if !logits.dtype().is_float() {
        return Err(Error::config("logits dtype", format!("expected a float dtype, got {:?}", logits.dtype())));
    }
    Ok(())
}

/// `labels` `[N, ...]` as u32 values in `0..n`.
pub(crate) fn labels(labels: &Tensor, n: usize) -> Result<Vec<u32>> {
    sconce_core::check::labels(labels, n, "labels")
}

/// Mean cross-entropy of class log-probabilities `[N, K, ...]` against labels `[N, ...]`.
pub(crate) fn nll(log_probs: &Tensor, y: &Tensor, n: usize) -> Result<Tensor> {
    let mut expected = log_probs.dims().to_vec();
    expected.remove(1);
    if y.dims() != expected.as_slice() {
        return Err(Error::shape("labels", format!("{expected:?} (the logits without axis 1)"), y.dims()));
    }
    labels(y, n)?;
    let onehot = sconce_tensor::one_hot(y, n, 1, log_probs.dtype())?;
    let count = y.elem_count().max(1) as f64;
    Ok(((onehot * log_probs)?.sum_all()? / -count)?)
}

/// Applies a `[K, L]` matrix along axis 1: `[N, L, ...] → [N, K, ...]`.
pub(crate) fn along_axis1(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let moved = if r > 2 { x.transpose(1, r - 1)?.contiguous()? } else { x.clone() };
    let flat = moved.reshape(((), moved.dims()[r - 1]))?;
    let out = flat.matmul(&m.t()?.to_dtype(x.dtype())?.contiguous()?)?;
    let mut dims = moved.dims().to_vec();
    dims[r - 1] = m.dims()[0];
    let out = out.reshape(dims)?;
    Ok(if r > 2 { out.transpose(1, r - 1)?.contiguous()? } else { out })
}

/// A `{0, 1}` code matrix `[K, L]` as a tensor.
pub(crate) fn code_tensor(bits: &[Vec<u8>], dev: &candle_core::Device) -> Result<Tensor> {
    let (k, l) = (bits.len(), bits.first().map(|b| b.len()).unwrap_or(0));
    let flat: Vec<f32> = bits.iter().flat_map(|r| r.iter().map(|&b| f32::from(b))).collect();
    Ok(Tensor::from_vec(flat, (k, l), dev)?.to_dtype(DType::F32)?)
}
