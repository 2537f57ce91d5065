//! Properties every loss must have: finite values and gradients for logits of ±1e4 and targets
//! at exactly 0 and 1 over random shapes; gradients equal to f64 finite differences; clear
//! errors for bad input; the classic sigmoid → log NaN reproduced in plain candle; and
//! cross-entropy's precomputed f32 gradient equal to its backward kernel.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, Loss, SeededRng};
use sconce_losses::{
    BinaryCrossEntropy, CategoricalFocal, CrossEntropy, ElementwiseLoss, FocalLoss, KlDivergence, LovaszLoss, Mode,
    PointLoss, Reduction, RegionLoss,
};
use sconce_tensor::gradcheck::check_gradient;

fn extreme_logits(rng: &mut SeededRng, shape: &[usize]) -> Result<Tensor> {
    let choices = [-1e4f32, -100.0, -17.0, -1.0, 0.0, 1.0, 17.0, 100.0, 1e4];
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| choices[rng.below(choices.len() as u64) as usize]).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn assert_finite_with_gradient(loss: &dyn Loss, logits: &Tensor, target: &Tensor) -> Result<()> {
    let x = Var::from_tensor(logits)?;
    let l = loss.loss(x.as_tensor(), target)?;
    let vals = l.flatten_all()?.to_vec1::<f32>()?;
    assert!(vals.iter().all(|v| v.is_finite()), "{}: non-finite loss {vals:?}", loss.name());
    let g = l.sum_all()?.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f32>()).transpose()?;
    let gx = gx.unwrap_or_default();
    assert_eq!(gx.len(), logits.elem_count(), "{}: no gradient", loss.name());
    assert!(gx.iter().all(|v| v.is_finite()), "{}: non-finite gradient", loss.name());
    Ok(())
}

#[test]
fn losses_stay_finite_at_extreme_logits_and_hard_targets() -> Result<()> {
    let mut rng = SeededRng::new(1);
    for round in 0..20 {
        let (n, c) = (1 + rng.below(3) as usize, 2 + rng.below(4) as usize);
        let (h, w) = (1 + rng.below(5) as usize, 1 + rng.below(5) as usize);
        // Binary / multilabel: one channel and C channels, targets exactly 0 or 1.
        for ch in [1, c] {
            let x = extreme_logits(&mut rng, &[n, ch, h, w])?;
            let t = Tensor::from_vec(
                (0..n * ch * h * w).map(|_| rng.below(2) as f32).collect::<Vec<_>>(),
                (n, ch, h, w),
                &Device::Cpu,
            )?;
            let mode = if ch == 1 { Mode::Binary } else { Mode::Multilabel };
            let losses: Vec<Box<dyn Loss>> = vec![
                Box::new(BinaryCrossEntropy::new()),
                Box::new(BinaryCrossEntropy::new().pos_weight(vec![3.0]).label_smoothing(0.1)),
                Box::new(BinaryCrossEntropy::new().reduction(Reduction::None)),
                Box::new(RegionLoss::dice(mode)),
                Box::new(RegionLoss::jaccard(mode).log_loss(true)),
                Box::new(RegionLoss::tversky(mode, 0.3, 0.7).gamma(2.0)),
                Box::new(FocalLoss::new(mode).alpha(0.25)),
                Box::new(ElementwiseLoss::new(PointLoss::Hinge)),
                Box::new(LovaszLoss::new(mode)),
            ];
            for l in &losses {
                assert_finite_with_gradient(l.as_ref(), &x, &t)?;
            }
        }
        // Multiclass: integer labels.
        let x = extreme_logits(&mut rng, &[n, c, h, w])?;
        let y = Tensor::from_vec(
            (0..n * h * w).map(|_| rng.below(c as u64) as u32).collect::<Vec<_>>(),
            (n, h, w),
            &Device::Cpu,
        )?;
        let losses: Vec<Box<dyn Loss>> = vec![
            Box::new(CrossEntropy::new()),
            Box::new(CrossEntropy::new().label_smoothing(0.1).class_weights(vec![1.0; c])),
            Box::new(RegionLoss::dice(Mode::Multiclass)),
            Box::new(FocalLoss::new(Mode::Multiclass)),
            Box::new(LovaszLoss::new(Mode::Multiclass).per_image(true)),
        ];
        for l in &losses {
            assert_finite_with_gradient(l.as_ref(), &x, &y)?;
        }
        let _ = round;
    }
    Ok(())
}

