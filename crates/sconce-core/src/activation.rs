//! The description of an output activation: what a loss implies and a head checker inspects.
//!
//! This is data, not code: applying an activation to a tensor is `sconce-losses`' job (built
//! on `sconce-tensor`'s stable math). Keeping the description here lets every crate name an
//! activation without depending on the crate that computes it.

use std::fmt;

/// An activation function, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `f(x) = x`: raw logits or unbounded regression outputs.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x ≥ 0`, `slope · x` otherwise.
    LeakyRelu {
        /// Slope for negative inputs (Keras' default 0.3, PyTorch's 0.01).
        slope: f64,
    },
    /// `x` for `x > 0`, `alpha · (exp(x) − 1)` otherwise.
    Elu {
        /// Saturation value for negative inputs.
        alpha: f64,
    },
    /// Gaussian error linear unit (exact, erf-based).
    Gelu,
    /// `x · sigmoid(x)`.
    Silu,
    /// Hyperbolic tangent, range (−1, 1).
    Tanh,
    /// Logistic sigmoid, range (0, 1), applied element-wise (independent binary outputs).
    Sigmoid,
    /// `clamp(x / 6 + 1/2, 0, 1)` (PyTorch's `hardsigmoid`).
    HardSigmoid,
    /// Softmax along `axis`: outputs are positive and sum to one (mutually exclusive classes).
    Softmax {
        /// The class axis (1 for `[N, C]` and `[N, C, H, W]`).
        axis: usize,
    },
    /// Log of the softmax along `axis`.
    LogSoftmax {
        /// The class axis.
        axis: usize,
    },
    /// `log(1 + eˣ)`, range (0, ∞).
    Softplus,
}

impl Activation {
    /// The closed range of values the activation can output (infinite ends for unbounded).
    pub fn range(&self) -> (f64, f64) {
        use Activation::*;
        match *self {
            Identity | LeakyRelu { .. } | Gelu => (f64::NEG_INFINITY, f64::INFINITY),
            Relu | Softplus => (0.0, f64::INFINITY),
            Elu { alpha } => (-alpha.abs(), f64::INFINITY),
            Silu => (-0.278_464_542_761_073_8, f64::INFINITY),
            Tanh => (-1.0, 1.0),
            Sigmoid | HardSigmoid | Softmax { .. } => (0.0, 1.0),
            LogSoftmax { .. } => (f64::NEG_INFINITY, 0.0),
        }
    }

    /// True if the outputs are probabilities (sigmoid-like or softmax).
    pub fn outputs_probabilities(&self) -> bool {
        matches!(self, Activation::Sigmoid | Activation::HardSigmoid | Activation::Softmax { .. })
    }

    /// True if the activation couples the values along an axis (softmax, log-softmax).
    pub fn normalises_over_axis(&self) -> Option<usize> {
        match *self {
            Activation::Softmax { axis } | Activation::LogSoftmax { axis } => Some(axis),
            _ => None,
        }
    }

    /// True for the identity, i.e. the outputs are raw logits.
    pub fn is_identity(&self) -> bool {
        matches!(self, Activation::Identity)
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Activation::*;
        match self {
            Identity => write!(f, "identity"),
            Relu => write!(f, "relu"),
            LeakyRelu { slope } => write!(f, "leaky_relu(slope={slope})"),
            Elu { alpha } => write!(f, "elu(alpha={alpha})"),
            Gelu => write!(f, "gelu"),
            Silu => write!(f, "silu"),
            Tanh => write!(f, "tanh"),
            Sigmoid => write!(f, "sigmoid"),
            HardSigmoid => write!(f, "hard_sigmoid"),
            Softmax { axis } => write!(f, "softmax(axis={axis})"),
            LogSoftmax { axis } => write!(f, "log_softmax(axis={axis})"),
            Softplus => write!(f, "softplus"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_mathematical_ones() {
        assert_eq!(Activation::Sigmoid.range(), (0.0, 1.0));
        assert_eq!(Activation::Tanh.range(), (-1.0, 1.0));
        assert_eq!(Activation::Relu.range().0, 0.0);
        assert!(Activation::Identity.range().1.is_infinite());
        // min over x of x·σ(x) is reached at x ≈ −1.27846: value −0.27846454.
        let x: f64 = -1.278_464_542_761_074;
        let silu_min = x / (1.0 + (-x).exp());
        assert!((Activation::Silu.range().0 - silu_min).abs() < 1e-12);
        assert_eq!(Activation::Elu { alpha: 1.0 }.range().0, -1.0);
    }

    #[test]
    fn classification_helpers() {
        assert!(Activation::Softmax { axis: 1 }.outputs_probabilities());
        assert!(!Activation::LogSoftmax { axis: 1 }.outputs_probabilities());
        assert_eq!(Activation::LogSoftmax { axis: 1 }.normalises_over_axis(), Some(1));
        assert_eq!(Activation::Sigmoid.normalises_over_axis(), None);
        assert!(Activation::Identity.is_identity());
        assert_eq!(Activation::Softmax { axis: 1 }.to_string(), "softmax(axis=1)");
    }
}
