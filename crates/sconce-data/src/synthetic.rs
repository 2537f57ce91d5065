//! The built-in synthetic segmentation dataset: RGB scenes of saturated, textured shapes
//! (discs, ellipses, rotated rectangles, triangles) on a greyish textured background under
//! uneven lighting and noise, with the exact binary mask of the shapes. Sample `i` depends only
//! on `(seed, i)`.

use sconce_core::{Error, Result, SeededRng};

use crate::sample::{Dataset, Sample, Target, check_index};

/// Settings of [`SyntheticShapes`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of samples.
    pub len: usize,
    /// Image height and width.
    pub size: (usize, usize),
    /// Seed of the whole dataset.
    pub seed: u64,
    /// Fewest and most foreground shapes per image.
    pub objects: (usize, usize),
    /// Standard deviation of the pixel noise.
    pub noise: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { len: 256, size: (250, 250), seed: 0, objects: (1, 4), noise: 0.04 }
    }
}

/// Deterministic synthetic scenes for binary segmentation (see the module docs).
///
/// ```
/// use sconce_data::{Dataset, SyntheticConfig, SyntheticShapes, Target};
/// # fn main() -> sconce_core::Result<()> {
/// let ds = SyntheticShapes::new(SyntheticConfig { len: 4, size: (64, 48), ..Default::default() })?;
/// let s = ds.get(3)?;
/// assert_eq!((s.channels, s.height, s.width), (3, 64, 48));
/// let Target::Mask(m) = &s.target else { unreachable!() };
/// assert!(m.iter().any(|&v| v == 1) && m.iter().all(|&v| v <= 1));
/// assert_eq!(ds.get(3)?, s); // same seed and index, same sample
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SyntheticShapes {
    cfg: SyntheticConfig,
}

impl SyntheticShapes {
    /// The dataset.
    ///
    /// # Errors
    /// [`Error::Config`] for images smaller than 16×16, `objects.0 > objects.1`, no objects, or
    /// a negative noise level.
    pub fn new(cfg: SyntheticConfig) -> Result<Self> {
        if cfg.size.0 < 16 || cfg.size.1 < 16 {
            return Err(Error::config("synthetic size", format!("must be at least 16×16, got {:?}", cfg.size)));
        }
        if cfg.objects.0 == 0 || cfg.objects.0 > cfg.objects.1 {
            return Err(Error::config("synthetic objects", format!("need 1 ≤ min ≤ max, got {:?}", cfg.objects)));
        }
        if !(cfg.noise >= 0.0 && cfg.noise.is_finite()) {
            return Err(Error::config("synthetic noise", format!("must be ≥ 0, got {}", cfg.noise)));
        }
        Ok(Self { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &SyntheticConfig {
        &self.cfg
    }
}

#[derive(Clone, Copy)]
enum Shape {
    /// Ellipse: centre, semi-axes, rotation.
    Ellipse { cx: f32, cy: f32, a: f32, b: f32, cos: f32, sin: f32 },
    /// Rectangle: centre, half-sizes, rotation.
    Rect { cx: f32, cy: f32, hw: f32, hh: f32, cos: f32, sin: f32 },
    /// Triangle by its vertices.
    Tri { p: [(f32, f32); 3] },
}

impl Shape {
    fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Shape::Ellipse { cx, cy, a, b, cos, sin } => {
                let (dx, dy) = (x - cx, y - cy);
                let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                (u / a).powi(2) + (v / b).powi(2) <= 1.0
            }
            Shape::Rect { cx, cy, hw, hh, cos, sin } => {
                let (dx, dy) = (x - cx, y - cy);
                let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                u.abs() <= hw && v.abs() <= hh
            }
            Shape::Tri { p } => {
                let s = |a: (f32, f32), b: (f32, f32)| (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0);
                let (d1, d2, d3) = (s(p[0], p[1]), s(p[1], p[2]), s(p[2], p[0]));
                let neg = d1 < 0.0 || d2 < 0.0 || d3 < 0.0;
                let pos = d1 > 0.0 || d2 > 0.0 || d3 > 0.0;
                !(neg && pos)
            }
        }
    }
}

/// HSV (h in [0, 1)) to RGB.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.fract() * 6.0).max(0.0);
    let i = h6.floor() as u32 % 6;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

impl Dataset for SyntheticShapes {
    fn len(&self) -> usize {
        self.cfg.len
    }

