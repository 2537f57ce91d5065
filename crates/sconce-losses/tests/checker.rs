//! The head checker: each rule fires on the configuration it is about, and a correct head gets
//! no error.

use anyhow::Result;
use candle_core::{Device, Tensor};
use sconce_core::{Activation, Error};
use sconce_losses::{BinaryCrossEntropy, CrossEntropy, ElementwiseLoss, HeadChecker, PointLoss, Severity};

fn rules(findings: &[sconce_losses::Finding], severity: Severity) -> Vec<&'static str> {
    findings.iter().filter(|f| f.severity == severity).map(|f| f.rule).collect()
}

#[test]
fn the_nan_configuration_is_refused_and_the_fix_accepted() -> Result<()> {
    let dev = Device::Cpu;
    let mask = Tensor::new(&[[[[0f32, 1.0], [1.0, 0.0]]]], &dev)?;
    // 250×250 masks, one channel, softmax + categorical cross-entropy: the question's setup.
    let ce = CrossEntropy::new();
    let bad = HeadChecker::new(&[8, 1, 250, 250], Activation::Softmax { axis: 1 }, &ce);
    let found = bad.check()?;
    let errors = rules(&found, Severity::Error);
    assert!(errors.contains(&"softmax-one-channel"), "{found:?}");
    assert!(errors.contains(&"categorical-ce-one-output"), "{found:?}");
    assert!(errors.contains(&"activation-before-logits-loss"), "{found:?}");
    let err = bad.enforce().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("sigmoid"), "{err}");
    assert!(matches!(bad.enforce(), Err(Error::HeadCheck { .. })));
    // The answer: identity output (logits) + sigmoid BCE from logits.
    let bce = BinaryCrossEntropy::new();
    let good = HeadChecker::new(&[1, 1, 2, 2], Activation::Identity, &bce).targets(&mask).metric_threshold(0.0);
    assert!(good.enforce()?.iter().all(|f| f.severity != Severity::Error));
    Ok(())
}

#[test]
fn targets_and_metrics_rules() -> Result<()> {
    let dev = Device::Cpu;
    let bce = BinaryCrossEntropy::new();
    // 0/255 masks.
    let m255 = Tensor::new(&[[[[0f32, 255.0]]]], &dev)?;
    let f = HeadChecker::new(&[1, 1, 1, 2], Activation::Identity, &bce).targets(&m255).check()?;
    assert!(f.iter().any(|x| x.rule == "targets-outside-unit-interval" && x.message.contains("255")));
    // One-hot targets with BCE over 26 classes: the "96% accuracy".
    let mut v = vec![0f32; 4 * 26];
    for (i, c) in [3, 7, 25, 0].iter().enumerate() {
        v[i * 26 + c] = 1.0;
    }
    let onehot = Tensor::from_vec(v, (4, 26), &dev)?;
    let f = HeadChecker::new(&[4, 26], Activation::Identity, &bce).targets(&onehot).check()?;
    let w = f.iter().find(|x| x.rule == "one-hot-with-bce").map(|x| x.message.clone()).unwrap_or_default();
    assert!(w.contains("96%") && w.contains("CrossEntropy"), "{w}");
    // Thresholding logits at 0.5.
    let f = HeadChecker::new(&[4, 1], Activation::Identity, &bce).metric_threshold(0.5).check()?;
    assert_eq!(rules(&f, Severity::Warning), vec!["threshold-on-logits"]);
    // Labels out of range; ignore_index respected; fewer classes than outputs.
    let ce = CrossEntropy::new();
    let labels = Tensor::new(&[0u32, 5, 255], &dev)?;
    let f = HeadChecker::new(&[3, 5], Activation::Identity, &ce).targets(&labels).ignore_index(255).check()?;
    assert_eq!(rules(&f, Severity::Error), vec!["labels-out-of-range"]);
    let labels = Tensor::new(&[0u32, 1, 255], &dev)?;
    let f = HeadChecker::new(&[3, 5], Activation::Identity, &ce).targets(&labels).ignore_index(255).check()?;
    assert!(rules(&f, Severity::Error).is_empty());
    assert_eq!(rules(&f, Severity::Info), vec!["fewer-classes-than-outputs"]);
    // The loss's own ignore_index is the checker's default (so the Trainer's check passes).
    let ce255 = CrossEntropy::new().ignore_index(255);
    let f = HeadChecker::new(&[3, 5], Activation::Identity, &ce255).targets(&labels).check()?;
    assert!(rules(&f, Severity::Error).is_empty(), "{f:?}");
    let f = HeadChecker::new(&[3, 5], Activation::Identity, &ce).targets(&labels).check()?;
    assert_eq!(rules(&f, Severity::Error), vec!["labels-out-of-range"]);
    // Dice and CE + Dice report it too (a WeightedSum passes its terms' value on).
    let dice = sconce_losses::RegionLoss::dice(sconce_losses::Mode::Multiclass).ignore_index(255);
    assert_eq!(sconce_core::Loss::ignore_index(&dice), Some(255));
    let both = sconce_losses::WeightedSum::new(vec![
        (1.0, Box::new(CrossEntropy::new()) as Box<dyn sconce_core::Loss>),
        (1.0, Box::new(dice)),
    ])?;
    let f = HeadChecker::new(&[3, 5], Activation::Identity, &both).targets(&labels).check()?;
    assert!(rules(&f, Severity::Error).is_empty(), "{f:?}");
    // ReLU feeding a classification loss.
    let f = HeadChecker::new(&[3, 5], Activation::Relu, &ce).check()?;
    assert!(f.iter().any(|x| x.rule == "activation-before-logits-loss" && x.message.contains("σ ≥ 0.5")));
    Ok(())
}

