//! Classification metrics against scikit-learn (fixtures from `scripts/fixtures_metrics.py`),
//! to 1e-12, over random and edge-case label sets, plus the properties: micro-F1 equals
//! accuracy for single-label data, and merging confusion matrices equals counting the
//! concatenated data.

use anyhow::{Context, Result, bail};
use sconce_core::SeededRng;
use sconce_metrics::{
    Average, ConfusionMatrix, ZeroDivision, accuracy, balanced_accuracy, cohen_kappa, matthews_corrcoef, per_class_prf,
    precision_recall_fscore,
};

fn close(what: &str, ours: f64, want: &serde_json::Value) -> Result<()> {
    match want.as_f64() {
        None if ours.is_nan() => Ok(()),
        None => bail!("{what}: {ours} vs reference NaN"),
        Some(w) if (ours - w).abs() <= 1e-12 * w.abs().max(1.0) => Ok(()),
        Some(w) => bail!("{what}: {ours} vs reference {w}"),
    }
}

fn labels(v: &serde_json::Value) -> Result<Vec<u32>> {
    v.as_array().context("labels")?.iter().map(|x| x.as_u64().map(|u| u as u32).context("label")).collect()
}

#[test]
fn classification_metrics_match_scikit_learn() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/classification.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let cases = fx["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 10);
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().context("name")?;
        let k = case["num_classes"].as_u64().context("k")? as usize;
        let mut cm = ConfusionMatrix::new(k)?;
        cm.update(&labels(&case["y_true"])?, &labels(&case["y_pred"])?)?;
        close(&format!("{name} accuracy"), accuracy(&cm), &case["accuracy"])?;
        close(&format!("{name} balanced accuracy"), balanced_accuracy(&cm), &case["balanced_accuracy"])?;
        close(&format!("{name} mcc"), matthews_corrcoef(&cm), &case["mcc"])?;
        close(&format!("{name} kappa"), cohen_kappa(&cm), &case["kappa"])?;
        for r in case["prf"].as_array().context("prf")? {
            let beta = r["beta"].as_f64().context("beta")?;
            let zd = match r["zero_division"].as_str() {
                Some("zero") => ZeroDivision::Zero,
                Some("one") => ZeroDivision::One,
                _ => ZeroDivision::NaN,
            };
            let tag = format!("{name} {} beta={beta} zd={:?}", r["average"], zd);
            let avg = match r["average"].as_str() {
                Some("micro") => Average::Micro,
                Some("macro") => Average::Macro,
                Some("weighted") => Average::Weighted,
                Some("binary") => Average::Binary { pos_label: r["pos_label"].as_u64().context("pos")? as usize },
                Some("none") => {
                    let pc = per_class_prf(&cm, beta, zd)?;
                    let want_labels: Vec<usize> = labels(&r["labels"])?.into_iter().map(|v| v as usize).collect();
                    assert_eq!(pc.classes, want_labels, "{tag}");
                    for (i, _) in pc.classes.iter().enumerate() {
                        close(&format!("{tag} precision[{i}]"), pc.precision[i], &r["precision"][i])?;
                        close(&format!("{tag} recall[{i}]"), pc.recall[i], &r["recall"][i])?;
                        close(&format!("{tag} f[{i}]"), pc.f_score[i], &r["f"][i])?;
                        assert_eq!(Some(pc.support[i]), r["support"][i].as_u64(), "{tag}");
                    }
                    checked += 1;
                    continue;
                }
                other => bail!("unknown average {other:?}"),
            };
            let prf = precision_recall_fscore(&cm, beta, avg, zd)?;
            close(&format!("{tag} precision"), prf.precision, &r["precision"])?;
            close(&format!("{tag} recall"), prf.recall, &r["recall"])?;
            close(&format!("{tag} f"), prf.f_score, &r["f"])?;
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} comparisons");
    Ok(())
}

