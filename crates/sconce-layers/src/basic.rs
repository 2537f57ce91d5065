//! Small layers: activations, dropout (seeded), `Linear`, pooling and resizing.

use std::sync::{Mutex, PoisonError};

use candle_core::{Module, ModuleT, Tensor, Var};
use sconce_core::{Error, Init, Result, SeededRng};
use sconce_tensor::Interpolation;

use crate::store::Builder;

/// An element-wise activation as a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x > 0`, `slope·x` otherwise.
    LeakyRelu(f64),
    /// GELU with the exact erf form (PyTorch's default).
    Gelu,
    /// `x·σ(x)` (swish).
    Silu,
    /// `σ(x)`, computed stably.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
}

impl Module for Act {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => sconce_tensor::relu(x).map_err(Error::into_candle),
            Act::Relu6 => x.relu()?.minimum(6.0),
            Act::LeakyRelu(a) => {
                let pos = x.relu()?;
                let neg = (x - &pos)?;
                pos + (neg * a)?
            }
            Act::Gelu => x.gelu_erf(),
            Act::Silu => x * sconce_tensor::sigmoid(x).map_err(Error::into_candle)?,
            Act::Sigmoid => sconce_tensor::sigmoid(x).map_err(Error::into_candle),
            Act::Tanh => x.tanh(),
        }
    }
}

/// Inverted dropout: in training, zeroes each element with probability `p` and scales the rest
/// by `1/(1−p)`; identity in eval. Masks come from a seeded RNG, so runs repeat exactly.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: Mutex<SeededRng>,
}

impl Dropout {
    /// Dropout with probability `p`, its RNG forked from the builder's.
    ///
    /// # Errors
    /// [`Error::Config`] unless `0 ≤ p < 1`.
    pub fn new(vb: &Builder, p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config("Dropout p", format!("must be in [0, 1), got {p}")));
        }
        Ok(Self { p, rng: Mutex::new(vb.fork_rng()) })
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            (0..x.elem_count()).map(|_| if rng.next_f64() < keep { scale } else { 0.0 }).collect()
        };
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

/// `nn.Linear`: `weight [out, in]`, `bias [out]`; input `[N, in]` (or any leading dims).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// PyTorch's default initialisation.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or a duplicate key.
    pub fn new(vb: &Builder, fin: usize, fout: usize, bias: bool) -> Result<Self> {
        Self::with_init(vb, fin, fout, bias, Init::pytorch_default_weight(), None)
    }

    /// With explicit initialisers (`bias_init` `None` is PyTorch's default bias).
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes or a duplicate key.
    pub fn with_init(
        vb: &Builder,
        fin: usize,
        fout: usize,
        bias: bool,
        weight_init: Init,
        bias_init: Option<Init>,
    ) -> Result<Self> {
        if fin == 0 || fout == 0 {
            return Err(Error::config("Linear", format!("in ({fin}) and out ({fout}) features must be > 0")));
        }
        let weight = vb.param("weight", &[fout, fin], weight_init)?;
        let bias = if bias {
            let init = match bias_init {
                Some(i) => i,
                None => Init::pytorch_default_bias(fin)?,
            };
            Some(vb.param("bias", &[fout], init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let fin = self.weight.dims()[1];
        if x.rank() == 0 || x.dims()[x.rank() - 1] != fin {
            return Err(Error::shape("Linear input", format!("[..., {fin}]"), x.dims()).into_candle());
        }
        let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
        let x2 = x.reshape(((), fin))?;
        let mut y = x2.matmul(&self.weight.as_tensor().t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b.as_tensor())?;
        }
        let mut shape = lead;
        shape.push(self.weight.dims()[0]);
        y.reshape(shape)
    }
}

/// Max pooling as a layer.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool(pub sconce_tensor::MaxPool2d);

impl Module for MaxPool {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::max_pool2d(x, &self.0).map_err(Error::into_candle)
    }
}

/// Average pooling as a layer.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool(pub sconce_tensor::AvgPool2d);

impl Module for AvgPool {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::avg_pool2d(x, &self.0).map_err(Error::into_candle)
    }
}

/// Adaptive average pooling to a fixed `(h, w)`.
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveAvgPool(pub (usize, usize));

impl Module for AdaptiveAvgPool {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::adaptive_avg_pool2d(x, self.0).map_err(Error::into_candle)
    }
}

/// Global average pooling `[N, C, H, W] → [N, C]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool;

impl Module for GlobalAvgPool {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sconce_tensor::global_avg_pool2d(x).map_err(Error::into_candle)
    }
}

