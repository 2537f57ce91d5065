//! sconce-testutil: loads reference fixtures (written by the scripts in `scripts/`) and
//! compares values and gradients with a tolerance suited to the dtype. A dev-dependency only.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};

/// One fixture file: its case list and tensors.
pub struct Fixture {
    /// The cases, each an object with at least a `name`.
    pub cases: Vec<serde_json::Value>,
    /// Every tensor of the file, keyed `{case name}.{key}`.
    pub tensors: HashMap<String, Tensor>,
}

/// Loads `dir/{name}.json` (the case list) and `dir/{name}.safetensors`.
///
/// # Errors
/// Missing or unparsable files.
pub fn load(dir: impl Into<PathBuf>, name: &str) -> Result<Fixture> {
    let dir: PathBuf = dir.into();
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).context("fixture json")?;
    let cases: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    let tensors = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)?;
    Ok(Fixture { cases, tensors })
}

impl Fixture {
    /// The tensor `{case name}.{key}`.
    ///
    /// # Errors
    /// When the case has no name or the key is missing.
    pub fn get(&self, case: &serde_json::Value, key: &str) -> Result<Tensor> {
        let name = case["name"].as_str().context("case name")?;
        self.tensors.get(&format!("{name}.{key}")).cloned().with_context(|| format!("{name}.{key} missing"))
    }
}

/// `(rtol, atol)` for comparing with PyTorch in the fixture's dtype.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-10, 1e-12),
        // f32 sums of O(1) terms that cancel carry ~1e-6 absolute rounding error in both libraries.
        _ => (1e-5, 1e-5),
    }
}

/// Fails with the worst element when `|a − b| > atol·max(1, max|b|) + rtol·|b|` anywhere.
///
/// The absolute part scales with the tensor's largest magnitude: an element that is a long sum
/// of large terms cancelling to a small value (a conv weight gradient sums N·OH·OW products)
/// carries rounding error relative to the terms, not to itself, in every library. Measured on
/// the 7×7 stem fixture: PyTorch's own f32 weight gradient is 8e-4 off the f64 value where the
/// largest gradient is 393, i.e. 2e-6 of the scale.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, rtol: f64, atol: f64) -> Result<()> {
    if a.dims() != b.dims() {
        bail!("{what}: shape {:?} vs reference {:?}", a.dims(), b.dims());
    }
    let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let scale = b.iter().fold(1.0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let atol = atol * scale;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        // NaN anywhere counts as a failure (infinite excess); equal infinities pass.
        let excess = if x == y { 0.0 } else { (x - y).abs() - (atol + rtol * y.abs()) };
        let excess = if excess.is_nan() { f64::INFINITY } else { excess };
        if excess > 0.0 && worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        bail!("{what}: element {i}: {} vs reference {} (rtol {rtol}, atol {atol})", a[i], b[i]);
    }
    Ok(())
}

/// Runs `f` on the case's input `x0` as a variable, checks the output against `y` and the
/// gradient of `Σ gy ⊙ f(x)` against `gx0`.
pub fn check_case(fx: &Fixture, case: &serde_json::Value, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let name = case["name"].as_str().unwrap_or("?");
    let x = fx.get(case, "x0")?;
    let (rtol, atol) = tolerance(x.dtype());
    let var = Var::from_tensor(&x)?;
    let y = f(var.as_tensor())?;
    assert_close(&format!("{name} value"), &y, &fx.get(case, "y")?, rtol, atol)?;
    let gy = fx.get(case, "gy")?;
    let grads = (y * gy)?.sum_all()?.backward()?;
    let gx = grads.get(var.as_tensor()).with_context(|| format!("{name}: no gradient reached the input"))?;
    assert_close(&format!("{name} gradient"), gx, &fx.get(case, "gx0")?, rtol, atol)?;
    Ok(())
}

/// A JSON pair `[a, b]` of sizes.
///
/// # Errors
/// When `v` is not an array of two non-negative integers.
pub fn pair(v: &serde_json::Value) -> Result<(usize, usize)> {
    let a = v.as_array().context("expected a pair")?;
    Ok((a[0].as_u64().context("int")? as usize, a[1].as_u64().context("int")? as usize))
}

