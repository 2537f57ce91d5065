//! The head checker: inspects a model's output shape, its final activation, the loss and a
//! batch of targets, and reports configurations that produce NaN, silent non-learning or
//! meaningless metrics — each with a severity and a plain-language fix.

use std::fmt;

use candle_core::{DType, Tensor};
use sconce_core::{Activation, Error, Loss, Result, TargetKind};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; training can proceed.
    Info,
    /// Probably wrong; training proceeds, the finding is logged.
    Warning,
    /// Certainly wrong; training must not start.
    Error,
}

/// One problem found by [`HeadChecker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// A stable identifier of the rule, e.g. `"softmax-one-channel"`.
    pub rule: &'static str,
    /// What is wrong and what to do instead.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} [{}]: {}", self.severity, self.rule, self.message)
    }
}

/// Checks an output head before training: output shape, final activation, loss, targets.
///
/// ```
/// use sconce_core::Activation;
/// use sconce_losses::{CrossEntropy, HeadChecker, Severity};
/// # fn main() -> sconce_core::Result<()> {
/// // The configuration that gave NaN: a 1-channel mask head with softmax and categorical CE.
/// let findings = HeadChecker::new(&[8, 1, 250, 250], Activation::Softmax { axis: 1 }, &CrossEntropy::new()).check()?;
/// assert!(findings.iter().any(|f| f.severity == Severity::Error && f.rule == "softmax-one-channel"));
/// # Ok(()) }
/// ```
pub struct HeadChecker<'a> {
    output: Vec<usize>,
    activation: Activation,
    loss: &'a dyn Loss,
    targets: Option<Tensor>,
    ignore_index: Option<i64>,
    threshold: Option<f64>,
    dtype: Option<DType>,
}

impl<'a> HeadChecker<'a> {
    /// A checker for a model whose output has `output_dims` (`[N, C, ...]`) after applying
    /// `final_activation`, trained with `loss`.
    pub fn new(output_dims: &[usize], final_activation: Activation, loss: &'a dyn Loss) -> Self {
        Self {
            output: output_dims.to_vec(),
            activation: final_activation,
            loss,
            targets: None,
            ignore_index: loss.ignore_index(),
            threshold: None,
            dtype: None,
        }
    }

    /// A batch of training targets, for the data-informed rules.
    pub fn targets(mut self, t: &Tensor) -> Self {
        self.targets = Some(t.clone());
        self
    }

