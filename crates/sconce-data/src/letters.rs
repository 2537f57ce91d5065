//! The built-in 26-class letters dataset: the capital letters A–Z of a 5×7 bitmap font
//! rendered into small RGB images under random scale, rotation, shear, translation, stroke
//! blur, colours and noise. Sample `i` has class `i mod 26` and depends only on `(seed, i)`.

use sconce_core::{Error, Result, SeededRng};

use crate::sample::{Dataset, Sample, Target, check_index};

const FONT: [[u8; 7]; 26] = [
    [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
    [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
    [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
    [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
    [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
    [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
    [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
    [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
    [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
    [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
    [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
    [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
    [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
    [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
    [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
    [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
    [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
    [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
    [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
];

const DIGITS_FONT: [[u8; 7]; 10] = [
    [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
    [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
    [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
    [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
    [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
    [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
    [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
    [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
    [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
    [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
];

/// The 5×7 bitmap of `c` (capital letters, digits, `.`, `-`, `/`, space; lower case is drawn
/// as upper case): seven rows, bit 4 the leftmost column. For labelling plots without a font
/// library.
pub fn glyph_5x7(c: char) -> Option<[u8; 7]> {
    let c = c.to_ascii_uppercase();
    match c {
        'A'..='Z' => Some(FONT[(c as u8 - b'A') as usize]),
        '0'..='9' => Some(DIGITS_FONT[(c as u8 - b'0') as usize]),
        '.' => Some([0, 0, 0, 0, 0, 0b01100, 0b01100]),
        '-' => Some([0, 0, 0, 0b11111, 0, 0, 0]),
        '/' => Some([0b00001, 0b00010, 0b00010, 0b00100, 0b01000, 0b01000, 0b10000]),
        ' ' => Some([0; 7]),
        _ => None,
    }
}

/// Settings of [`Letters`].
#[derive(Debug, Clone, PartialEq)]
pub struct LettersConfig {
    /// Number of samples (classes cycle A, B, ..., Z).
    pub len: usize,
    /// Square image size.
    pub size: usize,
    /// Seed.
    pub seed: u64,
    /// Pixel noise standard deviation.
    pub noise: f32,
}

impl Default for LettersConfig {
    fn default() -> Self {
        Self { len: 2600, size: 32, seed: 0, noise: 0.05 }
    }
}

/// The letters dataset (see the module docs).
///
/// ```
/// use sconce_data::{Dataset, Letters, LettersConfig, Target};
/// # fn main() -> sconce_core::Result<()> {
/// let ds = Letters::new(LettersConfig { len: 52, ..Default::default() })?;
/// assert_eq!(ds.num_classes(), 26);
/// assert_eq!(ds.get(27)?.target, Target::Class(1)); // 'B'
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Letters {
    cfg: LettersConfig,
}

impl Letters {
    /// The dataset.
    ///
    /// # Errors
    /// [`Error::Config`] for images smaller than 16 pixels or negative noise.
    pub fn new(cfg: LettersConfig) -> Result<Self> {
        if cfg.size < 16 || !(cfg.noise >= 0.0 && cfg.noise.is_finite()) {
            return Err(Error::config("letters", format!("need size ≥ 16 and noise ≥ 0, got {cfg:?}")));
        }
        Ok(Self { cfg })
    }
}

/// Smooth glyph coverage at glyph coordinates (u along the 5 columns, v along the 7 rows).
fn coverage(glyph: &[u8; 7], u: f32, v: f32, blur: f32) -> f32 {
    let mut best = 0f32;
    for (r, row) in glyph.iter().enumerate() {
        for c in 0..5 {
            if row >> (4 - c) & 1 == 1 {
                // Distance to the cell square [c, c+1] × [r, r+1].
                let dx = (c as f32 - u).max(u - (c as f32 + 1.0)).max(0.0);
                let dy = (r as f32 - v).max(v - (r as f32 + 1.0)).max(0.0);
                let d = (dx * dx + dy * dy).sqrt();
                best = best.max((1.0 - d / blur).clamp(0.0, 1.0));
            }
        }
    }
    best
}

impl Dataset for Letters {
    fn len(&self) -> usize {
        self.cfg.len
    }

    fn num_classes(&self) -> usize {
        26
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some((b'A'..=b'Z').map(|c| (c as char).to_string()).collect())
    }

    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.cfg.len)?;
        let class = i % 26;
        let s = self.cfg.size;
        let mut rng = SeededRng::new(self.cfg.seed ^ 0x1E77E85).fork(i as u64 + 1);
        let mut u = |lo: f64, hi: f64| rng.uniform(lo, hi) as f32;
        let height = u(0.55, 0.85) * s as f32; // glyph height in pixels (7 rows)
        let cell = height / 7.0;
        let rot = u(-15.0, 15.0).to_radians();
        let shear = u(-0.2, 0.2);
        let (cx, cy) = (s as f32 / 2.0 + u(-0.1, 0.1) * s as f32, s as f32 / 2.0 + u(-0.1, 0.1) * s as f32);
        let blur = u(0.3, 0.8);
        let fg: [f32; 3] = [u(0.0, 1.0), u(0.0, 1.0), u(0.0, 1.0)];
        // A background at least 0.4 away in brightness so the letter stays visible.
        let fg_lum = (fg[0] + fg[1] + fg[2]) / 3.0;
        let shift = if fg_lum > 0.5 { -u(0.4, 0.6) } else { u(0.4, 0.6) };
        let bg = fg.map(|c| (c + shift).clamp(0.0, 1.0));
        let (cos, sin) = (rot.cos(), rot.sin());
        let glyph = &FONT[class];
        let mut image = vec![0f32; 3 * s * s];
        for y in 0..s {
            for x in 0..s {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let (rx, ry) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                let gu = (rx - shear * ry) / cell + 2.5;
                let gv = ry / cell + 3.5;
                let a = coverage(glyph, gu, gv, blur);
                for k in 0..3 {
                    image[k * s * s + y * s + x] = fg[k] * a + bg[k] * (1.0 - a);
                }
            }
        }
        for v in &mut image {
            *v = (*v + self.cfg.noise * rng.normal() as f32).clamp(0.0, 1.0);
        }
        Ok(Sample { image, channels: 3, height: s, width: s, target: Target::Class(class as u32) })
    }
}
