//! ResNet 18/34/50/101/152 (torchvision/timm layout and key names, ResNet-B: stride on the
//! 3×3), with configurable widths and depths for tiny test models.

use candle_core::{Module, ModuleT, Tensor};
use sconce_core::{Backbone, Error, FanMode, Init, Nonlinearity, Result};
use sconce_layers::{BatchNorm2d, Builder, Conv2d, ConvOptions, Linear, MaxPool};
use sconce_tensor::MaxPool2d;

use crate::common::{STRIDES, check_input, pooled_logits};

/// The residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Two 3×3 convs (ResNet 18/34), expansion 1.
    Basic,
    /// 1×1, 3×3, 1×1 convs (ResNet 50/101/152), expansion 4.
    Bottleneck,
}

impl Block {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// A ResNet's architecture (timm's `ResNet(block, layers, channels, stem_width, ...)`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Block type.
    pub block: Block,
    /// Blocks per stage (4 stages).
    pub layers: [usize; 4],
    /// Planes per stage (64, 128, 256, 512 for the standard models).
    pub channels: [usize; 4],
    /// Stem output channels (64).
    pub stem_width: usize,
    /// Input channels (3).
    pub in_channels: usize,
    /// Classifier outputs; 0 builds no `fc` (a headless encoder).
    pub num_classes: usize,
}

impl ResNetConfig {
    fn standard(block: Block, layers: [usize; 4]) -> Self {
        Self { block, layers, channels: [64, 128, 256, 512], stem_width: 64, in_channels: 3, num_classes: 1000 }
    }
    /// ResNet-18.
    pub fn resnet18() -> Self {
        Self::standard(Block::Basic, [2, 2, 2, 2])
    }
    /// ResNet-34.
    pub fn resnet34() -> Self {
        Self::standard(Block::Basic, [3, 4, 6, 3])
    }
    /// ResNet-50.
    pub fn resnet50() -> Self {
        Self::standard(Block::Bottleneck, [3, 4, 6, 3])
    }
    /// ResNet-101.
    pub fn resnet101() -> Self {
        Self::standard(Block::Bottleneck, [3, 4, 23, 3])
    }
    /// ResNet-152.
    pub fn resnet152() -> Self {
        Self::standard(Block::Bottleneck, [3, 8, 36, 3])
    }
    /// Sets the classifier size (0 for none).
    pub fn num_classes(mut self, n: usize) -> Self {
        self.num_classes = n;
        self
    }
    /// Sets the input channels.
    pub fn in_channels(mut self, n: usize) -> Self {
        self.in_channels = n;
        self
    }
    /// Sets stage planes and stem width (reduced widths for tests).
    pub fn widths(mut self, stem_width: usize, channels: [usize; 4]) -> Self {
        self.stem_width = stem_width;
        self.channels = channels;
        self
    }
    /// Sets blocks per stage.
    pub fn depths(mut self, layers: [usize; 4]) -> Self {
        self.layers = layers;
        self
    }
}

fn conv_init() -> Init {
    // torchvision/timm: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    Init::KaimingNormal { mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu }
}

fn conv(vb: &Builder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        cin,
        cout,
        k,
        ConvOptions::default().stride(stride).padding(k / 2).bias(false).weight_init(conv_init()),
    )
}

