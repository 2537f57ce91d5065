//! The ready-made evaluators against hand-counted confusion: the numbers the `segment` and
//! `classify` examples print (IoU, Dice, pixel accuracy; accuracy, macro F1 and the per-output
//! "binary accuracy").

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use sconce_train::{ClassificationEvaluator, Evaluator, SegmentationEvaluator};

fn get(v: &[(String, f64)], name: &str) -> Result<f64> {
    v.iter().find(|(k, _)| k == name).map(|(_, x)| *x).with_context(|| format!("{name} missing from {v:?}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn segmentation_metrics_from_one_logit_and_from_class_scores() -> Result<()> {
    let dev = Device::Cpu;
    let mut e = SegmentationEvaluator::new(2)?;
    assert!(e.compute().is_err(), "nothing evaluated yet");
    // One logit per pixel (object where ≥ 0) and a [N, 1, H, W] 0/1 mask.
    let logits = Tensor::new(&[[[[3.0f32, -1.0], [0.5, -4.0]]]], &dev)?;
    let mask = Tensor::new(&[[[[1f32, 0.0], [0.0, 0.0]]]], &dev)?;
    e.update(&logits, &mask)?;
    let v = e.compute()?;
    // Object: tp 1, fp 1, fn 0 → IoU 1/2, Dice 2/3; background: tp 2, fn 1 → IoU 2/3.
    assert!(close(get(&v, "iou")?, 0.5) && close(get(&v, "dice")?, 2.0 / 3.0), "{v:?}");
    assert!(close(get(&v, "pixel_accuracy")?, 0.75) && close(get(&v, "mean_iou")?, (0.5 + 2.0 / 3.0) / 2.0));
    e.reset();
    assert!(e.compute().is_err(), "reset clears the counts");

    // Three classes: arg-max over [N, 3, H, W] scores against [N, H, W] label maps.
    let mut e = SegmentationEvaluator::new(3)?;
    let scores = Tensor::new(&[[[[5f32, 0.0]], [[0.0, 5.0]], [[1.0, 1.0]]]], &dev)?; // predicts [0, 1]
    e.update(&scores, &Tensor::new(&[[[0u32, 2]]], &dev)?)?;
    let v = e.compute()?;
    // Class 0 right (IoU 1), class 1 a false positive (IoU 0), class 2 missed (IoU 0).
    assert!(close(get(&v, "mean_iou")?, 1.0 / 3.0) && close(get(&v, "pixel_accuracy")?, 0.5), "{v:?}");
    assert!(SegmentationEvaluator::new(1).is_err());
    Ok(())
}

#[test]
fn classification_metrics_and_the_binary_accuracy_of_one_hot_targets() -> Result<()> {
    let dev = Device::Cpu;
    let logits = Tensor::new(&[[2f32, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, -1.0, -1.0]], &dev)?;
    let labels = [0u32, 1, 2, 2];
    // Arg-max: 3 of 4 right. F1 per class: 2/3 (tp 1, fp 1), 1, 2/3 (tp 1, fn 1).
    let mut e = ClassificationEvaluator::new(3)?;
    e.update(&logits, &Tensor::new(&labels, &dev)?)?;
    let v = e.compute()?;
    assert!(close(get(&v, "accuracy")?, 0.75) && close(get(&v, "macro_f1")?, 7.0 / 9.0), "{v:?}");
    assert!(get(&v, "binary_accuracy").is_err(), "no binary accuracy for class-index targets");
    // One-hot targets (the BCE setup): the same arg-max metrics, plus the per-output
    // accuracy of logit ≥ 0 against the 0/1 targets: only the last row's outputs 0 and 2 are
    // wrong, 10 of 12.
    let one_hot: Vec<f32> = labels.iter().flat_map(|&l| (0..3).map(move |c| f32::from(u8::from(c == l)))).collect();
    e.reset();
    e.update(&logits, &Tensor::from_vec(one_hot, (4, 3), &dev)?)?;
    let v = e.compute()?;
    assert!(close(get(&v, "accuracy")?, 0.75) && close(get(&v, "binary_accuracy")?, 10.0 / 12.0), "{v:?}");
    // One logit per sample and [N, 1] 0/1 targets: class 1 where the logit is ≥ 0.
    let mut b = ClassificationEvaluator::new(2)?;
    let one = Tensor::new(&[[2f32], [-1.0], [0.5], [-3.0]], &dev)?;
    b.update(&one, &Tensor::new(&[[1f32], [0.0], [0.0], [1.0]], &dev)?)?;
    assert!(close(get(&b.compute()?, "accuracy")?, 0.5), "{:?}", b.compute()?);
    Ok(())
}