#[test]
fn plain_candle_sigmoid_then_log_gives_nan_ours_does_not() -> Result<()> {
    // What a hand-written BCE does (and candle-nn's binary_cross_entropy_with_logit):
    // p = sigmoid(x); −[z·log p + (1 − z)·log(1 − p)].
    let x = Tensor::new(&[[-1e4f32, 1e4, 20.0]], &Device::Cpu)?;
    let z = Tensor::new(&[[1.0f32, 1.0, 1.0]], &Device::Cpu)?;
    let p = x.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
    let naive = ((&z * p.log()?)? + (z.affine(-1.0, 1.0)? * p.affine(-1.0, 1.0)?.log()?)?)?.neg()?.mean_all()?;
    assert!(!naive.to_scalar::<f32>()?.is_finite(), "the textbook form should overflow here");
    let ours = BinaryCrossEntropy::new().loss(&x, &z)?.to_scalar::<f32>()?;
    // Exact: softplus(1e4)/3 + softplus(−1e4)/3 + softplus(−20)/3.
    let want = (1e4 + 0.0 + (-20f64).exp().ln_1p()) / 3.0;
    assert!((f64::from(ours) - want).abs() < 1e-2, "{ours} vs {want}");
    Ok(())
}

#[test]
fn gradients_match_finite_differences_in_f64() -> Result<()> {
    let mut rng = SeededRng::new(3);
    let mut randn = |shape: &[usize], s: f64| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        Ok(Tensor::from_vec((0..n).map(|_| rng.normal() * s).collect::<Vec<f64>>(), shape, &Device::Cpu)?)
    };
    let x = randn(&[2, 3, 3, 2], 2.0)?;
    let soft = randn(&[2, 3, 3, 2], 1.0)?.abs()?.tanh()?; // in [0, 1)
    let labels = Tensor::new(&[[[0u32, 2], [1, 1], [2, 0]], [[1, 0], [0, 2], [2, 2]]], &Device::Cpu)?;
    let cases: Vec<(Box<dyn Loss>, Tensor)> = vec![
        (Box::new(BinaryCrossEntropy::new().pos_weight(vec![0.5, 2.0, 1.0]).label_smoothing(0.1)), soft.clone()),
        (Box::new(CrossEntropy::new().class_weights(vec![0.3, 1.0, 2.0]).label_smoothing(0.2)), labels.clone()),
        (Box::new(CrossEntropy::new().reduction(Reduction::Sum)), labels.clone()),
        (Box::new(RegionLoss::dice(Mode::Multiclass).smooth(0.5)), labels.clone()),
        (Box::new(RegionLoss::tversky(Mode::Multilabel, 0.2, 0.8).gamma(1.5)), soft.clone()),
        (Box::new(FocalLoss::new(Mode::Multilabel).alpha(0.3).gamma(2.5)), soft.clone()),
        (Box::new(ElementwiseLoss::new(PointLoss::LogCosh)), soft.clone()),
        (Box::new(LovaszLoss::new(Mode::Multiclass)), labels.clone()),
        (Box::new(KlDivergence::new()), sconce_tensor::softmax(&soft, 1)?),
        (Box::new(CategoricalFocal::default()), sconce_tensor::softmax(&soft, 1)?),
        (Box::new(ElementwiseLoss::new(PointLoss::Huber { delta: 0.7 })), soft),
    ];
    for (loss, target) in &cases {
        let r = check_gradient(|t| loss.loss(t, target), &x, 1e-6, 9)?;
        assert!(r.max_abs_err < 1e-7, "{}: {r:?}", loss.name());
    }
    Ok(())
}

