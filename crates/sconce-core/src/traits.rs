//! The shared traits through which sconce's crates compose: backbones, losses, output
//! encodings, estimators, and hyper-parameter validation.
//!
//! Leaf crates never name each other; they meet here. A U-Net decoder sits on any
//! [`Backbone`], a classifier head on any [`OutputEncoding`], an ECOC bit on any [`Fit`].

use candle_core::{ModuleT, Tensor};

use crate::{Activation, Result};

/// A feature extractor for images (ResNet, DenseNet, a U-Net encoder).
///
/// `forward_t(x, train)` (from candle's [`ModuleT`]) returns the pooled features `[N, F]`;
/// [`Backbone::forward_features`] returns the multi-scale maps a decoder needs.
///
/// # Shapes
/// - input: `[N, in_channels, H, W]`
/// - `forward_features`: one `[N, feature_channels[i], ⌈H / s_i⌉, ⌈W / s_i⌉]` per stride
///   `s_i` in [`Backbone::feature_strides`] (2, 4, 8, 16, 32 for the classic CNNs)
pub trait Backbone: ModuleT + Send + Sync {
    /// Number of input channels (3 for RGB).
    fn in_channels(&self) -> usize;

    /// Channels of each feature map returned by [`Backbone::forward_features`], shallow to deep.
    fn feature_channels(&self) -> &[usize];

    /// Downsampling factor of each feature map relative to the input, shallow to deep.
    fn feature_strides(&self) -> &[usize];

    /// The multi-scale feature maps, shallow to deep. `train` selects batch statistics in
    /// BatchNorm and enables dropout.
    ///
    /// # Errors
    /// A shape error for input of the wrong rank or channel count.
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>>;

    /// Size of the pooled feature vector (the deepest map's channels).
    fn num_features(&self) -> usize {
        self.feature_channels().last().copied().unwrap_or(0)
    }
}

/// What a loss expects as its target tensor; the head checker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Values in `[0, 1]` with the same shape as the logits (binary or multi-label).
    BinaryProbabilities,
    /// Integer class indices, shape of the logits without the class axis.
    ClassIndices,
    /// One probability distribution per sample along the class axis (one-hot or soft).
    ClassProbabilities,
    /// Labels in `{−1, +1}` (or `{0, 1}` mapped to them), same shape as the logits.
    SignedLabels,
    /// Real-valued regression targets, same shape as the outputs.
    Real,
    /// Non-negative counts (Poisson).
    Counts,
}

/// A differentiable training objective computed from raw model outputs.
///
/// Losses take **logits**, never probabilities: the activation they imply
/// ([`Loss::activation`]) is fused into the loss so it stays finite for any input.
pub trait Loss: Send + Sync + std::fmt::Debug {
    /// A short name, e.g. `"binary_cross_entropy_with_logits"`.
    fn name(&self) -> &str;

    /// The loss value, reduced as configured (a scalar, or per-element for no reduction).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when `logits` and `target` do not fit together,
    /// [`crate::Error::Data`] for targets out of range or non-finite.
    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor>;

    /// The activation that turns the logits into predictions (e.g. `Sigmoid` for BCE).
    fn activation(&self) -> Activation;

    /// What the target tensor must hold.
    fn target_kind(&self) -> TargetKind;

    /// The integer target value this loss skips (PyTorch's `ignore_index`, e.g. 255 for void
    /// pixels), if any. The head checker reads it, so such targets are not out of range.
    fn ignore_index(&self) -> Option<i64> {
        None
    }
}

/// The final layer an [`OutputEncoding`] needs on top of `F` pooled (or per-pixel) features.
#[derive(Debug, Clone)]
pub enum HeadSpec {
    /// A trained affine map `F → out_features` (`Linear`, or a 1×1 conv per pixel).
    Learned {
        /// Number of outputs (the code length).
        out_features: usize,
        /// Whether the map has a bias.
        bias: bool,
    },
    /// A fixed (untrained) matrix, as in Hoffer et al., "Fix your classifier" (ICLR 2018).
    Fixed {
        /// A learned linear projection of the features to this size first (when the fixed
        /// matrix needs a feature size the backbone does not have, e.g. a power of two).
        projection: Option<usize>,
        /// `[out_features, F]` (or `[out_features, projection]`), not trained.
        weight: Tensor,
        /// L2-normalise the features before the product.
        normalize_input: bool,
        /// A learned scalar multiplying the output, with this initial value.
        learned_scale: Option<f64>,
        /// A learned bias per output.
        bias: bool,
    },
}

