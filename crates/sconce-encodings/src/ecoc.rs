//! Error-correcting output codes (Dietterich & Bakiri 1995; Allwein, Schapire & Singer 2000):
//! code matrices over {−1, 0, +1} (exhaustive, random dense, random sparse, Hadamard),
//! Hamming and loss-based decoding, bits trained by a network head or by any binary estimator
//! through [`Fit`]/[`Predict`].

use candle_core::{DType, Device, Tensor};
use sconce_core::{Error, Fit, HeadSpec, OutputEncoding, Predict, Result, SeededRng};

use crate::common::{along_axis1, check_classes, check_code_axis, labels};

/// How bit outputs are turned into class scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// `−Σ_b [sign(z_b) ≠ M_kb]` over the non-zero entries (ties broken by the lower class),
    /// normalised into class log-probabilities (a softmax over them: each disagreeing bit costs
    /// one nat; calibrate the temperature on held-out data when the probabilities matter).
    Hamming,
    /// Loss-based with the logistic loss: `Σ_b log σ(M_kb·z_b)` over non-zero entries, normalised
    /// into class log-probabilities (for independent logistic bits this is the exact posterior).
    Logistic,
}

/// An ECOC encoding: `n` codewords (rows) of length `L` over {−1, 0, +1}; 0 = "this bit ignores
/// the class".
///
/// ```
/// use sconce_core::OutputEncoding;
/// use sconce_encodings::Ecoc;
/// # fn main() -> sconce_core::Result<()> {
/// let e = Ecoc::exhaustive(5)?;
/// assert_eq!(e.code_len(), 15);          // 2^(n−1) − 1 columns
/// assert_eq!(e.min_row_distance(), 8.0); // corrects ⌊(8 − 1)/2⌋ = 3 bit errors
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Ecoc {
    rows: Vec<Vec<i8>>,
    decoding: Decoding,
}

/// Allwein et al.'s generalised Hamming distance: `Σ_b (1 − a_b·c_b)/2` (a 0 entry counts ½).
fn distance(a: &[i8], c: &[i8]) -> f64 {
    a.iter().zip(c).map(|(&x, &y)| (1.0 - f64::from(x) * f64::from(y)) / 2.0).sum()
}

