//! Transforms applied identically to an image and its mask (flips, rotations, crops,
//! resizing) and to the image alone (colour jitter, normalisation), driven by a seeded RNG.

use sconce_core::{Error, Result, SeededRng};

use crate::sample::{Sample, Target};

/// One transform. Geometric ones move the mask with the image (nearest neighbour for masks).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Mirror left–right with probability `p`.
    HFlip(f64),
    /// Mirror top–bottom with probability `p`.
    VFlip(f64),
    /// Rotate by a random multiple of 90° (square images only; others are left unrotated).
    Rotate90,
    /// Rotate by a uniform angle in `±max_degrees` about the centre (bilinear for the image,
    /// nearest for the mask, zeros outside).
    Rotate(f64),
    /// A random `(h, w)` window.
    RandomCrop(usize, usize),
    /// The central `(h, w)` window.
    CenterCrop(usize, usize),
    /// Resize to `(h, w)` (bilinear image, nearest mask).
    Resize(usize, usize),
    /// Multiply brightness by `1 ± b` and contrast about the mean by `1 ± c`, then clamp to [0, 1].
    ColorJitter {
        /// Brightness range.
        brightness: f32,
        /// Contrast range.
        contrast: f32,
    },
    /// `(x − mean[c]) / std[c]` per channel (the last step: values leave [0, 1]).
    Normalize {
        /// Per-channel means.
        mean: Vec<f32>,
        /// Per-channel standard deviations.
        std: Vec<f32>,
    },
}

