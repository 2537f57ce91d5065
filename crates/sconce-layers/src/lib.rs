//! sconce-layers: trainable layers built on sconce-tensor's kernels, and the parameter store
//! that names, initialises, loads and saves their weights with PyTorch's state-dict keys.
//!
//! | item | what it is for |
//! |---|---|
//! | [`ParamStore`], [`Builder`], [`Buffer`] | named parameters (`Var`s) and buffers (running statistics), created through a path-prefixing builder with a seeded RNG |
//! | [`LoadOptions`], [`KeyRule`] | strict or partial loading from safetensors (memory-mapped), key maps as data, every problem listed at once in a [`sconce_core::LoadReport`] |
//! | [`Conv2d`], [`ConvTranspose2d`], [`Linear`] | affine layers with PyTorch's default initialisation |
//! | [`Head`] | the final layer an output encoding asks for (learned, or a fixed Hadamard matrix with a learned scale) |
//! | [`BatchNorm2d`] | batch statistics in training (running-stat update with PyTorch's momentum), running statistics in eval |
//! | [`Act`], [`Dropout`], [`MaxPool`], [`AvgPool`], [`AdaptiveAvgPool`], [`GlobalAvgPool`], [`Resize`] | parameter-free layers |
//! | [`Sequential`], [`ConvBnAct`] | composition that passes `train` to every child |
//!
//! Every layer implements candle's [`candle_core::Module`] or [`candle_core::ModuleT`]; `train`
//! reaches every BatchNorm and Dropout, so there is no layer with a fixed mode.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use sconce_layers::{Act, BatchNorm2d, Conv2d, ConvBnAct, ParamStore};
//! # fn main() -> anyhow::Result<()> {
//! let store = ParamStore::new();
//! let vb = store.builder(0, DType::F32, &Device::Cpu);
//! let block = ConvBnAct::new(&vb.pp("0"), &vb.pp("1"), 3, 8, 3, 1, 1, Act::Relu)?;
//! let y = block.forward_t(&Tensor::zeros((2, 3, 16, 16), DType::F32, &Device::Cpu)?, true)?;
//! assert_eq!(y.dims(), &[2, 8, 16, 16]);
//! assert_eq!(store.keys(), ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]);
//! # let _ = (Conv2d::new, BatchNorm2d::new);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod basic;
mod conv;
mod io;
mod norm;
mod seq;
mod store;

pub use basic::{Act, AdaptiveAvgPool, AvgPool, Dropout, GlobalAvgPool, Head, Linear, MaxPool, Resize};
pub use conv::{Conv2d, ConvOptions, ConvTranspose2d};
pub use io::{KeyRule, LoadOptions, save_safetensors_atomic};
pub use norm::BatchNorm2d;
pub use seq::{ConvBnAct, Sequential};
pub use store::{Buffer, Builder, Entry, ParamStore};