#[test]
fn micro_f1_equals_accuracy_and_merging_equals_concatenating() -> Result<()> {
    let mut rng = SeededRng::new(8);
    for round in 0..50 {
        let k = 2 + rng.below(6) as usize;
        let draw = |rng: &mut SeededRng, n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(k as u64) as u32).collect() };
        let (n1, n2) = (1 + rng.below(40) as usize, 1 + rng.below(40) as usize);
        let (t1, p1, t2, p2) = (draw(&mut rng, n1), draw(&mut rng, n1), draw(&mut rng, n2), draw(&mut rng, n2));
        let mut a = ConfusionMatrix::new(k)?;
        a.update(&t1, &p1)?;
        let mut b = ConfusionMatrix::new(k)?;
        b.update(&t2, &p2)?;
        let mut all = ConfusionMatrix::new(k)?;
        all.update(&[t1.clone(), t2.clone()].concat(), &[p1.clone(), p2.clone()].concat())?;
        a.merge(&b)?;
        assert_eq!(a, all, "round {round}");
        let micro = precision_recall_fscore(&all, 1.0, Average::Micro, ZeroDivision::Zero)?;
        assert!((micro.f_score - accuracy(&all)).abs() < 1e-12, "round {round}");
        assert!((micro.precision - micro.recall).abs() < 1e-12);
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> Result<()> {
    assert!(ConfusionMatrix::new(0).is_err());
    let mut cm = ConfusionMatrix::new(3)?;
    assert!(cm.update(&[0, 1], &[0]).is_err());
    assert!(cm.update(&[0, 3], &[0, 1]).is_err());
    let mut ignoring = ConfusionMatrix::new(3)?.with_ignore_index(255);
    ignoring.update(&[0, 255, 2], &[0, 1, 1])?;
    assert_eq!(ignoring.total(), 2);
    assert!(cm.merge(&ConfusionMatrix::new(4)?).is_err());
    assert!(precision_recall_fscore(&cm, -1.0, Average::Macro, ZeroDivision::Zero).is_err());
    assert!(precision_recall_fscore(&cm, 1.0, Average::Binary { pos_label: 7 }, ZeroDivision::Zero).is_err());
    // Scores from tensors: arg-max over the class axis.
    let dev = candle_core::Device::Cpu;
    let scores = candle_core::Tensor::new(&[[0.1f32, 0.9, 0.0], [2.0, 0.0, 1.0]], &dev)?;
    let truth = candle_core::Tensor::new(&[1u32, 2], &dev)?;
    let mut cm = ConfusionMatrix::new(3)?;
    cm.update_tensors(&truth, &scores)?;
    assert_eq!((cm.get(1, 1), cm.get(2, 0)), (1, 1));
    let bad = candle_core::Tensor::new(&[0.5f32, 1.0], &dev)?;
    assert!(cm.update_tensors(&bad, &truth).is_err());
    Ok(())
}

fn fixture() -> Result<serde_json::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/classification.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn floats(v: &serde_json::Value) -> Result<Vec<f64>> {
    v.as_array().context("array")?.iter().map(|x| x.as_f64().context("number")).collect()
}

