//! sconce-losses: activations as inspectable values, losses computed from logits that stay
//! finite for any input, and the head checker that refuses output configurations which give
//! NaN or meaningless metrics.
//!
//! | item | what it is |
//! |---|---|
//! | [`activate`], [`OutputActivation`] | apply a [`sconce_core::Activation`]; a layer that carries one |
//! | [`BinaryCrossEntropy`] | sigmoid + BCE from logits, `pos_weight`, label smoothing (fused) |
//! | [`CrossEntropy`] | softmax + CE from logits over axis 1: integer targets with `ignore_index`, probability targets, class weights, label smoothing (fused) |
//! | [`RegionLoss`], [`Mode`] | Dice, Jaccard (IoU), Tversky from logits in binary / multiclass / multilabel mode (smp semantics) |
//! | [`LovaszLoss`] | Lovász hinge (binary/multilabel) and Lovász-softmax (multiclass), smp semantics |
//! | [`FocalLoss`] | sigmoid focal loss (binary, multilabel, multiclass one-vs-rest; smp semantics) |
//! | [`ElementwiseLoss`], [`PointLoss`] | MSE, MAE, Huber, log-cosh, hinge, squared hinge |
//! | [`KlDivergence`], [`Poisson`], [`CategoricalHinge`], [`CategoricalFocal`] | distribution, count and margin losses |
//! | [`WeightedSum`] | combined losses, e.g. BCE + Dice |
//! | [`Reduction`], [`weighted_mean`] | none / sum / mean (over valid elements); per-sample weights |
//! | [`HeadChecker`], [`Finding`], [`Severity`] | refuses heads that give NaN or meaningless metrics, with the fix |
//!
//! Every loss implements [`sconce_core::Loss`]: it takes **logits**, states the activation it
//! implies, and returns an error naming the argument for mismatched shapes, targets out of
//! range or NaN targets.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod activation;
mod bce;
mod ce;
mod checker;
mod distribution;
mod fastmath;
mod focal;
mod kernel;
mod lovasz;
mod reduction;
mod region;
mod regression;

pub use activation::{OutputActivation, activate};
pub use bce::BinaryCrossEntropy;
pub use ce::CrossEntropy;
pub use checker::{Finding, HeadChecker, Severity};
pub use distribution::{CategoricalFocal, CategoricalHinge, KlDivergence, Poisson, WeightedSum};
pub use focal::FocalLoss;
pub use lovasz::LovaszLoss;
pub use reduction::{Reduction, WeightNorm, weighted_mean};
pub use region::{Mode, RegionLoss};
pub use regression::{ElementwiseLoss, PointLoss};
