//! Weight initialisers as PyTorch defines them (`torch.nn.init`), drawing from [`SeededRng`]
//! and producing candle tensors.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result, SeededRng};

/// Which fan a Kaiming initialiser preserves the variance of (`mode` in PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass.
    FanIn,
    /// Preserve the variance of gradients in the backward pass (torchvision's ResNet choice).
    FanOut,
}

/// The nonlinearity a layer is followed by, for [`calculate_gain`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// No nonlinearity (and PyTorch's `conv*d`, `linear`, `sigmoid`): gain 1.
    Linear,
    /// Gain 1.
    Sigmoid,
    /// Gain 5/3.
    Tanh,
    /// Gain √2.
    Relu,
    /// Gain √(2 / (1 + slope²)).
    LeakyRelu(f64),
    /// Gain 3/4.
    Selu,
}

/// The recommended gain for a nonlinearity, as `torch.nn.init.calculate_gain`.
pub fn calculate_gain(nonlinearity: Nonlinearity) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// `(fan_in, fan_out)` of a weight shape, as PyTorch's `_calculate_fan_in_and_fan_out`:
/// `fan_in = shape[1] · receptive field`, `fan_out = shape[0] · receptive field`, where the
/// receptive field is the product of `shape[2..]`.
///
/// # Errors
/// [`Error::Shape`] for fewer than two dimensions or a zero-sized dimension.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 || shape.contains(&0) {
        return Err(Error::shape("fan computation", "at least 2 non-zero dimensions ([out, in, ...kernel])", shape));
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

/// A weight initialiser. Each variant matches the `torch.nn.init` function of the same name.
///
/// ```
/// use candle_core::{DType, Device};
/// use sconce_core::{FanMode, Init, Nonlinearity, SeededRng};
/// # fn main() -> sconce_core::Result<()> {
/// let mut rng = SeededRng::new(0);
/// // torchvision's ResNet conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
/// let init = Init::KaimingNormal { mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu };
/// let w = init.tensor(&[64, 3, 7, 7], DType::F32, &Device::Cpu, &mut rng)?;
/// assert_eq!(w.dims(), &[64, 3, 7, 7]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element equal to the value.
    Constant(f64),
    /// `U(lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound (exclusive).
        hi: f64,
    },
    /// `N(mean, std²)`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `N(mean, std²)` truncated to `[a, b]` (absolute bounds, as `trunc_normal_`).
    TruncNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Lower cut-off.
        a: f64,
        /// Upper cut-off.
        b: f64,
    },
    /// `U(-bound, bound)` with `bound = gain · √(3 / fan)` (`kaiming_uniform_`).
    KaimingUniform {
        /// Which fan to use.
        mode: FanMode,
        /// The nonlinearity that follows; `LeakyRelu(a)` carries PyTorch's `a`.
        nonlinearity: Nonlinearity,
    },
    /// `N(0, std²)` with `std = gain / √fan` (`kaiming_normal_`).
    KaimingNormal {
        /// Which fan to use.
        mode: FanMode,
        /// The nonlinearity that follows.
        nonlinearity: Nonlinearity,
    },
    /// `U(-a, a)` with `a = gain · √(6 / (fan_in + fan_out))` (`xavier_uniform_`).
    XavierUniform {
        /// Scaling factor.
        gain: f64,
    },
    /// `N(0, std²)` with `std = gain · √(2 / (fan_in + fan_out))` (`xavier_normal_`).
    XavierNormal {
        /// Scaling factor.
        gain: f64,
    },
}

impl Init {
    /// PyTorch's default for `nn.Conv2d` and `nn.Linear` weights:
    /// `kaiming_uniform_(w, a=√5)`, i.e. `U(-1/√fan_in, 1/√fan_in)`.
    pub fn pytorch_default_weight() -> Self {
        Init::KaimingUniform { mode: FanMode::FanIn, nonlinearity: Nonlinearity::LeakyRelu(5f64.sqrt()) }
    }

    /// PyTorch's default for `nn.Conv2d` and `nn.Linear` biases: `U(-1/√fan_in, 1/√fan_in)`,
    /// where `fan_in` is that of the layer's weight.
    ///
    /// # Errors
    /// [`Error::Config`] if `fan_in` is zero.
    pub fn pytorch_default_bias(fan_in: usize) -> Result<Self> {
        if fan_in == 0 {
            return Err(Error::config("fan_in", "must be > 0 for the default bias initialiser"));
        }
        let bound = 1.0 / (fan_in as f64).sqrt();
        Ok(Init::Uniform { lo: -bound, hi: bound })
    }