impl Ecoc {
    /// A code from an explicit matrix (`n` rows of equal length, entries −1, 0, +1).
    ///
    /// # Errors
    /// [`Error::Config`] for fewer than 2 rows, ragged rows, other entries, or two equal rows.
    pub fn from_matrix(rows: Vec<Vec<i8>>) -> Result<Self> {
        check_classes(rows.len())?;
        let l = rows[0].len();
        if l == 0 || rows.iter().any(|r| r.len() != l || r.iter().any(|v| !(-1..=1).contains(v))) {
            return Err(Error::config("ECOC matrix", "rows must have one length and entries −1, 0 or +1"));
        }
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                if rows[i] == rows[j] {
                    return Err(Error::config("ECOC matrix", format!("classes {i} and {j} share a codeword")));
                }
            }
        }
        Ok(Self { rows, decoding: Decoding::Logistic })
    }

    /// Dietterich & Bakiri's exhaustive code for `3 ≤ n ≤ 11`: `2^(n−1) − 1` columns, row `k`
    /// alternating runs of `2^(n−k−1)` (row 0 all ones); minimum row distance `2^(n−2)`.
    ///
    /// # Errors
    /// [`Error::Config`] outside `3..=11`.
    pub fn exhaustive(n: usize) -> Result<Self> {
        if !(3..=11).contains(&n) {
            return Err(Error::config("exhaustive ECOC", format!("defined for 3 to 11 classes, got {n}")));
        }
        let l = (1usize << (n - 1)) - 1;
        let rows = (0..n)
            .map(|k| {
                if k == 0 {
                    return vec![1; l];
                }
                let run = 1usize << (n - 1 - k);
                (0..l).map(|j| if (j / run).is_multiple_of(2) { -1 } else { 1 }).collect()
            })
            .collect();
        Self::from_matrix(rows)
    }

    /// Hadamard code: rows 1..=n of a Sylvester matrix of order `m ≥ n + 1` (the all-ones row
    /// dropped), without the columns that are constant over those rows (column 0 always) or
    /// the complement of an earlier one (for n = 2 only): a constant column is a bit no learner
    /// can be trained for, a complement is the same bit again. For n ≥ 3 every pair of
    /// codewords differs in exactly `m/2` of the `m − 1` places; for n = 2 the code is one bit.
    ///
    /// # Errors
    /// [`Error::Config`] for `n < 2`.
    pub fn hadamard(n: usize) -> Result<Self> {
        check_classes(n)?;
        let m = (n + 1).next_power_of_two();
        let h = crate::sylvester(m)?;
        let rows = &h[1..=n];
        let mut keep: Vec<usize> = Vec::new();
        for j in 0..m {
            let constant = rows.iter().all(|r| r[j] == rows[0][j]);
            let complement = keep.iter().any(|&k| rows.iter().all(|r| r[j] == -r[k]));
            if !constant && !complement {
                keep.push(j);
            }
        }
        Self::from_matrix(rows.iter().map(|r| keep.iter().map(|&j| r[j]).collect()).collect())
    }

    /// Best of `tries` random codes by minimum row distance (Allwein et al.): dense codes have
    /// `⌈10·log₂ n⌉` ±1 columns; sparse ones `⌈15·log₂ n⌉` columns with 0 w.p. ½. Constant
    /// columns and columns equal or complementary to another are redrawn.
    ///
    /// # Errors
    /// [`Error::Config`] for `n < 2` or `tries == 0`.
    pub fn random(n: usize, sparse: bool, tries: usize, seed: u64) -> Result<Self> {
        check_classes(n)?;
        if tries == 0 {
            return Err(Error::config("tries", "must be > 0"));
        }
        let factor = if sparse { 15.0 } else { 10.0 };
        let l = ((factor * (n as f64).log2()).ceil() as usize).max(2);
        let mut rng = SeededRng::new(seed);
        let mut best: Option<(f64, Vec<Vec<i8>>)> = None;
        for _ in 0..tries {
            let mut cols: Vec<Vec<i8>> = Vec::with_capacity(l);
            let mut attempts = 0;
            while cols.len() < l && attempts < 1000 * l {
                attempts += 1;
                let col: Vec<i8> = (0..n)
                    .map(|_| {
                        if sparse && rng.below(2) == 0 {
                            0
                        } else if rng.below(2) == 0 {
                            -1
                        } else {
                            1
                        }
                    })
                    .collect();
                let has_pos = col.contains(&1);
                let has_neg = col.contains(&-1);
                let neg: Vec<i8> = col.iter().map(|v| -v).collect();
                if has_pos && has_neg && !cols.iter().any(|c| *c == col || *c == neg) {
                    cols.push(col);
                }
            }
            let rows: Vec<Vec<i8>> = (0..n).map(|r| cols.iter().map(|c| c[r]).collect()).collect();
            let d = min_distance(&rows);
            if best.as_ref().is_none_or(|(bd, _)| d > *bd) {
                best = Some((d, rows));
            }
        }
        match best {
            Some((d, rows)) if d > 0.0 => Self::from_matrix(rows),
            _ => Err(Error::config("ECOC", format!("no code with distinct codewords found for {n} classes"))),
        }
    }

    /// Chooses the decoding rule (default: logistic loss-based).
    pub fn decoding(mut self, d: Decoding) -> Self {
        self.decoding = d;
        self
    }

    /// The code matrix, one row per class.
    pub fn rows(&self) -> &[Vec<i8>] {
        &self.rows
    }

    /// The smallest generalised Hamming distance between two codewords.
    pub fn min_row_distance(&self) -> f64 {
        min_distance(&self.rows)
    }

    fn matrix(&self, dev: &Device) -> Result<Tensor> {
        let l = self.code_len();
        let flat: Vec<f32> = self.rows.iter().flat_map(|r| r.iter().map(|&v| f32::from(v))).collect();
        Ok(Tensor::from_vec(flat, (self.rows.len(), l), dev)?)
    }

    /// Decodes bit margins `[N, L]` (any real scores, positive meaning +1) to class scores.
    fn scores_from(&self, z: &Tensor) -> Result<Tensor> {
        let m = self.matrix(z.device())?.to_dtype(z.dtype())?;
        match self.decoding {
            Decoding::Hamming => {
                // −Σ_b [sign(z_b) ≠ M_kb] = −Σ_b (|M_kb| − M_kb·sign(z_b))/2.
                let s = z.ge(0.0)?.to_dtype(z.dtype())?.affine(2.0, -1.0)?;
                let agree = along_axis1(&s, &m)?;
                let nonzero = along_axis1(&s.ones_like()?, &m.abs()?)?;
                Ok(sconce_tensor::log_softmax(&((agree - nonzero)? * 0.5)?, 1)?)
            }
            Decoding::Logistic => {
                // Σ_b log σ(M_kb·z_b) over M_kb ≠ 0 = Σ_b [M_kb = 1]·log σ(z_b) + [M_kb = −1]·log σ(−z_b).
                let pos = m.maximum(0.0)?;
                let neg = m.neg()?.maximum(0.0)?;
                let ll = (along_axis1(&sconce_tensor::log_sigmoid(z)?, &pos)?
                    + along_axis1(&sconce_tensor::log_sigmoid(&z.neg()?)?, &neg)?)?;
                Ok(sconce_tensor::log_softmax(&ll, 1)?)
            }
        }
    }

    /// Trains one binary estimator per code column on the samples whose class uses that column
    /// (`M ≠ 0`), with labels `1` for `+1` and `0` for `−1`: any [`Fit`] whose model
    /// [`Predict`]s a decision value (an SVM, a logistic regression) can be a bit learner. The
    /// decision value must follow [`Predict::decision_function`]'s binary convention (positive
    /// for label 1), as sconce-svm's models do.
    ///
    /// # Errors
    /// Label-range errors, a column with no samples of one sign, and the estimator's errors.
    pub fn fit_bits<F: Fit>(&self, estimator: &F, x: &Tensor, y: &Tensor) -> Result<EcocModel<F::Model>>
    where
        F::Model: Predict,
    {
        let n = self.rows.len();
        let l = labels(y, n)?;
        let [rows_x, _] = sconce_core::check::dims::<2>(x, "x", "[N, F]")?;
        if rows_x != l.len() {
            return Err(Error::shape("y", format!("[{rows_x}] (one label per row of x)"), y.dims()));
        }
        let mut models = Vec::with_capacity(self.code_len());
        for b in 0..self.code_len() {
            let keep: Vec<u32> = (0..l.len() as u32).filter(|&i| self.rows[l[i as usize] as usize][b] != 0).collect();
            let bits: Vec<u32> = keep.iter().map(|&i| u32::from(self.rows[l[i as usize] as usize][b] > 0)).collect();
            if !bits.contains(&0) || !bits.contains(&1) {
                return Err(Error::data("y", format!("code column {b} sees only one side in the training labels")));
            }
            let idx = Tensor::from_vec(keep.clone(), keep.len(), x.device())?;
            let xb = x.index_select(&idx, 0)?;
            let yb = Tensor::from_vec(bits, keep.len(), x.device())?;
            models.push(estimator.fit(&xb, &yb)?);
        }
        Ok(EcocModel { code: self.clone(), models })
    }
}

