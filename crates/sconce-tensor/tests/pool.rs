//! Pooling: known values, gradients against f64 finite differences, and bad input as errors.

use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng};
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{
    AvgPool2d, MaxPool2d, adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, global_avg_pool2d, max_pool2d,
};

/// Distinct values (no ties, so max pooling is differentiable everywhere) in random order.
fn distinct(shape: &[usize], seed: u64) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = SeededRng::new(seed);
    let perm = rng.permutation(n);
    let v: Vec<f64> = perm.iter().map(|&p| p as f64 * 0.1 - n as f64 * 0.05).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

#[test]
fn max_pool_gradient_goes_to_the_maximum_with_full_weight() -> anyhow::Result<()> {
    // PyTorch: max_pool2d([[1,2],[3,4]], 2).backward(1) gives [[0,0],[0,1]]; candle 0.11.1 gives 0.25.
    let x = Var::new(&[[[[1.0f32, 2.0], [3.0, 4.0]]]], &Device::Cpu)?;
    let y = max_pool2d(x.as_tensor(), &MaxPool2d::new(2))?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![4.0]);
    let g = y.sum_all()?.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f32>()).transpose()?;
    assert_eq!(gx, Some(vec![0.0, 0.0, 0.0, 1.0]));
    Ok(())
}

#[test]
fn max_pool_overlapping_windows_accumulate() -> anyhow::Result<()> {
    // 1×1×1×3 input [0, 5, 1], kernel 1×2 stride 1: both windows pick the 5.
    let x = Var::new(&[[[[0.0f64, 5.0, 1.0]]]], &Device::Cpu)?;
    let cfg = MaxPool2d { kernel: (1, 2), stride: (1, 1), ..MaxPool2d::new(1) };
    let y = max_pool2d(x.as_tensor(), &cfg)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, vec![5.0, 5.0]);
    let g = y.sum_all()?.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f64>()).transpose()?;
    assert_eq!(gx, Some(vec![0.0, 2.0, 0.0]));
    Ok(())
}

#[test]
fn max_pool_gradients_match_finite_differences() -> anyhow::Result<()> {
    let cases = [
        ([2, 2, 7, 9], MaxPool2d::new(3).stride(2).padding(1)),
        ([1, 2, 8, 8], MaxPool2d::new(2)),
        ([1, 1, 9, 7], MaxPool2d::new(3).stride(2).ceil_mode(true)),
        ([1, 2, 10, 11], MaxPool2d::new(3).stride(1).padding(1).dilation(2)),
        ([1, 1, 1, 1], MaxPool2d::new(2).ceil_mode(true)),
        (
            [1, 1, 6, 5],
            MaxPool2d { kernel: (2, 3), stride: (1, 2), padding: (1, 1), dilation: (1, 1), ceil_mode: true },
        ),
    ];
    for (i, (shape, cfg)) in cases.iter().enumerate() {
        let x = distinct(shape, i as u64)?;
        let r = check_gradient(|t| max_pool2d(t, cfg), &x, 1e-6, 7)?;
        assert!(r.max_abs_err < 1e-6, "case {i} {cfg:?}: {r:?}");
    }
    Ok(())
}

#[test]
fn avg_pool_gradients_match_finite_differences() -> anyhow::Result<()> {
    let cases = [
        ([2, 2, 7, 9], AvgPool2d::new(2)),
        ([1, 2, 7, 9], AvgPool2d::new(3).stride(2).padding(1)),
        ([1, 2, 7, 9], AvgPool2d::new(3).stride(2).padding(1).count_include_pad(false)),
        ([1, 1, 7, 6], AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true).count_include_pad(false)),
        ([1, 1, 6, 6], AvgPool2d::new(2).stride(1).divisor_override(Some(3))),
    ];
    for (i, (shape, cfg)) in cases.iter().enumerate() {
        let x = distinct(shape, 10 + i as u64)?;
        let r = check_gradient(|t| avg_pool2d(t, cfg), &x, 1e-6, 8)?;
        assert!(r.max_abs_err < 1e-6, "case {i} {cfg:?}: {r:?}");
    }
    Ok(())
}

