//! SVM hyper-parameters: the five formulations, LIBSVM's defaults, and the checks LIBSVM's
//! `svm_check_parameter` makes (plus the ones it forgets), all before any work starts.

use sconce_core::{Error, Result};

use crate::kernel::{Gamma, KernelType};

/// The formulation. Numbers follow LIBSVM's `-s`; OpenCV calls them `C_SVC`, `NU_SVC`,
/// `ONE_CLASS`, `EPS_SVR`, `NU_SVR`.
///
/// | type | task | trades off | LIBSVM reports |
/// |---|---|---|---|
/// | `CSvc` (0) | classification | `C`: cost of a margin violation | the equivalent ν |
/// | `NuSvc` (1) | classification | `ν` ∈ (0,1]: upper bound on the margin-error fraction, lower bound on the SV fraction | the equivalent `C = 1/r` |
/// | `OneClass` (2) | novelty detection | `ν`: fraction of training points allowed outside | — |
/// | `EpsilonSvr` (3) | regression | `C` and the tube width `p` (ε) | the equivalent ν |
/// | `NuSvr` (4) | regression | `C` and `ν` (the tube width is learned) | the learned ε |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SvmType {
    /// C-support vector classification.
    CSvc,
    /// ν-support vector classification.
    NuSvc,
    /// One-class SVM (Schölkopf's ν formulation).
    OneClass,
    /// ε-support vector regression.
    EpsilonSvr,
    /// ν-support vector regression.
    NuSvr,
}

impl SvmType {
    /// LIBSVM's `-s` number.
    pub fn code(self) -> u8 {
        match self {
            Self::CSvc => 0,
            Self::NuSvc => 1,
            Self::OneClass => 2,
            Self::EpsilonSvr => 3,
            Self::NuSvr => 4,
        }
    }

    /// The type for a `-s` number.
    pub fn from_code(s: i64) -> Option<Self> {
        Some(match s {
            0 => Self::CSvc,
            1 => Self::NuSvc,
            2 => Self::OneClass,
            3 => Self::EpsilonSvr,
            4 => Self::NuSvr,
            _ => return None,
        })
    }

    /// The name in a LIBSVM model file.
    pub fn name(self) -> &'static str {
        match self {
            Self::CSvc => "c_svc",
            Self::NuSvc => "nu_svc",
            Self::OneClass => "one_class",
            Self::EpsilonSvr => "epsilon_svr",
            Self::NuSvr => "nu_svr",
        }
    }

    /// The type for a model-file name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::CSvc, Self::NuSvc, Self::OneClass, Self::EpsilonSvr, Self::NuSvr].into_iter().find(|t| t.name() == s)
    }

    /// C-SVC or nu-SVC.
    pub fn is_classification(self) -> bool {
        matches!(self, Self::CSvc | Self::NuSvc)
    }

    /// epsilon-SVR or nu-SVR.
    pub fn is_regression(self) -> bool {
        matches!(self, Self::EpsilonSvr | Self::NuSvr)
    }
}