#[test]
fn bounded_output_for_regression_targets() -> Result<()> {
    let dev = Device::Cpu;
    let mse = ElementwiseLoss::new(PointLoss::Mse);
    let negative = Tensor::new(&[-3.0f32, -0.5, -2.0], &dev)?;
    let f = HeadChecker::new(&[3, 1], Activation::Relu, &mse).targets(&negative).check()?;
    let e = f.iter().find(|x| x.rule == "bounded-output-for-targets").map(|x| (x.severity, x.message.clone()));
    let (sev, msg) = e.unwrap_or((Severity::Info, String::new()));
    assert_eq!(sev, Severity::Error);
    assert!(msg.contains("identity"), "{msg}");
    let mixed = Tensor::new(&[-3.0f32, 0.5, 2.0], &dev)?;
    let f = HeadChecker::new(&[3, 1], Activation::Sigmoid, &mse).targets(&mixed).check()?;
    assert_eq!(rules(&f, Severity::Warning), vec!["bounded-output-for-targets"]);
    let f = HeadChecker::new(&[3, 1], Activation::Identity, &mse).targets(&negative).check()?;
    assert!(f.is_empty(), "{f:?}");
    Ok(())
}

#[test]
fn probability_targets_half_precision_and_empty_class_policy() -> Result<()> {
    let dev = Device::Cpu;
    let ce = CrossEntropy::new();
    // Multi-hot probability targets with softmax cross-entropy.
    let multi = Tensor::new(&[[1f32, 1.0, 0.0], [0.0, 1.0, 1.0]], &dev)?;
    let f = HeadChecker::new(&[2, 3], Activation::Identity, &ce).targets(&multi).check()?;
    assert!(f.iter().any(|x| x.rule == "multi-hot-with-softmax"), "{f:?}");
    let f = HeadChecker::new(&[2, 3], Activation::Identity, &ce).output_dtype(candle_core::DType::F16).check()?;
    assert_eq!(rules(&f, Severity::Warning), vec!["half-precision-loss"]);
    let dice = sconce_losses::RegionLoss::dice(sconce_losses::Mode::Multiclass);
    let f = HeadChecker::new(&[2, 3, 4, 4], Activation::Identity, &dice).check()?;
    assert_eq!(rules(&f, Severity::Info), vec!["empty-class-policy"]);
    Ok(())
}

#[test]
fn sample_weights_follow_keras_reductions() -> Result<()> {
    use sconce_core::Loss;
    use sconce_losses::{Reduction, WeightNorm, weighted_mean};
    let dev = Device::Cpu;
    let pred = Tensor::new(&[[1f32, 3.0], [0.0, 0.0], [2.0, 2.0]], &dev)?;
    let target = Tensor::zeros((3, 2), candle_core::DType::F32, &dev)?;
    let per = ElementwiseLoss::new(PointLoss::Mse).reduction(Reduction::None).loss(&pred, &target)?;
    // Per-sample means: 5, 0, 4; weights 1, 2, 0.5.
    let w = Tensor::new(&[1f32, 2.0, 0.5], &dev)?;
    let by_batch = weighted_mean(&per, &w, WeightNorm::BatchSize)?.to_scalar::<f32>()?;
    let by_weights = weighted_mean(&per, &w, WeightNorm::SumOfWeights)?.to_scalar::<f32>()?;
    assert!((by_batch - (5.0 + 0.0 + 2.0) / 3.0).abs() < 1e-6);
    assert!((by_weights - 7.0 / 3.5).abs() < 1e-6);
    assert!(weighted_mean(&per, &Tensor::new(&[1f32, -1.0, 0.0], &dev)?, WeightNorm::BatchSize).is_err());
    assert!(weighted_mean(&per, &Tensor::new(&[1f32, 1.0], &dev)?, WeightNorm::BatchSize).is_err());
    assert!(weighted_mean(&per, &Tensor::zeros(3, candle_core::DType::F32, &dev)?, WeightNorm::SumOfWeights).is_err());
    Ok(())
}
