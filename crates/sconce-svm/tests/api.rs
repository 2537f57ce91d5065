//! The public API on problems with known answers: the candle `Fit`/`Predict` boundary, a
//! hard-margin solution computed by hand, one-vs-rest scores, ν's meaning, CV and grid search,
//! and the errors bad input gets.

use anyhow::{Result, ensure};
use candle_core::{Device, Tensor};
use sconce_core::{Fit, Predict, SeededRng};
use sconce_svm::{
    Features, Gamma, Grid, KernelType, SvmParams, SvmType, cross_validation, format_model, grid_search, parse_model,
    score,
};

#[test]
fn hard_margin_linear_solution_matches_the_closed_form() -> Result<()> {
    // x = ±1 with labels ±1: the maximum-margin separator is f(x) = x (w = 1, b = 0), with
    // α = ½ on both points; the dual objective is ½‖w‖² − Σα = ½ − 1.
    let x = Features::dense(2, 1, vec![-1.0, 1.0])?;
    let m = SvmParams::c_svc().kernel(KernelType::Linear).c(100.0).tolerance(1e-8).train(&x, &[-1.0, 1.0])?;
    let t = Features::dense(3, 1, vec![-2.0, 0.25, 3.0])?;
    let d = m.decision_values(&t)?;
    for (got, want) in d.iter().zip([-2.0, 0.25, 3.0]) {
        ensure!((got - want).abs() < 1e-9, "f = {got}, want {want}");
    }
    ensure!((m.info()[0].obj + 0.5).abs() < 1e-12, "obj {}", m.info()[0].obj);
    ensure!(m.sv_coef()[0].iter().all(|a| (a.abs() - 0.5).abs() < 1e-12));
    Ok(())
}

#[test]
fn binary_decision_values_are_positive_for_the_larger_label_whatever_the_order() -> Result<()> {
    // Class 1 at x > 0. LIBSVM's own values are positive for the first label it met; the
    // `Predict` boundary's are positive for label 1 either way (scikit-learn's convention).
    let dev = Device::Cpu;
    for first in [0u32, 1] {
        let ys: Vec<u32> = (0..8).map(|i| if i % 2 == 0 { first } else { 1 - first }).collect();
        let xs: Vec<f32> =
            ys.iter().enumerate().map(|(i, &c)| (if c == 1 { 1.0 } else { -1.0 }) * (1.0 + i as f32 / 8.0)).collect();
        let x = Tensor::from_vec(xs, (8, 1), &dev)?;
        let m = SvmParams::c_svc().kernel(KernelType::Linear).fit(&x, &Tensor::from_vec(ys, 8, &dev)?)?;
        let d = Predict::decision_function(&m, &Tensor::from_vec(vec![-2f32, 2.0], (2, 1), &dev)?)?;
        let d = d.flatten_all()?.to_vec1::<f64>()?;
        ensure!(d[0] < 0.0 && d[1] > 0.0, "first label {first}: {d:?}");
        // LIBSVM's raw value keeps its own sign: positive for the first label met.
        let raw = m.decision_values(&Features::dense(1, 1, vec![2.0])?)?;
        ensure!((raw[0] > 0.0) == (first == 1), "first label {first}: raw {raw:?}");
    }
    Ok(())
}

#[test]
fn candle_tensors_at_the_boundary() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(vec![0f32, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 1.1, 0.0, 1.0, 0.1, 0.9], (6, 2), &dev)?;
    let y = Tensor::from_vec(vec![0u32, 0, 1, 1, 2, 2], 6, &dev)?;
    let m = SvmParams::c_svc().c(10.0).gamma(Gamma::Value(2.0)).fit(&x, &y)?;
    let p = Predict::predict(&m, &x)?.to_vec1::<f64>()?;
    ensure!(p == vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0], "{p:?}");
    ensure!(Predict::decision_function(&m, &x)?.dims() == [6, 3]);
    // Wrong feature count, wrong target length and NaN are errors, not panics.
    let bad = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
    ensure!(Predict::predict(&m, &bad).is_err());
    ensure!(SvmParams::c_svc().fit(&x, &Tensor::zeros(5, candle_core::DType::U32, &dev)?).is_err());
    let nan = Tensor::from_vec(vec![f32::NAN, 0.0], (1, 2), &dev)?;
    ensure!(Predict::predict(&m, &nan).unwrap_err().to_string().contains("finite"));
    Ok(())
}