/// Resizing to a fixed size or by an integer factor (`nn.Upsample`).
#[derive(Debug, Clone, Copy)]
pub enum Resize {
    /// To exactly `(h, w)`.
    To((usize, usize), Interpolation),
    /// By `factor` in both directions.
    Scale(usize, Interpolation),
}

impl Module for Resize {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (size, mode) = match *self {
            Resize::To(s, m) => (s, m),
            Resize::Scale(f, m) => {
                let (_, _, h, w) = x.dims4()?;
                ((h * f, w * f), m)
            }
        };
        sconce_tensor::resize(x, size, mode).map_err(Error::into_candle)
    }
}

/// The final layer an output encoding asks for ([`sconce_core::HeadSpec`]): a learned linear map,
/// or Hoffer et al.'s fixed matrix (optionally after a learned projection and L2
/// normalisation, times a learned scalar scale, plus an optional learned bias).
///
/// Keys: learned → `weight`, `bias`; fixed → `proj.weight`, `proj.bias` (when projecting),
/// `fixed_weight` (a buffer: saved, never trained), `scale`, `bias`.
#[derive(Debug, Clone)]
pub struct Head {
    kind: HeadKind,
}

#[derive(Debug, Clone)]
enum HeadKind {
    Learned(Linear),
    Fixed { proj: Option<Linear>, weight: crate::store::Buffer, normalize: bool, scale: Option<Var>, bias: Option<Var> },
}

impl Head {
    /// Builds the head for `spec` on `in_features` features.
    ///
    /// # Errors
    /// [`Error::Config`] when the fixed matrix does not match the (projected) feature size.
    pub fn new(vb: &Builder, in_features: usize, spec: &sconce_core::HeadSpec) -> Result<Self> {
        let kind = match spec {
            sconce_core::HeadSpec::Learned { out_features, bias } => {
                HeadKind::Learned(Linear::new(vb, in_features, *out_features, *bias)?)
            }
            sconce_core::HeadSpec::Fixed { projection, weight, normalize_input, learned_scale, bias } => {
                let feat = projection.unwrap_or(in_features);
                let dims = weight.dims();
                if dims.len() != 2 || dims[1] != feat {
                    return Err(Error::config(
                        "fixed head",
                        format!("matrix {dims:?} does not take {feat} features; project the features to {feat}"),
                    ));
                }
                let proj = match projection {
                    Some(p) => Some(Linear::new(&vb.pp("proj"), in_features, *p, true)?),
                    None => None,
                };
                let w = vb.buffer("fixed_weight", weight.to_dtype(vb.dtype())?)?;
                let scale = match learned_scale {
                    Some(s) => Some(vb.param("scale", &[1], Init::Constant(*s))?),
                    None => None,
                };
                let bias = if *bias { Some(vb.param("bias", &[dims[0]], Init::Zeros)?) } else { None };
                HeadKind::Fixed { proj, weight: w, normalize: *normalize_input, scale, bias }
            }
        };
        Ok(Self { kind })
    }

    /// The head applied at every pixel of `[N, F, H, W]` features (a 1×1 convolution with the
    /// same weights; the fixed head's normalisation is over each pixel's `F` features):
    /// `[N, out, H, W]`, for an output encoding per pixel in segmentation.
    ///
    /// # Errors
    /// [`Error::Shape`] for another rank; candle errors.
    pub fn forward_pixels(&self, x: &Tensor) -> Result<Tensor> {
        let [n, f, h, w] = sconce_core::check::dims::<4>(x, "head input", "[N, F, H, W]")?;
        let flat = x.permute((0, 2, 3, 1))?.reshape((n * h * w, f))?;
        let y = self.forward(&flat)?;
        let out = y.dim(1)?;
        Ok(y.reshape((n, h, w, out))?.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

impl Module for Head {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            HeadKind::Learned(l) => l.forward(x),
            HeadKind::Fixed { proj, weight, normalize, scale, bias } => {
                let mut h = match proj {
                    Some(p) => p.forward(x)?,
                    None => x.clone(),
                };
                if *normalize {
                    let norm = (h.sqr()?.sum_keepdim(h.rank() - 1)? + 1e-12)?.sqrt()?;
                    h = h.broadcast_div(&norm)?;
                }
                let mut y = h.matmul(&weight.get().t()?)?;
                if let Some(s) = scale {
                    y = y.broadcast_mul(s.as_tensor())?;
                }
                if let Some(b) = bias {
                    y = y.broadcast_add(b.as_tensor())?;
                }
                Ok(y)
            }
        }
    }
}
