//! timm's evaluation transform on an 8-bit RGB image, reproducing Pillow's resampling (the
//! antialiased bilinear/bicubic filters with 22-bit fixed-point weights and 8-bit rounding
//! between the horizontal and vertical passes), torchvision's shorter-side resize and centre
//! crop, then scaling to [0, 1] and normalising.

use sconce_core::{Error, Result};

use crate::cfg::Preprocess;

const PRECISION_BITS: u32 = 32 - 8 - 2;

#[derive(Clone, Copy)]
enum Filter {
    Bilinear,
    Bicubic,
    Nearest,
}

impl Filter {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "bilinear" => Ok(Filter::Bilinear),
            "bicubic" => Ok(Filter::Bicubic),
            "nearest" => Ok(Filter::Nearest),
            other => Err(Error::config("interpolation", format!("`{other}`: expected bilinear, bicubic or nearest"))),
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Nearest => 0.5,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Filter::Nearest => {
                if x < 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input
/// index and fixed-point weights.
fn coeffs(in_size: usize, out_size: usize, f: Filter) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax.max(xmin)).map(|x| f.eval((x as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    if v < 0.0 { (s - 0.5) as i64 } else { (s + 0.5) as i64 }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved RGB8 image (`h × w × 3`) to `oh × ow` as Pillow does.
fn pil_resize(src: &[u8], h: usize, w: usize, oh: usize, ow: usize, f: Filter) -> Vec<u8> {
    let round = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass.
    let tmp = if ow != w {
        let cx = coeffs(w, ow, f);
        let mut out = vec![0u8; h * ow * 3];
        for y in 0..h {
            for (x, (xmin, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let acc = k
                        .iter()
                        .enumerate()
                        .fold(round, |a, (i, &kk)| a + i64::from(src[(y * w + xmin + i) * 3 + c]) * kk);
                    out[(y * ow + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return tmp;
    }
    let cy = coeffs(h, oh, f);
    let mut out = vec![0u8; oh * ow * 3];
    for (y, (ymin, k)) in cy.iter().enumerate() {
        for x in 0..ow {
            for c in 0..3 {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(round, |a, (i, &kk)| a + i64::from(tmp[((ymin + i) * ow + x) * 3 + c]) * kk);
                out[(y * ow + x) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

/// Python's `round` (half to even), as torchvision's centre crop uses.
fn round_half_even(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 { r as i64 - 1 } else { r as i64 }
}

/// timm's eval transform: resize the shorter side to `floor(size / crop_pct)` (the longer side
/// to `int(new_short · long / short)`, as torchvision), centre crop `size × size`, scale to
/// [0, 1] and normalise. `rgb` is interleaved `h × w × 3`; the result is `[3, size, size]`
/// channels first. `resize = false` only normalises an image already `size × size`.
///
/// # Errors
/// [`Error::Shape`] for a buffer that is not `h·w·3` bytes or an image that is not the input size
/// when `resize` is false; [`Error::Config`] for an unknown interpolation.
pub fn eval_transform(rgb: &[u8], h: usize, w: usize, cfg: &Preprocess, resize: bool) -> Result<Vec<f32>> {
    if rgb.len() != h * w * 3 || h == 0 || w == 0 {
        return Err(Error::shape("image", format!("{h}×{w}×3 bytes"), &[rgb.len()]));
    }
    let [c, th, tw] = cfg.input_size;
    if c != 3 || cfg.mean.len() != 3 || cfg.std.len() != 3 {
        return Err(Error::config("pretrained_cfg", "expects 3-channel input with 3 means and stds"));
    }
    let (img, h, w) = if resize {
        let f = Filter::parse(&cfg.interpolation)?;
        let short = (th.min(tw) as f64 / cfg.crop_pct).floor() as usize;
        let (nh, nw) = if h <= w {
            (short, ((short as f64) * w as f64 / h as f64) as usize)
        } else {
            (((short as f64) * h as f64 / w as f64) as usize, short)
        };
        if nh < th || nw < tw {
            return Err(Error::config("crop_pct", format!("resized {nh}×{nw} is smaller than the {th}×{tw} crop")));
        }
        let r = pil_resize(rgb, h, w, nh, nw, f);
        let top = round_half_even((nh - th) as f64 / 2.0) as usize;
        let left = round_half_even((nw - tw) as f64 / 2.0) as usize;
        let mut crop = Vec::with_capacity(th * tw * 3);
        for y in top..top + th {
            crop.extend_from_slice(&r[(y * nw + left) * 3..(y * nw + left + tw) * 3]);
        }
        (crop, th, tw)
    } else {
        if (h, w) != (th, tw) {
            return Err(Error::shape(
                "image",
                format!("{th}×{tw} (the model's input size) when resizing is off"),
                &[h, w, 3],
            ));
        }
        (rgb.to_vec(), h, w)
    };
    let mut out = vec![0f32; 3 * h * w];
    for i in 0..h * w {
        for k in 0..3 {
            out[k * h * w + i] = (f32::from(img[i * 3 + k]) / 255.0 - cfg.mean[k]) / cfg.std[k];
        }
    }
    Ok(out)
}
