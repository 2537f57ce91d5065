//! Convolution layers: `Conv2d` and `ConvTranspose2d` on sconce-tensor's kernels, with
//! PyTorch's parameter names, layouts and default initialisation.

use candle_core::{Module, Tensor, Var};
use sconce_core::{Error, Init, Result};
use sconce_tensor::{Conv2dConfig, ConvTranspose2dConfig};

use crate::store::Builder;

/// Options of a convolution besides its channel counts and kernel size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvOptions {
    /// Stride (same in both directions).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups (`in` and `out` channels must both divide by it).
    pub groups: usize,
    /// Whether the layer has a bias (PyTorch's `bias=True`).
    pub bias: bool,
    /// Weight initialiser; `None` is PyTorch's default `kaiming_uniform_(a=√5)`.
    pub weight_init: Option<Init>,
    /// Bias initialiser; `None` is PyTorch's default `U(±1/√fan_in)`.
    pub bias_init: Option<Init>,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self { stride: 1, padding: 0, dilation: 1, groups: 1, bias: true, weight_init: None, bias_init: None }
    }
}

impl ConvOptions {
    /// Sets the stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    /// Sets the groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Sets whether there is a bias.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// Sets the weight initialiser.
    pub fn weight_init(mut self, init: Init) -> Self {
        self.weight_init = Some(init);
        self
    }
    /// Sets the bias initialiser.
    pub fn bias_init(mut self, init: Init) -> Self {
        self.bias_init = Some(init);
        self
    }
}

fn check_channels(layer: &str, cin: usize, cout: usize, k: usize, o: &ConvOptions) -> Result<()> {
    if cin == 0 || cout == 0 || k == 0 || o.stride == 0 || o.dilation == 0 || o.groups == 0 {
        return Err(Error::config(
            layer,
            format!(
                "channels, kernel, stride, dilation and groups must be > 0 (in {cin}, out {cout}, kernel {k}, \
                 stride {}, dilation {}, groups {})",
                o.stride, o.dilation, o.groups
            ),
        ));
    }
    if !cin.is_multiple_of(o.groups) || !cout.is_multiple_of(o.groups) {
        return Err(Error::config(
            layer,
            format!("in ({cin}) and out ({cout}) channels must both be divisible by groups ({})", o.groups),
        ));
    }
    Ok(())
}

/// The weight of `shape` and the optional `[cout]` bias, with PyTorch's default initialisers
/// unless `o` names others (the bias bound uses the weight's fan-in `shape[1]·k·k`, for both
/// convolution layouts, as PyTorch does).
fn params(vb: &Builder, shape: [usize; 4], cout: usize, o: &ConvOptions) -> Result<(Var, Option<Var>)> {
    let weight = vb.param("weight", &shape, o.weight_init.unwrap_or_else(Init::pytorch_default_weight))?;
    let bias = if o.bias {
        let init = match o.bias_init {
            Some(i) => i,
            None => Init::pytorch_default_bias(shape[1] * shape[2] * shape[3])?,
        };
        Some(vb.param("bias", &[cout], init)?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// `nn.Conv2d`: `weight [out, in/groups, k, k]` and optional `bias [out]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    cfg: Conv2dConfig,
    in_channels: usize,
}

impl Conv2d {
    /// A `k×k` convolution from `cin` to `cout` channels, parameters `weight` (and `bias`)
    /// under `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or channels not divisible by the groups.
    pub fn new(vb: &Builder, cin: usize, cout: usize, k: usize, o: ConvOptions) -> Result<Self> {
        check_channels("Conv2d", cin, cout, k, &o)?;
        let (weight, bias) = params(vb, [cout, cin / o.groups, k, k], cout, &o)?;
        let cfg = Conv2dConfig::default().stride(o.stride).padding(o.padding).dilation(o.dilation).groups(o.groups);
        Ok(Self { weight, bias, cfg, in_channels: cin })
    }

    /// The weight `[out, in/groups, k, k]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Stride, padding, dilation and groups.
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::conv2d(x, self.weight.as_tensor(), self.bias.as_ref().map(|b| b.as_tensor()), &self.cfg)
            .map_err(Error::into_candle)
    }
}

/// `nn.ConvTranspose2d`: `weight [in, out/groups, k, k]` and optional `bias [out]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Var,
    bias: Option<Var>,
    cfg: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// A `k×k` transposed convolution from `cin` to `cout` channels (`o.padding` is the
    /// convolution's padding, as in PyTorch).
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or channels not divisible by the groups.
    pub fn new(vb: &Builder, cin: usize, cout: usize, k: usize, o: ConvOptions) -> Result<Self> {
        check_channels("ConvTranspose2d", cin, cout, k, &o)?;
        let (weight, bias) = params(vb, [cin, cout / o.groups, k, k], cout, &o)?;
        let cfg =
            ConvTranspose2dConfig::default().stride(o.stride).padding(o.padding).dilation(o.dilation).groups(o.groups);
        Ok(Self { weight, bias, cfg })
    }

    /// The weight `[in, out/groups, k, k]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::conv_transpose2d(
            x,
            self.weight.as_tensor(),
            self.bias.as_ref().map(|b| b.as_tensor()),
            &self.cfg,
        )
        .map_err(Error::into_candle)
    }
}
