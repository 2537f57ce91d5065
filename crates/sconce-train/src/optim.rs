//! Optimizers with PyTorch's exact update rules (`torch.optim.SGD`, `Adam`, `AdamW`) and
//! state that can be saved and restored, plus gradient-norm clipping.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use sconce_core::{Error, Result};
use sconce_tensor::{AdamUpdate, SgdUpdate, adam_update, sgd_update, sum_squares};
use serde_json::{Value, json};

/// An optimizer over named parameters.
pub trait Optimizer: Send {
    /// Applies one update from `grads` (parameters without a gradient are left alone, as
    /// PyTorch skips `p.grad is None`).
    ///
    /// # Errors
    /// Candle errors only.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedules call this before each step).
    fn set_lr(&mut self, lr: f64);
    /// Steps taken.
    fn steps(&self) -> u64;
    /// Copies of the state tensors, keyed `{param name}.{buffer}` (e.g. `fc.weight.exp_avg`).
    /// (Copies: the optimizer updates its state in place.)
    ///
    /// # Errors
    /// Candle errors only.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// The scalar state and hyper-parameters as JSON.
    fn state_json(&self) -> Value;
    /// Restores [`Optimizer::state_tensors`] and [`Optimizer::state_json`].
    ///
    /// # Errors
    /// [`Error::Data`] when the state belongs to another optimizer or model.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, json: &Value) -> Result<()>;
}

/// `torch.optim.SGD` settings: sconce-tensor's [`SgdUpdate`], the hyper-parameters its fused
/// update takes (default: lr 0.01, no momentum, dampening or weight decay).
pub type SgdConfig = SgdUpdate;

fn check_lr(lr: f64) -> Result<()> {
    if !(lr >= 0.0 && lr.is_finite()) {
        return Err(Error::config("lr", format!("must be a finite number ≥ 0, got {lr}")));
    }
    Ok(())
}

/// Stochastic gradient descent with momentum, Nesterov and weight decay, exactly as PyTorch:
/// `g ← g + wd·p`; `b ← g` on the first step, else `b ← μ·b + (1−dampening)·g`;
/// `g ← g + μ·b` (Nesterov) or `g ← b`; `p ← p − lr·g`.
pub struct Sgd {
    params: Vec<(String, Var)>,
    cfg: SgdConfig,
    bufs: Vec<Option<Tensor>>,
    steps: u64,
}

impl Sgd {
    /// An SGD optimizer over `params` (e.g. `ParamStore::named_vars()`).
    ///
    /// # Errors
    /// [`Error::Config`] for a negative or non-finite hyper-parameter, or Nesterov without
    /// momentum or with dampening (PyTorch refuses both).
    pub fn new(params: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        check_lr(cfg.lr)?;
        for (name, v) in [("momentum", cfg.momentum), ("dampening", cfg.dampening), ("weight_decay", cfg.weight_decay)]
        {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::config(name, format!("must be a finite number ≥ 0, got {v}")));
            }
        }
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(Error::config("nesterov", "requires momentum > 0 and dampening = 0"));
        }
        let n = params.len();
        Ok(Self { params, cfg, bufs: vec![None; n], steps: 0 })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.cfg;
        for (i, (_, p)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            // In place: one pass over the parameter (two with momentum), no tensors allocated.
            // The buffer is a fresh tensor of plain values, never part of a graph.
            let first = self.bufs[i].is_none();
            let buf = match &self.bufs[i] {
                None if c.momentum != 0.0 => Some(p.as_tensor().zeros_like()?),
                b => b.clone(),
            };
            sgd_update(p.as_tensor(), g, buf.as_ref(), first, &c)?;
            // Kept only once the step went through: a refused step is still the first.
            self.bufs[i] = buf;
        }
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .zip(&self.bufs)
            .filter_map(|((n, _), b)| b.as_ref().map(|b| Ok((format!("{n}.momentum_buffer"), b.copy()?))))
            .collect()
    }

    fn state_json(&self) -> Value {
        let c = self.cfg;
        json!({"optimizer": "sgd", "steps": self.steps, "lr": c.lr, "momentum": c.momentum,
               "dampening": c.dampening, "weight_decay": c.weight_decay, "nesterov": c.nesterov})
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, json: &Value) -> Result<()> {
        if json["optimizer"] != "sgd" {
            return Err(Error::data("optimizer state", format!("is for `{}`, not sgd", json["optimizer"])));
        }
        let mut bufs = Vec::with_capacity(self.params.len());
        for (n, p) in &self.params {
            bufs.push(match tensors.get(&format!("{n}.momentum_buffer")) {
                Some(t) if t.dims() == p.dims() => Some(owned(t, p)?),
                Some(t) => return Err(shape_err(n, p, t)),
                None if self.cfg.momentum != 0.0 && json["steps"].as_u64().unwrap_or(0) > 0 => {
                    return Err(Error::data("optimizer state", format!("has no momentum buffer for `{n}`")));
                }
                None => None,
            });
        }
        self.bufs = bufs;
        self.steps = json["steps"].as_u64().unwrap_or(0);
        if let Some(lr) = json["lr"].as_f64() {
            self.cfg.lr = lr;
        }
        Ok(())
    }
}

