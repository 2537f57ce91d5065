//! Optimizer updates and LR schedules equal PyTorch's (fixtures from
//! `scripts/fixtures_train.py`), and optimizer state survives a save/restore.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use sconce_testutil::{Fixture, assert_close};
use sconce_train::{Adam, AdamConfig, LrSchedule, Optimizer, Schedule, Sgd, SgdConfig};
use serde_json::Value;

fn fixture() -> Result<Fixture> {
    sconce_testutil::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"), "optim")
}

fn tensor(fx: &Fixture, key: &str) -> Result<Tensor> {
    fx.tensors.get(key).cloned().with_context(|| format!("{key} missing"))
}

fn build(case: &Value, params: Vec<(String, Var)>) -> Result<Box<dyn Optimizer>> {
    let f = |k: &str, d: f64| case[k].as_f64().unwrap_or(d);
    Ok(match case["kind"].as_str().context("kind")? {
        "sgd" => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr: f("lr", 0.0),
                momentum: f("momentum", 0.0),
                dampening: f("dampening", 0.0),
                weight_decay: f("weight_decay", 0.0),
                nesterov: case["nesterov"].as_bool().unwrap_or(false),
            },
        )?),
        kind => {
            let base = if kind == "adamw" { AdamConfig::adamw() } else { AdamConfig::adam() };
            let betas = match case["betas"].as_array() {
                Some(b) => (b[0].as_f64().context("b1")?, b[1].as_f64().context("b2")?),
                None => base.betas,
            };
            Box::new(Adam::new(
                params,
                AdamConfig {
                    lr: f("lr", base.lr),
                    betas,
                    eps: f("eps", base.eps),
                    weight_decay: f("weight_decay", base.weight_decay),
                    amsgrad: case["amsgrad"].as_bool().unwrap_or(false),
                    ..base
                },
            )?)
        }
    })
}

fn grads_for(fx: &Fixture, step: usize, vars: &[Var]) -> Result<GradStore> {
    // A GradStore is built by backprop: d/dp Σ p·g = g.
    let mut loss: Option<Tensor> = None;
    for (i, v) in vars.iter().enumerate() {
        let term = (v.as_tensor() * tensor(fx, &format!("g{step}.{i}"))?)?.sum_all()?;
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term)?,
        });
    }
    Ok(loss.context("no vars")?.backward()?)
}