    /// The target value the loss ignores (by default the loss's own [`Loss::ignore_index`]).
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = Some(i);
        self
    }

    /// The threshold a metric applies to the model's raw outputs (e.g. accuracy at 0.5).
    pub fn metric_threshold(mut self, t: f64) -> Self {
        self.threshold = Some(t);
        self
    }

    /// The dtype of the model's outputs (half precision is flagged).
    pub fn output_dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Runs every rule; findings are sorted most serious first.
    ///
    /// # Errors
    /// Only candle's, when reading the targets fails.
    pub fn check(&self) -> Result<Vec<Finding>> {
        let mut out = Vec::new();
        let mut push = |severity, rule, message: String| out.push(Finding { severity, rule, message });
        let channels = self.output.get(1).copied().unwrap_or(1);
        let kind = self.loss.target_kind();
        let classification =
            matches!(kind, TargetKind::BinaryProbabilities | TargetKind::ClassIndices | TargetKind::ClassProbabilities);

        // Rule: softmax over an axis of size 1.
        if let Some(axis) = self.activation.normalises_over_axis()
            && self.output.get(axis) == Some(&1)
        {
            {
                push(
                    Severity::Error,
                    "softmax-one-channel",
                    format!(
                        "{} over an axis of size 1 always outputs 1 (log-softmax 0): the loss is constant and nothing \
                         learns. For a binary mask or a yes/no output use one channel with a sigmoid and binary \
                         cross-entropy from logits (BinaryCrossEntropy), or two channels with softmax",
                        self.activation
                    ),
                );
            }
        }
        // Rule: categorical cross-entropy with one output.
        if kind == TargetKind::ClassIndices && self.loss.activation().normalises_over_axis().is_some() && channels == 1
        {
            push(
                Severity::Error,
                "categorical-ce-one-output",
                format!(
                    "{} with 1 output channel: softmax of one value is 1, the loss is 0 and the gradient 0. Use \
                     BinaryCrossEntropy (sigmoid) for two classes, or one output per class",
                    self.loss.name()
                ),
            );
        }
        // Rule: an activation in front of a loss that takes logits.
        if !self.activation.is_identity() && classification {
            let why = match self.activation {
                Activation::Sigmoid
                | Activation::Softmax { .. }
                | Activation::LogSoftmax { .. }
                | Activation::HardSigmoid => {
                    format!("the loss applies {} itself, so it would be applied twice", self.loss.activation())
                }
                a => {
                    let (lo, hi) = a.range();
                    format!(
                        "{a} limits the logits to [{lo}, {hi}], so the predicted probabilities cannot reach 0 or 1 (ReLU: σ ≥ 0.5 always)"
                    )
                }
            };
            push(
                Severity::Error,
                "activation-before-logits-loss",
                format!(
                    "the model ends in {} but {} takes raw logits: {why}. Remove the final activation (use identity) \
                     and apply {} only to make predictions",
                    self.activation,
                    self.loss.name(),
                    self.loss.activation()
                ),
            );
        }
        // Rule: thresholding raw logits at 0.5.
        if let Some(t) = self.threshold
            && self.activation.is_identity()
            && classification
            && t != 0.0
        {
            {
                push(
                    Severity::Warning,
                    "threshold-on-logits",
                    format!(
                        "a metric thresholds the raw outputs at {t}, but they are logits: logit 0 is probability 0.5. \
                         Threshold logits at 0, or apply the sigmoid first and threshold at 0.5"
                    ),
                );
            }
        }
        // Rule: losses in half precision.
        if matches!(self.dtype, Some(DType::F16 | DType::BF16)) {
            push(
                Severity::Warning,
                "half-precision-loss",
                "the outputs are half precision: exp/log in the loss overflow or underflow there (f16 max 65504). \
                 Convert the logits to f32 before the loss"
                    .to_string(),
            );
        }
        // Rule: overlap losses state their empty-mask policy.
        if matches!(self.loss.name(), "dice" | "jaccard" | "tversky") {
            push(
                Severity::Info,
                "empty-class-policy",
                format!(
                    "{}: a class with no target pixels in the batch contributes 0 to the loss (smp's rule); batches \
                     where a class is absent train only the classes present",
                    self.loss.name()
                ),
            );
        }
        if let Some(t) = &self.targets {
            // Cross-entropy also accepts probability targets with the output's full shape.
            let kind = if kind == TargetKind::ClassIndices && t.dims() == self.output.as_slice() && t.dtype().is_float()
            {
                TargetKind::ClassProbabilities
            } else {
                kind
            };
            self.target_rules(t, channels, kind, &mut push)?;
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Ok(out)
    }

    fn target_rules(
        &self,
        t: &Tensor,
        channels: usize,
        kind: TargetKind,
        push: &mut impl FnMut(Severity, &'static str, String),
    ) -> Result<()> {
        let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            push(Severity::Error, "non-finite-targets", format!("target element {i} is {v}; remove or impute it"));
            return Ok(());
        }
        let ignore = self.ignore_index.map(|v| v as f64);
        let valid: Vec<f64> = values.iter().copied().filter(|v| Some(*v) != ignore).collect();
        let (min, max) = valid.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        match kind {
            TargetKind::ClassIndices => {
                if valid.iter().any(|v| v.fract() != 0.0 || *v < 0.0 || *v >= channels as f64) {
                    push(
                        Severity::Error,
                        "labels-out-of-range",
                        format!(
                            "class labels range over [{min}, {max}] but the model has {channels} outputs: labels must be \
                             integers in 0..{channels}{}",
                            ignore.map(|v| format!(" (or the ignore_index {v})")).unwrap_or_default()
                        ),
                    );
                } else if max.is_finite() && (max as usize) + 1 < channels {
                    push(
                        Severity::Info,
                        "fewer-classes-than-outputs",
                        format!("this batch only has labels up to {max} but the model has {channels} outputs"),
                    );
                }
            }
            TargetKind::BinaryProbabilities | TargetKind::ClassProbabilities => {
                if min < 0.0 || max > 1.0 {
                    let hint = if max > 1.0 && max <= 255.0 { " (a 0/255 mask: divide by 255)" } else { "" };
                    push(
                        Severity::Error,
                        "targets-outside-unit-interval",
                        format!("targets range over [{min}, {max}]; cross-entropy needs values in [0, 1]{hint}"),
                    );
                } else if t.rank() >= 2 && channels > 1 && t.dims() == self.output.as_slice() {
                    self.row_rules(t, kind, push)?;
                }
            }
            TargetKind::Real | TargetKind::Counts | TargetKind::SignedLabels => {
                let (lo, hi) = self.activation.range();
                let outside = valid.iter().filter(|v| **v < lo || **v > hi).count();
                if outside > 0 {
                    let all = outside == valid.len();
                    push(
                        if all { Severity::Error } else { Severity::Warning },
                        "bounded-output-for-targets",
                        format!(
                            "{} outputs lie in [{lo}, {hi}] but {outside} of {} targets lie outside it ({}); the model \
                             cannot fit them. Use the identity (no final activation) for unbounded regression targets",
                            self.activation,
                            valid.len(),
                            if all { "all of them" } else { "some" }
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// One-hot targets with BCE; multi-hot targets with softmax CE.
    fn row_rules(
        &self,
        t: &Tensor,
        kind: TargetKind,
        push: &mut impl FnMut(Severity, &'static str, String),
    ) -> Result<()> {
        let row_sums = t.to_dtype(DType::F64)?.sum(1)?.flatten_all()?.to_vec1::<f64>()?;
        let hard = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().all(|v| *v == 0.0 || *v == 1.0);
        let one_hot = hard && row_sums.iter().all(|s| *s == 1.0);
        if kind == TargetKind::BinaryProbabilities && one_hot {
            push(
                Severity::Warning,
                "one-hot-with-bce",
                "every target row has exactly one 1: the classes are mutually exclusive. Use softmax + CrossEntropy; \
                 and measure categorical accuracy — binary accuracy over one-hot rows scores (C−1)/C for a model \
                 that predicts all zeros (96% for 26 classes)"
                    .to_string(),
            );
        }
        if kind == TargetKind::ClassProbabilities && row_sums.iter().any(|s| (s - 1.0).abs() > 1e-6) {
            push(
                Severity::Warning,
                "multi-hot-with-softmax",
                "target rows do not sum to 1 (several labels per sample): softmax forces one winner. Use sigmoid + \
                 BinaryCrossEntropy for multi-label outputs"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Runs the rules and fails with [`Error::HeadCheck`] if any finding is an error; returns
    /// the remaining findings (warnings, infos) otherwise.
    ///
    /// # Errors
    /// [`Error::HeadCheck`] listing every error-level finding.
    pub fn enforce(&self) -> Result<Vec<Finding>> {
        let findings = self.check()?;
        let errors: Vec<String> =
            findings.iter().filter(|f| f.severity == Severity::Error).map(|f| f.to_string()).collect();
        if errors.is_empty() { Ok(findings) } else { Err(Error::HeadCheck { findings: errors }) }
    }
}
