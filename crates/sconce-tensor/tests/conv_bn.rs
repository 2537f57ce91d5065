//! conv2d_batch_norm_train / _eval (and their residual `_add_relu_` forms, and the skip
//! concatenation's `_cat_train`): the fused ops against (pad → cat →) conv2d → batch norm
//! (→ + residual) (→ relu) in values, batch statistics and all
//! gradients, in f64 and f32, and against finite differences.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng};
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{
    Conv2dConfig, add_relu, batch_norm_eval, batch_norm_relu_conv2d_train, batch_norm_relu_train, batch_norm_train,
    conv2d, conv2d_batch_norm_add_relu_eval, conv2d_batch_norm_add_relu_train, conv2d_batch_norm_cat_train,
    conv2d_batch_norm_eval, conv2d_batch_norm_train, relu,
};
use sconce_testutil::assert_close;

fn random(shape: &[usize], seed: u64, shift: f64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal() + shift).collect::<Vec<f64>>(), shape, &Device::Cpu)?)
}

/// Output, mean, var, then the gradients of `Σ y·gy` for x, w, γ, β.
fn run(fused: bool, relu_after: bool, cfg: &Conv2dConfig, inputs: [&Tensor; 5]) -> Result<Vec<Tensor>> {
    let [x, w, g, b, gy] = inputs;
    let vars = [Var::from_tensor(x)?, Var::from_tensor(w)?, Var::from_tensor(g)?, Var::from_tensor(b)?];
    let [xv, wv, gv, bv] = [0, 1, 2, 3].map(|i| vars[i].as_tensor());
    let (y, stats) = if fused {
        conv2d_batch_norm_train(xv, wv, cfg, gv, bv, 1e-5, relu_after)?
    } else {
        let (y, stats) = batch_norm_train(&conv2d(xv, wv, None, cfg)?, gv, bv, 1e-5)?;
        (if relu_after { relu(&y)? } else { y }, stats)
    };
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let mut out = vec![y, stats.mean, stats.var];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
    }
    Ok(out)
}

