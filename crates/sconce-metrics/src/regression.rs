//! Regression metrics with scikit-learn's definitions, accumulated in a streaming, numerically
//! stable way (sums of values shifted by the first one seen, so a large mean does not cancel
//! the spread): MSE, MAE, R², explained variance.

use sconce_core::{Error, Result};

/// Streaming regression metrics.
///
/// ```
/// use sconce_metrics::RegressionMetrics;
/// # fn main() -> sconce_core::Result<()> {
/// let mut m = RegressionMetrics::new();
/// m.update(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0])?;
/// assert!((m.r2() - 0.948_608_137_044_967_9).abs() < 1e-12); // scikit-learn's doc example
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegressionMetrics {
    n: u64,
    abs_sum: f64,
    sq_sum: f64,
    /// Shifted sums `Σ(v − K)`, `Σ(v − K)²` of the targets and of the errors `y − ŷ`, with `K`
    /// the first value of each.
    y: Shifted,
    e: Shifted,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Shifted {
    k: Option<f64>,
    sum: f64,
    sum2: f64,
}

impl Shifted {
    fn add(&mut self, v: f64) {
        let k = *self.k.get_or_insert(v);
        let d = v - k;
        self.sum += d;
        self.sum2 += d * d;
    }

    /// `Σ(v − mean)²`.
    fn centred_ss(&self, n: f64) -> f64 {
        (self.sum2 - self.sum * self.sum / n).max(0.0)
    }
}

impl RegressionMetrics {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds pairs of targets and predictions.
    ///
    /// # Errors
    /// [`Error::Shape`] for different lengths; [`Error::Data`] for a non-finite value.
    pub fn update(&mut self, y_true: &[f64], y_pred: &[f64]) -> Result<()> {
        if y_true.len() != y_pred.len() {
            return Err(Error::shape("y_pred", format!("[{}] (as many as y_true)", y_true.len()), &[y_pred.len()]));
        }
        for (i, (&y, &p)) in y_true.iter().zip(y_pred).enumerate() {
            if !(y.is_finite() && p.is_finite()) {
                return Err(Error::data("regression inputs", format!("non-finite value at position {i}: ({y}, {p})")));
            }
            self.n += 1;
            let e = y - p;
            self.abs_sum += e.abs();
            self.sq_sum += e * e;
            self.y.add(y);
            self.e.add(e);
        }
        Ok(())
    }

    /// Mean squared error.
    pub fn mse(&self) -> f64 {
        self.sq_sum / self.n as f64
    }

    /// Mean absolute error.
    pub fn mae(&self) -> f64 {
        self.abs_sum / self.n as f64
    }

    /// `1 − SS_res / SS_tot`; for constant targets 1.0 if the fit is perfect, else 0.0
    /// (scikit-learn's `force_finite=True`).
    pub fn r2(&self) -> f64 {
        let ss_tot = self.y.centred_ss(self.n as f64);
        if ss_tot == 0.0 {
            return if self.sq_sum == 0.0 { 1.0 } else { 0.0 };
        }
        1.0 - self.sq_sum / ss_tot
    }

    /// `1 − Var(y − ŷ) / Var(y)`, with the same rule for constant targets.
    pub fn explained_variance(&self) -> f64 {
        let n = self.n as f64;
        let ss_tot = self.y.centred_ss(n);
        let ss_err = self.e.centred_ss(n);
        if ss_tot == 0.0 {
            return if ss_err == 0.0 { 1.0 } else { 0.0 };
        }
        1.0 - ss_err / ss_tot
    }
}
