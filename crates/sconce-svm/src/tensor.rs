//! The candle boundary: [`sconce_core::Fit`] for [`SvmParams`] and [`sconce_core::Predict`]
//! for [`SvmModel`], taking `[N, F]` feature tensors and `[N]` target tensors.

use candle_core::{DType, Tensor};
use sconce_core::{Error, Fit, Predict, Result, check};

use crate::features::Features;
use crate::model::SvmModel;
use crate::params::SvmParams;

/// `[N, F]` tensor (any float or integer dtype) → dense features.
///
/// # Errors
/// [`Error::Shape`] for another rank; [`Error::Data`] for NaN/Inf.
pub fn features_from_tensor(x: &Tensor) -> Result<Features> {
    let [n, f] = check::dims::<2>(x, "SVM features", "[N, F]")?;
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Features::dense(n, f, v)
}

impl Fit for SvmParams {
    type Model = SvmModel;

    /// Trains on `x` `[N, F]` and `y` `[N]` (class labels as integers of any dtype, or real
    /// targets for the regressions).
    fn fit(&self, x: &Tensor, y: &Tensor) -> Result<SvmModel> {
        let xf = features_from_tensor(x)?;
        if y.rank() != 1 || y.dims()[0] != xf.rows() {
            return Err(Error::shape("SVM targets", format!("[{}] (one per row of x)", xf.rows()), y.dims()));
        }
        let yv = y.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        self.train(&xf, &yv)
    }
}

impl SvmModel {
    fn check_tensor(&self, x: &Tensor) -> Result<Features> {
        let xf = features_from_tensor(x)?;
        let f = x.dims()[1];
        if self.n_features() > 0 && f != self.n_features() as usize {
            return Err(Error::shape(
                "SVM prediction input",
                format!("[N, {}] (the number of features the model was trained on)", self.n_features()),
                x.dims(),
            ));
        }
        Ok(xf)
    }
}

impl Predict for SvmModel {
    /// `[N]` `f64`: class labels (LIBSVM's labels may be negative, so they stay `f64`),
    /// regression values, or ±1 for one-class.
    fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let xf = self.check_tensor(x)?;
        let p = SvmModel::predict(self, &xf)?;
        Ok(Tensor::from_vec(p, xf.rows(), x.device())?)
    }

    /// `[N, k(k−1)/2]` one-vs-one values for classification, `[N]` otherwise. LIBSVM's values
    /// ([`SvmModel::decision_values`]) are positive for the first label met in training; for
    /// two classes this one is signed as the trait says instead (positive: the larger label,
    /// scikit-learn's convention), so it does not depend on the order of the training data.
    fn decision_function(&self, x: &Tensor) -> Result<Tensor> {
        let xf = self.check_tensor(x)?;
        let mut d = self.decision_values(&xf)?;
        let m = self.n_decision();
        if self.svm_type().is_classification() {
            if let [first, second] = self.labels()
                && first < second
            {
                d.iter_mut().for_each(|v| *v = -*v);
            }
            Ok(Tensor::from_vec(d, (xf.rows(), m), x.device())?)
        } else {
            Ok(Tensor::from_vec(d, xf.rows(), x.device())?)
        }
    }
}