fn min_distance(rows: &[Vec<i8>]) -> f64 {
    let mut d = f64::INFINITY;
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            d = d.min(distance(&rows[i], &rows[j]));
        }
    }
    d
}

impl OutputEncoding for Ecoc {
    fn num_classes(&self) -> usize {
        self.rows.len()
    }

    fn code_len(&self) -> usize {
        self.rows.first().map(|r| r.len()).unwrap_or(0)
    }

    /// Targets in `{0, 1}` per bit (`+1 → 1`, `−1 → 0`; a `0` entry becomes ½ and is excluded
    /// from the loss).
    fn encode(&self, y: &Tensor) -> Result<Tensor> {
        let lab = labels(y, self.rows.len())?;
        let l = self.code_len();
        let mut dims = y.dims().to_vec();
        let inner: usize = dims.iter().skip(1).product();
        let mut out = vec![0f32; lab.len() * l];
        for (i, &c) in lab.iter().enumerate() {
            let (b0, s) = (i / inner.max(1), i % inner.max(1));
            for (bit, &v) in self.rows[c as usize].iter().enumerate() {
                out[(b0 * l + bit) * inner + s] = (f32::from(v) + 1.0) / 2.0;
            }
        }
        dims.insert(1.min(dims.len()), l);
        Ok(Tensor::from_vec(out, dims, y.device())?)
    }

    fn head(&self, _in_features: usize) -> Result<HeadSpec> {
        Ok(HeadSpec::Learned { out_features: self.code_len(), bias: true })
    }

    /// Per-bit logistic loss over the entries the class uses (`M ≠ 0`), averaged over them.
    fn loss(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        check_code_axis(logits, self.code_len(), "ECOC bit logits")?;
        let t = self.encode(y)?.to_dtype(logits.dtype())?;
        if t.dims() != logits.dims() {
            return Err(Error::shape("labels", "the logits' shape without the bit axis", y.dims()));
        }
        let used = t.ne(0.5)?.to_dtype(logits.dtype())?;
        let pos = sconce_tensor::log_sigmoid(logits)?;
        let neg = sconce_tensor::log_sigmoid(&logits.neg()?)?;
        let ll = (((&t * pos)? + (t.affine(-1.0, 1.0)? * neg)?)? * &used)?;
        let count = used.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
        Ok((ll.sum_all()? / -count)?)
    }

    fn scores(&self, logits: &Tensor) -> Result<Tensor> {
        check_code_axis(logits, self.code_len(), "ECOC bit logits")?;
        self.scores_from(logits)
    }
}

/// ECOC over trained binary estimators: one model per code column.
#[derive(Debug, Clone)]
pub struct EcocModel<M> {
    code: Ecoc,
    models: Vec<M>,
}

impl<M: Predict> EcocModel<M> {
    /// Bit margins `[N, L]`: each model's decision value.
    ///
    /// # Errors
    /// The models' errors.
    pub fn margins(&self, x: &Tensor) -> Result<Tensor> {
        let cols: Vec<Tensor> = self
            .models
            .iter()
            .map(|m| Ok(m.decision_function(x)?.flatten_all()?.to_dtype(DType::F32)?))
            .collect::<Result<_>>()?;
        Ok(Tensor::stack(&cols, 1)?)
    }

    /// Class scores `[N, n]` by the code's decoding rule.
    ///
    /// # Errors
    /// The models' errors.
    pub fn scores(&self, x: &Tensor) -> Result<Tensor> {
        self.code.scores_from(&self.margins(x)?)
    }
}

impl<M: Predict> Predict for EcocModel<M> {
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.scores(x)?.argmax(1)?)
    }

    fn decision_function(&self, x: &Tensor) -> Result<Tensor> {
        self.scores(x)
    }
}