/// How class labels map to a model's outputs and back (one-hot, binary code, Hadamard, ECOC).
///
/// The code axis is 1: outputs are `[N, L]` for classification or `[N, L, H, W]` per pixel.
pub trait OutputEncoding: Send + Sync {
    /// Number of classes `K`.
    fn num_classes(&self) -> usize;

    /// Number of outputs `L` the head produces.
    fn code_len(&self) -> usize;

    /// Integer labels `[N]` or `[N, H, W]` → training targets `[N, L]` or `[N, L, H, W]`.
    ///
    /// # Errors
    /// [`crate::Error::Data`] for a label `>= num_classes`.
    fn encode(&self, labels: &Tensor) -> Result<Tensor>;

    /// The final layer this encoding needs on `in_features` features.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the encoding cannot be built for `in_features`.
    fn head(&self, in_features: usize) -> Result<HeadSpec>;

    /// The training loss of head outputs against integer labels.
    ///
    /// # Errors
    /// Shape and data errors as [`Loss::loss`].
    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor>;

    /// Head outputs → class scores `[N, K, ..]`, higher is better (log-probabilities where the
    /// encoding defines them).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when axis 1 is not `code_len`.
    fn scores(&self, logits: &Tensor) -> Result<Tensor>;

    /// Head outputs → predicted labels (`u32`), the arg-max of [`OutputEncoding::scores`].
    ///
    /// # Errors
    /// As [`OutputEncoding::scores`].
    fn decode(&self, logits: &Tensor) -> Result<Tensor> {
        Ok(self.scores(logits)?.argmax(1)?)
    }
}

/// Validation of a configuration or hyper-parameter set. Never panics.
pub trait Validate {
    /// `Ok` if every value is in range and the values are consistent.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the first offending parameter.
    fn validate(&self) -> Result<()>;
}

/// Unchecked hyper-parameters that turn into checked ones (linfa's typestate): only the
/// checked type implements [`Fit`], so nothing trains on unvalidated parameters.
pub trait ParamGuard {
    /// The validated parameter type.
    type Checked;

    /// Validates and borrows the checked parameters.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid parameter.
    fn check_ref(&self) -> Result<&Self::Checked>;

    /// Validates and converts into the checked parameters.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for an invalid parameter.
    fn check(self) -> Result<Self::Checked>;
}

/// A classical estimator that learns a model from features `x` `[N, F]` and targets `y` `[N]`
/// (class labels as `u32`, or real values).
pub trait Fit {
    /// The trained model.
    type Model;

    /// Trains a model.
    ///
    /// # Errors
    /// Shape, data and convergence errors.
    fn fit(&self, x: &Tensor, y: &Tensor) -> Result<Self::Model>;
}

impl<P: ParamGuard> Fit for P
where
    P::Checked: Fit,
{
    type Model = <P::Checked as Fit>::Model;

    fn fit(&self, x: &Tensor, y: &Tensor) -> Result<Self::Model> {
        self.check_ref()?.fit(x, y)
    }
}

/// A trained model's predictions. Fallible: bad input is an `Err`, never a panic.
pub trait Predict {
    /// Predictions `[N]`: class labels (`u32`) or real values.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] for the wrong number of features.
    fn predict(&self, x: &Tensor) -> Result<Tensor>;

    /// Raw decision values `[N]` (binary, regression) or `[N, M]` (one per sub-problem; a
    /// binary classifier may also give `[N, 1]`). For a binary classifier a positive value
    /// means the larger of the two labels (label 1 of
    /// 0/1 targets), as scikit-learn's `decision_function` does, whatever order the labels
    /// came in: [`Fit`] consumers such as ECOC rely on it.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] for the wrong number of features.
    fn decision_function(&self, x: &Tensor) -> Result<Tensor>;
}
