//! One-hot targets with a softmax head and categorical cross-entropy (n outputs), and the binary
//! special case: one logit, sigmoid and binary cross-entropy.

use candle_core::Tensor;
use sconce_core::{HeadSpec, OutputEncoding, Result};

use crate::common::{check_classes, check_code_axis, labels, nll};

/// One output per class and softmax, or for two classes optionally one sigmoid output.
///
/// ```
/// use sconce_core::OutputEncoding;
/// use sconce_encodings::OneHot;
/// # fn main() -> sconce_core::Result<()> {
/// let e = OneHot::new(3)?;
/// let logits = candle_core::Tensor::new(&[[0.1f32, 4.0, -1.0]], &candle_core::Device::Cpu)?;
/// assert_eq!(e.decode(&logits)?.to_vec1::<u32>()?, vec![1]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneHot {
    n: usize,
    sigmoid: bool,
}

impl OneHot {
    /// `n ≥ 2` classes, `n` outputs, softmax + cross-entropy.
    ///
    /// # Errors
    /// [`sconce_core::Error::Config`] for `n < 2`.
    pub fn new(n: usize) -> Result<Self> {
        check_classes(n)?;
        Ok(Self { n, sigmoid: false })
    }

    /// Two classes with one logit, sigmoid + binary cross-entropy (what the head checker
    /// recommends for binary problems; class 1 is the positive one).
    pub fn binary() -> Self {
        Self { n: 2, sigmoid: true }
    }
}

impl OutputEncoding for OneHot {
    fn num_classes(&self) -> usize {
        self.n
    }

    fn code_len(&self) -> usize {
        if self.sigmoid { 1 } else { self.n }
    }

    fn encode(&self, y: &Tensor) -> Result<Tensor> {
        labels(y, self.n)?;
        if self.sigmoid {
            return Ok(y.to_dtype(candle_core::DType::F32)?.unsqueeze(1)?);
        }
        sconce_tensor::one_hot(y, self.n, 1, candle_core::DType::F32)
    }

    fn head(&self, _in_features: usize) -> Result<HeadSpec> {
        Ok(HeadSpec::Learned { out_features: self.code_len(), bias: true })
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        nll(&self.scores(logits)?, y, self.n)
    }

    fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        check_code_axis(logits, self.code_len(), "one-hot logits")?;
        if self.sigmoid {
            // log P(0) = log σ(−z), log P(1) = log σ(z).
            let neg = sconce_tensor::log_sigmoid(&logits.neg()?)?;
            let pos = sconce_tensor::log_sigmoid(logits)?;
            return Ok(Tensor::cat(&[neg, pos], 1)?);
        }
        sconce_tensor::log_softmax(logits, 1)
    }
}