#[derive(Debug, Clone)]
struct ResBlock {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl ResBlock {
    fn new(vb: &Builder, block: Block, cin: usize, planes: usize, stride: usize) -> Result<Self> {
        let out = planes * block.expansion();
        let specs: Vec<(usize, usize, usize, usize)> = match block {
            Block::Basic => vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
            Block::Bottleneck => vec![(cin, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)],
        };
        let mut convs = Vec::new();
        for (i, (a, b, k, s)) in specs.into_iter().enumerate() {
            let c = conv(&vb.pp(format!("conv{}", i + 1)), a, b, k, s)?;
            let bn = BatchNorm2d::new(&vb.pp(format!("bn{}", i + 1)), b)?;
            convs.push((c, bn));
        }
        let downsample = if stride != 1 || cin != out {
            let d = vb.pp("downsample");
            Some((conv(&d.pp(0), cin, out, 1, stride)?, BatchNorm2d::new(&d.pp(1), out)?))
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward_conv_t(c, x, train, false)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (c, bn) in &self.convs[..last] {
            y = bn.forward_conv_t(c, &y, train, true)?;
        }
        // The last convolution, its batch norm, the shortcut and the ReLU as one op.
        let (c, bn) = &self.convs[last];
        bn.forward_conv_add_relu_t(c, &y, &shortcut, train)
    }
}

/// A ResNet; keys `conv1`, `bn1`, `layer{1..4}.{i}.conv{1..3}/bn{1..3}/downsample.{0,1}`, `fc`.
///
/// As a [`Backbone`] it returns five maps at strides 2 (the stem, before the max pool), 4, 8,
/// 16 and 32 (the stages), as smp's encoders do.
///
/// ```
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// use sconce_backbones::{ResNet, ResNetConfig};
/// use sconce_layers::ParamStore;
/// # fn main() -> anyhow::Result<()> {
/// let store = ParamStore::new();
/// let cfg = ResNetConfig::resnet18().widths(8, [8, 16, 32, 64]).num_classes(26);
/// let model = ResNet::new(&store.builder(0, DType::F32, &Device::Cpu), &cfg)?;
/// let logits = model.forward_t(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(logits.dims(), &[2, 26]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ResNet {
    cfg: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<ResBlock>>,
    fc: Option<Linear>,
    feature_channels: Vec<usize>,
}

impl ResNet {
    /// Builds the model under `vb`, initialised as torchvision does.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes.
    pub fn new(vb: &Builder, cfg: &ResNetConfig) -> Result<Self> {
        if cfg.layers.contains(&0) || cfg.channels.contains(&0) || cfg.stem_width == 0 || cfg.in_channels == 0 {
            return Err(Error::config("ResNetConfig", format!("every size must be > 0, got {cfg:?}")));
        }
        let conv1 = Conv2d::new(
            &vb.pp("conv1"),
            cfg.in_channels,
            cfg.stem_width,
            7,
            ConvOptions::default().stride(2).padding(3).bias(false).weight_init(conv_init()),
        )?;
        let bn1 = BatchNorm2d::new(&vb.pp("bn1"), cfg.stem_width)?;
        let mut cin = cfg.stem_width;
        let mut stages = Vec::new();
        let mut feature_channels = vec![cfg.stem_width];
        for s in 0..4 {
            let lv = vb.pp(format!("layer{}", s + 1));
            let mut blocks = Vec::new();
            for i in 0..cfg.layers[s] {
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                blocks.push(ResBlock::new(&lv.pp(i), cfg.block, cin, cfg.channels[s], stride)?);
                cin = cfg.channels[s] * cfg.block.expansion();
            }
            stages.push(blocks);
            feature_channels.push(cin);
        }
        let fc = if cfg.num_classes > 0 { Some(Linear::new(&vb.pp("fc"), cin, cfg.num_classes, true)?) } else { None };
        Ok(Self { cfg: cfg.clone(), conv1, bn1, stages, fc, feature_channels })
    }

    /// The configuration.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    fn features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        check_input("resnet", x, self.cfg.in_channels, 32)?;
        let mut feats = Vec::with_capacity(5);
        let mut y = self.bn1.forward_conv_t(&self.conv1, x, train, true)?;
        feats.push(y.clone());
        y = MaxPool(MaxPool2d::new(3).stride(2).padding(1)).forward(&y)?;
        for stage in &self.stages {
            for b in stage {
                y = b.forward(&y, train)?;
            }
            feats.push(y.clone());
        }
        Ok(feats)
    }
}

impl ModuleT for ResNet {
    /// Logits `[N, num_classes]`, or the pooled features `[N, C]` without a classifier.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // On the kernels' pool (inline when already there): see `sconce_tensor::on_pool`.
        sconce_tensor::on_pool(|| {
            let feats = self.features(x, train).map_err(Error::into_candle)?;
            pooled_logits("resnet", &feats, false, self.fc.as_ref())
        })
    }
}

impl Backbone for ResNet {
    fn in_channels(&self) -> usize {
        self.cfg.in_channels
    }
    fn feature_channels(&self) -> &[usize] {
        &self.feature_channels
    }
    fn feature_strides(&self) -> &[usize] {
        &STRIDES
    }
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        self.features(x, train)
    }
}