#[test]
fn adaptive_pool_gradients_match_finite_differences() -> anyhow::Result<()> {
    let x = distinct(&[2, 2, 7, 10], 3)?;
    for out in [(3, 4), (1, 1), (7, 10), (5, 3)] {
        let r = check_gradient(|t| adaptive_avg_pool2d(t, out), &x, 1e-6, 1)?;
        assert!(r.max_abs_err < 1e-6, "avg {out:?}: {r:?}");
        let r = check_gradient(|t| adaptive_max_pool2d(t, out), &x, 1e-6, 2)?;
        assert!(r.max_abs_err < 1e-6, "max {out:?}: {r:?}");
    }
    let r = check_gradient(global_avg_pool2d, &x, 1e-6, 3)?;
    assert!(r.max_abs_err < 1e-6, "global: {r:?}");
    Ok(())
}

#[test]
fn avg_pool_values_by_hand() -> anyhow::Result<()> {
    // 1×1×3×3 of 1..9, 2×2 windows stride 1 padding 1, ceil_mode off: 4×4 output. Top-left
    // window covers only x[0,0]=1: 1/4 with count_include_pad, 1 without.
    let x = Tensor::arange(1.0f64, 10.0, &Device::Cpu)?.reshape((1, 1, 3, 3))?;
    let with_pad = avg_pool2d(&x, &AvgPool2d::new(2).stride(1).padding(1))?;
    let without = avg_pool2d(&x, &AvgPool2d::new(2).stride(1).padding(1).count_include_pad(false))?;
    assert_eq!(with_pad.dims(), &[1, 1, 4, 4]);
    let a = with_pad.flatten_all()?.to_vec1::<f64>()?;
    let b = without.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!((a[0], b[0]), (0.25, 1.0));
    // Centre window (1,1) covers 1,2,4,5: mean 3 either way.
    assert_eq!((a[5], b[5]), (3.0, 3.0));
    let g = global_avg_pool2d(&x)?;
    assert_eq!(g.dims(), &[1, 1]);
    assert_eq!(g.flatten_all()?.to_vec1::<f64>()?, vec![5.0]);
    Ok(())
}

#[test]
fn nan_propagates_through_max_pool() -> anyhow::Result<()> {
    let x = Tensor::new(&[[[[1.0f32, f32::NAN], [3.0, 4.0]]]], &Device::Cpu)?;
    let y = max_pool2d(&x, &MaxPool2d::new(2))?.flatten_all()?.to_vec1::<f32>()?;
    assert!(y[0].is_nan());
    Ok(())
}

#[test]
fn f32_and_f64_agree_and_inference_skips_the_index() -> anyhow::Result<()> {
    let x = distinct(&[2, 3, 11, 13], 5)?;
    let cfg = MaxPool2d::new(3).stride(2).padding(1);
    let a = max_pool2d(&x, &cfg)?;
    let b = max_pool2d(&x.to_dtype(DType::F32)?, &cfg)?.to_dtype(DType::F64)?;
    let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(d < 1e-5, "{d}");
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let x3 = Tensor::zeros((2, 8, 8), DType::F32, &dev)?;
    assert!(matches!(max_pool2d(&x3, &MaxPool2d::new(2)), Err(Error::Shape { .. })));
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &dev)?;
    for cfg in [
        MaxPool2d::new(0),
        MaxPool2d::new(2).stride(0),
        MaxPool2d::new(3).padding(2),
        MaxPool2d::new(7),
        MaxPool2d::new(2).dilation(0),
    ] {
        assert!(matches!(max_pool2d(&x, &cfg), Err(Error::Config { .. })), "{cfg:?}");
    }
    assert!(matches!(avg_pool2d(&x, &AvgPool2d::new(5)), Err(Error::Config { .. })));
    assert!(matches!(avg_pool2d(&x, &AvgPool2d::new(2).divisor_override(Some(0))), Err(Error::Config { .. })));
    assert!(matches!(adaptive_avg_pool2d(&x, (0, 2)), Err(Error::Config { .. })));
    let xi = Tensor::zeros((1, 1, 4, 4), DType::U32, &dev)?;
    let msg = max_pool2d(&xi, &MaxPool2d::new(2)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("f32 or f64"), "{msg}");
    Ok(())
}
