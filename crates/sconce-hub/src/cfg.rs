//! A hub repository's `config.json`: timm's (`pretrained_cfg`: the preprocessing a checkpoint
//! was trained with) or transformers' (`id2label`: the class names).

use std::path::Path;

use sconce_core::{Error, Result};
use serde::Deserialize;

/// The fields of a timm hub `config.json` that preprocessing and heads need; absent fields get
/// timm's defaults (its `PretrainedCfg()`: 224×224, bicubic, ImageNet mean/std, crop_pct 0.875).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PretrainedCfg {
    /// Architecture name, e.g. `resnet50`.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Classifier outputs.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Label names, when the repository lists them.
    #[serde(default)]
    pub label_names: Option<Vec<String>>,
    /// `pretrained_cfg` proper.
    #[serde(default)]
    pub pretrained_cfg: Preprocess,
    /// Whether the file had a `pretrained_cfg` (timm's configs do; transformers' do not, and
    /// then a known checkpoint's own preprocessing applies rather than these defaults).
    #[serde(skip)]
    pub has_preprocessing: bool,
}

/// Input size and normalisation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Preprocess {
    /// `[C, H, W]`.
    #[serde(default = "default_input_size")]
    pub input_size: [usize; 3],
    /// `bilinear`, `bicubic` or `nearest`.
    #[serde(default = "default_interpolation")]
    pub interpolation: String,
    /// Per-channel mean.
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
    /// Fraction of the resized image kept by the centre crop.
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
}

fn default_input_size() -> [usize; 3] {
    [3, 224, 224]
}
fn default_interpolation() -> String {
    "bicubic".into()
}
fn default_mean() -> Vec<f32> {
    vec![0.485, 0.456, 0.406]
}
fn default_std() -> Vec<f32> {
    vec![0.229, 0.224, 0.225]
}
fn default_crop_pct() -> f64 {
    0.875
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            input_size: default_input_size(),
            interpolation: default_interpolation(),
            mean: default_mean(),
            std: default_std(),
            crop_pct: default_crop_pct(),
        }
    }
}

impl PretrainedCfg {
    /// Parses a `config.json`.
    ///
    /// # Errors
    /// [`Error::Parse`] for invalid JSON, wrongly typed fields, mean/std not matching the
    /// channels, a crop fraction outside (0, 1].
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let mut c: PretrainedCfg =
            serde_json::from_str(text).map_err(|e| Error::parse(source, Some(e.line()), e.to_string()))?;
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::parse(source, Some(e.line()), e.to_string()))?;
        c.has_preprocessing = raw.get("pretrained_cfg").is_some();
        // transformers' configs name the classes in `id2label` ({"0": "tench", ...}). Only the
        // names are taken: such configs carry a 2-entry map even without a classifier, so the
        // class count comes from elsewhere (the known table, the file's classifier).
        if c.label_names.is_none()
            && let Some(map) = raw.get("id2label").and_then(|m| m.as_object())
        {
            let mut names: Vec<Option<String>> = vec![None; map.len()];
            for (k, v) in map {
                let bad = |why: &str| Error::parse(source, None, format!("id2label entry `{k}`: {why}"));
                let i = k
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < map.len())
                    .ok_or_else(|| bad(&format!("not a class index below {}", map.len())))?;
                let name = v.as_str().ok_or_else(|| bad("the label is not a string"))?;
                if names[i].replace(name.to_string()).is_some() {
                    return Err(bad("a second entry for the same class"));
                }
            }
            c.label_names = Some(names.into_iter().map(Option::unwrap_or_default).collect());
        }
        let p = &c.pretrained_cfg;
        let ch = p.input_size[0];
        if p.mean.len() != ch || p.std.len() != ch || p.std.iter().any(|s| *s <= 0.0) {
            return Err(Error::parse(source, None, format!("mean/std need {ch} values with std > 0, got {p:?}")));
        }
        if !(p.crop_pct > 0.0 && p.crop_pct <= 1.0) {
            return Err(Error::parse(source, None, format!("crop_pct must be in (0, 1], got {}", p.crop_pct)));
        }
        Ok(c)
    }

    /// Reads and parses a `config.json` file.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, else as [`PretrainedCfg::from_json`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// The size the shorter side is resized to before the centre crop (timm:
    /// `floor(input_size / crop_pct)`).
    pub fn resize_shorter_to(&self) -> usize {
        let s = self.pretrained_cfg.input_size[1].min(self.pretrained_cfg.input_size[2]);
        (s as f64 / self.pretrained_cfg.crop_pct).floor() as usize
    }
}
