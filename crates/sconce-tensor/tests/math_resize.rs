//! Stable math and resizing: f64 finite-difference gradients, finiteness at ±1e4 in f32,
//! one-hot layout, and bad input as errors.

use candle_core::{D, DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng};
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{Interpolation, log_sigmoid, log_softmax, logsumexp, one_hot, resize, sigmoid, softmax, softplus};

type UnaryFn = dyn Fn(&Tensor) -> sconce_core::Result<Tensor>;

fn random(shape: &[usize], scale: f64, seed: u64) -> anyhow::Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() * scale).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

#[test]
fn stable_math_gradients_match_finite_differences() -> anyhow::Result<()> {
    let x = random(&[3, 4, 5], 4.0, 1)?;
    let fs: [(&str, Box<UnaryFn>); 8] = [
        ("sigmoid", Box::new(sigmoid)),
        ("softplus", Box::new(softplus)),
        ("log_sigmoid", Box::new(log_sigmoid)),
        ("logsumexp 1", Box::new(|t| logsumexp(t, 1, false))),
        ("logsumexp last", Box::new(|t| logsumexp(t, D::Minus1, true))),
        ("log_softmax 0", Box::new(|t| log_softmax(t, 0))),
        ("log_softmax 2", Box::new(|t| log_softmax(t, 2))),
        ("softmax 1", Box::new(|t| softmax(t, 1))),
    ];
    for (name, f) in fs {
        let r = check_gradient(f, &x, 1e-6, 3)?;
        assert!(r.max_abs_err < 1e-7, "{name}: {r:?}");
    }
    Ok(())
}

#[test]
fn values_and_gradients_stay_finite_at_extreme_logits_in_f32() -> anyhow::Result<()> {
    let v: Vec<f32> = vec![-1e4, -88.0, -17.0, 0.0, 17.0, 88.0, 1e4, 3e38, -3e38];
    let x = Var::from_tensor(&Tensor::new(v.as_slice(), &Device::Cpu)?.reshape((1, 9))?)?;
    for (name, y) in [
        ("sigmoid", sigmoid(x.as_tensor())?),
        ("softplus", softplus(x.as_tensor())?),
        ("log_sigmoid", log_sigmoid(x.as_tensor())?),
        ("log_softmax", log_softmax(x.as_tensor(), 1)?),
        ("softmax", softmax(x.as_tensor(), 1)?),
        ("logsumexp", logsumexp(x.as_tensor(), 1, false)?),
    ] {
        let vals = y.flatten_all()?.to_vec1::<f32>()?;
        // log_softmax of a value 6e38 below the max is −6e38 → −∞ in f32: allowed only there.
        let finite = vals.iter().enumerate().all(|(i, v)| v.is_finite() || (name == "log_softmax" && i == 8));
        assert!(finite, "{name}: {vals:?}");
        let g = y.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f32>()).transpose()?;
        let gx = gx.unwrap_or_default();
        assert_eq!(gx.len(), 9, "{name}: no gradient");
        assert!(gx.iter().all(|v| v.is_finite()), "{name} gradient: {gx:?}");
    }
    // The textbook composition fails where ours does not: log(sigmoid(-1e4)) = log(0) = -inf.
    let naive = candle_core::Tensor::new(&[-1e4f32], &Device::Cpu)?.neg()?.exp()?.affine(1.0, 1.0)?.recip()?.log()?;
    assert!(naive.to_vec1::<f32>()?[0].is_infinite());
    assert_eq!(log_sigmoid(&Tensor::new(&[-1e4f32], &Device::Cpu)?)?.to_vec1::<f32>()?, vec![-1e4]);
    Ok(())
}

#[test]
fn softmax_rows_sum_to_one_on_any_axis() -> anyhow::Result<()> {
    let x = random(&[2, 3, 4, 5], 50.0, 2)?;
    for axis in 0..4 {
        let s = softmax(&x, axis)?.sum(axis)?;
        let err = (s - 1.0)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-12, "axis {axis}: {err}");
    }
    assert!(matches!(softmax(&x, 4), Err(Error::Shape { .. })));
    Ok(())
}

