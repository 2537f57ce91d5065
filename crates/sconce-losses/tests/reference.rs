//! Every loss against PyTorch / segmentation_models_pytorch (fixtures from
//! `scripts/fixtures_losses.py`): value and logit gradient in f32 and f64, including logits of
//! ±1e4, ignored labels, absent classes and empty masks.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Var};
use sconce_core::Loss;
use sconce_losses::{
    BinaryCrossEntropy, CategoricalFocal, CategoricalHinge, CrossEntropy, ElementwiseLoss, FocalLoss, KlDivergence,
    LovaszLoss, Mode, PointLoss, Poisson, Reduction, RegionLoss, WeightedSum,
};
use sconce_testutil::{check_case, load};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn f64s(v: &serde_json::Value) -> Option<Vec<f64>> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
}

fn reduction(case: &serde_json::Value) -> Reduction {
    match case["reduction"].as_str() {
        Some("sum") => Reduction::Sum,
        Some("none") => Reduction::None,
        _ => Reduction::Mean,
    }
}

fn mode(case: &serde_json::Value) -> Result<Mode> {
    Ok(match case["mode"].as_str() {
        Some("binary") => Mode::Binary,
        Some("multiclass") => Mode::Multiclass,
        Some("multilabel") => Mode::Multilabel,
        other => bail!("unknown mode {other:?}"),
    })
}

fn build(case: &serde_json::Value) -> Result<Box<dyn Loss>> {
    let op = case["op"].as_str().context("op")?;
    Ok(match op {
        "bce" => {
            let mut l = BinaryCrossEntropy::new().reduction(reduction(case));
            if let Some(w) = f64s(&case["pos_weight"]) {
                l = l.pos_weight(w);
            }
            if let Some(s) = case["label_smoothing"].as_f64() {
                l = l.label_smoothing(s);
            }
            Box::new(l)
        }
        "ce" => {
            let mut l = CrossEntropy::new().reduction(reduction(case));
            if let Some(w) = f64s(&case["class_weights"]) {
                l = l.class_weights(w);
            }
            if let Some(i) = case["ignore_index"].as_i64() {
                l = l.ignore_index(i);
            }
            if let Some(s) = case["label_smoothing"].as_f64() {
                l = l.label_smoothing(s);
            }
            Box::new(l)
        }
        "dice" | "jaccard" | "tversky" => {
            let m = mode(case)?;
            let mut l = match op {
                "dice" => RegionLoss::dice(m),
                "jaccard" => RegionLoss::jaccard(m),
                _ => RegionLoss::tversky(
                    m,
                    case["alpha"].as_f64().context("alpha")?,
                    case["beta"].as_f64().context("beta")?,
                ),
            };
            if let Some(s) = case["smooth"].as_f64() {
                l = l.smooth(s);
            }
            if case["log_loss"].as_bool() == Some(true) {
                l = l.log_loss(true);
            }
            if let Some(i) = case["ignore_index"].as_i64() {
                l = l.ignore_index(i);
            }
            if let Some(w) = f64s(&case["class_weights"]) {
                l = l.class_weights(w);
            }
            if let Some(g) = case["gamma"].as_f64() {
                l = l.gamma(g);
            }
            Box::new(l)
        }
        "focal" => {
            let mut l = FocalLoss::new(mode(case)?);
            if let Some(a) = case["alpha"].as_f64() {
                l = l.alpha(a);
            }
            if let Some(g) = case["gamma"].as_f64() {
                l = l.gamma(g);
            }
            if case["normalized"].as_bool() == Some(true) {
                l = l.normalized(true);
            }
            if let Some(i) = case["ignore_index"].as_i64() {
                l = l.ignore_index(i);
            }
            Box::new(l)
        }
        "mse" => Box::new(ElementwiseLoss::new(PointLoss::Mse)),
        "mae" => Box::new(ElementwiseLoss::new(PointLoss::Mae)),
        "huber" => Box::new(ElementwiseLoss::new(PointLoss::Huber { delta: case["delta"].as_f64().context("delta")? })),
        "log_cosh" => Box::new(ElementwiseLoss::new(PointLoss::LogCosh)),
        "hinge" => Box::new(ElementwiseLoss::new(PointLoss::Hinge)),
        "squared_hinge" => Box::new(ElementwiseLoss::new(PointLoss::SquaredHinge)),
        "lovasz" => {
            let mut l = LovaszLoss::new(mode(case)?);
            if case["per_image"].as_bool() == Some(true) {
                l = l.per_image(true);
            }
            if let Some(i) = case["ignore_index"].as_i64() {
                l = l.ignore_index(i);
            }
            Box::new(l)
        }
        "kl" => Box::new(KlDivergence::new()),
        "poisson" => Box::new(Poisson::new()),
        "categorical_hinge" => Box::new(CategoricalHinge::new()),
        "categorical_focal" => Box::new(CategoricalFocal {
            alpha: case["alpha"].as_f64().context("alpha")?,
            gamma: case["gamma"].as_f64().context("gamma")?,
            reduction: Reduction::Mean,
        }),
        "bce_plus_dice" => Box::new(WeightedSum::new(vec![
            (case["w_bce"].as_f64().context("w_bce")?, Box::new(BinaryCrossEntropy::new()) as Box<dyn Loss>),
            (case["w_dice"].as_f64().context("w_dice")?, Box::new(RegionLoss::dice(Mode::Binary))),
        ])?),
        other => bail!("unknown op {other}"),
    })
}

#[test]
fn every_loss_matches_the_reference_in_value_and_gradient() -> Result<()> {
    let fx = load(FIXTURES, "losses")?;
    assert!(fx.cases.len() >= 60, "only {} cases", fx.cases.len());
    let mut failures = Vec::new();
    for case in &fx.cases {
        let loss = build(case)?;
        let target = fx.get(case, "target")?;
        if let Err(e) = check_case(&fx, case, |x| Ok(loss.loss(x, &target)?)) {
            failures.push(format!("{e:#}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), fx.cases.len(), failures.join("\n"));
    Ok(())
}

#[test]
fn extreme_logits_match_element_by_element() -> Result<()> {
    // `assert_close` scales its absolute tolerance with the largest reference value (1e4
    // here), which would hide an error on the O(1) elements next to it: compare each element
    // of the per-element BCE and its gradient against its own magnitude.
    let fx = load(FIXTURES, "losses")?;
    let mut seen = 0;
    for case in fx.cases.iter().filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("bce_extreme_none"))) {
        let name = case["name"].as_str().context("name")?;
        let x = Var::from_tensor(&fx.get(case, "x0")?)?;
        let (rtol, atol) = if x.dtype() == DType::F64 { (1e-12, 1e-15) } else { (1e-6, 1e-7) };
        let y = build(case)?.loss(x.as_tensor(), &fx.get(case, "target")?)?;
        let gx = (&y * fx.get(case, "gy")?)?.sum_all()?.backward()?;
        let gx = gx.get(x.as_tensor()).context("gradient")?;
        for (what, ours, want) in [("value", &y, fx.get(case, "y")?), ("gradient", gx, fx.get(case, "gx0")?)] {
            let a = ours.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let b = want.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= rtol * q.abs() + atol, "{name} {what}[{i}]: {p} vs PyTorch {q}");
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 2, "the f32 and f64 extreme cases");
    Ok(())
}
