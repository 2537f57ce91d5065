//! Batch norm: PyTorch fixtures for training (output, three gradients, running-stat update with
//! momentum and cumulative average) and eval mode; finite differences; the fused ReLU variants
//! against batch norm then ReLU; bad input as errors.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng};
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{
    batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train, batch_norm_train, relu, update_running_stats,
};
use sconce_testutil::{assert_close, check_case_multi, load, tolerance};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[test]
fn batch_norm_matches_pytorch() -> Result<()> {
    let fx = load(FIXTURES, "batch_norm")?;
    assert!(fx.cases.len() >= 10);
    for case in &fx.cases {
        let name = case["name"].as_str().context("name")?;
        let eps = case["eps"].as_f64().context("eps")?;
        let rm = fx.get(case, "running_mean_in")?;
        let rv = fx.get(case, "running_var_in")?;
        if case["training"].as_bool() == Some(true) {
            check_case_multi(&fx, case, |t| Ok(batch_norm_train(&t[0], &t[1], &t[2], eps)?.0))?;
            let (_, stats) = batch_norm_train(&fx.get(case, "x0")?, &fx.get(case, "x1")?, &fx.get(case, "x2")?, eps)?;
            let momentum = case["momentum"].as_f64();
            let tracked = case["num_batches_tracked"].as_u64().context("num_batches_tracked")?;
            let (m, v) = update_running_stats(&rm, &rv, &stats, momentum, tracked)?;
            let (rtol, atol) = tolerance(m.dtype());
            assert_close(&format!("{name} running_mean"), &m, &fx.get(case, "running_mean_out")?, rtol, atol)?;
            assert_close(&format!("{name} running_var"), &v, &fx.get(case, "running_var_out")?, rtol, atol)?;
        } else {
            check_case_multi(&fx, case, |t| Ok(batch_norm_eval(&t[0], &rm, &rv, &t[1], &t[2], eps)?))?;
        }
    }
    Ok(())
}

fn random(shape: &[usize], seed: u64, shift: f64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal() * 1.5 + shift).collect::<Vec<f64>>(), shape, &Device::Cpu)?)
}

#[test]
fn training_gradients_match_finite_differences() -> Result<()> {
    for (shape, seed) in [(vec![3, 2, 4, 5], 1), (vec![5, 3], 2), (vec![1, 2, 3, 3], 3)] {
        let c = shape[1];
        let x = random(&shape, seed, 2.0)?;
        let g = random(&[c], seed + 10, 1.0)?;
        let b = random(&[c], seed + 20, 0.0)?;
        let r = check_gradient(|t| Ok(batch_norm_train(t, &g, &b, 1e-5)?.0), &x, 1e-6, 1)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} dx: {r:?}");
        let r = check_gradient(|t| Ok(batch_norm_train(&x, t, &b, 1e-5)?.0), &g, 1e-6, 2)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} dgamma: {r:?}");
        let r = check_gradient(|t| Ok(batch_norm_train(&x, &g, t, 1e-5)?.0), &b, 1e-6, 3)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} dbeta: {r:?}");
        // Evaluation mode (the fused per-channel scale-shift op) is differentiable too.
        let rm = random(&[c], seed + 30, 0.5)?;
        let rv = (random(&[c], seed + 40, 0.0)?.sqr()? + 0.5)?;
        let r = check_gradient(|t| batch_norm_eval(t, &rm, &rv, &g, &b, 1e-5), &x, 1e-6, 4)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} eval dx: {r:?}");
        let r = check_gradient(|t| batch_norm_eval(&x, &rm, &rv, t, &b, 1e-5), &g, 1e-6, 5)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} eval dgamma: {r:?}");
        let r = check_gradient(|t| batch_norm_eval(&x, &rm, &rv, &g, t, 1e-5), &b, 1e-6, 6)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} eval dbeta: {r:?}");
    }
    Ok(())
}

/// Output and the gradients of `Σ f(x, γ, β)·gy` with respect to `x`, `γ`, `β`.
fn value_and_grads(
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    inputs: [&Tensor; 4],
) -> Result<Vec<Tensor>> {
    let [x, g, b, gy] = inputs;
    let vars = [Var::from_tensor(x)?, Var::from_tensor(g)?, Var::from_tensor(b)?];
    let y = f(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor())?;
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
    }
    Ok(out)
}

