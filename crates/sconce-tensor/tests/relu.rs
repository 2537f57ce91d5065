//! relu and add_relu: values against candle's ops, f64 finite differences, PyTorch's gradient
//! at 0, and bad input as errors.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::SeededRng;
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{add_relu, relu};

fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    // Away from 0 by at least 0.05, so finite differences never straddle the kink.
    let v: Vec<f64> =
        (0..n).map(|_| rng.normal()).map(|v| if v.abs() < 0.05 { v.signum() * 0.05 + v } else { v }).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

#[test]
fn values_match_max_x_zero_in_both_dtypes_and_any_layout() -> Result<()> {
    // 70 000 elements: several parallel chunks plus a ragged tail.
    let x = random(&[7, 10, 1000], 1)?;
    for dtype in [DType::F32, DType::F64] {
        let xd = x.to_dtype(dtype)?;
        let got = relu(&xd)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let want: Vec<f64> =
            xd.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(got, want, "{dtype:?}");
    }
    // A transposed (non-contiguous) view.
    let t = x.transpose(1, 2)?;
    let got = relu(&t)?.flatten_all()?.to_vec1::<f64>()?;
    let want = t.relu()?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn gradient_matches_finite_differences_and_is_zero_at_zero() -> Result<()> {
    let x = random(&[3, 4, 5], 2)?;
    let r = check_gradient(relu, &x, 1e-6, 1)?;
    assert!(r.max_abs_err < 1e-8, "{r:?}");
    // PyTorch: d relu / dx at exactly 0 is 0 (candle's own relu passes the gradient there).
    for dtype in [DType::F32, DType::F64] {
        let v = Var::from_tensor(&Tensor::new(&[-1e4f64, -0.0, 0.0, 1e-30, 1e4], &Device::Cpu)?.to_dtype(dtype)?)?;
        let y = relu(v.as_tensor())?;
        let gy = Tensor::new(&[2.0f64, 3.0, 4.0, 5.0, 6.0], &Device::Cpu)?.to_dtype(dtype)?;
        let g = (y * gy)?.sum_all()?.backward()?;
        let dx = g.get(v.as_tensor()).context("grad")?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        assert_eq!(dx, [0.0, 0.0, 0.0, 5.0, 6.0], "{dtype:?}");
    }
    Ok(())
}

#[test]
fn integer_input_is_an_error() -> Result<()> {
    let x = Tensor::new(&[1u8, 2], &Device::Cpu)?;
    assert!(matches!(relu(&x), Err(sconce_core::Error::Config { .. })));
    Ok(())
}

#[test]
fn add_relu_equals_relu_of_the_sum_with_gradients_to_both_inputs() -> Result<()> {
    let a = random(&[5, 3, 70, 71], 3)?;
    let b = random(&[5, 3, 70, 71], 4)?;
    for dtype in [DType::F32, DType::F64] {
        let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
        let got = add_relu(&a, &b)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let want = (&a + &b)?.relu()?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(got, want, "{dtype:?}");
    }
    let (a, b) = (random(&[2, 3, 4, 5], 5)?, random(&[2, 3, 4, 5], 6)?);
    // Sums near 0 would put finite differences across the kink: skip such draws.
    let sum = (&a + &b)?.abs()?.min_all()?.to_scalar::<f64>()?;
    assert!(sum > 1e-4, "draw with a sum at {sum}");
    let r = check_gradient(|t| add_relu(t, &b), &a, 1e-6, 1)?;
    assert!(r.max_abs_err < 1e-8, "da {r:?}");
    let r = check_gradient(|t| add_relu(&a, t), &b, 1e-6, 2)?;
    assert!(r.max_abs_err < 1e-8, "db {r:?}");
    // Gradient 0 where the sum is exactly 0.
    let va = Var::new(&[1.0f64, -2.0, 3.0], &Device::Cpu)?;
    let y = add_relu(va.as_tensor(), &Tensor::new(&[-1.0f64, 1.0, 1.0], &Device::Cpu)?)?;
    let g = y.sum_all()?.backward()?;
    assert_eq!(g.get(va.as_tensor()).context("grad")?.to_vec1::<f64>()?, [0.0, 0.0, 1.0]);
    Ok(())
}

#[test]
fn add_relu_refuses_mismatched_shapes_and_dtypes() -> Result<()> {
    let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    assert!(matches!(
        add_relu(&a, &Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?),
        Err(sconce_core::Error::Shape { .. })
    ));
    assert!(matches!(add_relu(&a, &a.to_dtype(DType::F64)?), Err(sconce_core::Error::Config { .. })));
    Ok(())
}