/// `t` in `p`'s dtype as a contiguous tensor of its own: the optimizer updates its state in
/// place, which must not reach the caller's tensors.
fn owned(t: &Tensor, p: &Var) -> Result<Tensor> {
    Ok(t.to_dtype(p.dtype())?.contiguous()?.copy()?.detach())
}

fn shape_err(name: &str, p: &Var, t: &Tensor) -> Error {
    Error::data(
        "optimizer state",
        format!(
            "`{name}` has shape {:?} but the parameter has {:?}: the state is from another model",
            t.dims(),
            p.dims()
        ),
    )
}

/// `torch.optim.Adam` / `AdamW` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 added to the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// Decoupled weight decay (AdamW): `p ← p·(1 − lr·wd)` before the update.
    pub decoupled: bool,
    /// Keep the maximum of the second moments (AMSGrad).
    pub amsgrad: bool,
}

impl AdamConfig {
    /// PyTorch's `Adam` defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam() -> Self {
        Self { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, decoupled: false, amsgrad: false }
    }

    /// PyTorch's `AdamW` defaults: as Adam with decoupled weight decay 0.01.
    pub fn adamw() -> Self {
        Self { weight_decay: 0.01, decoupled: true, ..Self::adam() }
    }
}

/// Adam and AdamW exactly as PyTorch (`foreach=False` semantics):
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + eps)`.
pub struct Adam {
    params: Vec<(String, Var)>,
    cfg: AdamConfig,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    vmax: Vec<Option<Tensor>>,
    t: Vec<u64>,
    steps: u64,
}

impl Adam {
    /// An Adam/AdamW optimizer over `params`.
    ///
    /// # Errors
    /// [`Error::Config`] for betas outside `[0, 1)`, `eps ≤ 0` or a negative learning rate or
    /// weight decay.
    pub fn new(params: Vec<(String, Var)>, cfg: AdamConfig) -> Result<Self> {
        check_lr(cfg.lr)?;
        let (b1, b2) = cfg.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(Error::config("betas", format!("must be in [0, 1), got ({b1}, {b2})")));
        }
        if !(cfg.eps > 0.0 && cfg.eps.is_finite() && cfg.weight_decay >= 0.0 && cfg.weight_decay.is_finite()) {
            return Err(Error::config("eps / weight_decay", format!("need eps > 0 and weight_decay ≥ 0, got {cfg:?}")));
        }
        let n = params.len();
        Ok(Self { params, cfg, m: vec![None; n], v: vec![None; n], vmax: vec![None; n], t: vec![0; n], steps: 0 })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.cfg;
        for (i, (_, p)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            let pt = p.as_tensor();
            // The moments start as zeros, as PyTorch's state (a missing one after a restore
            // likewise: `β·0 + (1 − β)·g` is the first step's value exactly).
            let state = |s: &Option<Tensor>| -> Result<Tensor> {
                match s {
                    Some(t) => Ok(t.clone()),
                    None => Ok(pt.zeros_like()?),
                }
            };
            let (m, v) = (state(&self.m[i])?, state(&self.v[i])?);
            let vmax = if c.amsgrad { Some(state(&self.vmax[i])?) } else { None };
            // In place: one pass per moment and one over the parameter, no tensors allocated.
            let cfg = AdamUpdate {
                lr: c.lr,
                betas: c.betas,
                eps: c.eps,
                weight_decay: c.weight_decay,
                decoupled: c.decoupled,
                step: self.t[i] + 1,
            };
            adam_update(pt, g, &m, &v, vmax.as_ref(), &cfg)?;
            // Recorded only once the step went through: a refused step leaves no state behind.
            (self.m[i], self.v[i], self.t[i]) = (Some(m), Some(v), self.t[i] + 1);
            if vmax.is_some() {
                self.vmax[i] = vmax;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (n, _)) in self.params.iter().enumerate() {
            for (what, t) in [("exp_avg", &self.m[i]), ("exp_avg_sq", &self.v[i]), ("max_exp_avg_sq", &self.vmax[i])] {
                if let Some(t) = t {
                    out.push((format!("{n}.{what}"), t.copy()?));
                }
            }
            if self.t[i] > 0 {
                out.push((format!("{n}.step"), Tensor::new(self.t[i] as i64, &candle_core::Device::Cpu)?));
            }
        }
        Ok(out)
    }

    fn state_json(&self) -> Value {
        let c = self.cfg;
        json!({"optimizer": if c.decoupled { "adamw" } else { "adam" }, "steps": self.steps, "lr": c.lr,
               "betas": [c.betas.0, c.betas.1], "eps": c.eps, "weight_decay": c.weight_decay, "amsgrad": c.amsgrad})
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, json: &Value) -> Result<()> {
        let want = if self.cfg.decoupled { "adamw" } else { "adam" };
        if json["optimizer"] != want {
            return Err(Error::data("optimizer state", format!("is for `{}`, not {want}", json["optimizer"])));
        }
        let n = self.params.len();
        let (mut m, mut v, mut vmax, mut t) = (vec![None; n], vec![None; n], vec![None; n], vec![0; n]);
        for (i, (name, p)) in self.params.iter().enumerate() {
            let get = |what: &str| -> Result<Option<Tensor>> {
                match tensors.get(&format!("{name}.{what}")) {
                    Some(x) if x.dims() == p.dims() => Ok(Some(owned(x, p)?)),
                    Some(x) => Err(shape_err(name, p, x)),
                    None => Ok(None),
                }
            };
            m[i] = get("exp_avg")?;
            v[i] = get("exp_avg_sq")?;
            vmax[i] = get("max_exp_avg_sq")?;
            t[i] = match tensors.get(&format!("{name}.step")) {
                Some(s) => s.to_dtype(DType::I64)?.to_scalar::<i64>()?.max(0) as u64,
                None => 0,
            };
            if (t[i] > 0) != m[i].is_some() {
                return Err(Error::data(
                    "optimizer state",
                    format!("`{name}` has a step count but no moments, or the reverse"),
                ));
            }
        }
        (self.m, self.v, self.vmax, self.t) = (m, v, vmax, t);
        self.steps = json["steps"].as_u64().unwrap_or(0);
        if let Some(lr) = json["lr"].as_f64() {
            self.cfg.lr = lr;
        }
        Ok(())
    }
}

/// Scales the gradients of `vars` in place so that their global L2 norm is at most
/// `max_norm` (`torch.nn.utils.clip_grad_norm_`, scale `max_norm / (norm + 1e-6)` clamped
/// at 1). Returns the norm before clipping, which may be NaN/Inf (the caller decides).
///
/// # Errors
/// [`Error::Config`] for `max_norm ≤ 0`.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::config("max_norm", format!("must be > 0, got {max_norm}")));
    }
    let norm = grad_norm(grads, vars)?;
    let scale = (max_norm / (norm + 1e-6)).min(1.0);
    if scale < 1.0 && norm.is_finite() {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// The global L2 norm of the gradients of `vars` (NaN or Inf when any gradient is).
///
/// # Errors
/// Candle errors only.
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut total = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += sum_squares(g)?;
        }
    }
    Ok(total.sqrt())
}