#[test]
fn fused_relu_equals_batch_norm_then_relu_and_matches_finite_differences() -> Result<()> {
    for (shape, seed) in [(vec![3, 4, 7, 5], 7u64), (vec![6, 3], 8), (vec![2, 64, 9, 9], 9)] {
        let c = shape[1];
        // β shifted so that some channels are mostly clipped and others mostly passed.
        let (x, g, b) = (random(&shape, seed, 1.0)?, random(&[c], seed + 1, 0.5)?, random(&[c], seed + 2, 0.3)?);
        let gy = random(&shape, seed + 3, 0.0)?;
        let rm = random(&[c], seed + 4, 0.5)?;
        let rv = (random(&[c], seed + 5, 0.0)?.sqr()? + 0.5)?;
        for dtype in [DType::F64, DType::F32] {
            let cast = |t: &Tensor| t.to_dtype(dtype);
            let inputs = [&cast(&x)?, &cast(&g)?, &cast(&b)?, &cast(&gy)?];
            let (rtol, atol) = if dtype == DType::F64 { (1e-12, 1e-12) } else { (1e-5, 1e-5) };
            let fused = value_and_grads(|x, g, b| Ok(batch_norm_relu_train(x, g, b, 1e-5)?.0), inputs)?;
            let plain = value_and_grads(|x, g, b| Ok(relu(&batch_norm_train(x, g, b, 1e-5)?.0)?), inputs)?;
            for (i, (f, p)) in fused.iter().zip(&plain).enumerate() {
                assert_close(&format!("train {shape:?} {dtype:?} output/grad {i}"), f, p, rtol, atol)?;
            }
            let (rm, rv) = (cast(&rm)?, cast(&rv)?);
            let fused = value_and_grads(|x, g, b| Ok(batch_norm_relu_eval(x, &rm, &rv, g, b, 1e-5)?), inputs)?;
            let plain = value_and_grads(|x, g, b| Ok(relu(&batch_norm_eval(x, &rm, &rv, g, b, 1e-5)?)?), inputs)?;
            for (i, (f, p)) in fused.iter().zip(&plain).enumerate() {
                assert_close(&format!("eval {shape:?} {dtype:?} output/grad {i}"), f, p, rtol, atol)?;
            }
        }
        // Some outputs clipped, some not: the mask is exercised.
        let y = batch_norm_relu_train(&x, &g, &b, 1e-5)?.0.flatten_all()?.to_vec1::<f64>()?;
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        assert!(zeros > y.len() / 10 && zeros < y.len() * 9 / 10, "{zeros} of {} clipped", y.len());
        if shape.len() == 4 && shape[1] == 64 {
            continue; // finite differences over 10 000 inputs: the small shapes suffice
        }
        let r = check_gradient(|t| Ok(batch_norm_relu_train(t, &g, &b, 1e-5)?.0), &x, 1e-6, 1)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} fused dx: {r:?}");
        let r = check_gradient(|t| Ok(batch_norm_relu_train(&x, t, &b, 1e-5)?.0), &g, 1e-6, 2)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} fused dgamma: {r:?}");
        let r = check_gradient(|t| Ok(batch_norm_relu_train(&x, &g, t, 1e-5)?.0), &b, 1e-6, 3)?;
        assert!(r.max_abs_err < 1e-6, "{shape:?} fused dbeta: {r:?}");
    }
    Ok(())
}

#[test]
fn output_is_normalised_per_channel_even_with_a_large_mean() -> Result<()> {
    // Planes of one block each, and of several (1600 values: blocks merged within a plane).
    for shape in [[4, 3, 6, 6], [2, 2, 40, 40]] {
        normalised_with_a_large_mean(&shape)?;
    }
    Ok(())
}

fn normalised_with_a_large_mean(shape: &[usize]) -> Result<()> {
    // A mean of 1e4 with unit spread in f32: a one-pass E[x²] − E[x]² variance would be noise.
    let c = shape[1];
    let x64 = random(shape, 4, 1e4)?;
    let x = x64.to_dtype(DType::F32)?;
    let ones = Tensor::ones(c, DType::F32, &Device::Cpu)?;
    let zeros = Tensor::zeros(c, DType::F32, &Device::Cpu)?;
    let (y, stats) = batch_norm_train(&x, &ones, &zeros, 1e-5)?;
    let y = y.to_dtype(DType::F64)?;
    let mean = y.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?.to_vec1::<f64>()?;
    let var = y.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?.to_vec1::<f64>()?;
    assert!(mean.iter().all(|m| m.abs() < 1e-3), "{mean:?}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
    assert_eq!(stats.count, shape[0] * shape[2] * shape[3]);
    // The batch variance equals a two-pass f64 variance of the same (f32-rounded) data.
    let x64 = x.to_dtype(DType::F64)?;
    let centred = x64.broadcast_sub(&x64.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?)?;
    let want = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?.to_vec1::<f64>()?;
    let got = stats.var.to_vec1::<f32>()?;
    for (g, w) in got.iter().zip(&want) {
        assert!((f64::from(*g) - w).abs() < 1e-5 * w, "{shape:?} batch variance {g} vs {w}");
    }
    // The batch mean likewise, to f32's precision at 1e4.
    let want = x64.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?.to_vec1::<f64>()?;
    for (g, w) in stats.mean.to_vec1::<f32>()?.iter().zip(&want) {
        assert!((f64::from(*g) - w).abs() < 2e-3, "{shape:?} batch mean {g} vs {w}");
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() -> Result<()> {
    let dev = Device::Cpu;
    let p = Tensor::ones(3, DType::F32, &dev)?;
    let one_value = Tensor::zeros((1, 3, 1, 1), DType::F32, &dev)?;
    assert!(matches!(batch_norm_train(&one_value, &p, &p, 1e-5), Err(Error::Data { .. })));
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
    assert!(matches!(batch_norm_train(&x, &Tensor::ones(4, DType::F32, &dev)?, &p, 1e-5), Err(Error::Shape { .. })));
    assert!(matches!(batch_norm_train(&x.flatten_from(2)?, &p, &p, 1e-5), Err(Error::Shape { .. })));
    assert!(matches!(batch_norm_train(&x, &p, &p, 0.0), Err(Error::Config { .. })));
    assert!(matches!(batch_norm_train(&x, &p.to_dtype(DType::F64)?, &p, 1e-5), Err(Error::Config { .. })));
    let (_, stats) = batch_norm_train(&x, &p, &p, 1e-5)?;
    assert!(matches!(update_running_stats(&p, &p, &stats, Some(1.5), 1), Err(Error::Config { .. })));
    assert!(matches!(update_running_stats(&p, &p, &stats, None, 0), Err(Error::Config { .. })));
    assert!(matches!(batch_norm_eval(&x, &p, &p, &p, &p, -1.0), Err(Error::Config { .. })));
    assert!(matches!(batch_norm_relu_train(&one_value, &p, &p, 1e-5), Err(Error::Data { .. })));
    assert!(matches!(batch_norm_relu_eval(&x.flatten_from(2)?, &p, &p, &p, &p, 1e-5), Err(Error::Shape { .. })));
    Ok(())
}
