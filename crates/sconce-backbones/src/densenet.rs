//! DenseNet 121/161/169/201 (torchvision/timm key names `features.*`, `classifier`), with
//! configurable growth rate and depths for tiny test models.

use candle_core::{Module, ModuleT, Tensor};
use sconce_core::{Backbone, Error, FanMode, Init, Nonlinearity, Result};
use sconce_layers::{AvgPool, BatchNorm2d, Builder, Conv2d, ConvOptions, Linear, MaxPool};
use sconce_tensor::{AvgPool2d, DenseBlockBuffer, MaxPool2d};

use crate::common::{STRIDES, check_input, pooled_logits};

/// A DenseNet's architecture (torchvision's `DenseNet(growth_rate, block_config,
/// num_init_features, bn_size)`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds (`k`).
    pub growth_rate: usize,
    /// Dense layers per block (4 blocks).
    pub block_config: [usize; 4],
    /// Stem output channels.
    pub num_init_features: usize,
    /// Bottleneck width factor (`bn_size · k` channels inside a layer).
    pub bn_size: usize,
    /// Input channels (3).
    pub in_channels: usize,
    /// Classifier outputs; 0 builds no `classifier`.
    pub num_classes: usize,
}

impl DenseNetConfig {
    fn standard(growth_rate: usize, block_config: [usize; 4], num_init_features: usize) -> Self {
        Self { growth_rate, block_config, num_init_features, bn_size: 4, in_channels: 3, num_classes: 1000 }
    }
    /// DenseNet-121.
    pub fn densenet121() -> Self {
        Self::standard(32, [6, 12, 24, 16], 64)
    }
    /// DenseNet-161.
    pub fn densenet161() -> Self {
        Self::standard(48, [6, 12, 36, 24], 96)
    }
    /// DenseNet-169.
    pub fn densenet169() -> Self {
        Self::standard(32, [6, 12, 32, 32], 64)
    }
    /// DenseNet-201.
    pub fn densenet201() -> Self {
        Self::standard(32, [6, 12, 48, 32], 64)
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
}

fn conv(vb: &Builder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    // torchvision: nn.init.kaiming_normal_(conv.weight) (fan_in, gain √2).
    let init = Init::KaimingNormal { mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu(0.0) };
    Conv2d::new(vb, cin, cout, k, ConvOptions::default().stride(stride).padding(k / 2).bias(false).weight_init(init))
}

#[derive(Debug, Clone)]
struct DenseLayer {
    norm1: BatchNorm2d,
    conv1: Conv2d,
    norm2: BatchNorm2d,
    conv2: Conv2d,
}

impl DenseLayer {
    fn forward(&self, inputs: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        // Training: two pre-activation convolutions, so neither `relu(norm1(x))` (as wide as
        // the concatenation) nor `relu(norm2(·))` is kept for the backward pass.
        if !train {
            // Eval: norm2 (and its ReLU) folds into conv1's epilogue instead, and under
            // `no_grad` conv1 reads the inputs in place (no concatenation, no activation).
            let y = self.norm1.forward_cat_relu_conv_eval(inputs, &self.conv1, Some((&self.norm2, true)))?;
            return self.conv2.forward(&y);
        }
        let x = Tensor::cat(inputs, 1)?;
        let y = self.norm1.forward_relu_conv_t(&x, &self.conv1, true)?;
        self.norm2.forward_relu_conv_t(&y, &self.conv2, true)
    }

    /// Training with the block's features in one shared buffer (`last`: the previous layer's
    /// output, or the block input): the same values and gradients as [`Self::forward`], with
    /// no concatenation kept per layer, so the block's memory is linear in its width.
    fn forward_buffered(&self, buffer: &DenseBlockBuffer, last: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.norm1.forward_relu_conv_buffered(buffer, last, &self.conv1)?;
        self.norm2.forward_relu_conv_t(&y, &self.conv2, true)
    }

