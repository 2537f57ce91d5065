//! Learning-rate schedules evaluated per optimizer step: constant, step decay, cosine
//! annealing, one-cycle, each with an optional linear warm-up (PyTorch's formulas).

use sconce_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the learning rate changes with the step number (0-based, counted in optimizer steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `StepLR`: multiply by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays.
        step_size: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// `CosineAnnealingLR`: `eta_min + (base − eta_min)(1 + cos(π·t/t_max))/2`; like PyTorch the
    /// rate rises again after `t_max` (a period of `2·t_max`), so set `t_max` to the run's length.
    Cosine {
        /// Steps of one half-period.
        t_max: u64,
        /// Final rate.
        eta_min: f64,
    },
    /// `OneCycleLR` (cosine annealing, `three_phase = False`): from `base/div_factor` up to
    /// `base` over `pct_start` of the steps, then down to `base/(div_factor·final_div_factor)`.
    OneCycle {
        /// Total steps.
        total_steps: u64,
        /// Fraction of the steps spent increasing.
        pct_start: f64,
        /// Initial rate = base / div_factor (PyTorch: 25).
        div_factor: f64,
        /// Final rate = initial / final_div_factor (PyTorch: 1e4).
        final_div_factor: f64,
    },
}

/// A schedule with an optional linear warm-up from `warmup_start·base` to the schedule's
/// rate over the first `warmup_steps` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The base learning rate.
    pub base_lr: f64,
    /// The shape after warm-up.
    pub schedule: Schedule,
    /// Warm-up steps (0: none).
    pub warmup_steps: u64,
    /// Fraction of the rate at step 0 of the warm-up.
    pub warmup_start: f64,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base_lr: f64) -> Self {
        Self { base_lr, schedule: Schedule::Constant, warmup_steps: 0, warmup_start: 0.0 }
    }

    /// The same with a different shape.
    pub fn with(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Adds a linear warm-up.
    pub fn warmup(mut self, steps: u64, start_fraction: f64) -> Self {
        self.warmup_steps = steps;
        self.warmup_start = start_fraction;
        self
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Config`] for non-positive sizes or factors.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::config(what, why));
        if !(self.base_lr >= 0.0 && self.base_lr.is_finite()) {
            return bad("lr", format!("must be finite and ≥ 0, got {}", self.base_lr));
        }
        match self.schedule {
            Schedule::Step { step_size: 0, .. } => bad("step_size", "must be > 0".into()),
            Schedule::Cosine { t_max: 0, .. } => bad("t_max", "must be > 0".into()),
            Schedule::OneCycle { total_steps, pct_start, div_factor, final_div_factor } => {
                if total_steps < 2 || !(0.0..1.0).contains(&pct_start) || div_factor <= 0.0 || final_div_factor <= 0.0 {
                    bad(
                        "one_cycle",
                        format!("needs total_steps ≥ 2, pct_start in [0, 1), positive factors; got {self:?}"),
                    )
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// The learning rate at `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let base = self.base_lr;
        let lr = match self.schedule {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => base * gamma.powi((step / step_size.max(1)) as i32),
            Schedule::Cosine { t_max, eta_min } => {
                let t = step as f64;
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * t / t_max.max(1) as f64).cos()) / 2.0
            }
            Schedule::OneCycle { total_steps, pct_start, div_factor, final_div_factor } => {
                let initial = base / div_factor;
                let min = initial / final_div_factor;
                let up_end = (pct_start * total_steps as f64) - 1.0;
                let down_end = total_steps as f64 - 1.0;
                let s = step as f64;
                let cos = |start: f64, end: f64, pct: f64| {
                    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                };
                if s <= up_end {
                    cos(initial, base, if up_end > 0.0 { s / up_end } else { 1.0 })
                } else {
                    let pct = ((s - up_end) / (down_end - up_end).max(1e-12)).min(1.0);
                    cos(base, min, pct)
                }
            }
        };
        if step < self.warmup_steps {
            let f = self.warmup_start + (1.0 - self.warmup_start) * step as f64 / self.warmup_steps as f64;
            lr * f
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_cosine_follow_pytorch() {
        // torch.optim.lr_scheduler.StepLR(step_size=2, gamma=0.5) from lr 0.1: 0.1, 0.1, 0.05, 0.05, 0.025
        let s = LrSchedule::constant(0.1).with(Schedule::Step { step_size: 2, gamma: 0.5 });
        let v: Vec<f64> = (0..5).map(|t| s.lr_at(t)).collect();
        assert_eq!(v, [0.1, 0.1, 0.05, 0.05, 0.025]);
        // CosineAnnealingLR(T_max=4, eta_min=0): 0.1, 0.0853553, 0.05, 0.0146447, 0
        let c = LrSchedule::constant(0.1).with(Schedule::Cosine { t_max: 4, eta_min: 0.0 });
        let want = [0.1, 0.08535533905932738, 0.05, 0.014644660940672627, 0.0];
        for (t, w) in want.iter().enumerate() {
            assert!((c.lr_at(t as u64) - w).abs() < 1e-12, "{t}");
        }
    }

    #[test]
    fn one_cycle_matches_pytorch_endpoints_and_peak() {
        // OneCycleLR(max_lr=1.0, total_steps=10, pct_start=0.3): lr[0] = 0.04, lr[2] = 1.0 (peak at
        // step pct_start·total − 1 = 2), lr[9] = 4e-6.
        let s = LrSchedule::constant(1.0).with(Schedule::OneCycle {
            total_steps: 10,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        });
        assert!((s.lr_at(0) - 0.04).abs() < 1e-12);
        assert!((s.lr_at(2) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(9) - 4e-6).abs() < 1e-12);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn warmup_is_linear_and_bad_settings_are_refused() {
        let s = LrSchedule::constant(1.0).warmup(4, 0.0);
        assert_eq!((0..6).map(|t| s.lr_at(t)).collect::<Vec<_>>(), [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
        assert!(LrSchedule::constant(1.0).with(Schedule::Step { step_size: 0, gamma: 0.1 }).validate().is_err());
        assert!(LrSchedule::constant(f64::NAN).validate().is_err());
    }
}
