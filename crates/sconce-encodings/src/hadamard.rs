//! Hoffer, Hubara & Soudry's fixed classifier ("Fix your classifier", ICLR 2018): L2-normalised
//! features times a fixed ±1 Sylvester–Hadamard block, a learned scalar scale and a bias.

use candle_core::{Device, Tensor};
use sconce_core::{Error, HeadSpec, OutputEncoding, Result};

use crate::common::{check_classes, check_code_axis, labels, nll};

/// The Sylvester–Hadamard matrix of order `m` (a power of two): `H₁ = [1]`,
/// `H₂ₘ = [[Hₘ, Hₘ], [Hₘ, −Hₘ]]`; `H·Hᵀ = m·I`.
///
/// # Errors
/// [`Error::Config`] when `m` is not a power of two.
pub fn sylvester(m: usize) -> Result<Vec<Vec<i8>>> {
    if m == 0 || !m.is_power_of_two() {
        return Err(Error::config("Hadamard order", format!("Sylvester's construction needs a power of two, got {m}")));
    }
    // Entry (i, j) is (−1)^popcount(i & j).
    Ok((0..m).map(|i| (0..m).map(|j| if (i & j).count_ones() % 2 == 0 { 1 } else { -1 }).collect()).collect())
}

/// The fixed Hadamard classifier for `n` classes: `z = −α·Ĥ·x/‖x‖ + b` with `Ĥ` the first `n`
/// rows of a Sylvester matrix (as the paper's `HadamardProj`, including its sign), `α` a learned
/// scalar initialised to `1/√n` and `b` a learned bias; no other trainable weight.
///
/// **Feature size.** The rows of `Ĥ` are exactly orthogonal only when the feature size `F` is a
/// power of two `≥ n`. The paper's code otherwise truncates a larger Hadamard matrix to `F`
/// columns, whose rows are then only nearly orthogonal (and cannot all be orthogonal when
/// `n > F`). [`Hadamard::head`] instead asks for a learned projection of the features to the
/// next power of two `≥ max(n, F)` whenever `F` is not one, so the fixed block stays orthogonal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hadamard {
    n: usize,
    bias: bool,
}

impl Hadamard {
    /// `n ≥ 2` classes, with a learned bias.
    ///
    /// # Errors
    /// [`Error::Config`] for `n < 2`.
    pub fn new(n: usize) -> Result<Self> {
        check_classes(n)?;
        Ok(Self { n, bias: true })
    }

    /// Without the learned bias.
    pub fn without_bias(mut self) -> Self {
        self.bias = false;
        self
    }

    /// The fixed `[n, width]` ±1 block (`width` = the feature size after any projection),
    /// negated as in the paper's code.
    ///
    /// # Errors
    /// [`Error::Config`] when `width` is not a power of two `≥ n`.
    pub fn matrix(&self, width: usize, dev: &Device) -> Result<Tensor> {
        if width < self.n {
            return Err(Error::config(
                "Hadamard width",
                format!("{width} columns cannot hold {} orthogonal rows", self.n),
            ));
        }
        let h = sylvester(width)?;
        let flat: Vec<f32> = h[..self.n].iter().flat_map(|r| r.iter().map(|&v| -f32::from(v))).collect();
        Ok(Tensor::from_vec(flat, (self.n, width), dev)?)
    }
}

impl OutputEncoding for Hadamard {
    fn num_classes(&self) -> usize {
        self.n
    }

    fn code_len(&self) -> usize {
        self.n
    }

    fn encode(&self, y: &Tensor) -> Result<Tensor> {
        labels(y, self.n)?;
        sconce_tensor::one_hot(y, self.n, 1, candle_core::DType::F32)
    }

    fn head(&self, in_features: usize) -> Result<HeadSpec> {
        if in_features == 0 {
            return Err(Error::config("in_features", "must be > 0"));
        }
        let width = in_features.max(self.n).next_power_of_two();
        let projection = (width != in_features).then_some(width);
        Ok(HeadSpec::Fixed {
            projection,
            weight: self.matrix(width, &Device::Cpu)?,
            normalize_input: true,
            learned_scale: Some(1.0 / (self.n as f64).sqrt()),
            bias: self.bias,
        })
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        nll(&self.scores(logits)?, y, self.n)
    }

    fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        check_code_axis(logits, self.n, "class logits of the fixed head")?;
        sconce_tensor::log_softmax(logits, 1)
    }
}