    fn num_classes(&self) -> usize {
        2
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(vec!["background".into(), "shape".into()])
    }

    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.cfg.len)?;
        let (h, w) = self.cfg.size;
        let mut rng = SeededRng::new(self.cfg.seed).fork(i as u64 + 1);
        let mut u = |lo: f32, hi: f32| rng.uniform(f64::from(lo), f64::from(hi)) as f32;
        let scale = h.min(w) as f32;
        // Background: two greyish colours blended along a random direction, plus a texture.
        let bg0 = hsv(u(0.0, 1.0), u(0.0, 0.25), u(0.2, 0.8));
        let bg1 = hsv(u(0.0, 1.0), u(0.0, 0.25), u(0.2, 0.8));
        let ang = u(0.0, std::f32::consts::TAU);
        let (dx, dy) = (ang.cos(), ang.sin());
        let (f1, f2, ph1, ph2, amp) = (u(0.02, 0.15), u(0.02, 0.15), u(0.0, 6.3), u(0.0, 6.3), u(0.02, 0.08));
        // Lighting: a linear ramp of ±25% in another direction.
        let la = u(0.0, std::f32::consts::TAU);
        let (lx, ly, lstrength) = (la.cos(), la.sin(), u(0.0, 0.25));
        let n_obj = self.cfg.objects.0 + (u(0.0, 1.0) * (self.cfg.objects.1 - self.cfg.objects.0 + 1) as f32) as usize;
        let n_obj = n_obj.min(self.cfg.objects.1);
        let mut shapes = Vec::with_capacity(n_obj);
        for _ in 0..n_obj {
            let (cx, cy) = (u(0.1, 0.9) * w as f32, u(0.1, 0.9) * h as f32);
            let r = u(0.08, 0.22) * scale;
            let rot = u(0.0, std::f32::consts::PI);
            let (cos, sin) = (rot.cos(), rot.sin());
            let kind = u(0.0, 3.0) as u32;
            let shape = match kind {
                0 => Shape::Ellipse { cx, cy, a: r, b: r * u(0.5, 1.0), cos, sin },
                1 => Shape::Rect { cx, cy, hw: r, hh: r * u(0.4, 1.0), cos, sin },
                _ => {
                    let a0 = u(0.0, std::f32::consts::TAU);
                    let p = [0.0f32, 2.1, 4.2].map(|o| {
                        let a = a0 + o + u(-0.3, 0.3);
                        (cx + r * 1.2 * a.cos(), cy + r * 1.2 * a.sin())
                    });
                    Shape::Tri { p }
                }
            };
            // Saturated colour and a stripe texture of its own.
            let col = hsv(u(0.0, 1.0), u(0.65, 1.0), u(0.45, 1.0));
            let (sf, sa, sp) = (u(0.1, 0.4), u(0.0, 0.12), u(0.0, 6.3));
            let sang = u(0.0, std::f32::consts::PI);
            shapes.push((shape, col, sf, sa, sp, sang.cos(), sang.sin()));
        }
        let mut image = vec![0f32; 3 * h * w];
        let mut mask = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32, y as f32);
                let t = ((xf * dx + yf * dy) / scale + 1.0) * 0.5;
                let tex = amp * ((xf * f1 + ph1).sin() * (yf * f2 + ph2).cos());
                let mut c = [0f32; 3];
                for k in 0..3 {
                    c[k] = bg0[k] * (1.0 - t) + bg1[k] * t + tex;
                }
                for (shape, col, sf, sa, sp, sc, ss) in shapes.iter().rev() {
                    if shape.contains(xf, yf) {
                        let stripe = sa * ((xf * sc + yf * ss) * sf + sp).sin();
                        c = [col[0] + stripe, col[1] + stripe, col[2] + stripe];
                        mask[y * w + x] = 1;
                        break;
                    }
                }
                let light = 1.0 + lstrength * ((xf * lx + yf * ly) / scale * 2.0 - 1.0);
                for k in 0..3 {
                    image[k * h * w + y * w + x] = c[k] * light;
                }
            }
        }
        if self.cfg.noise > 0.0 {
            for v in &mut image {
                *v = (*v + self.cfg.noise * rng.normal() as f32).clamp(0.0, 1.0);
            }
        } else {
            for v in &mut image {
                *v = v.clamp(0.0, 1.0);
            }
        }
        Ok(Sample { image, channels: 3, height: h, width: w, target: Target::Mask(mask) })
    }
}