/// Everything that defines a training run. Start from a constructor per formulation
/// ([`SvmParams::c_svc`] …) — each with LIBSVM's defaults except `gamma`, which defaults to
/// scikit-learn's `Gamma::Scale` (the `svm-train` example keeps LIBSVM's `1/num_features`).
///
/// ```
/// use sconce_svm::{Features, Gamma, KernelType, SvmParams};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Features::dense(4, 1, vec![0.0, 0.2, 0.8, 1.0])?;
/// let y = [1.0, 1.0, 2.0, 2.0];
/// let model = SvmParams::c_svc().kernel(KernelType::Rbf).gamma(Gamma::Value(1.0)).c(10.0).train(&x, &y)?;
/// assert_eq!(model.predict(&Features::dense(2, 1, vec![0.1, 0.9])?)?, vec![1.0, 2.0]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SvmParams {
    /// The formulation.
    pub svm_type: SvmType,
    /// The kernel.
    pub kernel: KernelType,
    /// Polynomial degree (LIBSVM default 3).
    pub degree: i32,
    /// γ, or how to derive it from the training data.
    pub gamma: Gamma,
    /// coef0 of the polynomial and sigmoid kernels (default 0).
    pub coef0: f64,
    /// C of C-SVC, ε-SVR and ν-SVR (default 1).
    pub c: f64,
    /// ν of ν-SVC, one-class and ν-SVR (default 0.5).
    pub nu: f64,
    /// The ε of ε-SVR's insensitive tube (LIBSVM's `-p`, default 0.1).
    pub p: f64,
    /// Kernel cache budget in MB (default 100, as `svm-train`).
    pub cache_mb: f64,
    /// Stopping tolerance on the maximal KKT violation (default 1e-3).
    pub eps: f64,
    /// LIBSVM's shrinking heuristic (default on).
    pub shrinking: bool,
    /// Fit probability models (Platt / Laplace / density marks) by internal 5-fold CV.
    pub probability: bool,
    /// `(label, w)`: class `label`'s C becomes `w·C` (C-SVC).
    pub class_weights: Vec<(i32, f64)>,
    /// Iteration cap per sub-problem (default LIBSVM's `max(10⁷, 100·l)`); hitting it warns
    /// and marks the model as not converged.
    pub max_iter: Option<usize>,
    /// Seed of the internal CV shuffles (probability models, cross-validation).
    pub seed: u64,
    /// `predict` returns the most probable class (when the model has probabilities) instead
    /// of the one-vs-one vote, so that it always agrees with `predict_probability`.
    pub predict_from_probability: bool,
    /// Compute training kernel columns from `f32` copies of dense features (OpenCV's
    /// precision): half the memory traffic per column. The optimum is the same within the
    /// tolerance, but kernel values differ from LIBSVM's in the last `f32` bits, so the SMO
    /// path, the iteration count and the support vectors at the margin may differ. Off by
    /// default (LIBSVM-identical models).
    pub single_precision: bool,
}

impl SvmParams {
    fn base(svm_type: SvmType) -> Self {
        Self {
            svm_type,
            kernel: KernelType::Rbf,
            degree: 3,
            gamma: Gamma::Scale,
            coef0: 0.0,
            c: 1.0,
            nu: 0.5,
            p: 0.1,
            cache_mb: 100.0,
            eps: 1e-3,
            shrinking: true,
            probability: false,
            class_weights: Vec::new(),
            max_iter: None,
            seed: 0,
            predict_from_probability: false,
            single_precision: false,
        }
    }

    /// C-SVC (LIBSVM `-s 0`).
    pub fn c_svc() -> Self {
        Self::base(SvmType::CSvc)
    }
    /// ν-SVC (`-s 1`).
    pub fn nu_svc() -> Self {
        Self::base(SvmType::NuSvc)
    }
    /// One-class SVM (`-s 2`).
    pub fn one_class() -> Self {
        Self::base(SvmType::OneClass)
    }
    /// ε-SVR (`-s 3`).
    pub fn epsilon_svr() -> Self {
        Self::base(SvmType::EpsilonSvr)
    }
    /// ν-SVR (`-s 4`).
    pub fn nu_svr() -> Self {
        Self::base(SvmType::NuSvr)
    }
    /// The parameters for a formulation.
    pub fn new(svm_type: SvmType) -> Self {
        Self::base(svm_type)
    }

    /// Sets the kernel.
    #[must_use]
    pub fn kernel(mut self, k: KernelType) -> Self {
        self.kernel = k;
        self
    }
    /// Sets γ.
    #[must_use]
    pub fn gamma(mut self, g: Gamma) -> Self {
        self.gamma = g;
        self
    }
    /// Sets the polynomial degree.
    #[must_use]
    pub fn degree(mut self, d: i32) -> Self {
        self.degree = d;
        self
    }
    /// Sets coef0.
    #[must_use]
    pub fn coef0(mut self, c: f64) -> Self {
        self.coef0 = c;
        self
    }
    /// Sets C.
    #[must_use]
    pub fn c(mut self, c: f64) -> Self {
        self.c = c;
        self
    }
    /// Sets ν.
    #[must_use]
    pub fn nu(mut self, nu: f64) -> Self {
        self.nu = nu;
        self
    }
    /// Sets ε-SVR's tube width.
    #[must_use]
    pub fn epsilon(mut self, p: f64) -> Self {
        self.p = p;
        self
    }
    /// Sets the cache budget in MB.
    #[must_use]
    pub fn cache_mb(mut self, mb: f64) -> Self {
        self.cache_mb = mb;
        self
    }
    /// Sets the stopping tolerance.
    #[must_use]
    pub fn tolerance(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Turns shrinking on or off.
    #[must_use]
    pub fn shrinking(mut self, on: bool) -> Self {
        self.shrinking = on;
        self
    }
    /// Fits probability models.
    #[must_use]
    pub fn probability(mut self, on: bool) -> Self {
        self.probability = on;
        self
    }
    /// Multiplies class `label`'s C by `w`.
    #[must_use]
    pub fn class_weight(mut self, label: i32, w: f64) -> Self {
        self.class_weights.push((label, w));
        self
    }
    /// Caps the SMO iterations per sub-problem.
    #[must_use]
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = Some(n);
        self
    }
    /// Seeds the internal CV shuffles.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Computes training kernel columns in single precision (see the field).
    #[must_use]
    pub fn single_precision(mut self, on: bool) -> Self {
        self.single_precision = on;
        self
    }

