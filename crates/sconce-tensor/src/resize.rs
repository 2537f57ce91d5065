//! Resizing `[N, C, H, W]` to any output size: nearest (PyTorch's `nearest` and
//! `nearest-exact`) and bilinear (`align_corners` either way), forward and backward.
//!
//! candle 0.11.1 has no bilinear backward and its nearest backward overwrites accumulated
//! gradients and needs integer factors; these resizes are linear maps whose backward is
//! their exact transpose, so a U-Net can upsample 31 → 62 → 125 → 250 and train.

use std::sync::Arc;

use candle_core::Tensor;
use sconce_core::{Error, Result};

use crate::kernel::nchw;
use crate::separable::{SeparableMap, Taps};

/// How to interpolate, as `torch.nn.functional.interpolate`'s `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `mode="nearest"`: source index `floor(dst · in/out)` (PyTorch's legacy rule).
    Nearest,
    /// `mode="nearest-exact"`: source index `floor((dst + ½) · in/out)`, like PIL and OpenCV.
    NearestExact,
    /// `mode="bilinear"`.
    Bilinear {
        /// Align the centres of the corner pixels (`align_corners=True`).
        align_corners: bool,
    },
}

/// Source index of the nearest modes, computed in `f32` as PyTorch does for sizes given
/// explicitly (`scale = (float) in / out`).
fn nearest_taps(in_len: usize, out_len: usize, exact: bool) -> Taps {
    let scale = in_len as f32 / out_len as f32;
    Taps::from_lists(
        in_len,
        (0..out_len).map(|o| {
            let src = if !exact && out_len == in_len {
                o
            } else if !exact && out_len == 2 * in_len {
                o >> 1
            } else {
                let off = if exact { 0.5 } else { 0.0 };
                (((o as f32 + off) * scale).floor() as usize).min(in_len - 1)
            };
            vec![(src, 1.0)]
        }),
    )
}

/// PyTorch's `area_pixel_compute_source_index` + linear weights along one axis, computed in
/// the tensor's precision as PyTorch does (`opmath_t` is `float` for `float` tensors), so
/// `f32` results agree with PyTorch's to rounding.
fn linear_taps(in_len: usize, out_len: usize, align_corners: bool, single: bool) -> Taps {
    // Rounds to f32 when `single`, so every step matches PyTorch's float arithmetic.
    let r = |v: f64| if single { v as f32 as f64 } else { v };
    Taps::from_lists(
        in_len,
        (0..out_len).map(|o| {
            let src = if align_corners {
                let scale = if out_len > 1 { r(r(in_len as f64 - 1.0) / r(out_len as f64 - 1.0)) } else { 0.0 };
                r(scale * o as f64)
            } else {
                let scale = r(in_len as f64 / out_len as f64);
                r(r(scale * r(o as f64 + 0.5)) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(in_len - 1);
            let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
            let l1 = r(src - i0 as f64).clamp(0.0, 1.0);
            let l0 = r(1.0 - l1);
            if i1 == i0 { vec![(i0, l0 + l1)] } else { vec![(i0, l0), (i1, l1)] }
        }),
    )
}

/// Resizes `x` `[N, C, H, W]` to `[N, C, out.0, out.1]`.
///
/// ```
/// use sconce_tensor::{Interpolation, resize};
/// # fn main() -> sconce_core::Result<()> {
/// let x = candle_core::Tensor::ones((1, 16, 63, 63), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// let y = resize(&x, (125, 125), Interpolation::Bilinear { align_corners: false })?;
/// assert_eq!(y.dims(), &[1, 16, 125, 125]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Shape`] for input that is not `[N, C, H, W]` or has an empty plane;
/// [`Error::Config`] for a zero output size or a non-float dtype.
pub fn resize(x: &Tensor, out: (usize, usize), mode: Interpolation) -> Result<Tensor> {
    let [_, _, ih, iw] = nchw(x, "resize input")?;
    if ih == 0 || iw == 0 {
        return Err(Error::shape("resize input", "a non-empty H×W plane", x.dims()));
    }
    if out.0 == 0 || out.1 == 0 {
        return Err(Error::config("resize output size", format!("must be positive, got {out:?}")));
    }
    let (name, h, w) = match mode {
        Interpolation::Nearest => ("resize-nearest", nearest_taps(ih, out.0, false), nearest_taps(iw, out.1, false)),
        Interpolation::NearestExact => {
            ("resize-nearest-exact", nearest_taps(ih, out.0, true), nearest_taps(iw, out.1, true))
        }
        Interpolation::Bilinear { align_corners } => {
            let single = x.dtype() == candle_core::DType::F32;
            let (h, w) = (linear_taps(ih, out.0, align_corners, single), linear_taps(iw, out.1, align_corners, single));
            ("resize-bilinear", h, w)
        }
    };
    let map = SeparableMap { name, h: Arc::new(h), w: Arc::new(w), scale: 1.0, transposed: false };
    Ok(map.apply(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_indices_follow_pytorch() {
        // torch.nn.functional.interpolate(arange(5), size=8, mode="nearest") picks
        // floor(o * 5/8): [0, 0, 1, 1, 2, 3, 3, 4].
        let t = nearest_taps(5, 8, false);
        let idx: Vec<usize> = (0..8).map(|o| t.index[o]).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 3, 3, 4]);
        // nearest-exact: floor((o + 0.5) * 5/8) = [0, 0, 1, 2, 2, 3, 4, 4].
        let t = nearest_taps(5, 8, true);
        let idx: Vec<usize> = (0..8).map(|o| t.index[o]).collect();
        assert_eq!(idx, vec![0, 0, 1, 2, 2, 3, 4, 4]);
    }

    #[test]
    fn bilinear_weights_sum_to_one() {
        for (i, o, a) in [(63, 125, false), (125, 250, true), (7, 3, false), (1, 4, true), (4, 1, true)] {
            let t = linear_taps(i, o, a, false);
            for k in 0..o {
                let s: f64 = t.weight[t.offsets_for(k)].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{i}->{o} align={a} at {k}: {s}");
            }
        }
    }
}