#[test]
fn every_optimizer_step_equals_pytorch() -> Result<()> {
    let fx = fixture()?;
    let mut checked = 0;
    for case in fx.cases.iter().filter(|c| c.get("kind").is_some()) {
        let name = case["name"].as_str().context("name")?;
        let vars = vec![Var::from_tensor(&tensor(&fx, "p0")?)?, Var::from_tensor(&tensor(&fx, "p1")?)?];
        let named = vec![("a".to_string(), vars[0].clone()), ("b".to_string(), vars[1].clone())];
        let mut opt = build(case, named)?;
        for s in 0..4 {
            let g = grads_for(&fx, s, &vars)?;
            opt.step(&g)?;
            for (i, v) in vars.iter().enumerate() {
                let want = tensor(&fx, &format!("{name}.after{s}.{i}"))?;
                assert_close(&format!("{name} step {s} param {i}"), v.as_tensor(), &want, 1e-12, 1e-14)?;
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 4 * 2);
    Ok(())
}

#[test]
fn state_round_trip_continues_exactly() -> Result<()> {
    let fx = fixture()?;
    for case in fx.cases.iter().filter(|c| c.get("kind").is_some()) {
        let name = case["name"].as_str().context("name")?;
        let vars = vec![Var::from_tensor(&tensor(&fx, "p0")?)?, Var::from_tensor(&tensor(&fx, "p1")?)?];
        let named = || vec![("a".to_string(), vars[0].clone()), ("b".to_string(), vars[1].clone())];
        let mut opt = build(case, named())?;
        for s in 0..2 {
            opt.step(&grads_for(&fx, s, &vars)?)?;
        }
        // A fresh optimizer restored from the state continues as the original would have.
        let tensors: HashMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
        let mut restored = build(case, named())?;
        restored.load_state(&tensors, &opt.state_json())?;
        assert_eq!(restored.steps(), 2);
        for s in 2..4 {
            restored.step(&grads_for(&fx, s, &vars)?)?;
        }
        for (i, v) in vars.iter().enumerate() {
            let want = tensor(&fx, &format!("{name}.after3.{i}"))?;
            assert_close(&format!("{name} restored param {i}"), v.as_tensor(), &want, 1e-12, 1e-14)?;
        }
        // State of one optimizer kind is refused by another.
        let other = if case["kind"] == "sgd" { r#"{"optimizer": "adam"}"# } else { r#"{"optimizer": "sgd"}"# };
        assert!(restored.load_state(&tensors, &serde_json::from_str(other)?).is_err());
    }
    Ok(())
}

#[test]
fn schedules_equal_pytorch_schedulers() -> Result<()> {
    let fx = fixture()?;
    let s = &fx.cases.iter().find(|c| c["name"] == "schedules").context("schedules")?["schedules"];
    let check = |sched: LrSchedule, want: &Value| -> Result<()> {
        for (t, w) in want.as_array().context("lrs")?.iter().enumerate() {
            let w = w.as_f64().context("lr")?;
            assert!((sched.lr_at(t as u64) - w).abs() < 1e-12, "{sched:?} step {t}: {} vs {w}", sched.lr_at(t as u64));
        }
        Ok(())
    };
    let oc = &s["one_cycle"]["args"];
    check(
        LrSchedule::constant(oc["max_lr"].as_f64().context("max_lr")?).with(Schedule::OneCycle {
            total_steps: oc["total_steps"].as_u64().context("n")?,
            pct_start: oc["pct_start"].as_f64().context("pct")?,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }),
        &s["one_cycle"]["lrs"],
    )?;
    let c = &s["cosine"]["args"];
    check(
        LrSchedule::constant(1.0).with(Schedule::Cosine {
            t_max: c["t_max"].as_u64().context("t_max")?,
            eta_min: c["eta_min"].as_f64().context("eta_min")?,
        }),
        &s["cosine"]["lrs"],
    )?;
    let st = &s["step"]["args"];
    check(
        LrSchedule::constant(1.0).with(Schedule::Step {
            step_size: st["step_size"].as_u64().context("size")?,
            gamma: st["gamma"].as_f64().context("gamma")?,
        }),
        &s["step"]["lrs"],
    )
}

#[test]
fn optimizer_state_records_no_graph() -> Result<()> {
    // A momentum buffer built from `g + wd·p` once referenced the parameter's graph, chaining
    // every step (24 GB after 500 ResNet-18 steps). The state must be plain values.
    let fx = fixture()?;
    for case in fx.cases.iter().filter(|c| c.get("kind").is_some()) {
        let vars = vec![Var::from_tensor(&tensor(&fx, "p0")?)?, Var::from_tensor(&tensor(&fx, "p1")?)?];
        let named = vec![("a".to_string(), vars[0].clone()), ("b".to_string(), vars[1].clone())];
        let mut opt = build(case, named)?;
        for s in 0..2 {
            opt.step(&grads_for(&fx, s, &vars)?)?;
        }
        for (k, t) in opt.state_tensors()? {
            assert!(!t.track_op(), "{}: state {k} records a graph", case["name"]);
        }
    }
    Ok(())
}

#[test]
fn state_tensors_are_snapshots_and_restored_state_is_the_optimizers_own() -> Result<()> {
    // The optimizers update their state in place: what `state_tensors` hands out, and what
    // `load_state` reads, must not change with later steps.
    let fx = fixture()?;
    let values = |ts: &[(String, Tensor)]| -> Result<Vec<Vec<f64>>> {
        ts.iter().map(|(_, t)| Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)).collect()
    };
    for case in fx.cases.iter().filter(|c| c.get("kind").is_some() && c["name"] != "sgd_plain") {
        let vars = vec![Var::from_tensor(&tensor(&fx, "p0")?)?, Var::from_tensor(&tensor(&fx, "p1")?)?];
        let named = || vec![("a".to_string(), vars[0].clone()), ("b".to_string(), vars[1].clone())];
        let mut opt = build(case, named())?;
        opt.step(&grads_for(&fx, 0, &vars)?)?;
        let snap = opt.state_tensors()?;
        assert!(!snap.is_empty(), "{}: no state", case["name"]);
        let before = values(&snap)?;
        opt.step(&grads_for(&fx, 1, &vars)?)?;
        assert_eq!(values(&snap)?, before, "{}: a later step changed the snapshot", case["name"]);
        assert_ne!(values(&opt.state_tensors()?)?, before, "{}: the state did not move", case["name"]);
        let mut restored = build(case, named())?;
        restored.load_state(&snap.iter().cloned().collect(), &opt.state_json())?;
        restored.step(&grads_for(&fx, 2, &vars)?)?;
        assert_eq!(values(&snap)?, before, "{}: a restored optimizer changed its source", case["name"]);
    }
    Ok(())
}

#[test]
fn gradient_clipping_scales_to_the_norm_like_torch() -> Result<()> {
    use sconce_train::{clip_grad_norm, grad_norm};
    let dev = candle_core::Device::Cpu;
    let (a, b) = (Var::new(&[1f32, 2.0], &dev)?, Var::new(&[[0.5f32]], &dev)?);
    // loss = 3·Σa + 4·b: gradients (3, 3) and 4, global norm √(9 + 9 + 16) = √34.
    let grads = || -> Result<GradStore> {
        let l = ((a.as_tensor().sum_all()? * 3.0)? + (b.as_tensor().sum_all()? * 4.0)?)?;
        Ok(l.backward()?)
    };
    let vars = [a.clone(), b.clone()];
    let norm = 34f64.sqrt();
    let mut g = grads()?;
    assert!((grad_norm(&g, &vars)? - norm).abs() < 1e-6);
    // Above the norm: nothing changes (torch's scale is clamped at 1).
    assert!((clip_grad_norm(&mut g, &vars, 10.0)? - norm).abs() < 1e-6);
    let ga = g.get(a.as_tensor()).context("a")?.to_vec1::<f32>()?;
    assert_eq!(ga, [3.0, 3.0]);
    // Below: every gradient times max_norm / (norm + 1e-6), the new norm max_norm.
    let mut g = grads()?;
    assert!((clip_grad_norm(&mut g, &vars, 1.0)? - norm).abs() < 1e-6, "returns the norm before clipping");
    let s = 1.0 / (norm + 1e-6);
    let ga = g.get(a.as_tensor()).context("a")?.to_vec1::<f32>()?;
    let gb = g.get(b.as_tensor()).context("b")?.flatten_all()?.to_vec1::<f32>()?;
    assert!((f64::from(ga[0]) - 3.0 * s).abs() < 1e-6 && (f64::from(gb[0]) - 4.0 * s).abs() < 1e-6);
    assert!((grad_norm(&g, &vars)? - 1.0).abs() < 1e-5);
    // A non-positive or NaN limit is a configuration error.
    for bad in [0.0, -1.0, f64::NAN] {
        assert!(clip_grad_norm(&mut g, &vars, bad).is_err(), "{bad}");
    }
    Ok(())
}