#[test]
fn bad_input_is_a_clear_error() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let msg = |r: sconce_core::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    // Shapes.
    assert!(msg(BinaryCrossEntropy::new().loss(&x, &Tensor::zeros((3, 2), DType::F32, &dev)?)).contains("target"));
    assert!(matches!(CrossEntropy::new().loss(&x, &Tensor::zeros(3, DType::U32, &dev)?), Err(Error::Shape { .. })));
    // Targets out of range, NaN, 0/255 masks.
    let m255 = Tensor::new(&[[0f32, 255.0, 0.0], [255.0, 0.0, 0.0]], &dev)?;
    let e = msg(BinaryCrossEntropy::new().loss(&x, &m255));
    assert!(e.contains("[0, 1]") && e.contains("255"), "{e}");
    let nan = Tensor::new(&[[0f32, f32::NAN, 0.0], [1.0, 0.0, 0.0]], &dev)?;
    assert!(matches!(BinaryCrossEntropy::new().loss(&x, &nan), Err(Error::Data { .. })));
    let e = msg(CrossEntropy::new().loss(&x, &Tensor::new(&[0u32, 3], &dev)?));
    assert!(e.contains("outside 0..3"), "{e}");
    assert!(CrossEntropy::new().ignore_index(3).loss(&x, &Tensor::new(&[0u32, 3], &dev)?).is_ok());
    // Wrong dtypes.
    let xi = Tensor::zeros((2, 3), DType::U32, &dev)?;
    assert!(matches!(BinaryCrossEntropy::new().loss(&xi, &x), Err(Error::Config { .. })));
    // CE over one channel is refused with the fix.
    let one = Tensor::zeros((2, 1), DType::F32, &dev)?;
    let e = msg(CrossEntropy::new().loss(&one, &Tensor::new(&[0u32, 0], &dev)?));
    assert!(e.contains("sigmoid") && e.contains("BinaryCrossEntropy"), "{e}");
    // Bad parameters.
    assert!(matches!(BinaryCrossEntropy::new().pos_weight(vec![1.0, 2.0]).loss(&x, &x), Err(Error::Config { .. })));
    assert!(matches!(
        CrossEntropy::new().class_weights(vec![1.0]).loss(&x, &Tensor::new(&[0u32, 1], &dev)?),
        Err(Error::Config { .. })
    ));
    assert!(matches!(FocalLoss::new(Mode::Binary).alpha(2.0).loss(&one, &one), Err(Error::Config { .. })));
    assert!(matches!(RegionLoss::dice(Mode::Binary).loss(&x, &x), Err(Error::Config { .. })));
    assert!(matches!(
        ElementwiseLoss::new(PointLoss::Hinge).loss(&x, &Tensor::new(&[[0.5f32, 0., 0.], [0., 0., 0.]], &dev)?),
        Err(Error::Data { .. })
    ));
    Ok(())
}

#[test]
fn review_edge_cases_give_errors_or_finite_values() -> Result<()> {
    let dev = Device::Cpu;
    // Empty tensors are shape errors, not panics.
    let empty = Tensor::zeros((2, 3, 0), DType::F32, &dev)?;
    assert!(matches!(
        CrossEntropy::new().loss(&empty, &Tensor::zeros((2, 0), DType::U32, &dev)?),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(BinaryCrossEntropy::new().loss(&empty, &empty), Err(Error::Shape { .. })));
    assert!(sconce_tensor::softmax(&Tensor::zeros((2, 0), DType::F32, &dev)?, 1).is_err());
    // A masked (−∞) logit on a non-target class: finite loss in f32 and f64 alike.
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::new(&[[0.0f32, f32::NEG_INFINITY, 1.0]], &dev)?.to_dtype(dtype)?;
        let l = CrossEntropy::new().loss(&x, &Tensor::new(&[0u32], &dev)?)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let want = (1.0f64 + 1f64.exp()).ln();
        assert!((l - want).abs() < 1e-6, "{dtype:?}: {l} vs {want}");
    }
    // γ = 0 focal (= BCE) and γ < 1 Tversky on all-empty masks keep finite gradients.
    let x = Var::from_tensor(&Tensor::new(&[[[[20.0f32, -20.0]]]], &dev)?)?;
    let y = Tensor::new(&[[[[1.0f32, 0.0]]]], &dev)?;
    let g = FocalLoss::new(Mode::Binary).gamma(0.0).loss(x.as_tensor(), &y)?.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f32>()).transpose()?;
    assert!(gx.unwrap_or_default().iter().all(|v| v.is_finite()));
    let empty_mask = Tensor::zeros((1, 1, 1, 2), DType::F32, &dev)?;
    let l = RegionLoss::tversky(Mode::Binary, 0.5, 0.5).gamma(0.75).loss(x.as_tensor(), &empty_mask)?;
    let g = l.backward()?;
    let gx = g.get(x.as_tensor()).map(|t| t.flatten_all()).transpose()?.map(|t| t.to_vec1::<f32>()).transpose()?;
    assert!(gx.unwrap_or_default().iter().all(|v| v.is_finite()));
    // A transposed mask is refused, not silently paired with the wrong pixels.
    let x = Tensor::zeros((1, 1, 2, 3), DType::F32, &dev)?;
    let wrong = Tensor::zeros((1, 3, 2), DType::F32, &dev)?;
    assert!(matches!(RegionLoss::dice(Mode::Binary).loss(&x, &wrong), Err(Error::Shape { .. })));
    assert!(matches!(FocalLoss::new(Mode::Binary).loss(&x, &wrong), Err(Error::Shape { .. })));
    assert!(RegionLoss::dice(Mode::Binary).loss(&x, &Tensor::zeros((1, 2, 3), DType::F32, &dev)?).is_ok());
    // Multiclass focal: labels out of range or NaN are errors (they would count as background
    // for every class); the ignore index is accepted.
    let x3 = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let focal = FocalLoss::new(Mode::Multiclass);
    for bad in [[0f32, 7.0], [0.0, f32::NAN], [0.0, 1.5], [-1.0, 0.0]] {
        let e = focal.loss(&x3, &Tensor::new(&bad, &dev)?);
        assert!(
            matches!(&e, Err(Error::Data { .. })) && format!("{e:?}").contains("not one of 0..3"),
            "{bad:?}: {e:?}"
        );
    }
    assert!(focal.clone().ignore_index(255).loss(&x3, &Tensor::new(&[2u32, 255], &dev)?).is_ok());
    assert!(focal.loss(&x3, &Tensor::new(&[2u32, 0], &dev)?).is_ok());
    Ok(())
}

