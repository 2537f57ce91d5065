//! Applying an [`Activation`] to a tensor, with sconce-tensor's stable kernels, and a module
//! that carries one so a model's output layer can be inspected by the head checker.

use candle_core::{Module, Tensor};
use sconce_core::{Activation, Error, Result};

/// Computes `act(x)`. Softmax and log-softmax use the stable, gradient-preserving kernels of
/// `sconce-tensor` (candle's `softmax_last_dim` silently drops its gradient).
///
/// ```
/// use sconce_core::Activation;
/// # fn main() -> sconce_core::Result<()> {
/// let x = candle_core::Tensor::new(&[[-2.0f32, 0.0, 3.0]], &candle_core::Device::Cpu)?;
/// let p = sconce_losses::activate(&Activation::Softmax { axis: 1 }, &x)?;
/// let s: f32 = p.sum_all()?.to_scalar()?;
/// assert!((s - 1.0).abs() < 1e-6);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Shape`] for a softmax axis outside the tensor's rank; candle's errors otherwise.
pub fn activate(act: &Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match *act {
        Activation::Identity => x.clone(),
        Activation::Relu => x.relu()?,
        Activation::LeakyRelu { slope } => {
            let neg = x.minimum(0.0)?;
            (x.maximum(0.0)? + (neg * slope)?)?
        }
        Activation::Elu { alpha } => x.elu(alpha)?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Silu => x.silu()?,
        Activation::Tanh => x.tanh()?,
        Activation::Sigmoid => sconce_tensor::sigmoid(x)?,
        Activation::HardSigmoid => ((x / 6.0)? + 0.5)?.clamp(0.0, 1.0)?,
        Activation::Softmax { axis } => {
            check_axis(x, axis)?;
            sconce_tensor::softmax(x, axis)?
        }
        Activation::LogSoftmax { axis } => {
            check_axis(x, axis)?;
            sconce_tensor::log_softmax(x, axis)?
        }
        Activation::Softplus => sconce_tensor::softplus(x)?,
    })
}

fn check_axis(x: &Tensor, axis: usize) -> Result<()> {
    if axis >= x.rank() {
        return Err(Error::shape("activation axis", format!("an axis below rank {}", x.rank()), x.dims()));
    }
    Ok(())
}

/// An activation as a layer: a model's final activation is a value the head checker can read
/// (`OutputActivation::activation`), not a closure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputActivation(pub Activation);

impl OutputActivation {
    /// The activation this layer applies.
    pub fn activation(&self) -> Activation {
        self.0
    }
}

impl Module for OutputActivation {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        activate(&self.0, xs).map_err(Error::into_candle)
    }
}
