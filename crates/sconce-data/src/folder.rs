//! Datasets read from folders: images with masks (`images/`, `masks/`, matched by file stem)
//! and one folder per class. PNG and JPEG; masks may be 0/255, 0/1 or palette indices.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImageView};
use sconce_core::{Error, Result};

use crate::sample::{Dataset, Sample, Target, check_index};

const IMAGE_EXT: &[&str] = &["png", "jpg", "jpeg"];

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn open(path: &Path) -> Result<DynamicImage> {
    image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::parse(path.display().to_string(), None, format!("not a readable PNG/JPEG image: {other}")),
    })
}

/// RGB `[3, H, W]` in [0, 1] from any image (grey is replicated, alpha dropped).
pub fn image_to_chw(img: &DynamicImage) -> Vec<f32> {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        for k in 0..3 {
            out[k * h * w + i] = f32::from(p.0[k]) / 255.0;
        }
    }
    out
}

/// How mask pixel values become classes. Masks are PNG files, either grayscale (the values)
/// or palette-indexed (the palette indices, as PASCAL VOC stores them; the colours are
/// ignored), at 1, 2, 4 or 8 bits. Colour, 16-bit and JPEG masks are refused: lossy or
/// ambiguous labels are never guessed.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskMapping {
    /// Binary masks stored as 0/255 or 0/1 (decided per file; anything else is an error).
    Binary,
    /// Values are class indices `0..classes` (anything else is an error).
    Index(usize),
}

/// The raw values of a grayscale or palette PNG mask: `(values, width, height)`.
fn read_mask(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    let name = path.display().to_string();
    let is_png = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::data(&name, "masks must be PNG files (JPEG compression changes label values)"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let parse = |e: png::DecodingError| Error::parse(&name, None, format!("not a readable PNG mask: {e}"));
    let mut reader = dec.read_info().map_err(parse)?;
    let size = reader.output_buffer_size().ok_or_else(|| Error::data(&name, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(parse)?;
    let (w, h) = (info.width, info.height);
    let bits = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, d) if (d as u8) <= 8 => d as u8 as usize,
        (c, d) => {
            return Err(Error::data(
                &name,
                format!("is a {c:?} {d:?}-bit PNG; masks must be grayscale or palette PNGs of at most 8 bits"),
            ));
        }
    };
    let mut values = Vec::with_capacity(w as usize * h as usize);
    for row in buf.chunks(info.line_size).take(h as usize) {
        for x in 0..w as usize {
            let bit = x * bits;
            let byte = row[bit / 8];
            let shift = 8 - bits - bit % 8;
            values.push((byte >> shift) & ((1u16 << bits) - 1) as u8);
        }
    }
    Ok((values, w, h))
}

/// Image + mask pairs: `root/images/NAME.{png,jpg}` with `root/masks/NAME.png`.
#[derive(Debug, Clone)]
pub struct MaskFolder {
    pairs: Vec<(PathBuf, PathBuf)>,
    mapping: MaskMapping,
}

impl MaskFolder {
    /// Pairs every image with the mask of the same stem.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing folder; [`Error::Data`] for an empty folder or an image
    /// without a mask (every unmatched file is listed).
    pub fn new(root: impl AsRef<Path>, mapping: MaskMapping) -> Result<Self> {
        let root = root.as_ref();
        let images = list_images(&root.join("images"))?;
        let masks = list_images(&root.join("masks"))?;
        if images.is_empty() {
            return Err(Error::data(root.join("images").display().to_string(), "contains no PNG/JPEG images"));
        }
        let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut pairs = Vec::new();
        let mut unmatched = Vec::new();
        for img in images {
            match masks.iter().find(|m| stem(m) == stem(&img)) {
                Some(m) => pairs.push((img, m.clone())),
                None => unmatched.push(img.display().to_string()),
            }
        }
        if !unmatched.is_empty() {
            return Err(Error::data(
                root.join("masks").display().to_string(),
                format!("has no mask for: {}", unmatched.join(", ")),
            ));
        }
        Ok(Self { pairs, mapping })
    }
}

impl Dataset for MaskFolder {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn num_classes(&self) -> usize {
        match self.mapping {
            MaskMapping::Binary => 2,
            MaskMapping::Index(c) => c,
        }
    }

    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.pairs.len())?;
        let (ip, mp) = &self.pairs[i];
        let img = open(ip)?;
        let (raw, mw, mh) = read_mask(mp)?;
        let (w, h) = img.dimensions();
        if (mw, mh) != (w, h) {
            return Err(Error::data(
                mp.display().to_string(),
                format!("is {mw}×{mh} but its image {} is {w}×{h}", ip.display()),
            ));
        }
        let values = match self.mapping {
            MaskMapping::Binary => {
                let max = raw.iter().copied().max().unwrap_or(0);
                let on = if max > 1 { 255 } else { 1 };
                if let Some(bad) = raw.iter().find(|&&v| v != 0 && v != on) {
                    return Err(Error::data(
                        mp.display().to_string(),
                        format!("has value {bad}; a binary mask holds only 0 and 255 (or 0 and 1)"),
                    ));
                }
                raw.iter().map(|&v| u8::from(v == on)).collect()
            }
            MaskMapping::Index(c) => {
                if let Some(bad) = raw.iter().find(|&&v| usize::from(v) >= c) {
                    return Err(Error::data(
                        mp.display().to_string(),
                        format!("has class {bad} but there are {c} classes"),
                    ));
                }
                raw
            }
        };
        Ok(Sample {
            image: image_to_chw(&img),
            channels: 3,
            height: h as usize,
            width: w as usize,
            target: Target::Mask(values),
        })
    }
}