    /// New channels per layer.
    fn growth(&self) -> usize {
        self.conv2.weight().as_tensor().dims()[0]
    }
}

#[derive(Debug, Clone)]
struct Transition {
    norm: BatchNorm2d,
    conv: Conv2d,
}

/// A DenseNet; keys `features.conv0`, `features.norm0`,
/// `features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}`,
/// `features.transition{t}.{norm,conv}`, `features.norm5`, `classifier`.
///
/// As a [`Backbone`] it returns smp's five maps: the stem after `relu0` (stride 2), each
/// transition's `relu(norm(·))` before its conv and pool (4, 8, 16), and `norm5` without ReLU (32).
#[derive(Debug, Clone)]
pub struct DenseNet {
    cfg: DenseNetConfig,
    conv0: Conv2d,
    norm0: BatchNorm2d,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: BatchNorm2d,
    classifier: Option<Linear>,
    feature_channels: Vec<usize>,
}

impl DenseNet {
    /// Builds the model under `vb`, initialised as torchvision does.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes.
    pub fn new(vb: &Builder, cfg: &DenseNetConfig) -> Result<Self> {
        if cfg.growth_rate == 0
            || cfg.block_config.contains(&0)
            || cfg.num_init_features == 0
            || cfg.bn_size == 0
            || cfg.in_channels == 0
        {
            return Err(Error::config("DenseNetConfig", format!("every size must be > 0, got {cfg:?}")));
        }
        let f = vb.pp("features");
        let conv0 = conv(&f.pp("conv0"), cfg.in_channels, cfg.num_init_features, 7, 2)?;
        let norm0 = BatchNorm2d::new(&f.pp("norm0"), cfg.num_init_features)?;
        let mut c = cfg.num_init_features;
        let mut feature_channels = vec![c];
        let (mut blocks, mut transitions) = (Vec::new(), Vec::new());
        for (b, &n) in cfg.block_config.iter().enumerate() {
            let bv = f.pp(format!("denseblock{}", b + 1));
            let mut layers = Vec::new();
            for l in 0..n {
                let lv = bv.pp(format!("denselayer{}", l + 1));
                let mid = cfg.bn_size * cfg.growth_rate;
                layers.push(DenseLayer {
                    norm1: BatchNorm2d::new(&lv.pp("norm1"), c)?,
                    conv1: conv(&lv.pp("conv1"), c, mid, 1, 1)?,
                    norm2: BatchNorm2d::new(&lv.pp("norm2"), mid)?,
                    conv2: conv(&lv.pp("conv2"), mid, cfg.growth_rate, 3, 1)?,
                });
                c += cfg.growth_rate;
            }
            blocks.push(layers);
            feature_channels.push(c);
            if b + 1 < cfg.block_config.len() {
                let tv = f.pp(format!("transition{}", b + 1));
                transitions.push(Transition {
                    norm: BatchNorm2d::new(&tv.pp("norm"), c)?,
                    conv: conv(&tv.pp("conv"), c, c / 2, 1, 1)?,
                });
                c /= 2;
            }
        }
        let norm5 = BatchNorm2d::new(&f.pp("norm5"), c)?;
        let classifier = if cfg.num_classes > 0 {
            Some(Linear::with_init(
                &vb.pp("classifier"),
                c,
                cfg.num_classes,
                true,
                Init::pytorch_default_weight(),
                Some(Init::Zeros),
            )?)
        } else {
            None
        };
        Ok(Self { cfg: cfg.clone(), conv0, norm0, blocks, transitions, norm5, classifier, feature_channels })
    }

    /// The configuration.
    pub fn config(&self) -> &DenseNetConfig {
        &self.cfg
    }

    fn features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        check_input("densenet", x, self.cfg.in_channels, 32)?;
        let mut feats = Vec::with_capacity(5);
        let y = self.norm0.forward_conv_t(&self.conv0, x, train, true)?;
        feats.push(y.clone());
        let mut y = MaxPool(MaxPool2d::new(3).stride(2).padding(1)).forward(&y)?;
        for (b, layers) in self.blocks.iter().enumerate() {
            // Training keeps the block's features once, in a shared buffer, instead of each
            // layer's concatenation (memory linear in the block's width, not quadratic).
            let total = y.dim(1)? + layers.iter().map(DenseLayer::growth).sum::<usize>();
            let buffer =
                if train && sconce_core::grad_enabled() { Some(DenseBlockBuffer::new(&y, total)?) } else { None };
            let mut parts = vec![y];
            for l in layers {
                let new = match (&buffer, parts.last()) {
                    (Some(buf), Some(last)) => {
                        let new = l.forward_buffered(buf, last)?;
                        buf.write(&new)?;
                        new
                    }
                    _ => l.forward(&parts, train)?,
                };
                parts.push(new);
            }
            y = Tensor::cat(&parts, 1)?;
            drop(parts);

            if let Some(t) = self.transitions.get(b) {
                let skip = t.norm.forward_relu_t(&y, train)?;
                feats.push(skip.clone());
                // `avg_pool(conv1x1(·))` as `conv1x1(avg_pool(·))`: both are linear and act per
                // pixel / per channel, so they commute (also for odd sizes, whose last row and
                // column both drop), and the convolution runs on a quarter of the pixels.
                y = t.conv.forward(&AvgPool(AvgPool2d::new(2)).forward(&skip)?)?;
            }
        }
        feats.push(self.norm5.forward_t(&y, train)?);
        if !sconce_core::grad_enabled() {
            // Under `no_grad` the layers' 1×1 convolutions read their inputs in place and keep
            // no history; what candle still recorded around them (each layer's 3×3
            // convolution, the concatenations, the stem) would give some parameters a partial
            // gradient. Cut it: no parameter of the network gets one.
            return Ok(feats.iter().map(Tensor::detach).collect());
        }
        Ok(feats)
    }
}

impl ModuleT for DenseNet {
    /// Logits `[N, num_classes]` (`classifier(pool(relu(norm5)))`), or the pooled features.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // On the kernels' pool (inline when already there): see `sconce_tensor::on_pool`.
        sconce_tensor::on_pool(|| {
            let feats = self.features(x, train).map_err(Error::into_candle)?;
            pooled_logits("densenet", &feats, true, self.classifier.as_ref())
        })
    }
}

impl Backbone for DenseNet {
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
