//! sconce: a machine-learning framework on candle — numerically stable losses, trainable
//! ResNet/DenseNet/U-Net backbones, output encodings and SVMs, in crates you pick one by one.
//!
//! This facade re-exports the crates behind one cargo feature each; depend on a single
//! crate (e.g. `sconce-svm`) instead when that is all you need. `sconce-core` is always
//! included: its error type, traits and seeded initialisers are re-exported at the top level.
//!
//! | feature | crate | what it holds |
//! |---|---|---|
//! | (always) | [`sconce_core`] | `Error`, shared traits, `SeededRng`, initialisers |
//! | `tensor` | [`tensor`] (`sconce-tensor`) | stable math; conv, pooling, resize, batch norm with correct backward |
//! | `losses` | [`losses`] (`sconce-losses`) | losses from logits, activations, the head checker |
//! | `metrics` | [`metrics`] (`sconce-metrics`) | confusion matrices and scikit-learn's classification metrics |
//! | `encodings` | [`encodings`] (`sconce-encodings`) | one-hot, ⌈log₂ n⌉ binary codes, fixed Hadamard heads, ECOC |
//! | `layers` | [`layers`] (`sconce-layers`) | Conv2d, BatchNorm2d, Linear, ...; the parameter store and weight loading |
//! | `backbones` | [`backbones`] (`sconce-backbones`) | ResNet, DenseNet, classic and smp-style U-Nets |
//! | `data` | [`data`] (`sconce-data`) | synthetic shapes, letters, image folders, transforms, the batch loader |
//! | `train` | [`train`] (`sconce-train`) | optimizers, LR schedules, the Trainer, evaluators |
//! | `hub` | [`hub`] (`sconce-hub`) | weights specs (`PATH` or `hub:ORG/NAME`), the local Hugging Face cache, `pretrained_cfg` |
//! | `svm` | [`svm`] (`sconce-svm`) | C-SVC, ν-SVC, one-class, ε-SVR, ν-SVR as LIBSVM; its file formats; CV and grid search |
//!
//! ```
//! use sconce::{Init, SeededRng};
//! # fn main() -> sconce::Result<()> {
//! let mut rng = SeededRng::new(1);
//! let w = Init::pytorch_default_weight().tensor(
//!     &[16, 3, 3, 3],
//!     sconce::candle_core::DType::F32,
//!     &sconce::candle_core::Device::Cpu,
//!     &mut rng,
//! )?;
//! assert_eq!(w.dims(), &[16, 3, 3, 3]);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use sconce_core::*;

#[cfg(feature = "tensor")]
pub use sconce_tensor as tensor;

#[cfg(feature = "losses")]
pub use sconce_losses as losses;

#[cfg(feature = "metrics")]
pub use sconce_metrics as metrics;

#[cfg(feature = "encodings")]
pub use sconce_encodings as encodings;

#[cfg(feature = "layers")]
pub use sconce_layers as layers;

#[cfg(feature = "backbones")]
pub use sconce_backbones as backbones;

#[cfg(feature = "data")]
pub use sconce_data as data;

#[cfg(feature = "train")]
pub use sconce_train as train;

#[cfg(feature = "hub")]
pub use sconce_hub as hub;

#[cfg(feature = "svm")]
pub use sconce_svm as svm;
