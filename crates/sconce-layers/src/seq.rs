//! Composition: `Sequential` (passes `train` to every child) and `ConvBnAct`
//! (conv without bias, BatchNorm, activation: smp's `Conv2dReLU`, torchvision's stems).

use candle_core::{Module, ModuleT, Tensor};
use sconce_core::Result;

use crate::basic::Act;
use crate::conv::{Conv2d, ConvOptions};
use crate::norm::BatchNorm2d;
use crate::store::Builder;

/// Layers applied in order; `train` reaches each one.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn ModuleT + Send + Sync>>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sequential({} layers)", self.layers.len())
    }
}

impl Sequential {
    /// An empty sequence (the identity).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: impl ModuleT + Send + Sync + 'static) {
        self.layers.push(Box::new(layer));
    }

    /// Appends a layer, builder style.
    pub fn with(mut self, layer: impl ModuleT + Send + Sync + 'static) -> Self {
        self.push(layer);
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl ModuleT for Sequential {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            x = l.forward_t(&x, train)?;
        }
        Ok(x)
    }
}

/// Conv (no bias) → BatchNorm2d → activation.
#[derive(Debug, Clone)]
pub struct ConvBnAct {
    conv: Conv2d,
    bn: BatchNorm2d,
    act: Act,
}

impl ConvBnAct {
    /// A `k×k` conv (stride, padding) whose weight lives under `conv_vb` and whose
    /// BatchNorm lives under `bn_vb` (PyTorch names differ between models: `0`/`1`,
    /// `conv1`/`bn1`, ...).
    ///
    /// # Errors
    /// As [`Conv2d::new`] and [`BatchNorm2d::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conv_vb: &Builder,
        bn_vb: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        act: Act,
    ) -> Result<Self> {
        Self::with_options(conv_vb, bn_vb, cin, cout, k, ConvOptions::default().stride(stride).padding(padding), act)
    }

    /// With full conv options (the bias flag is forced off: BatchNorm's β replaces it).
    ///
    /// # Errors
    /// As [`Conv2d::new`] and [`BatchNorm2d::new`].
    pub fn with_options(
        conv_vb: &Builder,
        bn_vb: &Builder,
        cin: usize,
        cout: usize,
        k: usize,
        o: ConvOptions,
        act: Act,
    ) -> Result<Self> {
        let conv = Conv2d::new(conv_vb, cin, cout, k, o.bias(false))?;
        let bn = BatchNorm2d::new(bn_vb, cout)?;
        Ok(Self { conv, bn, act })
    }

    /// The convolution.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The batch norm.
    pub fn bn(&self) -> &BatchNorm2d {
        &self.bn
    }
}

impl ConvBnAct {
    /// The layer on `cat([a, pad(b)], 1)` — a U-Net decoder's skip concatenation —
    /// with `b` zero-padded to `a`'s size (extra row/column at the bottom/right). With a ReLU in
    /// training this is one op ([`BatchNorm2d::forward_conv_cat_t`]); the same values and
    /// gradients as padding, concatenating and calling the layer.
    ///
    /// # Errors
    /// As the layer's forward pass; `b` of another batch size or larger than `a`.
    pub fn forward_cat_t(&self, a: &Tensor, b: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if matches!(self.act, Act::Relu) {
            return self.bn.forward_conv_cat_t(&self.conv, a, b, train, true);
        }
        self.act.forward(&self.bn.forward_conv_cat_t(&self.conv, a, b, train, false)?)
    }
}

impl ModuleT for ConvBnAct {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if matches!(self.act, Act::Relu) {
            return self.bn.forward_conv_t(&self.conv, x, train, true);
        }
        self.act.forward(&self.bn.forward_conv_t(&self.conv, x, train, false)?)
    }
}
