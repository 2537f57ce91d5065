//! Input checks shared by every crate: rank, finiteness and label range, each turning bad
//! input into an [`Error`] that names the argument and the offending value.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// The dims of `t` if it has rank `N`, else a shape error naming `what` and `layout`.
///
/// ```
/// # fn main() -> sconce_core::Result<()> {
/// let t = candle_core::Tensor::zeros((2, 3, 4, 5), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let [n, c, h, w] = sconce_core::check::dims::<4>(&t, "conv2d input", "[N, C, H, W]")?;
/// assert_eq!((n, c, h, w), (2, 3, 4, 5));
/// assert!(sconce_core::check::dims::<2>(&t, "linear input", "[N, F]").is_err());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Shape`] if the rank differs.
pub fn dims<const N: usize>(t: &Tensor, what: &str, layout: &str) -> Result<[usize; N]> {
    <[usize; N]>::try_from(t.dims()).map_err(|_| Error::shape(what, format!("rank {N} {layout}"), t.dims()))
}

/// Checks that `a` and `b` have the same shape.
///
/// # Errors
/// [`Error::Shape`] naming both arguments.
pub fn same_shape(a: &Tensor, a_name: &str, b: &Tensor, b_name: &str) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(Error::shape(b_name, format!("the shape of {a_name} {:?}", a.dims()), b.dims()))
    }
}

/// Checks that every element of a float tensor is finite (no NaN, no ±Inf).
///
/// Integer tensors are always finite. The error names the first bad element's flat index and
/// value.
///
/// # Errors
/// [`Error::Data`] naming `what`.
pub fn finite(t: &Tensor, what: &str) -> Result<()> {
    if !t.dtype().is_float() {
        return Ok(());
    }
    // x - x is exactly 0 for finite x and NaN for NaN/±Inf, so one reduction in the tensor's
    // own dtype (a sum of zeros cannot overflow) tells whether to look closer.
    let s = t.sub(t)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if s == 0.0 {
        return Ok(());
    }
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::data(
            what,
            format!(
                "element {i} (of {}, shape {:?}) is {}; remove or impute non-finite values first",
                values.len(),
                t.dims(),
                values[i]
            ),
        )),
        None => Ok(()),
    }
}

/// Checks integer class labels: every value is in `0..num_classes`.
///
/// Accepts `u8`, `u32` and `i64` tensors, and float tensors holding whole numbers. Returns the
/// labels as `u32` values.
///
/// # Errors
/// [`Error::Data`] naming `what`, the bad value and its position.
pub fn labels(t: &Tensor, num_classes: usize, what: &str) -> Result<Vec<u32>> {
    let flat = t.flatten_all()?;
    let as_f64: Vec<f64> = match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(f64::from).collect(),
        DType::U32 => flat.to_vec1::<u32>()?.into_iter().map(f64::from).collect(),
        DType::I64 => flat.to_vec1::<i64>()?.into_iter().map(|v| v as f64).collect(),
        _ => flat.to_dtype(DType::F64)?.to_vec1::<f64>()?,
    };
    let mut out = Vec::with_capacity(as_f64.len());
    for (i, &v) in as_f64.iter().enumerate() {
        if !(v.is_finite() && v.fract() == 0.0 && v >= 0.0 && v < num_classes as f64) {
            return Err(Error::data(
                what,
                format!(
                    "label {v} at position {i} is not a class index in 0..{num_classes}; \
                     labels must be integers from 0 to num_classes - 1"
                ),
            ));
        }
        out.push(v as u32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finite_names_the_first_bad_element() -> Result<()> {
        let t = Tensor::new(&[1.0f32, 2.0, f32::NAN, f32::INFINITY], &Device::Cpu)?;
        let err = finite(&t, "targets").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("targets") && err.contains("element 2") && err.contains("NaN"), "{err}");
        let t = Tensor::new(&[[1.0f64, f64::NEG_INFINITY]], &Device::Cpu)?;
        assert!(finite(&t, "x").is_err());
        finite(&Tensor::new(&[1.0f32, -3e38], &Device::Cpu)?, "x")?;
        finite(&Tensor::new(&[7u32], &Device::Cpu)?, "labels")?;
        Ok(())
    }

    #[test]
    fn labels_out_of_range_are_data_errors() -> Result<()> {
        let dev = Device::Cpu;
        assert_eq!(labels(&Tensor::new(&[0u32, 2, 1], &dev)?, 3, "y")?, vec![0, 2, 1]);
        assert_eq!(labels(&Tensor::new(&[1.0f32, 0.0], &dev)?, 2, "y")?, vec![1, 0]);
        assert_eq!(labels(&Tensor::new(&[3i64], &dev)?, 4, "y")?, vec![3]);
        for bad in [
            Tensor::new(&[0u32, 3], &dev)?,
            Tensor::new(&[-1i64], &dev)?,
            Tensor::new(&[0.5f32], &dev)?,
            Tensor::new(&[f32::NAN], &dev)?,
            Tensor::new(&[255u8], &dev)?,
        ] {
            assert!(matches!(labels(&bad, 3, "y"), Err(Error::Data { .. })));
        }
        Ok(())
    }

    #[test]
    fn shape_checks() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3), DType::F32, &dev)?;
        let b = Tensor::zeros((3, 2), DType::F32, &dev)?;
        same_shape(&a, "logits", &a, "targets")?;
        let msg = same_shape(&a, "logits", &b, "targets").err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg, "targets: expected the shape of logits [2, 3], got shape [3, 2]");
        assert_eq!(dims::<2>(&a, "x", "[N, F]")?, [2, 3]);
        assert!(matches!(dims::<3>(&a, "x", "[N, C, L]"), Err(Error::Shape { .. })));
        Ok(())
    }
}
