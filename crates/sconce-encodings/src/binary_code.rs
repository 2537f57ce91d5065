//! ⌈log₂ n⌉ sigmoid outputs, one bit each, with maximum-likelihood decoding over the n valid
//! codewords.

use candle_core::Tensor;
use sconce_core::{Error, HeadSpec, OutputEncoding, Result};

use crate::common::{along_axis1, check_classes, check_code_axis, code_tensor, labels, nll};

/// How classes are assigned to codewords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAssignment {
    /// Class `k` gets the binary digits of `k`.
    Plain,
    /// Class `k` gets the Gray code of `k` (neighbouring classes differ in one bit).
    Gray,
}

/// How the bit outputs are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitTraining {
    /// Binary cross-entropy per bit, bits independent (Dietterich & Bakiri).
    PerBitBce,
    /// Cross-entropy of the valid-codeword posterior `softmax(C·z)`: trains the class posterior
    /// directly, with no mass on unused codewords.
    Codeword,
}

/// `q = ⌈log₂ n⌉` sigmoid outputs.
///
/// Decoding never thresholds bits (which can land on one of the `2^q − n` unused codewords): the
/// class log-probabilities are the exact posterior over the `n` valid codewords,
/// `log softmax(C·z)` with `C ∈ {0, 1}^{n×q}` — for independent bits with logits `z`,
/// `log P(c) = Σ_b c_b·z_b − softplus(z_b)` and the softplus part is the same for every class.
///
/// ```
/// use sconce_core::OutputEncoding;
/// use sconce_encodings::{BinaryCode, CodeAssignment};
/// # fn main() -> sconce_core::Result<()> {
/// let e = BinaryCode::new(26, CodeAssignment::Plain)?;
/// assert_eq!(e.code_len(), 5);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryCode {
    n: usize,
    q: usize,
    codes: Vec<Vec<u8>>,
    training: BitTraining,
}

impl BinaryCode {
    /// `n ≥ 2` classes on `⌈log₂ n⌉` bits, trained per bit.
    ///
    /// # Errors
    /// [`Error::Config`] for `n < 2`.
    pub fn new(n: usize, assignment: CodeAssignment) -> Result<Self> {
        check_classes(n)?;
        let q = usize::BITS as usize - (n - 1).leading_zeros() as usize;
        Self::with_code_len(n, q.max(1), assignment)
    }

    /// `n` classes on `q` bits (`2^q ≥ n`).
    ///
    /// # Errors
    /// [`Error::Config`] for `n < 2` or a code length too short for `n` classes.
    pub fn with_code_len(n: usize, q: usize, assignment: CodeAssignment) -> Result<Self> {
        check_classes(n)?;
        if q == 0 || q >= 32 || (1usize << q) < n {
            return Err(Error::config(
                "code length",
                format!("{q} bits cannot give {n} classes distinct codewords; need at least ⌈log₂ {n}⌉"),
            ));
        }
        let codes = (0..n)
            .map(|k| {
                let v = match assignment {
                    CodeAssignment::Plain => k,
                    CodeAssignment::Gray => k ^ (k >> 1),
                };
                (0..q).map(|b| ((v >> b) & 1) as u8).collect()
            })
            .collect();
        Ok(Self { n, q, codes, training: BitTraining::PerBitBce })
    }

    /// Chooses how the bits are trained.
    pub fn training(mut self, t: BitTraining) -> Self {
        self.training = t;
        self
    }

    /// The codeword of each class, `{0, 1}^q`.
    pub fn codes(&self) -> &[Vec<u8>] {
        &self.codes
    }
}

impl OutputEncoding for BinaryCode {
    fn num_classes(&self) -> usize {
        self.n
    }

    fn code_len(&self) -> usize {
        self.q
    }

    fn encode(&self, y: &Tensor) -> Result<Tensor> {
        let l = labels(y, self.n)?;
        let mut dims = y.dims().to_vec();
        let inner: usize = dims.iter().skip(1).product();
        let mut out = vec![0f32; l.len() * self.q];
        for (i, &c) in l.iter().enumerate() {
            let (b0, s) = (i / inner.max(1), i % inner.max(1));
            for (bit, &v) in self.codes[c as usize].iter().enumerate() {
                out[(b0 * self.q + bit) * inner + s] = f32::from(v);
            }
        }
        dims.insert(1.min(dims.len()), self.q);
        Ok(Tensor::from_vec(out, dims, y.device())?)
    }

    fn head(&self, _in_features: usize) -> Result<HeadSpec> {
        Ok(HeadSpec::Learned { out_features: self.q, bias: true })
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self.training {
            BitTraining::Codeword => nll(&self.scores(logits)?, y, self.n),
            BitTraining::PerBitBce => {
                check_code_axis(logits, self.q, "bit logits")?;
                let t = self.encode(y)?.to_dtype(logits.dtype())?;
                if t.dims() != logits.dims() {
                    return Err(Error::shape("labels", "the logits' shape without the bit axis", y.dims()));
                }
                // −[t·log σ(z) + (1 − t)·log σ(−z)], mean over bits and positions.
                let pos = sconce_tensor::log_sigmoid(logits)?;
                let neg = sconce_tensor::log_sigmoid(&logits.neg()?)?;
                let ll = ((&t * pos)? + (t.affine(-1.0, 1.0)? * neg)?)?;
                Ok((ll.mean_all()? * -1.0)?)
            }
        }
    }

    fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        check_code_axis(logits, self.q, "bit logits")?;
        let c = code_tensor(&self.codes, logits.device())?;
        sconce_tensor::log_softmax(&along_axis1(logits, &c)?, 1)
    }
}
