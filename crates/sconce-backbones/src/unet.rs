//! U-Nets: the classic same-padding U-Net (Ronneberger's layout with BatchNorm, milesial's key
//! names) and smp's encoder-decoder `Unet` on any [`Backbone`]. Both take any input size and
//! return logits of the input's size.

use candle_core::{Module, ModuleT, Tensor};
use sconce_core::{Backbone, Error, FanMode, Init, Nonlinearity, Result};
use sconce_layers::{Act, Builder, Conv2d, ConvBnAct, ConvOptions, ConvTranspose2d, MaxPool};
use sconce_tensor::{Interpolation, MaxPool2d};

use crate::common::check_input;

/// The classic U-Net: four 2×2 max-pool downsamplings with two 3×3 conv+BN+ReLU each, four
/// 2×2 transposed-conv upsamplings (zero-padded to the skip's size for odd inputs), skip
/// concatenation `[skip, up]`, and a 1×1 output conv. Channels `base·(1, 2, 4, 8, 16)`.
///
/// Keys follow milesial/Pytorch-UNet (`inc.double_conv.{0,1,3,4}`,
/// `down{1..4}.maxpool_conv.1.double_conv.*`, `up{1..4}.up`, `up{1..4}.conv.double_conv.*`,
/// `outc.conv`); with `base = 64`, 3 input channels and 1 class it has 31,037,633 parameters.
#[derive(Debug, Clone)]
pub struct ClassicUnet {
    in_channels: usize,
    num_classes: usize,
    inc: DoubleConv,
    downs: Vec<DoubleConv>,
    ups: Vec<(ConvTranspose2d, DoubleConv)>,
    outc: Conv2d,
}

#[derive(Debug, Clone)]
struct DoubleConv {
    a: ConvBnAct,
    b: ConvBnAct,
}

impl DoubleConv {
    fn new(vb: &Builder, cin: usize, cout: usize) -> Result<Self> {
        let d = vb.pp("double_conv");
        Ok(Self {
            a: ConvBnAct::new(&d.pp(0), &d.pp(1), cin, cout, 3, 1, 1, Act::Relu)?,
            b: ConvBnAct::new(&d.pp(3), &d.pp(4), cout, cout, 3, 1, 1, Act::Relu)?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.b.forward_t(&self.a.forward_t(x, train)?, train)
    }
    /// On `cat([skip, pad(up)], 1)` without materialising it in the autograd graph.
    fn forward_cat(&self, skip: &Tensor, up: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.b.forward_t(&self.a.forward_cat_t(skip, up, train)?, train)
    }
}

impl ClassicUnet {
    /// Builds the model with PyTorch's default initialisation.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes.
    pub fn new(vb: &Builder, in_channels: usize, num_classes: usize, base: usize) -> Result<Self> {
        if in_channels == 0 || num_classes == 0 || base == 0 {
            return Err(Error::config(
                "ClassicUnet",
                format!("in_channels ({in_channels}), num_classes ({num_classes}) and base ({base}) must be > 0"),
            ));
        }
        let c: Vec<usize> = (0..5).map(|i| base << i).collect();
        let inc = DoubleConv::new(&vb.pp("inc"), in_channels, c[0])?;
        let mut downs = Vec::new();
        for i in 0..4 {
            downs.push(DoubleConv::new(&vb.pp(format!("down{}", i + 1)).pp("maxpool_conv").pp(1), c[i], c[i + 1])?);
        }
        let mut ups = Vec::new();
        for i in 0..4 {
            let uv = vb.pp(format!("up{}", i + 1));
            let cin = c[4 - i];
            let up = ConvTranspose2d::new(&uv.pp("up"), cin, cin / 2, 2, ConvOptions::default().stride(2))?;
            ups.push((up, DoubleConv::new(&uv.pp("conv"), cin, c[3 - i])?));
        }
        let outc = Conv2d::new(&vb.pp("outc").pp("conv"), c[0], num_classes, 1, ConvOptions::default())?;
        Ok(Self { in_channels, num_classes, inc, downs, ups, outc })
    }

    /// Output channels (classes).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn forward_impl(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_input("unet", x, self.in_channels, 16)?;
        let pool = MaxPool(MaxPool2d::new(2));
        let mut skips = vec![self.inc.forward(x, train)?];
        for d in &self.downs {
            let last = skips.last().cloned().ok_or_else(|| Error::config("unet", "no encoder stage"))?;
            skips.push(d.forward(&pool.forward(&last)?, train)?);
        }
        let mut y = skips.pop().ok_or_else(|| Error::config("unet", "no encoder stage"))?;
        for (up, conv) in &self.ups {
            let skip = skips.pop().ok_or_else(|| Error::config("unet", "no skip"))?;
            // `up` is zero-padded to the skip's size (odd inputs) inside the concatenation.
            y = conv.forward_cat(&skip, &up.forward(&y)?, train)?;
        }
        Ok(self.outc.forward(&y)?)
    }
}

impl ModuleT for ClassicUnet {
    /// Logits `[N, num_classes, H, W]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // On the kernels' pool (inline when already there): see `sconce_tensor::on_pool`.
        sconce_tensor::on_pool(|| self.forward_impl(x, train).map_err(Error::into_candle))
    }
}