    fn check(&self) -> Result<()> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() { Ok(()) } else { Err(Error::config(name, format!("must be finite, got {v}"))) }
        };
        match *self {
            Init::Zeros | Init::Ones => Ok(()),
            Init::Constant(v) => finite("Init::Constant value", v),
            Init::Uniform { lo, hi } => {
                finite("Init::Uniform lo", lo)?;
                finite("Init::Uniform hi", hi)?;
                if lo > hi {
                    return Err(Error::config("Init::Uniform", format!("lo ({lo}) must be <= hi ({hi})")));
                }
                Ok(())
            }
            Init::Normal { mean, std } => {
                finite("Init::Normal mean", mean)?;
                finite("Init::Normal std", std)?;
                if std < 0.0 {
                    return Err(Error::config("Init::Normal std", format!("must be >= 0, got {std}")));
                }
                Ok(())
            }
            Init::TruncNormal { mean, std, a, b } => {
                for (n, v) in [("mean", mean), ("std", std), ("a", a), ("b", b)] {
                    finite(&format!("Init::TruncNormal {n}"), v)?;
                }
                if std <= 0.0 || a >= b {
                    return Err(Error::config(
                        "Init::TruncNormal",
                        format!("needs std > 0 and a < b, got std={std}, a={a}, b={b}"),
                    ));
                }
                // Rejection sampling needs a reasonable acceptance probability.
                if (a - mean) / std > 5.0 || (b - mean) / std < -5.0 {
                    return Err(Error::config(
                        "Init::TruncNormal",
                        format!("[a, b] = [{a}, {b}] lies more than 5 std from the mean {mean}"),
                    ));
                }
                Ok(())
            }
            Init::KaimingUniform { nonlinearity, .. } | Init::KaimingNormal { nonlinearity, .. } => {
                if let Nonlinearity::LeakyRelu(s) = nonlinearity {
                    finite("Init::Kaiming negative slope", s)?;
                }
                Ok(())
            }
            Init::XavierUniform { gain } | Init::XavierNormal { gain } => finite("Init::Xavier gain", gain),
        }
    }

    /// Draws `shape.iter().product()` values in row-major order.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid parameters; [`Error::Shape`] when a fan-based initialiser
    /// gets a shape with fewer than two dimensions.
    pub fn sample(&self, shape: &[usize], rng: &mut SeededRng) -> Result<Vec<f64>> {
        self.check()?;
        let n: usize = shape.iter().product();
        let fan = |mode: FanMode| -> Result<f64> {
            let (fi, fo) = fans(shape)?;
            Ok(match mode {
                FanMode::FanIn => fi as f64,
                FanMode::FanOut => fo as f64,
            })
        };
        let uniform = |rng: &mut SeededRng, lo: f64, hi: f64| (0..n).map(|_| rng.uniform(lo, hi)).collect();
        let normal = |rng: &mut SeededRng, mean: f64, std: f64| (0..n).map(|_| mean + std * rng.normal()).collect();
        Ok(match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(v) => vec![v; n],
            Init::Uniform { lo, hi } => uniform(rng, lo, hi),
            Init::Normal { mean, std } => normal(rng, mean, std),
            Init::TruncNormal { mean, std, a, b } => (0..n)
                .map(|_| {
                    loop {
                        let v = mean + std * rng.normal();
                        if (a..=b).contains(&v) {
                            break v;
                        }
                    }
                })
                .collect(),
            Init::KaimingUniform { mode, nonlinearity } => {
                let bound = calculate_gain(nonlinearity) * (3.0 / fan(mode)?).sqrt();
                uniform(rng, -bound, bound)
            }
            Init::KaimingNormal { mode, nonlinearity } => {
                normal(rng, 0.0, calculate_gain(nonlinearity) / fan(mode)?.sqrt())
            }
            Init::XavierUniform { gain } => {
                let (fi, fo) = fans(shape)?;
                let a = gain * (6.0 / (fi + fo) as f64).sqrt();
                uniform(rng, -a, a)
            }
            Init::XavierNormal { gain } => {
                let (fi, fo) = fans(shape)?;
                normal(rng, 0.0, gain * (2.0 / (fi + fo) as f64).sqrt())
            }
        })
    }

    /// A tensor of `shape` and floating-point `dtype` on `device`, drawn from `rng`.
    ///
    /// # Errors
    /// As [`Init::sample`], plus [`Error::Config`] for a non-float dtype.
    pub fn tensor(&self, shape: &[usize], dtype: DType, device: &Device, rng: &mut SeededRng) -> Result<Tensor> {
        if !dtype.is_float() {
            return Err(Error::config("dtype", format!("initialisers produce float tensors, got {dtype:?}")));
        }
        let values = self.sample(shape, rng)?;
        let t = match dtype {
            DType::F64 => Tensor::from_vec(values, shape, device)?,
            _ => {
                let v32: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
                Tensor::from_vec(v32, shape, device)?.to_dtype(dtype)?
            }
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn gains_match_torch_calculate_gain() {
        // Values from the table in the torch.nn.init documentation.
        assert_eq!(calculate_gain(Nonlinearity::Linear), 1.0);
        assert_eq!(calculate_gain(Nonlinearity::Sigmoid), 1.0);
        assert!((calculate_gain(Nonlinearity::Tanh) - 5.0 / 3.0).abs() < 1e-15);
        assert!((calculate_gain(Nonlinearity::Relu) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert!((calculate_gain(Nonlinearity::LeakyRelu(0.2)) - (2.0f64 / 1.04).sqrt()).abs() < 1e-15);
        assert_eq!(calculate_gain(Nonlinearity::Selu), 0.75);
    }

    #[test]
    fn fans_follow_pytorch() -> Result<()> {
        assert_eq!(fans(&[64, 3, 7, 7])?, (147, 3136));
        assert_eq!(fans(&[1000, 2048])?, (2048, 1000));
        assert!(matches!(fans(&[5]), Err(Error::Shape { .. })));
        assert!(matches!(fans(&[0, 5]), Err(Error::Shape { .. })));
        Ok(())
    }

    #[test]
    fn pytorch_default_conv_init_is_uniform_one_over_sqrt_fan_in() -> Result<()> {
        // nn.Conv2d.reset_parameters: kaiming_uniform_(a=√5) → bound = 1/√fan_in.
        let mut rng = SeededRng::new(1);
        let shape = [128, 64, 3, 3];
        let w = Init::pytorch_default_weight().sample(&shape, &mut rng)?;
        let bound = 1.0 / (64.0f64 * 9.0).sqrt();
        let max = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max <= bound && max > 0.999 * bound, "max {max} bound {bound}");
        let (mean, std) = moments(&w);
        assert!(mean.abs() < 0.01 * bound);
        assert!((std - bound / 3f64.sqrt()).abs() < 0.01 * bound, "std {std}");
        let Init::Uniform { lo, hi } = Init::pytorch_default_bias(576)? else { unreachable!() };
        assert!((hi - bound).abs() < 1e-15 && (lo + bound).abs() < 1e-15);
        assert!(Init::pytorch_default_bias(0).is_err());
        Ok(())
    }

    #[test]
    fn kaiming_normal_fan_out_relu_has_the_torchvision_std() -> Result<()> {
        let mut rng = SeededRng::new(2);
        let shape = [256, 64, 3, 3];
        let w =
            Init::KaimingNormal { mode: FanMode::FanOut, nonlinearity: Nonlinearity::Relu }.sample(&shape, &mut rng)?;
        let target = (2.0f64 / (256.0 * 9.0)).sqrt();
        let (mean, std) = moments(&w);
        assert!(mean.abs() < 0.01 * target);
        assert!((std / target - 1.0).abs() < 0.01, "std {std} target {target}");
        Ok(())
    }

    #[test]
    fn kaiming_uniform_and_xavier_bounds() -> Result<()> {
        let mut rng = SeededRng::new(3);
        let shape = [100, 400];
        let ku =
            Init::KaimingUniform { mode: FanMode::FanIn, nonlinearity: Nonlinearity::Relu }.sample(&shape, &mut rng)?;
        let kb = 2f64.sqrt() * (3.0f64 / 400.0).sqrt();
        assert!(ku.iter().all(|v| v.abs() <= kb));
        assert!(ku.iter().any(|v| v.abs() > 0.99 * kb));
        let xu = Init::XavierUniform { gain: 1.0 }.sample(&shape, &mut rng)?;
        let xb = (6.0f64 / 500.0).sqrt();
        assert!(xu.iter().all(|v| v.abs() <= xb) && xu.iter().any(|v| v.abs() > 0.99 * xb));
        let xn = Init::XavierNormal { gain: 2.0 }.sample(&shape, &mut rng)?;
        let (_, std) = moments(&xn);
        assert!((std / (2.0 * (2.0f64 / 500.0).sqrt()) - 1.0).abs() < 0.02);
        Ok(())
    }

    #[test]
    fn trunc_normal_stays_in_bounds() -> Result<()> {
        let mut rng = SeededRng::new(4);
        let v = Init::TruncNormal { mean: 0.0, std: 1.0, a: -0.5, b: 2.0 }.sample(&[10_000], &mut rng)?;
        assert!(v.iter().all(|x| (-0.5..=2.0).contains(x)));
        // Mean of N(0,1) truncated to [-0.5, 2]: (φ(-0.5) − φ(2)) / (Φ(2) − Φ(-0.5)) = 0.44574.
        let (mean, _) = moments(&v);
        assert!((mean - 0.44574).abs() < 0.02, "mean {mean}");
        Ok(())
    }

    #[test]
    fn constants_and_tensors() -> Result<()> {
        let mut rng = SeededRng::new(5);
        let z = Init::Zeros.tensor(&[2, 3], DType::F32, &Device::Cpu, &mut rng)?;
        assert_eq!(z.flatten_all()?.to_vec1::<f32>()?, vec![0.0; 6]);
        let o = Init::Ones.tensor(&[4], DType::F64, &Device::Cpu, &mut rng)?;
        assert_eq!(o.to_vec1::<f64>()?, vec![1.0; 4]);
        let c = Init::Constant(0.5).tensor(&[3], DType::BF16, &Device::Cpu, &mut rng)?;
        assert_eq!(c.dtype(), DType::BF16);
        assert_eq!(c.to_dtype(DType::F32)?.to_vec1::<f32>()?, vec![0.5; 3]);
        Ok(())
    }

    #[test]
    fn same_seed_same_tensor() -> Result<()> {
        let init = Init::pytorch_default_weight();
        let a = init.tensor(&[8, 4, 3, 3], DType::F32, &Device::Cpu, &mut SeededRng::new(42))?;
        let b = init.tensor(&[8, 4, 3, 3], DType::F32, &Device::Cpu, &mut SeededRng::new(42))?;
        let c = init.tensor(&[8, 4, 3, 3], DType::F32, &Device::Cpu, &mut SeededRng::new(43))?;
        let diff = |x: &Tensor, y: &Tensor| -> Result<f32> { Ok((x - y)?.abs()?.sum_all()?.to_scalar::<f32>()?) };
        assert_eq!(diff(&a, &b)?, 0.0);
        assert!(diff(&a, &c)? > 0.0);
        Ok(())
    }

    #[test]
    fn bad_parameters_are_errors_not_panics() {
        let mut rng = SeededRng::new(6);
        let bad = [
            Init::Uniform { lo: 1.0, hi: 0.0 },
            Init::Normal { mean: 0.0, std: -1.0 },
            Init::Normal { mean: f64::NAN, std: 1.0 },
            Init::TruncNormal { mean: 0.0, std: 1.0, a: 1.0, b: 0.0 },
            Init::TruncNormal { mean: 0.0, std: 1.0, a: 10.0, b: 11.0 },
            Init::Constant(f64::INFINITY),
            Init::XavierUniform { gain: f64::NAN },
        ];
        for init in bad {
            assert!(matches!(init.sample(&[4, 4], &mut rng), Err(Error::Config { .. })), "{init:?}");
        }
        let k = Init::KaimingNormal { mode: FanMode::FanIn, nonlinearity: Nonlinearity::Relu };
        assert!(matches!(k.sample(&[10], &mut rng), Err(Error::Shape { .. })));
        assert!(matches!(Init::Zeros.tensor(&[2], DType::U32, &Device::Cpu, &mut rng), Err(Error::Config { .. })));
    }
}