fn blobs(n: usize, k: usize, seed: u64) -> (Features, Vec<f64>) {
    let mut rng = SeededRng::new(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % k;
        let angle = c as f64 * std::f64::consts::TAU / k as f64;
        x.push(2.0 * angle.cos() + 0.6 * rng.normal());
        x.push(2.0 * angle.sin() + 0.6 * rng.normal());
        y.push(c as f64 + 1.0);
    }
    (Features::dense(n, 2, x).expect("finite"), y)
}

#[test]
fn one_vs_rest_scores_pick_the_voted_class() -> Result<()> {
    let (x, y) = blobs(120, 4, 1);
    let m = SvmParams::c_svc().train(&x, &y)?;
    let ovr = m.decision_function_ovr(&x)?;
    let pred = m.predict(&x)?;
    for (r, p) in pred.iter().enumerate() {
        let row = &ovr[r * 4..(r + 1) * 4];
        let best = (0..4).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        ensure!(f64::from(m.labels()[best]) == *p, "row {r}: ovr argmax {} vs vote {p}", m.labels()[best]);
    }
    ensure!(score(SvmType::CSvc, &y, &pred).accuracy.unwrap_or(0.0) > 0.85);
    Ok(())
}

#[test]
fn nu_bounds_the_fraction_of_outliers_and_support_vectors() -> Result<()> {
    let (x, _) = blobs(400, 1, 2);
    for nu in [0.05, 0.2, 0.5] {
        let m = SvmParams::one_class().nu(nu).train(&x, &[])?;
        let out = m.predict(&x)?.iter().filter(|&&v| v < 0.0).count() as f64 / 400.0;
        let sv = m.total_sv() as f64 / 400.0;
        // Schölkopf: outlier fraction ≤ ν ≤ SV fraction (up to points on the boundary).
        ensure!(out <= nu + 0.02 && sv >= nu - 1e-9, "ν {nu}: outliers {out}, SVs {sv}");
    }
    Ok(())
}

#[test]
fn cross_validation_and_grid_search() -> Result<()> {
    let (x, y) = blobs(160, 3, 3);
    let p = SvmParams::c_svc();
    let pred = cross_validation(&p, &x, &y, 5)?;
    let acc = score(SvmType::CSvc, &y, &pred).accuracy.unwrap_or(0.0);
    ensure!(acc > 0.8, "5-fold accuracy {acc}");
    ensure!(cross_validation(&p, &x, &y, 5)? == pred, "seeded folds are reproducible");
    let grid = Grid { c: vec![0.01, 1.0, 100.0], gamma: vec![0.01, 1.0], nu: vec![], p: vec![] };
    let r = grid_search(&p, &grid, &x, &y, 4)?;
    ensure!(r.all.len() == 6);
    let best = r.best.score.accuracy.unwrap_or(0.0);
    ensure!(r.all.iter().all(|g| g.score.accuracy.unwrap_or(0.0) <= best));
    ensure!(best >= acc - 0.05);
    // Regression CV reports MSE and R².
    let t: Vec<f64> = (0..160).map(|i| (i as f64 / 20.0).sin()).collect();
    let xr = Features::dense(160, 1, (0..160).map(|i| i as f64 / 20.0).collect())?;
    let pr = cross_validation(&SvmParams::epsilon_svr().c(10.0).gamma(Gamma::Value(1.0)), &xr, &t, 5)?;
    let s = score(SvmType::EpsilonSvr, &t, &pr);
    ensure!(s.mse.unwrap_or(1.0) < 0.02 && s.r2.unwrap_or(0.0) > 0.9, "{s:?}");
    ensure!(cross_validation(&p, &x, &y, 1).is_err());
    Ok(())
}

#[test]
fn models_written_by_sconce_read_back_and_predict_the_same() -> Result<()> {
    let (x, y) = blobs(90, 3, 4);
    for p in
        [SvmParams::c_svc(), SvmParams::nu_svc().nu(0.3), SvmParams::c_svc().kernel(KernelType::Chi2).probability(true)]
    {
        let xs = if p.kernel == KernelType::Chi2 {
            let v: Vec<f64> =
                (0..x.rows()).flat_map(|r| x.row(r).entries().into_iter().map(|(_, v)| v.abs())).collect();
            Features::dense(x.rows(), 2, v)?
        } else {
            x.clone()
        };
        let m = p.train(&xs, &y)?;
        let text = format_model(&m);
        let back = parse_model(&text, "mem")?;
        ensure!(format_model(&back) == text, "round trip changed the file");
        // SV values are written with 8 digits (LIBSVM's %.8g), so predictions agree to ~1e-7.
        let (a, b) = (m.decision_values(&xs)?, back.decision_values(&xs)?);
        ensure!(a.iter().zip(&b).all(|(u, v)| (u - v).abs() < 1e-6), "decision values moved");
    }
    Ok(())
}