/// Gradient of `k·loss` with respect to the logits (`None` for no gradient).
fn scaled_grad(loss: &dyn Loss, logits: &Tensor, target: &Tensor, k: f64) -> Result<(f64, Tensor)> {
    let v = Var::from_tensor(logits)?;
    let l = loss.loss(v.as_tensor(), target)?;
    let g = (&l * k)?.backward()?;
    let value = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((value, g.get(v.as_tensor()).context("no gradient")?.to_dtype(DType::F64)?))
}

#[test]
fn cross_entropy_gradient_from_the_forward_pass_equals_the_backward_kernel() -> Result<()> {
    // f32 with autograd precomputes the gradient in its forward pass; f64 runs the separate
    // backward kernel. Both must agree for every option, upstream scales other than 1, several
    // tiles with a ragged tail (17×19 = 323 positions), ignored targets and all-ignored batches.
    let mut rng = SeededRng::new(77);
    let (n, c, h, w) = (3, 5, 17, 19);
    let logits64 = Tensor::from_vec(
        (0..n * c * h * w).map(|_| rng.normal() * 4.0).collect::<Vec<f64>>(),
        (n, c, h, w),
        &Device::Cpu,
    )?;
    let labels: Vec<i64> = (0..n * h * w).map(|i| if i % 7 == 3 { -100 } else { rng.below(c as u64) as i64 }).collect();
    let labels = Tensor::from_vec(labels, (n, h, w), &Device::Cpu)?;
    let all_ignored = Tensor::full(-100i64, (n, h, w), &Device::Cpu)?;
    let losses = [
        CrossEntropy::new().ignore_index(-100),
        CrossEntropy::new().ignore_index(-100).reduction(Reduction::Sum),
        CrossEntropy::new().ignore_index(-100).label_smoothing(0.2).class_weights(vec![0.5, 2.0, 1.0, 0.0, 3.0]),
    ];
    for (i, loss) in losses.iter().enumerate() {
        for k in [1.0, 0.25] {
            for target in [&labels, &all_ignored] {
                let (v32, g32) = scaled_grad(loss, &logits64.to_dtype(DType::F32)?, target, k)?;
                let (v64, g64) = scaled_grad(loss, &logits64, target, k)?;
                assert!((v32 - v64).abs() <= 1e-5 * v64.abs().max(1.0), "loss {i}: value {v32} vs {v64}");
                let err = (&g32 - &g64)?.abs()?.max_all()?.to_scalar::<f64>()?;
                let size = g64.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(err <= 1e-6 + 1e-5 * size, "loss {i}, k {k}: gradient differs by {err} (max {size})");
            }
        }
    }
    Ok(())
}

