//! Feature matrices the SVM reads: dense row-major or sparse CSR rows in LIBSVM's
//! `index:value` numbering (1-based; index 0 only for precomputed-kernel sample ids).

use sconce_core::{Error, Result};

/// A set of samples: dense row-major `f64`, or sparse rows (CSR) with LIBSVM feature indices.
///
/// Dense column `c` is LIBSVM feature index `c + 1`. Sparse rows keep the indices of the file
/// they came from, strictly ascending; index 0 is allowed only as the sample id of a
/// precomputed kernel (`0:id 1:K(x,x₁) …`).
///
/// ```
/// use sconce_svm::Features;
/// # fn main() -> sconce_core::Result<()> {
/// let dense = Features::dense(2, 3, vec![1.0, 0.0, 2.0, 0.0, 0.5, 0.0])?;
/// let sparse = Features::sparse(vec![0, 2, 3], vec![1, 3, 2], vec![1.0, 2.0, 0.5])?;
/// assert_eq!(dense.rows(), 2);
/// assert_eq!(sparse.max_index(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// `rows × cols` values, row-major.
    Dense {
        /// Number of samples.
        rows: usize,
        /// Number of features.
        cols: usize,
        /// `rows · cols` values.
        values: Vec<f64>,
    },
    /// Compressed sparse rows.
    Sparse {
        /// `rows + 1` offsets into `indices`/`values`.
        indptr: Vec<usize>,
        /// LIBSVM feature indices, strictly ascending within a row.
        indices: Vec<u32>,
        /// The values.
        values: Vec<f64>,
    },
}

/// A borrowed sample: dense values or sparse `(index, value)` pairs.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// Values of features `1..=len`.
    Dense(&'a [f64]),
    /// Indices and values.
    Sparse(&'a [u32], &'a [f64]),
}

impl Row<'_> {
    /// The value at LIBSVM index `index` (0 when absent).
    pub fn get(&self, index: u32) -> f64 {
        match *self {
            Row::Dense(v) => {
                if index == 0 {
                    0.0
                } else {
                    v.get(index as usize - 1).copied().unwrap_or(0.0)
                }
            }
            Row::Sparse(ix, v) => ix.binary_search(&index).map_or(0.0, |p| v[p]),
        }
    }

    /// `(index, value)` pairs of the stored entries (zeros of a dense row included).
    pub fn entries(&self) -> Vec<(u32, f64)> {
        match *self {
            Row::Dense(v) => v.iter().enumerate().map(|(c, &x)| (c as u32 + 1, x)).collect(),
            Row::Sparse(ix, v) => ix.iter().copied().zip(v.iter().copied()).collect(),
        }
    }
}