/// As [`check_case`] for an op of several inputs `x0, x1, ...` (those present in the fixture),
/// checking every input's gradient.
pub fn check_case_multi(fx: &Fixture, case: &serde_json::Value, f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let name = case["name"].as_str().unwrap_or("?");
    let mut vars = Vec::new();
    while let Ok(x) = fx.get(case, &format!("x{}", vars.len())) {
        vars.push(Var::from_tensor(&x)?);
    }
    let (rtol, atol) = tolerance(vars[0].dtype());
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&inputs)?;
    assert_close(&format!("{name} value"), &y, &fx.get(case, "y")?, rtol, atol)?;
    let grads = (y * fx.get(case, "gy")?)?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let g = grads.get(v.as_tensor()).with_context(|| format!("{name}: no gradient for input {i}"))?;
        assert_close(&format!("{name} gradient {i}"), g, &fx.get(case, &format!("gx{i}"))?, rtol, atol)?;
    }
    Ok(())
}

/// After a criterion run: reads criterion's median estimates and a reference timing file
/// (`{"seconds": {"group/shape/fwd": s, ...}}`, written by a script in `scripts/`) and prints
/// `ours / reference` per benchmark.
pub fn print_ratios(reference_file: &std::path::Path) {
    let root = reference_file.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_default();
    let reference: serde_json::Value = std::fs::read_to_string(reference_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("../../target"));
    println!("\n{:<48} {:>10} {:>10} {:>8}", "benchmark", "ours ms", "torch ms", "ratio");
    let Some(times) = reference.get("seconds").and_then(|t| t.as_object()) else {
        println!("no PyTorch reference: run scripts/bench_tensor.py");
        return;
    };
    for (id, torch_s) in times {
        // criterion stores group `a/b` with function `f` under `a_b/f`.
        let (group, function) = id.rsplit_once('/').unwrap_or((id.as_str(), ""));
        let est = target.join("criterion").join(group.replace('/', "_")).join(function).join("new/estimates.json");
        let ours = std::fs::read_to_string(&est)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["median"]["point_estimate"].as_f64())
            .map(|ns| ns / 1e9);
        let torch_s = torch_s.as_f64().unwrap_or(f64::NAN);
        match ours {
            Some(o) => println!("{id:<48} {:>10.2} {:>10.2} {:>8.2}", o * 1e3, torch_s * 1e3, o / torch_s),
            None => println!("{id:<48} {:>10} {:>10.2} {:>8}", "-", torch_s * 1e3, "-"),
        }
    }
}

fn fnv1a64(key: &str) -> u64 {
    key.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

/// The deterministic values `scripts/fixtures_backbones.py` puts into every parameter, buffer
/// and input, so full-size models are compared with PyTorch without committing their weights.
///
/// `u_i = splitmix64(fnv1a64(key) + (i+1)·0x9E3779B97F4A7C15) >> 11 · 2⁻⁵³`, then by role:
/// `*.running_var` → `0.5 + u`; `*.running_mean` → `0.1(2u−1)`; rank-1 `*.weight` →
/// `0.5 + 0.5u`; other rank 1 → `0.1(2u−1)`; `"input"` → `2u−1`; rank ≥ 2 →
/// `(2u−1)·√(3/fan_in)` with `fan_in = numel / shape[0]`.
pub fn pattern(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let seed = fnv1a64(key);
    let fan_in = if shape.len() >= 2 && shape[0] > 0 { n / shape[0] } else { 1 };
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let v = if key.ends_with("running_var") {
                0.5 + u
            } else if key.ends_with("running_mean") {
                0.1 * (2.0 * u - 1.0)
            } else if shape.len() == 1 && key.ends_with("weight") {
                0.5 + 0.5 * u
            } else if shape.len() == 1 {
                0.1 * (2.0 * u - 1.0)
            } else if key == "input" {
                2.0 * u - 1.0
            } else {
                (2.0 * u - 1.0) * (3.0 / fan_in as f64).sqrt()
            };
            v as f32
        })
        .collect()
}

/// [`pattern`] as an f32 tensor of `shape`.
///
/// # Errors
/// Never in practice (candle shape errors only).
pub fn pattern_tensor(key: &str, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(pattern(key, shape), shape, &Device::Cpu)?)
}