impl Transform {
    /// ImageNet's normalisation (timm's default mean/std).
    pub fn imagenet_normalize() -> Self {
        Transform::Normalize { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }
}

/// Transforms applied in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pipeline(pub Vec<Transform>);

fn remap(s: &Sample, oh: usize, ow: usize, f: impl Fn(usize, usize) -> Option<(f32, f32)>) -> Sample {
    let (c, h, w) = (s.channels, s.height, s.width);
    let mut image = vec![0f32; c * oh * ow];
    let mut mask = match &s.target {
        Target::Mask(_) => Some(vec![0u8; oh * ow]),
        Target::Class(_) => None,
    };
    for y in 0..oh {
        for x in 0..ow {
            let Some((sy, sx)) = f(y, x) else { continue };
            if sy < -0.5 || sx < -0.5 || sy > h as f32 - 0.5 || sx > w as f32 - 0.5 {
                continue;
            }
            // Bilinear for the image.
            let (y0, x0) = (sy.floor().max(0.0) as usize, sx.floor().max(0.0) as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = ((sy - y0 as f32).clamp(0.0, 1.0), (sx - x0 as f32).clamp(0.0, 1.0));
            for k in 0..c {
                let p = |yy: usize, xx: usize| s.image[k * h * w + yy * w + xx];
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                image[k * oh * ow + y * ow + x] = top * (1.0 - fy) + bot * fy;
            }
            if let (Some(m), Target::Mask(src)) = (mask.as_mut(), &s.target) {
                let (ny, nx) = ((sy.round().max(0.0) as usize).min(h - 1), (sx.round().max(0.0) as usize).min(w - 1));
                m[y * ow + x] = src[ny * w + nx];
            }
        }
    }
    Sample {
        image,
        channels: c,
        height: oh,
        width: ow,
        target: match mask {
            Some(m) => Target::Mask(m),
            None => s.target.clone(),
        },
    }
}

/// Exact pixel moves (flips, 90° rotations, crops) without interpolation.
fn permute(s: &Sample, oh: usize, ow: usize, f: impl Fn(usize, usize) -> (usize, usize)) -> Sample {
    let (c, h, w) = (s.channels, s.height, s.width);
    let mut image = vec![0f32; c * oh * ow];
    for k in 0..c {
        for y in 0..oh {
            for x in 0..ow {
                let (sy, sx) = f(y, x);
                image[k * oh * ow + y * ow + x] = s.image[k * h * w + sy * w + sx];
            }
        }
    }
    let target = match &s.target {
        Target::Mask(m) => {
            let mut out = vec![0u8; oh * ow];
            for y in 0..oh {
                for x in 0..ow {
                    let (sy, sx) = f(y, x);
                    out[y * ow + x] = m[sy * w + sx];
                }
            }
            Target::Mask(out)
        }
        t => t.clone(),
    };
    Sample { image, channels: c, height: oh, width: ow, target }
}

impl Pipeline {
    /// Applies every transform in order.
    ///
    /// # Errors
    /// [`Error::Config`] for a crop larger than the image, zero sizes or a normalisation with
    /// the wrong number of channels or a zero std.
    pub fn apply(&self, mut s: Sample, rng: &mut SeededRng) -> Result<Sample> {
        for t in &self.0 {
            let (h, w) = (s.height, s.width);
            s = match t {
                Transform::HFlip(p) => {
                    if rng.next_f64() < *p {
                        permute(&s, h, w, |y, x| (y, w - 1 - x))
                    } else {
                        s
                    }
                }
                Transform::VFlip(p) => {
                    if rng.next_f64() < *p {
                        permute(&s, h, w, |y, x| (h - 1 - y, x))
                    } else {
                        s
                    }
                }
                Transform::Rotate90 => match rng.below(4) {
                    1 if h == w => permute(&s, h, w, |y, x| (w - 1 - x, y)),
                    2 => permute(&s, h, w, |y, x| (h - 1 - y, w - 1 - x)),
                    3 if h == w => permute(&s, h, w, |y, x| (x, h - 1 - y)),
                    _ => s,
                },
                Transform::Rotate(max) => {
                    let a = rng.uniform(-max, *max).to_radians() as f32;
                    let (cos, sin) = (a.cos(), a.sin());
                    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
                    remap(&s, h, w, |y, x| {
                        let (dy, dx) = (y as f32 - cy, x as f32 - cx);
                        Some((cy + dy * cos - dx * sin, cx + dy * sin + dx * cos))
                    })
                }
                Transform::RandomCrop(oh, ow) | Transform::CenterCrop(oh, ow) => {
                    let (oh, ow) = (*oh, *ow);
                    if oh == 0 || ow == 0 || oh > h || ow > w {
                        return Err(Error::config(
                            "crop",
                            format!("a {oh}×{ow} crop does not fit a {h}×{w} image; resize first"),
                        ));
                    }
                    let (top, left) = if matches!(t, Transform::RandomCrop(..)) {
                        (rng.below((h - oh + 1) as u64) as usize, rng.below((w - ow + 1) as u64) as usize)
                    } else {
                        ((h - oh) / 2, (w - ow) / 2)
                    };
                    permute(&s, oh, ow, |y, x| (y + top, x + left))
                }
                Transform::Resize(oh, ow) => {
                    let (oh, ow) = (*oh, *ow);
                    if oh == 0 || ow == 0 {
                        return Err(Error::config("resize", "target size must be > 0"));
                    }
                    if (oh, ow) == (h, w) {
                        s
                    } else {
                        let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
                        remap(&s, oh, ow, |y, x| Some(((y as f32 + 0.5) * sy - 0.5, (x as f32 + 0.5) * sx - 0.5)))
                    }
                }
                Transform::ColorJitter { brightness, contrast } => {
                    let b = 1.0 + rng.uniform(-f64::from(*brightness), f64::from(*brightness)) as f32;
                    let c = 1.0 + rng.uniform(-f64::from(*contrast), f64::from(*contrast)) as f32;
                    let mean = s.image.iter().sum::<f32>() / s.image.len().max(1) as f32;
                    for v in &mut s.image {
                        *v = (((*v - mean) * c + mean) * b).clamp(0.0, 1.0);
                    }
                    s
                }
                Transform::Normalize { mean, std } => {
                    if mean.len() != s.channels || std.len() != s.channels || std.iter().any(|v| *v <= 0.0) {
                        return Err(Error::config(
                            "normalize",
                            format!("needs {} means and positive stds, got {mean:?} / {std:?}", s.channels),
                        ));
                    }
                    let hw = h * w;
                    for (k, chunk) in s.image.chunks_mut(hw).enumerate() {
                        for v in chunk {
                            *v = (*v - mean[k]) / std[k];
                        }
                    }
                    s
                }
            };
        }
        Ok(s)
    }
}
