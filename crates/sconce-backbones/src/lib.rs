//! sconce-backbones: trainable ResNet, DenseNet and U-Nets with PyTorch's parameter names, so
//! torchvision/timm/smp weights load unchanged and exported weights load back into PyTorch.
//!
//! | model | keys as | as a [`sconce_core::Backbone`] |
//! |---|---|---|
//! | [`ResNet`] 18/34/50/101/152 | torchvision / timm | stem (stride 2), `layer1..4` (4..32) |
//! | [`DenseNet`] 121/161/169/201 | torchvision / timm | `relu0`, transitions' `relu(norm)`, `norm5` |
//! | [`ClassicUnet`] | milesial/Pytorch-UNet | — (a segmentation model) |
//! | [`Unet`] on any backbone | smp `Unet` (`encoder.*`, `decoder.blocks.*`, `segmentation_head.0`) | — |
//!
//! [`create_model`] builds any of them by timm-style name (`resnet50`, `densenet121`, `unet`,
//! `unet-resnet50`, ...). Every model implements [`candle_core::ModuleT`]: `train` selects
//! batch statistics in every BatchNorm.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use sconce_backbones::{ModelOptions, create_model};
//! use sconce_layers::ParamStore;
//! # fn main() -> anyhow::Result<()> {
//! let store = ParamStore::new();
//! let vb = store.builder(42, DType::F32, &Device::Cpu);
//! let model = create_model("unet-resnet18", &vb, &ModelOptions { num_classes: 1, ..Default::default() })?;
//! let logits = model.forward_t(&Tensor::zeros((1, 3, 50, 46), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits.dims(), &[1, 1, 50, 46]);
//! assert_eq!(store.num_parameters(), 14_328_209); // smp.Unet("resnet18", classes=1)
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod common;
mod densenet;
mod resnet;
mod unet;

use candle_core::ModuleT;
use sconce_core::{Backbone, Error, Result};
use sconce_layers::Builder;

pub use densenet::{DenseNet, DenseNetConfig};
pub use resnet::{Block, ResNet, ResNetConfig};
pub use unet::{ClassicUnet, Unet, UnetConfig};

/// Options shared by every model of [`create_model`] (timm's `num_classes`, `in_chans`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// Input channels.
    pub in_channels: usize,
    /// Classes: classifier outputs, or segmentation output channels for U-Nets.
    pub num_classes: usize,
    /// Channel base of the classic U-Net (64 in the paper).
    pub unet_base: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self { in_channels: 3, num_classes: 1000, unet_base: 64 }
    }
}

/// Every name [`create_model`] accepts.
pub const MODEL_NAMES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "unet",
    "unet-resnet18",
    "unet-resnet34",
    "unet-resnet50",
    "unet-resnet101",
    "unet-resnet152",
    "unet-densenet121",
    "unet-densenet161",
    "unet-densenet169",
    "unet-densenet201",
];

/// A classification backbone by name, without or with a classifier (`num_classes = 0`: none).
///
/// # Errors
/// [`Error::Config`] for an unknown name (listing the known ones).
pub fn create_backbone(name: &str, vb: &Builder, in_channels: usize, num_classes: usize) -> Result<Box<dyn Backbone>> {
    let resnet = |c: ResNetConfig| -> Result<Box<dyn Backbone>> {
        Ok(Box::new(ResNet::new(vb, &c.in_channels(in_channels).num_classes(num_classes))?))
    };
    let densenet = |c: DenseNetConfig| -> Result<Box<dyn Backbone>> {
        Ok(Box::new(DenseNet::new(vb, &c.in_channels(in_channels).num_classes(num_classes))?))
    };
    match name {
        "resnet18" => resnet(ResNetConfig::resnet18()),
        "resnet34" => resnet(ResNetConfig::resnet34()),
        "resnet50" => resnet(ResNetConfig::resnet50()),
        "resnet101" => resnet(ResNetConfig::resnet101()),
        "resnet152" => resnet(ResNetConfig::resnet152()),
        "densenet121" => densenet(DenseNetConfig::densenet121()),
        "densenet161" => densenet(DenseNetConfig::densenet161()),
        "densenet169" => densenet(DenseNetConfig::densenet169()),
        "densenet201" => densenet(DenseNetConfig::densenet201()),
        _ => Err(unknown(name)),
    }
}

fn unknown(name: &str) -> Error {
    Error::config("model", format!("unknown model `{name}`; choose one of {}", MODEL_NAMES.join(", ")))
}

/// Any model by timm/smp-style name: a classifier (`resnet50`), the classic U-Net (`unet`) or
/// smp's U-Net on an encoder (`unet-resnet50`, `unet-densenet121`, ...), with parameters
/// under `vb` named as PyTorch names them.
///
/// # Errors
/// [`Error::Config`] for an unknown name or invalid options.
pub fn create_model(name: &str, vb: &Builder, opts: &ModelOptions) -> Result<Box<dyn ModuleT + Send + Sync>> {
    if let Some(enc) = name.strip_prefix("unet-") {
        let encoder = create_backbone(enc, &vb.pp("encoder"), opts.in_channels, 0).map_err(|_| unknown(name))?;
        let cfg = UnetConfig { num_classes: opts.num_classes, ..Default::default() };
        return Ok(Box::new(Unet::new(vb, encoder, &cfg)?));
    }
    if name == "unet" {
        return Ok(Box::new(ClassicUnet::new(vb, opts.in_channels, opts.num_classes, opts.unet_base)?));
    }
    let b = create_backbone(name, vb, opts.in_channels, opts.num_classes)?;
    Ok(Box::new(BackboneModel(b)))
}

/// Adapts a boxed backbone to `ModuleT + Send + Sync`.
struct BackboneModel(Box<dyn Backbone>);

impl ModuleT for BackboneModel {
    fn forward_t(&self, x: &candle_core::Tensor, train: bool) -> candle_core::Result<candle_core::Tensor> {
        self.0.forward_t(x, train)
    }
}