    /// Makes `predict` agree with the most probable class.
    #[must_use]
    pub fn predict_from_probability(mut self, on: bool) -> Self {
        self.predict_from_probability = on;
        self
    }

    /// The checks that need no data (LIBSVM's `svm_check_parameter`, OpenCV's `checkParams`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the parameter and its valid range.
    pub fn validate(&self) -> Result<()> {
        let bad = |p: &str, why: String| Err(Error::config(p, why));
        if self.kernel.uses_gamma()
            && let crate::Gamma::Value(g) = self.gamma
            && !(g.is_finite() && g >= 0.0)
        {
            return bad("gamma", format!("{g} must be finite and ≥ 0 (or use Gamma::Scale / Gamma::InvFeatures)"));
        }
        if self.kernel == KernelType::Poly && self.degree < 0 {
            return bad("degree", format!("{} must be ≥ 0", self.degree));
        }
        if !self.coef0.is_finite() {
            return bad("coef0", "must be finite".into());
        }
        if !(self.cache_mb.is_finite() && self.cache_mb > 0.0) {
            return bad("cache_mb", format!("{} must be > 0 (LIBSVM's default is 100 MB)", self.cache_mb));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("{} must be > 0 (LIBSVM's default is 0.001)", self.eps));
        }
        if matches!(self.svm_type, SvmType::CSvc | SvmType::EpsilonSvr | SvmType::NuSvr)
            && !(self.c.is_finite() && self.c > 0.0)
        {
            return bad("C", format!("{} must be > 0", self.c));
        }
        if matches!(self.svm_type, SvmType::NuSvc | SvmType::OneClass | SvmType::NuSvr)
            && !(self.nu.is_finite() && self.nu > 0.0 && self.nu <= 1.0)
        {
            return bad("nu", format!("{} must lie in (0, 1]", self.nu));
        }
        if self.svm_type == SvmType::EpsilonSvr && !(self.p.is_finite() && self.p >= 0.0) {
            return bad("p (epsilon)", format!("{} must be ≥ 0", self.p));
        }
        for &(label, w) in &self.class_weights {
            if !(w.is_finite() && w > 0.0) {
                return bad("class weight", format!("weight {w} for class {label} must be > 0"));
            }
        }
        if !self.class_weights.is_empty() && self.svm_type != SvmType::CSvc {
            tracing::warn!("class weights apply to C-SVC only (LIBSVM's -wi); ignored for {}", self.svm_type.name());
        }
        if self.max_iter == Some(0) {
            return bad("max_iter", "must be ≥ 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_parameters_are_refused_with_the_range() {
        let e = SvmParams::nu_svc().nu(1.5).validate().unwrap_err().to_string();
        assert!(e.contains("nu") && e.contains("(0, 1]"), "{e}");
        assert!(SvmParams::nu_svc().nu(1.0).validate().is_ok());
        assert!(SvmParams::c_svc().c(0.0).validate().is_err());
        assert!(SvmParams::c_svc().nu(7.0).validate().is_ok(), "nu is unused by C-SVC");
        assert!(SvmParams::epsilon_svr().epsilon(-0.1).validate().is_err());
        assert!(SvmParams::c_svc().gamma(Gamma::Value(f64::NAN)).validate().is_err());
        assert!(SvmParams::c_svc().tolerance(0.0).validate().is_err());
        assert!(SvmParams::c_svc().cache_mb(-1.0).validate().is_err());
        assert!(SvmParams::c_svc().class_weight(1, 0.0).validate().is_err());
        for s in 0..5 {
            let t = SvmType::from_code(s).unwrap();
            assert_eq!(SvmType::from_name(t.name()), Some(t));
        }
    }
}
