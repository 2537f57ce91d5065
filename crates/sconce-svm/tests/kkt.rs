//! Property test: on random problems (sizes, kernels, C, ε, ν, class weights), the returned
//! solution satisfies the optimality conditions SMO stops on — the maximal KKT violation
//! `m(α) − M(α)`, recomputed here in f64 from the model alone, is within the tolerance — and
//! the dual constraints hold (box bounds, `yᵀα = 0`, `Σα = νl`).

use anyhow::{Result, ensure};
use sconce_core::SeededRng;
use sconce_svm::{Features, Gamma, KernelType, SvmModel, SvmParams};

/// Slack on top of `eps` for the `f32` kernel cache (LIBSVM's precision) and f64 rounding.
const SLACK: f64 = 2e-4;

fn random_problem(rng: &mut SeededRng) -> (Features, Vec<f64>, Vec<f64>) {
    let n = 20 + rng.below(100) as usize;
    let d = 1 + rng.below(6) as usize;
    let x: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let w: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    let mut labels = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    for r in 0..n {
        let s: f64 = (0..d).map(|k| x[r * d + k] * w[k]).sum::<f64>() + 0.5 * rng.normal();
        labels.push(if s > 0.0 { 1.0 } else { -1.0 });
        targets.push(s + 0.1 * (x[r * d] * 3.0).sin());
    }
    if labels.iter().all(|&l| l == labels[0]) {
        labels[0] = -labels[0];
    }
    (Features::dense(n, d, x).expect("finite"), labels, targets)
}

fn random_kernel(rng: &mut SeededRng, p: SvmParams) -> SvmParams {
    match rng.below(4) {
        0 => p.kernel(KernelType::Linear),
        1 => p
            .kernel(KernelType::Poly)
            .degree(2 + rng.below(2) as i32)
            .coef0(1.0)
            .gamma(Gamma::Value(rng.uniform(0.1, 1.0))),
        2 => p.kernel(KernelType::Sigmoid).gamma(Gamma::Value(rng.uniform(0.01, 0.2))).coef0(-0.5),
        _ => p.kernel(KernelType::Rbf).gamma(Gamma::Value(rng.uniform(0.05, 3.0))),
    }
}

/// Σⱼ coefⱼ K(svⱼ, xᵢ) for every training sample (the decision value plus rho).
fn g_values(m: &SvmModel, x: &Features) -> Result<Vec<f64>> {
    let dec = m.decision_values(x)?;
    Ok(dec.iter().map(|d| d + m.rho()[0]).collect())
}

/// Dual coefficient per training sample (0 for non-support vectors).
fn coefs(m: &SvmModel, n: usize) -> Vec<f64> {
    let mut a = vec![0.0; n];
    for (&i, &c) in m.sv_indices().iter().zip(&m.sv_coef()[0]) {
        a[i] = c;
    }
    a
}

fn violation(up: impl Iterator<Item = f64>, low: impl Iterator<Item = f64>) -> f64 {
    let m = up.fold(f64::NEG_INFINITY, f64::max);
    let mm = low.fold(f64::INFINITY, f64::min);
    if m.is_finite() && mm.is_finite() { m - mm } else { 0.0 }
}

#[test]
fn c_svc_solutions_satisfy_kkt() -> Result<()> {
    let mut rng = SeededRng::new(11);
    for case in 0..60 {
        let (x, y, _) = random_problem(&mut rng);
        let c = rng.uniform(0.1, 10.0);
        let w_neg = if case % 3 == 0 { rng.uniform(0.5, 3.0) } else { 1.0 };
        let p = random_kernel(&mut rng, SvmParams::c_svc().c(c).class_weight(-1, w_neg).shrinking(case % 2 == 0));
        let m = p.train(&x, &y)?;
        let n = y.len();
        let a = coefs(&m, n);
        let g = g_values(&m, &x)?;
        // Label +1 is the positive class (LIBSVM's ±1 rule); α = y·a.
        ensure!(m.labels()[0] == 1, "case {case}: labels {:?}", m.labels());
        let sum: f64 = a.iter().sum();
        let total: f64 = a.iter().map(|v| v.abs()).sum();
        ensure!(sum.abs() <= 1e-9 * total.max(1.0), "case {case}: yᵀα = {sum}");
        let bound = |i: usize| if y[i] > 0.0 { c } else { c * w_neg };
        let alpha: Vec<f64> = (0..n).map(|i| a[i] * y[i]).collect();
        for (i, &al) in alpha.iter().enumerate() {
            ensure!(al >= 0.0 && al <= bound(i) * (1.0 + 1e-12), "case {case}: α[{i}] = {al} ∉ [0, {}]", bound(i));
        }
        // −y_i G_i with G_i = y_i g_i − 1.
        let score = |i: usize| -(g[i]) + y[i];
        let up = (0..n).filter(|&i| (y[i] > 0.0 && alpha[i] < bound(i)) || (y[i] < 0.0 && alpha[i] > 0.0)).map(score);
        let low = (0..n).filter(|&i| (y[i] > 0.0 && alpha[i] > 0.0) || (y[i] < 0.0 && alpha[i] < bound(i))).map(score);
        let v = violation(up, low);
        ensure!(
            v <= p.eps + SLACK * (1.0 + total),
            "case {case}: KKT violation {v} (n {n}, kernel {:?}, C {c})",
            p.kernel
        );
    }
    Ok(())
}