#[test]
fn logsumexp_of_all_negative_infinity_is_negative_infinity() -> anyhow::Result<()> {
    let x = Tensor::new(&[[f32::NEG_INFINITY, f32::NEG_INFINITY], [0.0, 0.0]], &Device::Cpu)?;
    let v = logsumexp(&x, 1, false)?.to_vec1::<f32>()?;
    assert_eq!(v[0], f32::NEG_INFINITY);
    assert!((v[1] - std::f32::consts::LN_2).abs() < 1e-7);
    Ok(())
}

#[test]
fn one_hot_inserts_the_class_axis() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let masks = Tensor::new(&[[[0u32, 2], [1, 0]]], &dev)?; // [1, 2, 2]
    let t = one_hot(&masks, 3, 1, DType::F32)?;
    assert_eq!(t.dims(), &[1, 3, 2, 2]);
    assert_eq!(t.i_channel(2)?, vec![0.0, 1.0, 0.0, 0.0]);
    assert_eq!(t.i_channel(0)?, vec![1.0, 0.0, 0.0, 1.0]);
    let last = one_hot(&Tensor::new(&[1i64, 0], &dev)?, 2, 1, DType::F64)?;
    assert_eq!(last.to_vec2::<f64>()?, vec![vec![0.0, 1.0], vec![1.0, 0.0]]);
    assert!(matches!(one_hot(&Tensor::new(&[3u32], &dev)?, 3, 1, DType::F32), Err(Error::Data { .. })));
    assert!(matches!(one_hot(&masks, 0, 1, DType::F32), Err(Error::Config { .. })));
    assert!(matches!(one_hot(&masks, 3, 5, DType::F32), Err(Error::Shape { .. })));
    Ok(())
}

trait Channel {
    fn i_channel(&self, c: usize) -> anyhow::Result<Vec<f32>>;
}

impl Channel for Tensor {
    fn i_channel(&self, c: usize) -> anyhow::Result<Vec<f32>> {
        Ok(self.narrow(1, c, 1)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

#[test]
fn resize_gradients_match_finite_differences() -> anyhow::Result<()> {
    let x = random(&[2, 2, 5, 7], 1.0, 4)?;
    for (out, mode) in [
        ((11, 9), Interpolation::Bilinear { align_corners: false }),
        ((3, 4), Interpolation::Bilinear { align_corners: false }),
        ((10, 14), Interpolation::Bilinear { align_corners: true }),
        ((1, 1), Interpolation::Bilinear { align_corners: true }),
        ((10, 14), Interpolation::Nearest),
        ((8, 5), Interpolation::Nearest),
        ((8, 5), Interpolation::NearestExact),
    ] {
        let r = check_gradient(|t| resize(t, out, mode), &x, 1e-6, 5)?;
        assert!(r.max_abs_err < 1e-7, "{out:?} {mode:?}: {r:?}");
    }
    Ok(())
}

#[test]
fn nearest_upsample_gradient_accumulates_with_other_uses() -> anyhow::Result<()> {
    // y = up(x) summed + 3·x summed: dx = 4 (each pixel copied 4 times) + 3. candle 0.11.1's
    // upsample backward overwrites the 3.
    let x = Var::new(&[[[[1.0f64, 2.0], [3.0, 4.0]]]], &Device::Cpu)?;
    let up = resize(x.as_tensor(), (4, 4), Interpolation::Nearest)?;
    let loss = (up.sum_all()? + (x.as_tensor() * 3.0)?.sum_all()?)?;
    let g = loss.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f64>()).transpose()?;
    assert_eq!(gx, Some(vec![7.0; 4]));
    Ok(())
}

#[test]
fn resize_bad_input_is_an_error() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &dev)?;
    assert!(matches!(resize(&x, (0, 4), Interpolation::Nearest), Err(Error::Config { .. })));
    let x3 = Tensor::zeros((1, 4, 4), DType::F32, &dev)?;
    assert!(matches!(resize(&x3, (8, 8), Interpolation::Nearest), Err(Error::Shape { .. })));
    let empty = Tensor::zeros((1, 1, 0, 4), DType::F32, &dev)?;
    assert!(matches!(resize(&empty, (8, 8), Interpolation::Nearest), Err(Error::Shape { .. })));
    Ok(())
}
