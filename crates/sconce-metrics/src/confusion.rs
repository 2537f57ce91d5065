//! A streaming confusion matrix: update per batch, merge across workers, reset.

use candle_core::{DType, Tensor};
use sconce_core::{Error, Result};

/// Counts of (true class, predicted class) pairs over `num_classes` classes.
///
/// ```
/// use sconce_metrics::ConfusionMatrix;
/// # fn main() -> sconce_core::Result<()> {
/// let mut cm = ConfusionMatrix::new(3)?;
/// cm.update(&[0, 1, 2, 2], &[0, 2, 2, 1])?;
/// assert_eq!(cm.get(2, 1), 1); // one true 2 predicted as 1
/// assert_eq!(cm.total(), 4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n: usize,
    /// Row-major `[true][pred]`.
    counts: Vec<u64>,
    ignore_index: Option<u32>,
}

impl ConfusionMatrix {
    /// An empty matrix over `num_classes` classes.
    ///
    /// # Errors
    /// [`Error::Config`] for zero classes.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::config("num_classes", "must be > 0"));
        }
        Ok(Self { n: num_classes, counts: vec![0; num_classes * num_classes], ignore_index: None })
    }

    /// Pairs whose true label equals `index` are skipped (e.g. 255 for void pixels).
    pub fn with_ignore_index(mut self, index: u32) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.n
    }

    /// Count of samples of true class `t` predicted as `p` (0 outside the matrix).
    pub fn get(&self, t: usize, p: usize) -> u64 {
        if t < self.n && p < self.n { self.counts[t * self.n + p] } else { 0 }
    }

    /// Total number of counted pairs.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds pairs of true and predicted labels.
    ///
    /// # Errors
    /// [`Error::Shape`] for slices of different lengths; [`Error::Data`] for a label outside
    /// `0..num_classes` (other than the ignored index).
    pub fn update(&mut self, y_true: &[u32], y_pred: &[u32]) -> Result<()> {
        if y_true.len() != y_pred.len() {
            return Err(Error::shape("y_pred", format!("[{}] (as many as y_true)", y_true.len()), &[y_pred.len()]));
        }
        for (i, (&t, &p)) in y_true.iter().zip(y_pred).enumerate() {
            if Some(t) == self.ignore_index {
                continue;
            }
            for (what, v) in [("y_true", t), ("y_pred", p)] {
                if v as usize >= self.n {
                    return Err(Error::data(what, format!("label {v} at position {i} is outside 0..{}", self.n)));
                }
            }
            self.counts[t as usize * self.n + p as usize] += 1;
        }
        Ok(())
    }

    /// Adds a batch given as tensors: integer labels, or `y_pred` as scores `[N, C, ...]`
    /// (arg-max over axis 1) for labels `[N, ...]`.
    ///
    /// # Errors
    /// As [`ConfusionMatrix::update`], plus shape errors.
    pub fn update_tensors(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        let pred = if y_pred.rank() == y_true.rank() + 1 {
            if y_pred.dims().get(1) != Some(&self.n) {
                return Err(Error::shape("y_pred scores", format!("{} classes on axis 1", self.n), y_pred.dims()));
            }
            y_pred.argmax(1)?
        } else {
            y_pred.clone()
        };
        if pred.dims() != y_true.dims() {
            return Err(Error::shape("y_pred", format!("{:?} (the shape of y_true)", y_true.dims()), pred.dims()));
        }
        let to_u32 = |t: &Tensor, what: &str| -> Result<Vec<u32>> {
            let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            v.iter()
                .enumerate()
                .map(|(i, x)| {
                    if x.is_finite() && x.fract() == 0.0 && *x >= 0.0 && *x <= f64::from(u32::MAX) {
                        Ok(*x as u32)
                    } else {
                        Err(Error::data(what, format!("label {x} at position {i} is not a class index")))
                    }
                })
                .collect()
        };
        self.update(&to_u32(y_true, "y_true")?, &to_u32(&pred, "y_pred")?)
    }

    /// Adds another matrix's counts (e.g. from another worker).
    ///
    /// # Errors
    /// [`Error::Config`] when the class counts differ.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.n != self.n {
            return Err(Error::config("merge", format!("cannot merge {} classes into {}", other.n, self.n)));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Clears every count.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }

    /// Per class `(tp, fp, fn, support)`: true positives, false positives, false negatives,
    /// and the number of true samples.
    pub fn per_class(&self) -> Vec<(u64, u64, u64, u64)> {
        (0..self.n)
            .map(|c| {
                let tp = self.get(c, c);
                let row: u64 = (0..self.n).map(|p| self.get(c, p)).sum();
                let col: u64 = (0..self.n).map(|t| self.get(t, c)).sum();
                (tp, col - tp, row - tp, row)
            })
            .collect()
    }

    /// Classes that occur in the true or the predicted labels (scikit-learn's default `labels`).
    pub fn present(&self) -> Vec<usize> {
        self.per_class()
            .iter()
            .enumerate()
            .filter(|(_, (tp, fp, fneg, _))| tp + fp + fneg > 0)
            .map(|(c, _)| c)
            .collect()
    }
}