#[test]
fn epsilon_svr_solutions_satisfy_kkt() -> Result<()> {
    let mut rng = SeededRng::new(12);
    for case in 0..40 {
        let (x, _, t) = random_problem(&mut rng);
        let (c, eps_tube) = (rng.uniform(0.1, 5.0), rng.uniform(0.0, 0.5));
        let p = random_kernel(&mut rng, SvmParams::epsilon_svr().c(c).epsilon(eps_tube).shrinking(case % 2 == 1));
        let m = p.train(&x, &t)?;
        let n = t.len();
        let b = coefs(&m, n);
        let g = g_values(&m, &x)?;
        let total: f64 = b.iter().map(|v| v.abs()).sum();
        ensure!(b.iter().sum::<f64>().abs() <= 1e-9 * total.max(1.0), "case {case}: Σβ ≠ 0");
        ensure!(b.iter().all(|v| v.abs() <= c * (1.0 + 1e-12)), "case {case}: |β| > C");
        // Variables α (y=+1) and α* (y=−1) of LIBSVM's 2l problem.
        let (al, al_s): (Vec<f64>, Vec<f64>) = b.iter().map(|&v| (v.max(0.0), (-v).max(0.0))).unzip();
        let s_a = |i: usize| t[i] - eps_tube - g[i]; // −y·G for α
        let s_b = |i: usize| t[i] + eps_tube - g[i]; // −y·G for α*
        let up = (0..n).filter(|&i| al[i] < c).map(s_a).chain((0..n).filter(|&i| al_s[i] > 0.0).map(s_b));
        let low = (0..n).filter(|&i| al[i] > 0.0).map(s_a).chain((0..n).filter(|&i| al_s[i] < c).map(s_b));
        let v = violation(up, low);
        ensure!(v <= p.eps + SLACK * (1.0 + total), "case {case}: KKT violation {v}");
    }
    Ok(())
}

#[test]
fn one_class_solutions_satisfy_kkt() -> Result<()> {
    let mut rng = SeededRng::new(13);
    for case in 0..40 {
        let (x, _, _) = random_problem(&mut rng);
        let nu = rng.uniform(0.05, 0.9);
        let p = random_kernel(&mut rng, SvmParams::one_class().nu(nu));
        if p.kernel == KernelType::Sigmoid {
            continue; // not positive semi-definite: one-class is ill-posed
        }
        let m = p.train(&x, &[])?;
        let n = x.rows();
        let a = coefs(&m, n);
        let g = g_values(&m, &x)?;
        let sum: f64 = a.iter().sum();
        ensure!((sum - nu * n as f64).abs() <= 1e-9 * n as f64, "case {case}: Σα = {sum}, νl = {}", nu * n as f64);
        ensure!(a.iter().all(|&v| (0.0..=1.0 + 1e-12).contains(&v)), "case {case}: α outside [0, 1]");
        let up = (0..n).filter(|&i| a[i] < 1.0).map(|i| -g[i]);
        let low = (0..n).filter(|&i| a[i] > 0.0).map(|i| -g[i]);
        let v = violation(up, low);
        ensure!(v <= p.eps + SLACK * (1.0 + sum), "case {case}: KKT violation {v}");
    }
    Ok(())
}