#[test]
fn fused_conv_batch_norm_equals_the_three_ops() -> Result<()> {
    let cases = [
        // (x shape, w shape, config)
        ([2, 3, 9, 7], [5, 3, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 4, 11, 8], [6, 4, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([2, 8, 6, 6], [16, 8, 1, 1], Conv2dConfig::default()),
        ([2, 4, 10, 10], [4, 2, 3, 3], Conv2dConfig::default().padding(2).dilation(2).groups(2)),
        ([2, 16, 12, 12], [32, 16, 3, 3], Conv2dConfig::default().padding(1)),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let seed = 10 * i as u64;
        let o = ws[0];
        let (x, w) = (random(xs, seed, 0.5)?, random(ws, seed + 1, 0.0)?);
        let (g, b) = (random(&[o], seed + 2, 1.0)?, random(&[o], seed + 3, 0.2)?);
        // Weights O(1/√fan_in), as PyTorch initialises them.
        let wn = (w / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
        let gy_shape = conv2d(&x, &wn, None, cfg)?.dims().to_vec();
        let gy = random(&gy_shape, seed + 4, 0.0)?;
        for relu_after in [false, true] {
            for dtype in [DType::F64, DType::F32] {
                let c = |t: &Tensor| t.to_dtype(dtype);
                let inputs = [&c(&x)?, &c(&wn)?, &c(&g)?, &c(&b)?, &c(&gy)?];
                let (rtol, atol) = if dtype == DType::F64 { (1e-10, 1e-10) } else { (1e-4, 1e-4) };
                let got = run(true, relu_after, cfg, inputs)?;
                let want = run(false, relu_after, cfg, inputs)?;
                for (k, name) in ["y", "mean", "var", "dx", "dw", "dgamma", "dbeta"].iter().enumerate() {
                    assert_close(
                        &format!("case {i} relu {relu_after} {dtype:?} {name}"),
                        &got[k],
                        &want[k],
                        rtol,
                        atol,
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn fused_gradients_match_finite_differences() -> Result<()> {
    let cfg = Conv2dConfig::default().stride(2).padding(1);
    let (x, w) = (random(&[2, 2, 5, 4], 1, 0.3)?, (random(&[3, 2, 3, 3], 2, 0.0)? * 0.3)?);
    let (g, b) = (random(&[3], 3, 1.0)?, random(&[3], 4, 0.1)?);
    for relu_after in [false, true] {
        let f = |x: &Tensor, w: &Tensor, g: &Tensor, b: &Tensor| -> sconce_core::Result<Tensor> {
            Ok(conv2d_batch_norm_train(x, w, &cfg, g, b, 1e-5, relu_after)?.0)
        };
        let r = check_gradient(|t| f(t, &w, &g, &b), &x, 1e-6, 1)?;
        assert!(r.max_abs_err < 1e-6, "relu {relu_after} dx {r:?}");
        let r = check_gradient(|t| f(&x, t, &g, &b), &w, 1e-6, 2)?;
        assert!(r.max_abs_err < 1e-6, "relu {relu_after} dw {r:?}");
        let r = check_gradient(|t| f(&x, &w, t, &b), &g, 1e-6, 3)?;
        assert!(r.max_abs_err < 1e-6, "relu {relu_after} dgamma {r:?}");
        let r = check_gradient(|t| f(&x, &w, &g, t), &b, 1e-6, 4)?;
        assert!(r.max_abs_err < 1e-6, "relu {relu_after} dbeta {r:?}");
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?;
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?;
    let p = Tensor::ones(4, DType::F32, &dev)?;
    let cfg = Conv2dConfig::default();
    // γ for the wrong channel count, a weight for other input channels, one value per channel.
    let bad_g = Tensor::ones(3, DType::F32, &dev)?;
    assert!(matches!(conv2d_batch_norm_train(&x, &w, &cfg, &bad_g, &p, 1e-5, true), Err(Error::Shape { .. })));
    let bad_w = Tensor::zeros((4, 2, 3, 3), DType::F32, &dev)?;
    assert!(matches!(conv2d_batch_norm_train(&x, &bad_w, &cfg, &p, &p, 1e-5, true), Err(Error::Shape { .. })));
    let one = Tensor::zeros((1, 3, 3, 3), DType::F32, &dev)?;
    assert!(matches!(conv2d_batch_norm_train(&one, &w, &cfg, &p, &p, 1e-5, false), Err(Error::Data { .. })));
    assert!(matches!(conv2d_batch_norm_train(&x, &w, &cfg, &p, &p, 0.0, false), Err(Error::Config { .. })));
    Ok(())
}

#[test]
fn eval_mode_fold_equals_conv_then_batch_norm() -> Result<()> {
    let cases = [
        ([2, 3, 9, 7], [5, 3, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 4, 11, 8], [6, 4, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([2, 8, 6, 6], [16, 8, 1, 1], Conv2dConfig::default()),
        ([2, 4, 10, 10], [4, 2, 3, 3], Conv2dConfig::default().padding(2).dilation(2).groups(2)),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let o = ws[0];
        let x = random(xs, seed, 0.5)?;
        let w = (random(ws, seed + 1, 0.0)? / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
        let (g, b) = (random(&[o], seed + 2, 1.0)?, random(&[o], seed + 3, 0.2)?);
        let rm = random(&[o], seed + 4, 0.1)?;
        let rv = (random(&[o], seed + 5, 0.0)?.sqr()? + 0.5)?;
        let gy = random(conv2d(&x, &w, None, cfg)?.dims(), seed + 6, 0.0)?;
        for relu_after in [false, true] {
            for dtype in [DType::F64, DType::F32] {
                let c = |t: &Tensor| t.to_dtype(dtype);
                let (rm, rv) = (c(&rm)?, c(&rv)?);
                let vars = |fused: bool| -> Result<Vec<Tensor>> {
                    let vs = [
                        Var::from_tensor(&c(&x)?)?,
                        Var::from_tensor(&c(&w)?)?,
                        Var::from_tensor(&c(&g)?)?,
                        Var::from_tensor(&c(&b)?)?,
                    ];
                    let [xv, wv, gv, bv] = [0, 1, 2, 3].map(|k| vs[k].as_tensor());
                    let y = if fused {
                        conv2d_batch_norm_eval(xv, wv, cfg, &rm, &rv, gv, bv, 1e-5, relu_after)?
                    } else {
                        let y = batch_norm_eval(&conv2d(xv, wv, None, cfg)?, &rm, &rv, gv, bv, 1e-5)?;
                        if relu_after { relu(&y)? } else { y }
                    };
                    let grads = (&y * &c(&gy)?)?.sum_all()?.backward()?;
                    let mut out = vec![y];
                    for v in &vs {
                        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
                    }
                    Ok(out)
                };
                let (got, want) = (vars(true)?, vars(false)?);
                let (rtol, atol) = if dtype == DType::F64 { (1e-10, 1e-10) } else { (1e-4, 1e-4) };
                for (k, name) in ["y", "dx", "dw", "dgamma", "dbeta"].iter().enumerate() {
                    assert_close(
                        &format!("eval case {i} relu {relu_after} {dtype:?} {name}"),
                        &got[k],
                        &want[k],
                        rtol,
                        atol,
                    )?;
                }
            }
        }
        // Finite differences through the fold (f64), with the ReLU.
        let f = |x: &Tensor, w: &Tensor| -> sconce_core::Result<Tensor> {
            conv2d_batch_norm_eval(x, w, cfg, &rm, &rv, &g, &b, 1e-5, true)
        };
        if i < 2 {
            let r = check_gradient(|t| f(t, &w), &x, 1e-6, 5)?;
            assert!(r.max_abs_err < 1e-6, "eval case {i} dx {r:?}");
            let r = check_gradient(|t| f(&x, t), &w, 1e-6, 6)?;
            assert!(r.max_abs_err < 1e-6, "eval case {i} dw {r:?}");
        }
    }
    Ok(())
}

/// The residual ops against the ops in a row: output, (train: mean, var,) then the gradients
/// of `Σ y·gy` for x, w, γ, β and the residual.
fn run_residual(fused: bool, train: bool, cfg: &Conv2dConfig, inputs: [&Tensor; 8]) -> Result<Vec<Tensor>> {
    let [x, w, g, b, r, gy, rm, rv] = inputs;
    let vars =
        [Var::from_tensor(x)?, Var::from_tensor(w)?, Var::from_tensor(g)?, Var::from_tensor(b)?, Var::from_tensor(r)?];
    let [xv, wv, gv, bv, rv_] = [0, 1, 2, 3, 4].map(|i| vars[i].as_tensor());
    let mut out = Vec::new();
    let y = match (train, fused) {
        (true, true) => {
            let (y, stats) = conv2d_batch_norm_add_relu_train(xv, wv, cfg, gv, bv, 1e-5, rv_)?;
            out.extend([stats.mean, stats.var]);
            y
        }
        (true, false) => {
            let (y, stats) = batch_norm_train(&conv2d(xv, wv, None, cfg)?, gv, bv, 1e-5)?;
            out.extend([stats.mean, stats.var]);
            add_relu(&y, rv_)?
        }
        (false, true) => conv2d_batch_norm_add_relu_eval(xv, wv, cfg, rm, rv, gv, bv, 1e-5, rv_)?,
        (false, false) => add_relu(&batch_norm_eval(&conv2d(xv, wv, None, cfg)?, rm, rv, gv, bv, 1e-5)?, rv_)?,
    };
    let grads = (&y * gy)?.sum_all()?.backward()?;
    out.insert(0, y);
    for v in &vars {
        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
    }
    Ok(out)
}

#[test]
fn residual_ops_equal_conv_batch_norm_add_relu() -> Result<()> {
    let cases = [
        ([2, 3, 9, 7], [5, 3, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 4, 11, 8], [6, 4, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([2, 8, 6, 6], [16, 8, 1, 1], Conv2dConfig::default()),
        ([2, 4, 10, 10], [4, 2, 3, 3], Conv2dConfig::default().padding(2).dilation(2).groups(2)),
        ([2, 16, 12, 12], [32, 16, 3, 3], Conv2dConfig::default().padding(1)),
        // One image: the product's columns are split over the pool.
        ([1, 8, 16, 16], [24, 8, 1, 1], Conv2dConfig::default()),
        ([1, 4, 20, 20], [12, 4, 3, 3], Conv2dConfig::default().padding(1)),
        // 66 images of 8×8: the batched small-map product in two chunks of images (64 + 2),
        // the epilogue's residual indexed by the image's place in the whole batch.
        ([66, 2, 8, 8], [3, 2, 3, 3], Conv2dConfig::default().padding(1)),
        // 1×1 over 10×10 maps (100 = 2·48 + 4 columns): each task's images run their whole
        // panels, then their 4-column slivers as one product; the residual again indexed by
        // the image's place in the whole batch.
        ([6, 8, 10, 10], [16, 8, 1, 1], Conv2dConfig::default()),
    ];
    // The paths above split images or columns over the pool: two threads whatever the machine.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(|| check_residual_cases(&cases))
}

fn check_residual_cases(cases: &[([usize; 4], [usize; 4], Conv2dConfig)]) -> Result<()> {
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let o = ws[0];
        let x = random(xs, seed, 0.5)?;
        let w = (random(ws, seed + 1, 0.0)? / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
        let (g, b) = (random(&[o], seed + 2, 1.0)?, random(&[o], seed + 3, 0.2)?);
        let out_shape = conv2d(&x, &w, None, cfg)?.dims().to_vec();
        // A residual of the output's scale: about half of the sums are negative, so the mask
        // matters.
        let r = random(&out_shape, seed + 4, -0.2)?;
        let gy = random(&out_shape, seed + 5, 0.0)?;
        let rm = random(&[o], seed + 6, 0.1)?;
        let rvar = (random(&[o], seed + 7, 0.0)?.sqr()? + 0.5)?;
        for train in [true, false] {
            for dtype in [DType::F64, DType::F32] {
                let c = |t: &Tensor| t.to_dtype(dtype);
                let ts = [c(&x)?, c(&w)?, c(&g)?, c(&b)?, c(&r)?, c(&gy)?, c(&rm)?, c(&rvar)?];
                let inputs = [&ts[0], &ts[1], &ts[2], &ts[3], &ts[4], &ts[5], &ts[6], &ts[7]];
                let (rtol, atol) = if dtype == DType::F64 { (1e-10, 1e-10) } else { (1e-4, 1e-4) };
                let got = run_residual(true, train, cfg, inputs)?;
                let want = run_residual(false, train, cfg, inputs)?;
                let names: &[&str] = if train {
                    &["y", "mean", "var", "dx", "dw", "dgamma", "dbeta", "dresidual"]
                } else {
                    &["y", "dx", "dw", "dgamma", "dbeta", "dresidual"]
                };
                assert_eq!(got.len(), names.len());
                for (k, name) in names.iter().enumerate() {
                    let what = format!("residual case {i} train {train} {dtype:?} {name}");
                    assert_close(&what, &got[k], &want[k], rtol, atol)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn residual_op_gradients_match_finite_differences() -> Result<()> {
    let cfg = Conv2dConfig::default().stride(2).padding(1);
    let (x, w) = (random(&[2, 2, 5, 4], 11, 0.3)?, (random(&[3, 2, 3, 3], 12, 0.0)? * 0.3)?);
    let (g, b) = (random(&[3], 13, 1.0)?, random(&[3], 14, 0.1)?);
    let r = random(&[2, 3, 3, 2], 15, 0.0)?;
    let (rm, rv) = (random(&[3], 16, 0.0)?, (random(&[3], 17, 0.0)?.sqr()? + 0.5)?);
    for train in [true, false] {
        let f = |x: &Tensor, w: &Tensor, g: &Tensor, b: &Tensor, r: &Tensor| -> sconce_core::Result<Tensor> {
            if train {
                Ok(conv2d_batch_norm_add_relu_train(x, w, &cfg, g, b, 1e-5, r)?.0)
            } else {
                conv2d_batch_norm_add_relu_eval(x, w, &cfg, &rm, &rv, g, b, 1e-5, r)
            }
        };
        let checks = [
            ("dx", check_gradient(|t| f(t, &w, &g, &b, &r), &x, 1e-6, 1)?),
            ("dw", check_gradient(|t| f(&x, t, &g, &b, &r), &w, 1e-6, 2)?),
            ("dgamma", check_gradient(|t| f(&x, &w, t, &b, &r), &g, 1e-6, 3)?),
            ("dbeta", check_gradient(|t| f(&x, &w, &g, t, &r), &b, 1e-6, 4)?),
            ("dresidual", check_gradient(|t| f(&x, &w, &g, &b, t), &r, 1e-6, 5)?),
        ];
        for (name, rep) in checks {
            assert!(rep.max_abs_err < 1e-6, "train {train} {name} {rep:?}");
        }
    }
    Ok(())
}

#[test]
fn residual_of_the_wrong_shape_or_dtype_is_an_error() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?;
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?;
    let p = Tensor::ones(4, DType::F32, &dev)?;
    let cfg = Conv2dConfig::default().padding(1);
    let short = Tensor::zeros((2, 4, 8, 7), DType::F32, &dev)?;
    let wide = Tensor::zeros((2, 4, 8, 8), DType::F64, &dev)?;
    for r in [&short, &wide] {
        assert!(conv2d_batch_norm_add_relu_train(&x, &w, &cfg, &p, &p, 1e-5, r).is_err());
        assert!(conv2d_batch_norm_add_relu_eval(&x, &w, &cfg, &p, &p, &p, &p, 1e-5, r).is_err());
    }
    assert!(matches!(conv2d_batch_norm_add_relu_train(&x, &w, &cfg, &p, &p, 1e-5, &short), Err(Error::Shape { .. })));
    Ok(())
}

/// Output, mean, var, then the gradients of `Σ y·gy` for a, b, w, γ, β: the cat op, or
/// milesial's `F.pad(b)` → `cat([a, b])` → conv → batch norm (→ relu) with candle's own ops.
fn run_cat(fused: bool, relu_after: bool, cfg: &Conv2dConfig, inputs: [&Tensor; 6]) -> Result<Vec<Tensor>> {
    let [a, b, w, g, beta, gy] = inputs;
    let vars = [a, b, w, g, beta].map(Var::from_tensor).into_iter().collect::<candle_core::Result<Vec<_>>>()?;
    let [av, bv, wv, gv, betav] = [0, 1, 2, 3, 4].map(|i| vars[i].as_tensor());
    let (y, stats) = if fused {
        conv2d_batch_norm_cat_train(av, bv, wv, cfg, gv, betav, 1e-5, relu_after)?
    } else {
        let (dh, dw) = (a.dim(2)? - b.dim(2)?, a.dim(3)? - b.dim(3)?);
        let padded = bv.pad_with_zeros(2, dh / 2, dh - dh / 2)?.pad_with_zeros(3, dw / 2, dw - dw / 2)?;
        let x = Tensor::cat(&[av, &padded], 1)?;
        // Independent of the fused ops' shared core: the plain conv, then batch norm.
        let (y, stats) = batch_norm_train(&conv2d(&x, wv, None, cfg)?, gv, betav, 1e-5)?;
        (if relu_after { relu(&y)? } else { y }, stats)
    };
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let mut out = vec![y, stats.mean, stats.var];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
    }
    Ok(out)
}

#[test]
fn cat_op_equals_pad_cat_conv_batch_norm() -> Result<()> {
    let cases = [
        // (a shape, b shape, w shape, config): odd size differences (milesial's 124 → 125),
        // equal sizes (smp's decoder), a 1×1 conv without padding, a strided one, groups.
        ([2, 3, 9, 7], [2, 2, 8, 6], [5, 5, 3, 3], Conv2dConfig::default().padding(1)),
        ([2, 4, 7, 9], [2, 4, 4, 9], [6, 8, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 2, 6, 6], [3, 5, 6, 6], [4, 7, 1, 1], Conv2dConfig::default()),
        ([2, 3, 11, 8], [2, 3, 10, 5], [4, 6, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([2, 2, 8, 8], [2, 2, 7, 7], [4, 2, 3, 3], Conv2dConfig::default().padding(1).groups(2)),
        ([2, 16, 13, 13], [2, 16, 12, 12], [16, 32, 3, 3], Conv2dConfig::default().padding(1)),
        // Zeros on every side of `b`'s window (top 2, left 2, bottom 2, right 2).
        ([2, 2, 9, 9], [2, 3, 5, 5], [4, 5, 3, 3], Conv2dConfig::default().padding(1)),
    ];
    for (i, (as_, bs, ws, cfg)) in cases.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let o = ws[0];
        let (a, b) = (random(as_, seed, 0.5)?, random(bs, seed + 1, -0.3)?);
        let w = (random(ws, seed + 2, 0.0)? / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
        let (g, beta) = (random(&[o], seed + 3, 1.0)?, random(&[o], seed + 4, 0.2)?);
        let xs = [as_[0], as_[1] + bs[1], as_[2], as_[3]];
        let gy_shape = conv2d(&Tensor::zeros(&xs, DType::F64, &Device::Cpu)?, &w, None, cfg)?.dims().to_vec();
        let gy = random(&gy_shape, seed + 5, 0.0)?;
        for relu_after in [false, true] {
            for dtype in [DType::F64, DType::F32] {
                let c = |t: &Tensor| t.to_dtype(dtype);
                let inputs = [&c(&a)?, &c(&b)?, &c(&w)?, &c(&g)?, &c(&beta)?, &c(&gy)?];
                let (rtol, atol) = if dtype == DType::F64 { (1e-10, 1e-10) } else { (1e-4, 1e-4) };
                let got = run_cat(true, relu_after, cfg, inputs)?;
                let want = run_cat(false, relu_after, cfg, inputs)?;
                for (k, name) in ["y", "mean", "var", "da", "db", "dw", "dgamma", "dbeta"].iter().enumerate() {
                    assert_close(
                        &format!("cat case {i} relu {relu_after} {dtype:?} {name}"),
                        &got[k],
                        &want[k],
                        rtol,
                        atol,
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn cat_op_gradients_match_finite_differences() -> Result<()> {
    let cfg = Conv2dConfig::default().padding(1);
    let (a, b) = (random(&[2, 2, 5, 4], 21, 0.3)?, random(&[2, 1, 4, 3], 22, 0.0)?);
    let w = (random(&[3, 3, 3, 3], 23, 0.0)? * 0.3)?;
    let (g, beta) = (random(&[3], 24, 1.0)?, random(&[3], 25, 0.1)?);
    let f = |a: &Tensor, b: &Tensor, w: &Tensor, g: &Tensor, beta: &Tensor| -> sconce_core::Result<Tensor> {
        Ok(conv2d_batch_norm_cat_train(a, b, w, &cfg, g, beta, 1e-5, true)?.0)
    };
    let checks = [
        ("da", check_gradient(|t| f(t, &b, &w, &g, &beta), &a, 1e-6, 1)?),
        ("db", check_gradient(|t| f(&a, t, &w, &g, &beta), &b, 1e-6, 2)?),
        ("dw", check_gradient(|t| f(&a, &b, t, &g, &beta), &w, 1e-6, 3)?),
        ("dgamma", check_gradient(|t| f(&a, &b, &w, t, &beta), &g, 1e-6, 4)?),
        ("dbeta", check_gradient(|t| f(&a, &b, &w, &g, t), &beta, 1e-6, 5)?),
    ];
    for (name, rep) in checks {
        assert!(rep.max_abs_err < 1e-6, "{name} {rep:?}");
    }
    Ok(())
}

#[test]
fn cat_op_rejects_mismatched_inputs() -> Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?;
    let w = Tensor::zeros((4, 5, 3, 3), DType::F32, &dev)?;
    let p = Tensor::ones(4, DType::F32, &dev)?;
    let cfg = Conv2dConfig::default().padding(1);
    let ok = Tensor::zeros((2, 2, 7, 8), DType::F32, &dev)?;
    assert!(conv2d_batch_norm_cat_train(&a, &ok, &w, &cfg, &p, &p, 1e-5, true).is_ok());
    let bad = [
        Tensor::zeros((2, 2, 9, 8), DType::F32, &dev)?, // larger than a
        Tensor::zeros((3, 2, 8, 8), DType::F32, &dev)?, // another batch
        Tensor::zeros((2, 2, 8, 8), DType::F64, &dev)?, // another dtype
        Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?, // 6 channels, the weight takes 5
        Tensor::zeros((2, 2, 8), DType::F32, &dev)?,    // rank 3
        Tensor::zeros((2, 0, 8, 8), DType::F32, &dev)?, // no channels
        Tensor::zeros((2, 2, 0, 8), DType::F32, &dev)?, // no rows
    ];
    for (i, b) in bad.iter().enumerate() {
        assert!(conv2d_batch_norm_cat_train(&a, b, &w, &cfg, &p, &p, 1e-5, true).is_err(), "case {i}");
    }
    assert!(matches!(conv2d_batch_norm_cat_train(&a, &bad[0], &w, &cfg, &p, &p, 1e-5, true), Err(Error::Shape { .. })));
    Ok(())
}

/// Output, mean, var, then the gradients of `Σ y·gy` for x, γ, β, w: the pre-activation op or
/// `batch_norm_relu_train` → `conv2d`.
fn run_pre(fused: bool, cfg: &Conv2dConfig, inputs: [&Tensor; 5]) -> Result<Vec<Tensor>> {
    let [x, g, b, w, gy] = inputs;
    let vars = [x, g, b, w].map(Var::from_tensor).into_iter().collect::<candle_core::Result<Vec<_>>>()?;
    let [xv, gv, bv, wv] = [0, 1, 2, 3].map(|i| vars[i].as_tensor());
    let (y, stats) = if fused {
        batch_norm_relu_conv2d_train(xv, gv, bv, 1e-5, wv, cfg)?
    } else {
        let (a, stats) = batch_norm_relu_train(xv, gv, bv, 1e-5)?;
        (conv2d(&a, wv, None, cfg)?, stats)
    };
    // The count drives the running variance's unbiasing: `x`'s N·H·W, whatever the output.
    anyhow::ensure!(stats.count == x.elem_count() / x.dim(1)?, "count {} for x {:?}", stats.count, x.dims());
    let grads = (&y * gy)?.sum_all()?.backward()?;
    let mut out = vec![y, stats.mean, stats.var];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).context("missing gradient")?.clone());
    }
    Ok(out)
}

/// "Same" stride-1 convolutions take the batch norm's `dz` as padded planes: the input
/// gradient convolves them as they are, the weight gradient reads them on the grid. Every
/// weight-gradient path (dot products, batched small maps, whole images per task, one image's
/// columns over the pool) and both input-gradient paths (per image, batched small maps), on a
/// two-thread pool, against the ops in a row.
#[test]
fn padded_output_gradients_give_the_ops_in_a_row() -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(|| -> Result<()> {
        let p1 = Conv2dConfig::default().padding(1);
        let cases = [
            // dot-product weight gradient (≤ 32 outputs, ≥ 512 grid positions), two images and one
            ([2, 4, 24, 24], [8, 4, 3, 3], p1),
            ([1, 4, 24, 24], [8, 4, 3, 3], p1),
            // small maps: batched weight gradient and batched input gradient
            ([8, 24, 7, 7], [32, 24, 3, 3], p1),
            // products over large maps (> 32 outputs, C·9 ≥ 192): whole images per task (an
            // even batch), and one image with its columns over the pool
            ([2, 24, 18, 18], [72, 24, 3, 3], p1),
            ([1, 24, 18, 18], [72, 24, 3, 3], p1),
            // a 5×5 kernel, a dilated one, a non-square input
            ([2, 3, 11, 9], [4, 3, 5, 5], Conv2dConfig::default().padding(2)),
            ([2, 3, 10, 12], [4, 3, 3, 3], Conv2dConfig::default().padding(2).dilation(2)),
            // dot products on a non-square map with a 5×5 kernel
            ([1, 4, 20, 26], [8, 4, 5, 5], Conv2dConfig::default().padding(2)),
            // padding on one axis only: no extra grid columns (3×1), or no padded rows (1×3)
            ([2, 3, 9, 11], [4, 3, 3, 1], Conv2dConfig { padding: (1, 0), ..Conv2dConfig::default() }),
            ([2, 3, 9, 11], [4, 3, 1, 3], Conv2dConfig { padding: (0, 1), ..Conv2dConfig::default() }),
        ];
        for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
            let seed = 900 + 10 * i as u64;
            let o = ws[0];
            let x = random(xs, seed, 0.3)?;
            let w = (random(ws, seed + 1, 0.0)? / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
            let (g, b) = (random(&[o], seed + 2, 1.0)?, random(&[o], seed + 3, 0.2)?);
            let gy = random(conv2d(&x, &w, None, cfg)?.dims(), seed + 4, 0.0)?;
            for relu_after in [false, true] {
                let f = |t: &Tensor| t.to_dtype(DType::F32);
                let inputs = [&f(&x)?, &f(&w)?, &f(&g)?, &f(&b)?, &f(&gy)?];
                let got = run(true, relu_after, cfg, inputs)?;
                let want = run(false, relu_after, cfg, inputs)?;
                for (k, name) in ["y", "mean", "var", "dx", "dw", "dgamma", "dbeta"].iter().enumerate() {
                    assert_close(&format!("padded case {i} relu {relu_after} {name}"), &got[k], &want[k], 1e-4, 1e-4)?;
                }
            }
        }
        Ok(())
    })
}

#[test]
fn pre_activation_op_equals_batch_norm_relu_then_conv() -> Result<()> {
    let cases = [
        // DenseNet's 1×1 bottleneck and 3×3 growth convs, a strided one, groups.
        ([2, 12, 7, 6], [8, 12, 1, 1], Conv2dConfig::default()),
        ([3, 8, 9, 9], [4, 8, 3, 3], Conv2dConfig::default().padding(1)),
        ([2, 4, 11, 8], [6, 4, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([2, 4, 8, 8], [6, 2, 3, 3], Conv2dConfig::default().padding(1).groups(2)),
        ([2, 32, 14, 14], [32, 32, 3, 3], Conv2dConfig::default().padding(1)),
        // 1×1 in f32 applies the batch norm while packing: images sharing a product, and maps
        // of more than 4096 positions one image per product.
        ([3, 40, 14, 14], [32, 40, 1, 1], Conv2dConfig::default()),
        ([2, 6, 70, 70], [8, 6, 1, 1], Conv2dConfig::default()),
        // 1024 positions: products of 4 images, the last chunk short.
        ([6, 16, 32, 32], [8, 16, 1, 1], Conv2dConfig::default()),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let c = xs[1];
        let x = random(xs, seed, 0.7)?;
        let (g, b) = (random(&[c], seed + 1, 1.0)?, random(&[c], seed + 2, 0.1)?);
        let w = (random(ws, seed + 3, 0.0)? / ((ws[1] * ws[2] * ws[3]) as f64).sqrt())?;
        let gy_shape = conv2d(&x, &w, None, cfg)?.dims().to_vec();
        let gy = random(&gy_shape, seed + 4, 0.0)?;
        for dtype in [DType::F64, DType::F32] {
            let cv = |t: &Tensor| t.to_dtype(dtype);
            let inputs = [&cv(&x)?, &cv(&g)?, &cv(&b)?, &cv(&w)?, &cv(&gy)?];
            let (rtol, atol) = if dtype == DType::F64 { (1e-10, 1e-10) } else { (1e-4, 1e-4) };
            let got = run_pre(true, cfg, inputs)?;
            let want = run_pre(false, cfg, inputs)?;
            for (k, name) in ["y", "mean", "var", "dx", "dgamma", "dbeta", "dw"].iter().enumerate() {
                assert_close(&format!("pre case {i} {dtype:?} {name}"), &got[k], &want[k], rtol, atol)?;
            }
        }
    }
    Ok(())
}

#[test]
fn pre_activation_op_gradients_match_finite_differences() -> Result<()> {
    let cfg = Conv2dConfig::default().padding(1);
    let x = random(&[2, 3, 5, 4], 31, 0.2)?;
    let (g, b) = (random(&[3], 32, 1.0)?, random(&[3], 33, 0.1)?);
    let w = (random(&[2, 3, 3, 3], 34, 0.0)? * 0.3)?;
    let f = |x: &Tensor, g: &Tensor, b: &Tensor, w: &Tensor| -> sconce_core::Result<Tensor> {
        Ok(batch_norm_relu_conv2d_train(x, g, b, 1e-5, w, &cfg)?.0)
    };
    let checks = [
        ("dx", check_gradient(|t| f(t, &g, &b, &w), &x, 1e-6, 1)?),
        ("dgamma", check_gradient(|t| f(&x, t, &b, &w), &g, 1e-6, 2)?),
        ("dbeta", check_gradient(|t| f(&x, &g, t, &w), &b, 1e-6, 3)?),
        ("dw", check_gradient(|t| f(&x, &g, &b, t), &w, 1e-6, 4)?),
    ];
    for (name, rep) in checks {
        assert!(rep.max_abs_err < 1e-6, "{name} {rep:?}");
    }
    Ok(())
}

#[test]
fn pre_activation_op_rejects_mismatched_parameters() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev)?;
    let (p3, p4) = (Tensor::ones(3, DType::F32, &dev)?, Tensor::ones(4, DType::F32, &dev)?);
    let cfg = Conv2dConfig::default().padding(1);
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?;
    let w_bad = Tensor::zeros((4, 5, 3, 3), DType::F32, &dev)?;
    assert!(batch_norm_relu_conv2d_train(&x, &p3, &p3, 1e-5, &w, &cfg).is_ok());
    assert!(batch_norm_relu_conv2d_train(&x, &p4, &p3, 1e-5, &w, &cfg).is_err());
    assert!(batch_norm_relu_conv2d_train(&x, &p3, &p3, 1e-5, &w_bad, &cfg).is_err());
    assert!(batch_norm_relu_conv2d_train(&x, &p3, &p3, 0.0, &w, &cfg).is_err());
    let one = Tensor::zeros((1, 3, 1, 1), DType::F32, &dev)?;
    let w1 = Tensor::zeros((4, 3, 1, 1), DType::F32, &dev)?;
    assert!(batch_norm_relu_conv2d_train(&one, &p3, &p3, 1e-5, &w1, &Conv2dConfig::default()).is_err());
    Ok(())
}

/// Frozen inputs (a plain tensor among variables: a frozen encoder's skip, frozen weights) get
/// no gradient, and the others the same gradients as when everything is trained.
#[test]
fn fused_ops_with_frozen_inputs_give_the_others_the_same_gradients() -> Result<()> {
    let cfg = Conv2dConfig::default().padding(1);
    let (a, b) = (random(&[2, 3, 7, 7], 71, 0.2)?, random(&[2, 2, 6, 6], 72, 0.0)?);
    let w = (random(&[4, 5, 3, 3], 73, 0.0)? * 0.2)?;
    let (g, beta) = (random(&[4], 74, 1.0)?, random(&[4], 75, 0.1)?);
    let gy = random(&[2, 4, 7, 7], 76, 0.0)?;
    let all = run_cat(true, true, &cfg, [&a, &b, &w, &g, &beta, &gy])?;
    // Each input frozen in turn: the cat op's a, b and w.
    for frozen in 0..3 {
        let vars: Vec<Option<Var>> = [&a, &b, &w, &g, &beta]
            .iter()
            .enumerate()
            .map(|(i, t)| if i == frozen { Ok(None) } else { Var::from_tensor(t).map(Some) })
            .collect::<candle_core::Result<_>>()?;
        let t = |i: usize| -> Tensor {
            vars[i].as_ref().map_or_else(|| [&a, &b, &w][i].clone(), |v| v.as_tensor().clone())
        };
        let (y, _) = conv2d_batch_norm_cat_train(&t(0), &t(1), &t(2), &cfg, &t(3), &t(4), 1e-5, true)?;
        let grads = (&y * &gy)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            if let Some(v) = v {
                let got = grads.get(v.as_tensor()).context("missing gradient")?;
                assert_close(&format!("cat frozen {frozen} input {i}"), got, &all[3 + i], 1e-10, 1e-10)?;
            }
        }
    }
    // The pre-activation op with x, then w, frozen.
    let x = random(&[2, 4, 6, 6], 77, 0.3)?;
    let (g4, b4) = (random(&[4], 78, 1.0)?, random(&[4], 79, 0.1)?);
    let w4 = (random(&[3, 4, 3, 3], 80, 0.0)? * 0.2)?;
    let gy4 = random(&[2, 3, 6, 6], 81, 0.0)?;
    let all = run_pre(true, &cfg, [&x, &g4, &b4, &w4, &gy4])?;
    for frozen in [0usize, 3] {
        let inputs = [&x, &g4, &b4, &w4];
        let vars: Vec<Option<Var>> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| if i == frozen { Ok(None) } else { Var::from_tensor(t).map(Some) })
            .collect::<candle_core::Result<_>>()?;
        let t = |i: usize| -> Tensor { vars[i].as_ref().map_or_else(|| inputs[i].clone(), |v| v.as_tensor().clone()) };
        let (y, _) = batch_norm_relu_conv2d_train(&t(0), &t(1), &t(2), 1e-5, &t(3), &cfg)?;
        let grads = (&y * &gy4)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            if let Some(v) = v {
                let got = grads.get(v.as_tensor()).context("missing gradient")?;
                assert_close(&format!("pre frozen {frozen} input {i}"), got, &all[3 + i], 1e-10, 1e-10)?;
            }
        }
    }
    Ok(())
}

/// In `f32`, a "same" convolution keeps its padded input for the weight gradient while that
/// gradient is wanted, and reads its recorded input otherwise: with any input frozen, the
/// other gradients are those of the ops in a row.
#[test]
fn f32_cat_op_with_frozen_inputs_matches_the_ops_in_a_row() -> Result<()> {
    let cfg = Conv2dConfig::default().padding(1);
    let f = |t: Tensor| t.to_dtype(DType::F32);
    let (a, b) = (f(random(&[3, 5, 19, 17], 91, 0.2)?)?, f(random(&[3, 4, 15, 12], 92, 0.0)?)?);
    let w = f((random(&[20, 9, 3, 3], 93, 0.0)? * 0.1)?)?;
    let (g, beta) = (f(random(&[20], 94, 1.0)?)?, f(random(&[20], 95, 0.1)?)?);
    let gy = f(random(&[3, 20, 19, 17], 96, 0.0)?)?;
    let want = run_cat(false, true, &cfg, [&a, &b, &w, &g, &beta, &gy])?;
    for frozen in [None, Some(0), Some(1), Some(2)] {
        let vars: Vec<Option<Var>> = [&a, &b, &w, &g, &beta]
            .iter()
            .enumerate()
            .map(|(i, t)| if Some(i) == frozen { Ok(None) } else { Var::from_tensor(t).map(Some) })
            .collect::<candle_core::Result<_>>()?;
        let t = |i: usize| -> Tensor {
            vars[i].as_ref().map_or_else(|| [&a, &b, &w][i].clone(), |v| v.as_tensor().clone())
        };
        let (y, _) = conv2d_batch_norm_cat_train(&t(0), &t(1), &t(2), &cfg, &t(3), &t(4), 1e-5, true)?;
        assert_close(&format!("f32 cat frozen {frozen:?} y"), &y, &want[0], 1e-4, 1e-4)?;
        let grads = (&y * &gy)?.sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            if let Some(v) = v {
                let got = grads.get(v.as_tensor()).context("missing gradient")?;
                assert_close(&format!("f32 cat frozen {frozen:?} input {i}"), got, &want[3 + i], 1e-4, 1e-4)?;
            }
        }
    }
    Ok(())
}

/// The f32 training op on maps large enough for every weight-gradient path that reads the
/// kept padded planes (dot products over the image with fewer and with more images than
/// threads, the batched product over small maps, the per-image product with many output
/// channels), against the ops in a row in f64.
#[test]
fn f32_training_op_reads_its_kept_planes_on_every_weight_gradient_path() -> Result<()> {
    // The paths depend on the pool's size: two threads, as the cases below assume.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(kept_planes_cases)
}

fn kept_planes_cases() -> Result<()> {
    let cfg = Conv2dConfig::default().padding(1);
    let cases = [
        // (x shape, output channels): dot products (o ≤ 32, grid ≥ 512 positions).
        ([1usize, 8, 24, 26], 16usize),
        ([3, 8, 24, 26], 16),
        // The batched product over small maps (o > 32, C·9 ≥ 192, 8×8 maps).
        ([3, 24, 8, 8], 72),
        // Products over large maps (o > 32): whole images per task (an even batch on two
        // threads), and one image with its columns over the pool.
        ([2, 24, 24, 22], 72),
        ([1, 24, 24, 22], 72),
    ];
    for (i, (xs, o)) in cases.into_iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let x = random(&xs, seed, 0.3)?;
        let w = (random(&[o, xs[1], 3, 3], seed + 1, 0.0)? / ((xs[1] * 9) as f64).sqrt())?;
        let (g, b) = (random(&[o], seed + 2, 1.0)?, random(&[o], seed + 3, 0.1)?);
        let gy = random(&[xs[0], o, xs[2], xs[3]], seed + 4, 0.0)?;
        let want = run(false, true, &cfg, [&x, &w, &g, &b, &gy])?;
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let got = run(true, true, &cfg, [&f(&x)?, &f(&w)?, &f(&g)?, &f(&b)?, &f(&gy)?])?;
        for (k, name) in ["y", "mean", "var", "dx", "dw", "dgamma", "dbeta"].iter().enumerate() {
            assert_close(&format!("case {i} {name}"), &got[k].to_dtype(DType::F64)?, &want[k], 1e-3, 1e-3)?;
        }
    }
    Ok(())
}