#[test]
fn bce_gradient_from_the_forward_pass_equals_the_backward_kernel() -> Result<()> {
    // As for cross-entropy: f32 under autograd (gradient written by the forward pass) against
    // f64 (separate backward kernel), with pos_weight planes, smoothing, sum and mean, and an
    // upstream scale other than 1; 3×2×37×41 has a ragged tail in every plane.
    let mut rng = SeededRng::new(78);
    let shape = (3, 2, 37, 41);
    let len = 3 * 2 * 37 * 41;
    let logits64 = Tensor::from_vec((0..len).map(|_| rng.normal() * 6.0).collect::<Vec<f64>>(), shape, &Device::Cpu)?;
    let target = Tensor::from_vec((0..len).map(|_| rng.below(2) as f64).collect::<Vec<f64>>(), shape, &Device::Cpu)?;
    let losses = [
        BinaryCrossEntropy::new(),
        BinaryCrossEntropy::new().reduction(Reduction::Sum).label_smoothing(0.1),
        BinaryCrossEntropy::new().pos_weight(vec![3.0, 0.5]),
    ];
    for (i, loss) in losses.iter().enumerate() {
        for k in [1.0, 0.25] {
            let (v32, g32) = scaled_grad(loss, &logits64.to_dtype(DType::F32)?, &target.to_dtype(DType::F32)?, k)?;
            let (v64, g64) = scaled_grad(loss, &logits64, &target, k)?;
            assert!((v32 - v64).abs() <= 1e-5 * v64.abs().max(1.0), "loss {i}: value {v32} vs {v64}");
            let err = (&g32 - &g64)?.abs()?.max_all()?.to_scalar::<f64>()?;
            let size = g64.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err <= 1e-6 * size.max(1e-6) + 1e-9, "loss {i}, k {k}: gradient differs by {err} (max {size})");
        }
    }
    Ok(())
}

#[test]
fn distribution_losses_reduce_like_the_others() -> Result<()> {
    use sconce_losses::{CategoricalHinge, Poisson, Reduction, WeightNorm, weighted_mean};
    let dev = Device::Cpu;
    let x = Tensor::new(&[[[0.5f64, -1.0], [2.0, 0.0]], [[-0.3, 0.8], [1.1, -2.0]]], &dev)?; // [N=2, C=2, 2]
    let p = sconce_tensor::softmax(&x.affine(0.7, 0.1)?, 1)?;
    let counts = x.abs()?.round()?;
    type Make = fn(Reduction) -> Box<dyn Loss>;
    let cases: [(&str, Make, &Tensor, &[usize]); 4] = [
        ("kl", |r| Box::new(KlDivergence::new().reduction(r)), &p, &[2, 2]),
        ("hinge", |r| Box::new(CategoricalHinge::new().reduction(r)), &p, &[2, 2]),
        ("cat focal", |r| Box::new(CategoricalFocal { reduction: r, ..Default::default() }), &p, &[2, 2]),
        ("poisson", |r| Box::new(Poisson::new().reduction(r)), &counts, &[2, 2, 2]),
    ];
    for (name, make, target, per_shape) in cases {
        let per = make(Reduction::None).loss(&x, target)?;
        assert_eq!(per.dims(), per_shape, "{name}");
        let per_v = per.flatten_all()?.to_vec1::<f64>()?;
        let sum: f64 = per_v.iter().sum();
        let got_sum = make(Reduction::Sum).loss(&x, target)?.to_scalar::<f64>()?;
        let got_mean = make(Reduction::Mean).loss(&x, target)?.to_scalar::<f64>()?;
        assert!((got_sum - sum).abs() < 1e-12 && (got_mean - sum / per_v.len() as f64).abs() < 1e-12, "{name}");
        // Per-sample weights through the per-position values: weight 0 drops sample 1.
        let w = weighted_mean(&per, &Tensor::new(&[1f64, 0.0], &dev)?, WeightNorm::SumOfWeights)?.to_scalar::<f64>()?;
        let half = per_v.len() / 2;
        let first: f64 = per_v[..half].iter().sum::<f64>() / half as f64;
        assert!((w - first).abs() < 1e-12, "{name}: {w} vs {first}");
    }
    Ok(())
}