impl Features {
    /// A dense matrix; every value must be finite.
    ///
    /// # Errors
    /// [`Error::Shape`] when `values.len() != rows · cols`; [`Error::Data`] for NaN/Inf.
    pub fn dense(rows: usize, cols: usize, values: Vec<f64>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::shape("Features::dense", format!("{rows}·{cols} values"), &[values.len()]));
        }
        check_finite_values(&values, |k| k / cols.max(1))?;
        Ok(Self::Dense { rows, cols, values })
    }

    /// A dense matrix from `f32` values (candle tensors, image features).
    ///
    /// # Errors
    /// As [`Features::dense`].
    pub fn dense_f32(rows: usize, cols: usize, values: &[f32]) -> Result<Self> {
        Self::dense(rows, cols, values.iter().map(|&v| f64::from(v)).collect())
    }

    /// Sparse rows (CSR). Indices must be strictly ascending within each row.
    ///
    /// # Errors
    /// [`Error::Data`] for inconsistent offsets, unsorted indices or non-finite values.
    pub fn sparse(indptr: Vec<usize>, indices: Vec<u32>, values: Vec<f64>) -> Result<Self> {
        if indptr.is_empty() || indptr[0] != 0 || indices.len() != values.len() {
            return Err(Error::data("sparse features", "indptr must start at 0 and indices/values have equal length"));
        }
        if indptr.last() != Some(&indices.len()) || indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::data("sparse features", "indptr must be non-decreasing and end at indices.len()"));
        }
        for (r, w) in indptr.windows(2).enumerate() {
            if indices[w[0]..w[1]].windows(2).any(|p| p[1] <= p[0]) {
                return Err(Error::data("sparse features", format!("row {r}: indices must be strictly ascending")));
            }
        }
        let rows_of = |k: usize| indptr.partition_point(|&p| p <= k).saturating_sub(1);
        check_finite_values(&values, rows_of)?;
        Ok(Self::Sparse { indptr, indices, values })
    }

    /// A precomputed kernel in LIBSVM's layout: row `i` becomes `0:(i+1) 1:K[i,0] … m:K[i,m-1]`,
    /// where `k` is `rows × m` (the kernel between these samples and the `m` training samples).
    ///
    /// # Errors
    /// As [`Features::dense`].
    pub fn precomputed(rows: usize, m: usize, k: &[f64]) -> Result<Self> {
        if rows.checked_mul(m) != Some(k.len()) {
            return Err(Error::shape("Features::precomputed", format!("{rows}·{m} kernel values"), &[k.len()]));
        }
        let mut indptr = Vec::with_capacity(rows + 1);
        let mut indices = Vec::with_capacity(rows * (m + 1));
        let mut values = Vec::with_capacity(rows * (m + 1));
        indptr.push(0);
        for i in 0..rows {
            indices.push(0);
            values.push((i + 1) as f64);
            for j in 0..m {
                indices.push(j as u32 + 1);
                values.push(k[i * m + j]);
            }
            indptr.push(indices.len());
        }
        Self::sparse(indptr, indices, values)
    }

    /// Number of samples.
    pub fn rows(&self) -> usize {
        match self {
            Self::Dense { rows, .. } => *rows,
            Self::Sparse { indptr, .. } => indptr.len() - 1,
        }
    }

    /// The largest feature index present (LIBSVM's "number of features"; dense: the column count).
    pub fn max_index(&self) -> u32 {
        match self {
            Self::Dense { cols, .. } => *cols as u32,
            Self::Sparse { indices, indptr, .. } => (0..indptr.len() - 1)
                .filter(|&r| indptr[r + 1] > indptr[r])
                .map(|r| indices[indptr[r + 1] - 1])
                .max()
                .unwrap_or(0),
        }
    }

    /// Sample `i`.
    ///
    /// # Panics
    /// Never for `i < rows()`; callers index within range.
    pub fn row(&self, i: usize) -> Row<'_> {
        match self {
            Self::Dense { cols, values, .. } => Row::Dense(&values[i * cols..(i + 1) * cols]),
            Self::Sparse { indptr, indices, values } => {
                let (a, b) = (indptr[i], indptr[i + 1]);
                Row::Sparse(&indices[a..b], &values[a..b])
            }
        }
    }

    /// The samples at `idx`, in that order, in the same representation.
    pub fn select(&self, idx: &[usize]) -> Self {
        match self {
            Self::Dense { cols, values, .. } => {
                let mut out = Vec::with_capacity(idx.len() * cols);
                for &i in idx {
                    out.extend_from_slice(&values[i * cols..(i + 1) * cols]);
                }
                Self::Dense { rows: idx.len(), cols: *cols, values: out }
            }
            Self::Sparse { indptr, indices, values } => {
                let mut p = vec![0];
                let (mut ix, mut vs) = (Vec::new(), Vec::new());
                for &i in idx {
                    ix.extend_from_slice(&indices[indptr[i]..indptr[i + 1]]);
                    vs.extend_from_slice(&values[indptr[i]..indptr[i + 1]]);
                    p.push(ix.len());
                }
                Self::Sparse { indptr: p, indices: ix, values: vs }
            }
        }
    }

    /// The same samples as sparse rows, dropping exact zeros (what LIBSVM stores).
    pub fn to_sparse(&self) -> Self {
        match self {
            Self::Sparse { .. } => self.clone(),
            Self::Dense { rows, cols, values } => {
                let mut p = vec![0];
                let (mut ix, mut vs) = (Vec::new(), Vec::new());
                for r in 0..*rows {
                    for c in 0..*cols {
                        let v = values[r * cols + c];
                        if v != 0.0 {
                            ix.push(c as u32 + 1);
                            vs.push(v);
                        }
                    }
                    p.push(ix.len());
                }
                Self::Sparse { indptr: p, indices: ix, values: vs }
            }
        }
    }

    /// The same samples as a dense matrix with `cols` columns (features `1..=cols`).
    ///
    /// # Errors
    /// [`Error::Data`] when a sparse row has index 0 or an index above `cols`.
    pub fn to_dense(&self, cols: usize) -> Result<Self> {
        match self {
            Self::Dense { rows, cols: c, values } if *c == cols => {
                Ok(Self::Dense { rows: *rows, cols, values: values.clone() })
            }
            _ => {
                let rows = self.rows();
                let mut out = vec![0.0; rows * cols];
                for r in 0..rows {
                    for (i, v) in self.row(r).entries() {
                        if i == 0 || i as usize > cols {
                            return Err(Error::data(
                                "features",
                                format!("row {}: index {i} outside 1..={cols}", r + 1),
                            ));
                        }
                        out[r * cols + i as usize - 1] = v;
                    }
                }
                Ok(Self::Dense { rows, cols, values: out })
            }
        }
    }

    /// Fraction of stored non-zero values among `rows · max_index` entries.
    pub fn density(&self) -> f64 {
        let total = self.rows() as f64 * f64::from(self.max_index().max(1));
        let nnz = match self {
            Self::Dense { values, .. } => values.iter().filter(|v| **v != 0.0).count(),
            Self::Sparse { values, .. } => values.iter().filter(|v| **v != 0.0).count(),
        };
        nnz as f64 / total.max(1.0)
    }

    /// scikit-learn's `gamma='scale'`: `1 / (n_features · Var(X))` over all `rows · n_features`
    /// entries (absent sparse entries count as zeros); 1 when the variance is 0. Computed with
    /// numpy's pairwise summation, so it equals `1 / (X.shape[1] * X.var())` bit for bit
    /// (sparse matrices above 5·10⁷ entries use `E[x²] − E[x]²`, as scikit-learn does for them).
    pub fn gamma_scale(&self) -> f64 {
        let nf = self.max_index().max(1) as usize;
        let total = self.rows() * nf;
        if total == 0 {
            return 1.0;
        }
        let n = total as f64;
        let var = match self {
            Self::Dense { values, cols, .. } if *cols == nf => numpy_var(values),
            _ if total <= 50_000_000 => {
                let mut dense = vec![0.0; total];
                for r in 0..self.rows() {
                    for (i, v) in self.row(r).entries() {
                        if i >= 1 {
                            dense[r * nf + i as usize - 1] = v;
                        }
                    }
                }
                numpy_var(&dense)
            }
            Self::Dense { values, .. } | Self::Sparse { values, .. } => {
                let sq: Vec<f64> = values.iter().map(|v| v * v).collect();
                let mean = pairwise_sum(values) / n;
                pairwise_sum(&sq) / n - mean * mean
            }
        };
        if var == 0.0 { 1.0 } else { 1.0 / (nf as f64 * var) }
    }

    /// Whether any stored value is negative.
    pub(crate) fn has_negative(&self) -> bool {
        match self {
            Self::Dense { values, .. } | Self::Sparse { values, .. } => values.iter().any(|v| *v < 0.0),
        }
    }
}

fn check_finite_values(values: &[f64], row_of: impl Fn(usize) -> usize) -> Result<()> {
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::data(
            "features",
            format!(
                "row {} holds {}; SVMs need finite features — impute or drop missing values first",
                row_of(k) + 1,
                values[k]
            ),
        ));
    }
    Ok(())
}

/// numpy's pairwise summation (`pairwise_sum_DOUBLE`): blocks of 128 with eight accumulators,
/// halves above that — so sums here equal numpy's bit for bit.
pub(crate) fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut r = 0.0;
        for v in a {
            r += v;
        }
        r
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `numpy.var` of all values: `Σ(x − mean)² / n` with pairwise sums.
fn numpy_var(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let mean = pairwise_sum(v) / n;
    let sq: Vec<f64> = v.iter().map(|x| (x - mean) * (x - mean)).collect();
    pairwise_sum(&sq) / n
}
