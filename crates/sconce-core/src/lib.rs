//! sconce-core: the error type, the shared traits and the seeded random initialisers that
//! every other sconce crate builds on.
//!
//! | item | what it is for |
//! |---|---|
//! | [`Error`], [`Result`] | the one error type of the library crates |
//! | [`Backbone`] | multi-scale image feature extractors (ResNet, DenseNet, U-Net encoders) |
//! | [`Loss`], [`Activation`], [`TargetKind`] | losses from logits and the activation they imply |
//! | [`OutputEncoding`], [`HeadSpec`] | label ↔ output codes (one-hot, binary, Hadamard, ECOC) |
//! | [`Fit`], [`Predict`], [`ParamGuard`], [`Validate`] | classical estimators (SVMs) and checked hyper-parameters |
//! | [`LoadReport`] | the outcome of matching a weight file to a model |
//! | [`SeededRng`], [`Init`] | reproducible random numbers and PyTorch's initialisers |
//! | [`no_grad`], [`set_grad_enabled`], [`grad_enabled`] | inference without autograd history (PyTorch's `torch.no_grad`) |
//! | [`tune_allocator`] | glibc settings that keep freed tensor memory between training steps, and candle's helper threads parked between ops |
//! | [`check`] | input checks (rank, finiteness, label range) that return errors, not panics |
//!
//! ```
//! use candle_core::{DType, Device};
//! use sconce_core::{Init, SeededRng};
//! # fn main() -> sconce_core::Result<()> {
//! let mut rng = SeededRng::new(7);
//! // nn.Linear(512, 10)'s default initialisation, reproducibly.
//! let w = Init::pytorch_default_weight().tensor(&[10, 512], DType::F32, &Device::Cpu, &mut rng)?;
//! let b = Init::pytorch_default_bias(512)?.tensor(&[10], DType::F32, &Device::Cpu, &mut rng)?;
//! assert_eq!((w.dims(), b.dims()), (&[10, 512][..], &[10][..]));
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod activation;
mod alloc;
pub mod check;
mod error;
mod grad;
mod init;
mod rng;
mod traits;
mod weights;

pub use activation::Activation;
pub use alloc::{ALLOCATOR_ENV, AllocatorTuning, THREAD_ENV, tune_allocator};
pub use error::{Error, Result};
pub use grad::{grad_enabled, no_grad, set_grad_enabled};
pub use init::{FanMode, Init, Nonlinearity, calculate_gain, fans};
pub use rng::{SeededRng, SplitMix64};
pub use traits::{Backbone, Fit, HeadSpec, Loss, OutputEncoding, ParamGuard, Predict, TargetKind, Validate};
pub use weights::LoadReport;

/// Re-exported so that users of the traits need not name candle separately.
pub use candle_core;