/// Classification images in one folder per class (`root/CLASS/*.png`), classes sorted by name.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    items: Vec<(PathBuf, u32)>,
    classes: Vec<String>,
}

impl ImageFolder {
    /// Lists `root`'s class folders and their images.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing folder; [`Error::Data`] when there are no class folders or
    /// no images.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(Error::data(root.display().to_string(), "has no class folders (expected root/CLASS/*.png)"));
        }
        let mut items = Vec::new();
        for (c, name) in classes.iter().enumerate() {
            for p in list_images(&root.join(name))? {
                items.push((p, c as u32));
            }
        }
        if items.is_empty() {
            return Err(Error::data(root.display().to_string(), "class folders contain no PNG/JPEG images"));
        }
        Ok(Self { items, classes })
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(self.classes.clone())
    }

    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.items.len())?;
        let (p, c) = &self.items[i];
        let img = open(p)?;
        let (w, h) = img.dimensions();
        Ok(Sample {
            image: image_to_chw(&img),
            channels: 3,
            height: h as usize,
            width: w as usize,
            target: Target::Class(*c),
        })
    }
}

/// Writes `[3, H, W]` values in [0, 1] (or a `[H, W]` map with `channels = 1`) as a PNG,
/// atomically (temporary file + rename).
///
/// # Errors
/// [`Error::Io`] for an unwritable path; [`Error::Data`] for a buffer of the wrong size.
pub fn save_png(path: &Path, values: &[f32], channels: usize, height: usize, width: usize) -> Result<()> {
    if values.len() != channels * height * width || !(channels == 1 || channels == 3) {
        return Err(Error::data("png", format!("{} values for {channels}×{height}×{width}", values.len())));
    }
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let hw = height * width;
    let img = if channels == 1 {
        DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(width as u32, height as u32, values.iter().map(|&v| q(v)).collect())
                .ok_or_else(|| Error::data("png", "bad size"))?,
        )
    } else {
        let mut raw = Vec::with_capacity(3 * hw);
        for i in 0..hw {
            for k in 0..3 {
                raw.push(q(values[k * hw + i]));
            }
        }
        DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(width as u32, height as u32, raw)
                .ok_or_else(|| Error::data("png", "bad size"))?,
        )
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    img.save_with_format(&tmp, image::ImageFormat::Png).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(&tmp, io),
        other => Error::data(path.display().to_string(), other.to_string()),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