/// smp's `Unet` decoder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Output channels of the five decoder blocks (smp: 256, 128, 64, 32, 16).
    pub decoder_channels: [usize; 5],
    /// Segmentation classes (output channels).
    pub num_classes: usize,
}

impl Default for UnetConfig {
    fn default() -> Self {
        Self { decoder_channels: [256, 128, 64, 32, 16], num_classes: 1 }
    }
}

#[derive(Debug, Clone)]
struct DecoderBlock {
    conv1: ConvBnAct,
    conv2: ConvBnAct,
}

/// smp's `Unet(encoder)`: an encoder (any [`Backbone`] with five maps at strides 2..32) under
/// `encoder.*`, five decoder blocks (`decoder.blocks.{i}.conv{1,2}.{0,1}`) that upsample by
/// nearest neighbour to the next skip's exact size, concatenate `[up, skip]` and apply two
/// 3×3 conv+BN+ReLU, and `segmentation_head.0` (3×3 conv with bias). Any input size ≥ 32
/// works and the logits have the input's size (250×250 in, 250×250 out).
pub struct Unet {
    encoder: Box<dyn Backbone>,
    blocks: Vec<DecoderBlock>,
    head: Conv2d,
    cfg: UnetConfig,
}

impl std::fmt::Debug for Unet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unet(encoder channels {:?}, {:?})", self.encoder.feature_channels(), self.cfg)
    }
}

impl Unet {
    /// Builds the decoder for `encoder`, which must have been built under `vb.pp("encoder")`
    /// without a classifier. Initialisation as smp: decoder convs kaiming-uniform (fan_in,
    /// ReLU), head xavier-uniform with zero bias.
    ///
    /// # Errors
    /// [`Error::Config`] when the encoder does not give five feature maps or a size is zero.
    pub fn new(vb: &Builder, encoder: Box<dyn Backbone>, cfg: &UnetConfig) -> Result<Self> {
        let enc = encoder.feature_channels().to_vec();
        if enc.len() != 5 || encoder.feature_strides() != [2, 4, 8, 16, 32] {
            return Err(Error::config(
                "Unet encoder",
                format!(
                    "needs five feature maps at strides [2, 4, 8, 16, 32], got channels {enc:?} at strides {:?}",
                    encoder.feature_strides()
                ),
            ));
        }
        if cfg.num_classes == 0 || cfg.decoder_channels.contains(&0) {
            return Err(Error::config("UnetConfig", format!("sizes must be > 0, got {cfg:?}")));
        }
        let init = Init::KaimingUniform { mode: FanMode::FanIn, nonlinearity: Nonlinearity::Relu };
        let d = vb.pp("decoder").pp("blocks");
        let skips = [enc[3], enc[2], enc[1], enc[0], 0];
        let mut cin = enc[4];
        let mut blocks = Vec::new();
        for (i, (&out, &skip)) in cfg.decoder_channels.iter().zip(skips.iter()).enumerate() {
            let b = d.pp(i);
            let o = ConvOptions::default().padding(1).weight_init(init);
            blocks.push(DecoderBlock {
                conv1: ConvBnAct::with_options(
                    &b.pp("conv1").pp(0),
                    &b.pp("conv1").pp(1),
                    cin + skip,
                    out,
                    3,
                    o,
                    Act::Relu,
                )?,
                conv2: ConvBnAct::with_options(&b.pp("conv2").pp(0), &b.pp("conv2").pp(1), out, out, 3, o, Act::Relu)?,
            });
            cin = out;
        }
        let head = Conv2d::new(
            &vb.pp("segmentation_head").pp(0),
            cin,
            cfg.num_classes,
            3,
            ConvOptions::default().padding(1).weight_init(Init::XavierUniform { gain: 1.0 }).bias_init(Init::Zeros),
        )?;
        Ok(Self { encoder, blocks, head, cfg: cfg.clone() })
    }

    /// The encoder.
    pub fn encoder(&self) -> &dyn Backbone {
        self.encoder.as_ref()
    }

    /// Output channels (classes).
    pub fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn forward_impl(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_input("unet", x, self.encoder.in_channels(), 32)?;
        let feats = self.encoder.forward_features(x, train)?;
        if feats.len() != 5 {
            return Err(Error::config(
                "Unet encoder",
                format!("forward_features returned {} maps; the decoder needs 5 (strides 2..32)", feats.len()),
            ));
        }
        let (_, _, h, w) = x.dims4()?;
        let mut sizes: Vec<(usize, usize)> =
            feats[..4].iter().map(|f| Ok((f.dim(2)?, f.dim(3)?))).collect::<Result<_>>()?;
        sizes.reverse();
        sizes.push((h, w));
        let mut y = feats[4].clone();
        for (i, b) in self.blocks.iter().enumerate() {
            y = sconce_tensor::resize(&y, sizes[i], Interpolation::Nearest)?;
            let z =
                if i < 4 { b.conv1.forward_cat_t(&y, &feats[3 - i], train)? } else { b.conv1.forward_t(&y, train)? };
            y = b.conv2.forward_t(&z, train)?;
        }
        Ok(self.head.forward(&y)?)
    }
}

impl ModuleT for Unet {
    /// Logits `[N, num_classes, H, W]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // On the kernels' pool (inline when already there): see `sconce_tensor::on_pool`.
        sconce_tensor::on_pool(|| self.forward_impl(x, train).map_err(Error::into_candle))
    }
}