#[test]
fn segmentation_scores_match_scikit_learn_and_torchmetrics() -> Result<()> {
    use sconce_metrics::{EmptyPolicy, SegmentationScores};
    let fx = fixture()?;
    let cases = fx["segmentation"].as_array().context("segmentation")?;
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().context("name")?;
        let k = case["num_classes"].as_u64().context("k")? as usize;
        let shape: Vec<usize> =
            case["shape"].as_array().context("shape")?.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect();
        let (yt, yp) = (labels(&case["y_true"])?, labels(&case["y_pred"])?);
        let per = shape[1] * shape[2];
        let mut s = SegmentationScores::new(k, EmptyPolicy::Exclude)?;
        for i in 0..shape[0] {
            s.update_image(&yt[i * per..(i + 1) * per], &yp[i * per..(i + 1) * per])?;
        }
        for (what, ours, want) in [
            ("iou", s.iou(), &case["iou"]),
            ("dice", s.dice(), &case["dice"]),
            ("per_image_iou", s.per_image_iou(), &case["per_image_iou"]),
            ("per_image_dice", s.per_image_dice(), &case["per_image_dice"]),
        ] {
            for (c, v) in ours.iter().enumerate() {
                close(&format!("{name} {what}[{c}]"), *v, &want[c])?;
            }
        }
        close(&format!("{name} mean_iou"), s.mean_iou(), &case["mean_iou"])?;
        close(&format!("{name} mean_dice"), s.mean_dice(), &case["mean_dice"])?;
        close(&format!("{name} pixel_accuracy"), s.pixel_accuracy(), &case["pixel_accuracy"])?;
        // The tensor entry point agrees with the slice one.
        let dev = candle_core::Device::Cpu;
        let t = candle_core::Tensor::from_vec(yt.clone(), shape.as_slice(), &dev)?;
        let p = candle_core::Tensor::from_vec(yp.clone(), shape.as_slice(), &dev)?;
        let mut s2 = SegmentationScores::new(k, EmptyPolicy::Exclude)?;
        s2.update(&t, &p)?;
        assert_eq!(s2.confusion(), s.confusion(), "{name}");
    }
    Ok(())
}

#[test]
fn empty_policy_score_counts_absent_classes() -> Result<()> {
    use sconce_metrics::{EmptyPolicy, SegmentationScores};
    // An all-background image predicted perfectly: the object class is absent from both.
    let mut ex = SegmentationScores::new(2, EmptyPolicy::Exclude)?;
    ex.update_image(&[0, 0, 0, 0], &[0, 0, 0, 0])?;
    assert!(ex.iou()[1].is_nan());
    assert_eq!(ex.mean_iou(), 1.0);
    let mut one = SegmentationScores::new(2, EmptyPolicy::Score(1.0))?;
    one.update_image(&[0, 0, 0, 0], &[0, 0, 0, 0])?;
    assert_eq!(one.iou(), vec![1.0, 1.0]);
    assert!(SegmentationScores::new(2, EmptyPolicy::Score(f64::NAN)).is_err());
    Ok(())
}

#[test]
fn regression_metrics_match_scikit_learn() -> Result<()> {
    use sconce_metrics::RegressionMetrics;
    let fx = fixture()?;
    for case in fx["regression"].as_array().context("regression")? {
        let name = case["name"].as_str().context("name")?;
        let (yt, yp) = (floats(&case["y_true"])?, floats(&case["y_pred"])?);
        // Two halves, streamed: the result does not depend on the batching.
        let mut m = RegressionMetrics::new();
        let h = yt.len() / 2;
        m.update(&yt[..h], &yp[..h])?;
        m.update(&yt[h..], &yp[h..])?;
        for (what, ours) in
            [("mse", m.mse()), ("mae", m.mae()), ("r2", m.r2()), ("explained_variance", m.explained_variance())]
        {
            // Shifted sums vs NumPy's two-pass sums: agree to 1e-12 relative.
            let want = case[what].as_f64().context(what)?;
            assert!((ours - want).abs() <= 1e-12 * want.abs().max(1.0), "{name} {what}: {ours} vs {want}");
        }
    }
    let mut m = RegressionMetrics::new();
    assert!(m.update(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    assert!(m.update(&[1.0], &[1.0, 2.0]).is_err());
    Ok(())
}

#[test]
fn ranking_and_calibration_match_scikit_learn_and_torchmetrics() -> Result<()> {
    use sconce_metrics::{
        OvrAverage, average_precision, average_precision_ovr, brier, expected_calibration_error, roc_auc, roc_auc_ovr,
    };
    let fx = fixture()?;
    let cases = fx["ranking"].as_array().context("ranking")?;
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().context("name")?;
        let k = case["classes"].as_u64().context("classes")? as usize;
        let probs = floats(&case["probs"])?;
        let y = labels(&case["labels"])?;
        for (avg, tag) in [(OvrAverage::Macro, "macro"), (OvrAverage::Weighted, "weighted")] {
            close(&format!("{name} roc_auc {tag}"), roc_auc_ovr(&probs, &y, k, avg)?, &case[format!("roc_auc_{tag}")])?;
            close(&format!("{name} ap {tag}"), average_precision_ovr(&probs, &y, k, avg)?, &case[format!("ap_{tag}")])?;
        }
        let col1: Vec<f64> = probs.iter().skip(1).step_by(k).copied().collect();
        let is1: Vec<bool> = y.iter().map(|&l| l == 1).collect();
        close(&format!("{name} binary auc"), roc_auc(&col1, &is1)?, &case["roc_auc_binary_class1"])?;
        close(&format!("{name} binary ap"), average_precision(&col1, &is1)?, &case["ap_binary_class1"])?;
        close(&format!("{name} brier"), brier(&probs, &y, k)?, &case["brier"])?;
        // torchmetrics accumulates the calibration error in f32.
        let ece = expected_calibration_error(&probs, &y, k, 15)?;
        let want = case["ece"].as_f64().context("ece")?;
        assert!((ece - want).abs() < 1e-6, "{name} ece: {ece} vs {want}");
    }
    // Undefined or bad input.
    assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_err());
    assert_eq!(average_precision(&[0.1, 0.2], &[false, false])?, 0.0);
    assert!(roc_auc(&[0.1, f64::NAN], &[true, false]).is_err());
    assert!(expected_calibration_error(&[0.5, 1.5], &[0], 2, 15).is_err());
    assert!(roc_auc_ovr(&[0.5, 0.5], &[0, 1], 2, OvrAverage::Macro).is_err());
    Ok(())
}

