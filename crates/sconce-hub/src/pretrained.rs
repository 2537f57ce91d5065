//! A checkpoint ready to load: its file, its evaluation preprocessing, its architecture, class
//! count and key spelling, gathered from the repository's `config.json`, the known-checkpoint
//! table and the file's own safetensors header (which is read, not the tensors).

use std::io::Read;
use std::path::{Path, PathBuf};

use sconce_core::{Error, Result};
use sconce_layers::LoadOptions;

use crate::{Naming, PretrainedCfg, Resolver, WeightsSpec, known_weights};

/// The largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Tensor names and shapes of a safetensors file, from its header, sorted by name
/// (`__metadata__` left out). Only the header is read.
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::Parse`] for a file that is not safetensors
/// (too short, a header length past the end of the file, a header that is not a JSON object of
/// tensors with shapes).
pub fn safetensors_header(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let source = path.display().to_string();
    let bad = |why: String| {
        Error::parse(&source, None, format!("not a safetensors file: {why}; re-download or re-export it"))
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad(format!("{len} bytes, shorter than the 8-byte header length")))?;
    let n = u64::from_le_bytes(n);
    let rest = len.saturating_sub(8);
    if n > MAX_HEADER || n > rest {
        return Err(bad(format!("the header claims {n} bytes, the file has {rest} after the length")));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).map_err(|e| Error::io(path, e))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| bad(format!("header is not a JSON object ({e})")))?;
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad(format!("tensor `{k}` has no shape")))?;
            Ok((k, shape))
        })
        .collect()
}

impl Naming {
    /// The spelling that `keys` show: [`Naming::Transformers`] for `resnet.embedder.*` /
    /// `resnet.encoder.*`, [`Naming::TorchvisionLegacyDenseNet`] for
    /// `denselayerN.norm.1.*`-style keys, `None` when nothing tells (timm/torchvision names,
    /// or a file of another kind).
    ///
    /// ```
    /// use sconce_hub::Naming;
    /// let legacy = ["features.denseblock1.denselayer1.norm.1.weight", "classifier.weight"];
    /// assert_eq!(Naming::detect(legacy), Some(Naming::TorchvisionLegacyDenseNet));
    /// assert_eq!(Naming::detect(["features.denseblock1.denselayer1.norm1.weight"]), None);
    /// ```
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Naming> {
        let legacy = |k: &str| {
            k.contains("denselayer")
                && ["norm", "conv"].iter().any(|m| (1..=2).any(|i| k.contains(&format!(".{m}.{i}."))))
        };
        let mut found = None;
        for k in keys {
            if k.starts_with("resnet.embedder.") || k.starts_with("resnet.encoder.") {
                return Some(Naming::Transformers);
            }
            if legacy(k) {
                found = Some(Naming::TorchvisionLegacyDenseNet);
            }
        }
        found
    }
}

/// A resolved checkpoint: the file and everything needed to build the model it fits, load it
/// and preprocess an image the way it was evaluated. Built by [`Resolver::pretrained`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pretrained {
    /// The safetensors file.
    pub path: PathBuf,
    /// Preprocessing, classes and label names: the repository's `config.json` (timm's
    /// `pretrained_cfg`; transformers' `id2label` for the names), cached or downloaded, else
    /// the known checkpoint's values ([`crate::KNOWN_WEIGHTS`]), else timm's defaults
    /// (224 × 224, bicubic, crop 0.875, ImageNet mean/std).
    pub cfg: PretrainedCfg,
    /// Architecture (a `sconce_backbones::create_model` name) from the config or the known
    /// table; `None` for a plain file (pass the model name yourself).
    pub arch: Option<String>,
    /// Classifier outputs: the config's, the known table's, else the rows of the file's
    /// `fc.weight` / `classifier.weight` / `classifier.1.weight`; 0 for an encoder without a
    /// classifier.
    pub num_classes: usize,
    /// Key spelling, told from the file's keys, else the known table's.
    pub naming: Naming,
}

impl Pretrained {
    /// Strict loading with the key rules of [`Pretrained::naming`].
    pub fn load_options(&self) -> LoadOptions {
        self.naming.rules().into_iter().fold(LoadOptions::strict(), LoadOptions::rule)
    }

    /// The label of class `i`: the config's name when it lists one, else `class {i}`.
    pub fn label(&self, i: usize) -> String {
        self.cfg.label_names.as_ref().and_then(|l| l.get(i)).cloned().unwrap_or_else(|| format!("class {i}"))
    }
}

impl Resolver {
    /// Resolves `spec` ([`Resolver::resolve`]) and gathers what loading and preprocessing need
    /// (see [`Pretrained`]'s fields for where each value comes from).
    ///
    /// # Errors
    /// As [`Resolver::resolve`] and [`Resolver::pretrained_cfg`]; [`Error::Parse`] for a file
    /// that is not safetensors.
    pub fn pretrained(&self, spec: &WeightsSpec) -> Result<Pretrained> {
        let path = self.resolve(spec)?;
        let known = match spec {
            WeightsSpec::Hub { repo, .. } => known_weights(repo),
            WeightsSpec::File(_) => None,
        };
        let header = safetensors_header(&path)?;
        let mut cfg = match self.pretrained_cfg(spec)? {
            Some(c) => c,
            None => PretrainedCfg::from_json("{}", "defaults")?,
        };
        // A config without timm's `pretrained_cfg` (none at all, or transformers'): the known
        // checkpoint's preprocessing.
        if !cfg.has_preprocessing
            && let Some(k) = known
        {
            cfg.pretrained_cfg.input_size = [3, k.input_size, k.input_size];
            cfg.pretrained_cfg.crop_pct = k.crop_pct;
            cfg.pretrained_cfg.interpolation = k.interpolation.to_string();
        }
        let arch = cfg.architecture.clone().or_else(|| known.map(|k| k.arch.to_string()));
        let naming =
            Naming::detect(header.iter().map(|(k, _)| k.as_str())).or(known.map(|k| k.naming)).unwrap_or(Naming::Timm);
        let head_rows = || {
            ["fc.weight", "classifier.weight", "classifier.1.weight"]
                .iter()
                .find_map(|name| header.iter().find(|(k, _)| k.as_str() == *name).and_then(|(_, s)| s.first().copied()))
        };
        let num_classes = cfg.num_classes.or(known.map(|k| k.num_classes)).or_else(head_rows).unwrap_or(0);
        Ok(Pretrained { path, cfg, arch, num_classes, naming })
    }
}
