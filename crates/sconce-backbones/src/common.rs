//! Input checks shared by the models: rank, channel count and minimum image size.

use candle_core::{Module, Tensor};
use sconce_core::{Error, Result};
use sconce_layers::Linear;

/// Strides of the five feature maps every backbone returns.
pub(crate) const STRIDES: [usize; 5] = [2, 4, 8, 16, 32];

/// The classification output from a backbone's feature maps: global average pooling of the
/// deepest (after a ReLU when `relu`), then the classifier if there is one.
/// sconce-tensor's one-pass ReLU (PyTorch's gradient at 0) as a candle-result op.
pub(crate) fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    sconce_tensor::relu(x).map_err(Error::into_candle)
}

pub(crate) fn pooled_logits(
    model: &str,
    feats: &[Tensor],
    relu: bool,
    fc: Option<&Linear>,
) -> candle_core::Result<Tensor> {
    let last = feats.last().ok_or_else(|| Error::config(model, "no feature maps").into_candle())?;
    let last = if relu { self::relu(last)? } else { last.clone() };
    let pooled = sconce_tensor::global_avg_pool2d(&last).map_err(Error::into_candle)?;
    match fc {
        Some(fc) => fc.forward(&pooled),
        None => Ok(pooled),
    }
}

/// Checks `x` is `[N, in_channels, H, W]` with `H, W ≥ min_size` and `N ≥ 1`.
pub(crate) fn check_input(model: &str, x: &Tensor, in_channels: usize, min_size: usize) -> Result<()> {
    let Ok((n, c, h, w)) = x.dims4() else {
        return Err(Error::shape(format!("{model} input"), format!("[N, {in_channels}, H, W]"), x.dims()));
    };
    if c != in_channels {
        return Err(Error::shape(
            format!("{model} input"),
            format!(
                "{in_channels} channels (the model was built with in_channels = {in_channels}; convert the images or \
                 build the model with in_channels = {c})"
            ),
            x.dims(),
        ));
    }
    if n == 0 {
        return Err(Error::shape(format!("{model} input"), "a batch of at least one image", x.dims()));
    }
    if h < min_size || w < min_size {
        return Err(Error::shape(
            format!("{model} input"),
            format!(
                "images of at least {min_size}×{min_size} (the deepest feature map is 1/32 of the input); resize or pad them"
            ),
            x.dims(),
        ));
    }
    Ok(())
}