#[test]
fn classification_report_is_scikit_learns_text() -> Result<()> {
    use sconce_metrics::ClassificationReport;
    let fx = fixture()?;
    for case in fx["cases"].as_array().context("cases")? {
        let name = case["name"].as_str().context("name")?;
        let k = case["num_classes"].as_u64().context("k")? as usize;
        let mut cm = ConfusionMatrix::new(k)?;
        cm.update(&labels(&case["y_true"])?, &labels(&case["y_pred"])?)?;
        let report = ClassificationReport::new(&cm, None)?;
        let ours = report.to_text(4);
        // scikit-learn prints the supports as floats ("2.0") in some degenerate cases (all scores
        // zero); that is an artefact of its array dtypes, not a format to copy.
        let want: String = case["report"]
            .as_str()
            .context("report")?
            .lines()
            .map(|l| match l.strip_suffix(".0").and_then(|int| int.rsplit_once(' ')) {
                Some((head, num)) => format!("{head}   {num}"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(ours.trim_end(), want.trim_end(), "{name}:\nours:\n{ours}\nscikit-learn:\n{want}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json())?;
        assert!(json["macro avg"]["f1-score"].is_number() && json["accuracy"].is_number(), "{name}");
    }
    Ok(())
}

#[test]
fn classification_report_takes_zero_division() -> Result<()> {
    use sconce_metrics::ClassificationReport;
    // Class 2 is present once but never predicted: its precision is 0/0, its recall 0/1 and
    // its F1 (2·tp / (2·tp + fp + fn)) 0/1.
    let mut cm = ConfusionMatrix::new(3)?;
    cm.update(&[0, 0, 1, 2], &[0, 1, 1, 1])?;
    let row = |r: &ClassificationReport, i: usize| (r.rows[i].precision, r.rows[i].recall, r.rows[i].f1);
    let zero = ClassificationReport::new(&cm, None)?;
    let one = ClassificationReport::with_zero_division(&cm, None, ZeroDivision::One)?;
    assert_eq!(row(&zero, 2), (0.0, 0.0, 0.0));
    assert_eq!(row(&one, 2), (1.0, 0.0, 0.0));
    // Classes 0 and 1 are unaffected: precision 1 and 1/3, recall 1/2 and 1.
    assert_eq!((row(&one, 0).0, row(&one, 0).1), (1.0, 0.5));
    assert!((row(&zero, 1).0 - 1.0 / 3.0).abs() < 1e-12 && row(&zero, 1).1 == 1.0);
    // The macro average moves with the 0/0 class: (1 + 1/3 + z) / 3 for precision.
    let macro_p = |r: &ClassificationReport| r.rows[3].precision;
    assert!((macro_p(&zero) - (4.0 / 3.0) / 3.0).abs() < 1e-12 && (macro_p(&one) - (7.0 / 3.0) / 3.0).abs() < 1e-12);
    Ok(())
}

#[test]
fn top_k_and_thresholded_accuracy() -> Result<()> {
    use sconce_metrics::{Threshold, binary_accuracy, top_k_accuracy};
    let fx = fixture()?;
    for case in fx["ranking"].as_array().context("ranking")? {
        if case["top2"].is_null() {
            continue;
        }
        let k = case["classes"].as_u64().context("classes")? as usize;
        let ours = top_k_accuracy(&floats(&case["probs"])?, &labels(&case["labels"])?, k, 2)?;
        close("top2", ours, &case["top2"])?;
    }
    // Logits thresholded where they should be, and refused as probabilities.
    let logits = [-2.0, 0.5, 3.0, -0.1];
    let truth = [false, true, true, false];
    assert_eq!(binary_accuracy(&logits, &truth, Threshold::Logit(0.0))?, 1.0);
    assert!(binary_accuracy(&logits, &truth, Threshold::Probability(0.5)).is_err());
    assert_eq!(binary_accuracy(&[0.2, 0.6], &[false, true], Threshold::Probability(0.5))?, 1.0);
    Ok(())
}

#[test]
fn metric_set_summarises_a_segmentation_batch() -> Result<()> {
    use sconce_metrics::{MetricSet, Task};
    let dev = candle_core::Device::Cpu;
    // One-logit masks: positive where logit ≥ 0.
    let logits = candle_core::Tensor::new(&[[[[3.0f32, -1.0], [0.5, -4.0]]]], &dev)?;
    let masks = candle_core::Tensor::new(&[[[1u32, 0], [0, 0]]], &dev)?;
    let mut m = MetricSet::new(Task::Segmentation { classes: 2 })?;
    m.update(&logits, &masks)?;
    // Object: tp 1, fp 1, fn 0 → IoU ½; background: tp 2, fn 1 → IoU ⅔.
    let v = m.values();
    assert_eq!(v[0], ("pixel_accuracy", 0.75));
    assert!((v[1].1 - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    let json: serde_json::Value = serde_json::from_str(&m.json())?;
    assert!(json["mean_dice"].is_number());
    m.reset()?;
    assert!(m.values()[0].1.is_nan());
    Ok(())
}

#[test]
fn metric_set_reads_one_logit_as_a_binary_classifier_and_refuses_other_mismatches() -> Result<()> {
    use candle_core::DType;
    use sconce_core::Error;
    use sconce_metrics::{MetricSet, Task};
    let dev = candle_core::Device::Cpu;
    // [N, 1] logits of a sigmoid + BCE classifier: class 1 where logit ≥ 0 (arg-max over one
    // channel would call everything class 0).
    let logits = candle_core::Tensor::new(&[[2.0f32], [-1.0], [0.5], [-3.0]], &dev)?;
    let labels = candle_core::Tensor::new(&[1u32, 0, 0, 0], &dev)?;
    let mut m = MetricSet::new(Task::Multiclass { classes: 2 })?;
    m.update(&logits, &labels)?;
    assert_eq!(m.values()[0], ("accuracy", 0.75));
    // One logit for three classes, or two scores for three: errors naming the expected shape.
    for (task, dims) in [(Task::Multiclass { classes: 3 }, (4, 1)), (Task::Multiclass { classes: 3 }, (4, 2))] {
        let err = MetricSet::new(task)?.update(&candle_core::Tensor::zeros(dims, DType::F32, &dev)?, &labels);
        assert!(matches!(&err, Err(Error::Shape { .. })) && format!("{err:?}").contains("[N, 3, ...]"), "{err:?}");
    }
    let err = MetricSet::new(Task::Segmentation { classes: 3 })?.update(
        &candle_core::Tensor::zeros((1, 1, 2, 2), DType::F32, &dev)?,
        &candle_core::Tensor::zeros((1, 2, 2), DType::U32, &dev)?,
    );
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    Ok(())
}

#[test]
fn multilabel_counts_merge_reset_and_ignore_pairs() -> Result<()> {
    use sconce_metrics::{MultilabelAverage as A, MultilabelConfusion, Threshold};
    let fx = fixture()?;
    let case = &fx["multilabel"].as_array().context("multilabel")?[0];
    let k = case["labels"].as_u64().context("labels")? as usize;
    let (probs, targets) = (floats(&case["probs"])?, floats(&case["targets"])?);
    let rows = targets.len() / k;
    let th = vec![Threshold::Probability(0.5)];
    let mut whole = MultilabelConfusion::new(k, th.clone())?;
    whole.update(&probs, &targets)?;
    // Two workers' halves merged give the whole batch's scores, every average.
    let cut = rows / 2 * k;
    let (mut a, mut b) = (MultilabelConfusion::new(k, th.clone())?, MultilabelConfusion::new(k, th.clone())?);
    a.update(&probs[..cut], &targets[..cut])?;
    b.update(&probs[cut..], &targets[cut..])?;
    a.merge(&b)?;
    for avg in [A::Micro, A::Macro, A::Weighted, A::Samples] {
        assert_eq!(a.prf(1.0, avg, ZeroDivision::Zero)?, whole.prf(1.0, avg, ZeroDivision::Zero)?, "{avg:?}");
    }
    assert!(a.merge(&MultilabelConfusion::new(k + 1, th.clone())?).is_err());
    a.reset();
    assert!(a.prf(1.0, A::Micro, ZeroDivision::Zero).is_err(), "no samples after reset");
    // Ignored pairs count for nothing: marking every pair of label 0 as −1 gives the micro
    // scores of the other labels alone (computed here from their predictions).
    let mut marked = targets.clone();
    marked.iter_mut().step_by(k).for_each(|t| *t = -1.0);
    let mut ign = MultilabelConfusion::new(k, th.clone())?.ignore_value(-1.0)?;
    ign.update(&probs, &marked)?;
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    for (i, (&p, &t)) in probs.iter().zip(&targets).enumerate() {
        if i % k == 0 {
            continue;
        }
        let (p, t) = (p >= 0.5, t == 1.0);
        tp += f64::from(u8::from(p && t));
        fp += f64::from(u8::from(p && !t));
        fneg += f64::from(u8::from(!p && t));
    }
    let micro = ign.prf(1.0, A::Micro, ZeroDivision::Zero)?;
    assert!((micro.precision - tp / (tp + fp)).abs() < 1e-12 && (micro.recall - tp / (tp + fneg)).abs() < 1e-12);
    // Macro over the labels that have pairs: label 0 (all ignored) has no score.
    let mut others = MultilabelConfusion::new(k - 1, th.clone())?;
    let drop0 = |v: &[f64]| -> Vec<f64> { v.iter().enumerate().filter(|(i, _)| i % k != 0).map(|(_, x)| *x).collect() };
    others.update(&drop0(&probs), &drop0(&targets))?;
    assert_eq!(ign.prf(1.0, A::Macro, ZeroDivision::Zero)?, others.prf(1.0, A::Macro, ZeroDivision::Zero)?);
    for bad in [0.0, 1.0, f64::NAN] {
        assert!(MultilabelConfusion::new(k, th.clone())?.ignore_value(bad).is_err(), "{bad}");
    }
    // Without the ignore value −1 is an error, and nothing of the bad batch is counted.
    let mut strict = MultilabelConfusion::new(k, th)?;
    assert!(strict.update(&probs, &marked).is_err());
    assert!(strict.prf(1.0, A::Micro, ZeroDivision::Zero).is_err(), "a failed update counts nothing");
    Ok(())
}

/// The multi-label fixture cases with their counts at threshold 0.5.
fn multilabel_cases(
    fx: &serde_json::Value,
) -> Result<Vec<(&serde_json::Value, &str, sconce_metrics::MultilabelConfusion)>> {
    let mut out = Vec::new();
    for case in fx["multilabel"].as_array().context("multilabel")? {
        let name = case["name"].as_str().context("name")?;
        let k = case["labels"].as_u64().context("labels")? as usize;
        let mut m = sconce_metrics::MultilabelConfusion::new(k, vec![sconce_metrics::Threshold::Probability(0.5)])?;
        m.update(&floats(&case["probs"])?, &floats(&case["targets"])?)?;
        out.push((case, name, m));
    }
    Ok(out)
}

#[test]
fn multilabel_averages_match_scikit_learn() -> Result<()> {
    use sconce_metrics::{MultilabelAverage, MultilabelConfusion, Threshold};
    let fx = fixture()?;
    for (case, name, m) in multilabel_cases(&fx)? {
        for r in case["prf"].as_array().context("prf")? {
            let avg = match r["average"].as_str() {
                Some("micro") => MultilabelAverage::Micro,
                Some("macro") => MultilabelAverage::Macro,
                Some("weighted") => MultilabelAverage::Weighted,
                _ => MultilabelAverage::Samples,
            };
            let zd = match r["zero_division"].as_str() {
                Some("zero") => ZeroDivision::Zero,
                Some("one") => ZeroDivision::One,
                _ => ZeroDivision::NaN,
            };
            let prf = m.prf(1.0, avg, zd)?;
            let tag = format!("{name} {avg:?} {zd:?}");
            close(&format!("{tag} precision"), prf.precision, &r["precision"])?;
            close(&format!("{tag} recall"), prf.recall, &r["recall"])?;
            close(&format!("{tag} f"), prf.f_score, &r["f"])?;
        }
    }
    assert!(MultilabelConfusion::new(3, vec![Threshold::Logit(0.0); 2]).is_err());
    let mut m = MultilabelConfusion::new(2, vec![Threshold::Probability(0.5)])?;
    assert!(m.update(&[0.2, 3.0], &[0.0, 1.0]).is_err());
    assert!(m.update(&[0.2, 0.7], &[0.0, 0.5]).is_err());
    Ok(())
}

#[test]
fn segmentation_ignores_void_pixels() -> Result<()> {
    use sconce_metrics::{EmptyPolicy, SegmentationScores};
    let mut s = SegmentationScores::new(2, EmptyPolicy::Exclude)?.with_ignore_index(255);
    // The void pixel's prediction (1) must not count as a false positive.
    s.update_image(&[1, 0, 255, 0], &[1, 0, 1, 0])?;
    assert_eq!(s.iou(), vec![1.0, 1.0]);
    assert_eq!(s.confusion().total(), 3);
    Ok(())
}

#[test]
fn multilabel_report_is_scikit_learns_text() -> Result<()> {
    use sconce_metrics::{MultilabelConfusion, Threshold};
    let fx = fixture()?;
    for (case, name, m) in multilabel_cases(&fx)? {
        let ours = m.report(None, ZeroDivision::Zero)?.to_text(4);
        let want = case["report"].as_str().context("report")?;
        assert_eq!(ours.trim_end(), want.trim_end(), "{name}:\nours:\n{ours}\nscikit-learn:\n{want}");
    }
    let m = MultilabelConfusion::new(3, vec![Threshold::Probability(0.5)])?;
    assert!(m.report(None, ZeroDivision::Zero).is_err(), "no samples yet");
    assert!(m.report(Some(&["a"]), ZeroDivision::Zero).is_err(), "too few names");
    Ok(())
}
