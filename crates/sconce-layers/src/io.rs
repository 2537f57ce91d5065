//! Moving weights in and out of a [`ParamStore`]: strict or partial loading from safetensors
//! with key maps as data and a complete [`LoadReport`], and atomic saving.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sconce_core::{Error, LoadReport, Result};

use crate::store::{Entry, ParamStore};

/// One rewrite of a key found in a weight file, applied before matching it to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    /// Keys starting with `from` start with `to` instead (`"module."` → `""`, `""` → `"encoder."`).
    Prefix {
        /// The prefix to replace.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Every occurrence of `from` becomes `to` (torchvision's legacy `".norm.1."` → `".norm1."`).
    Replace {
        /// The substring to replace.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// File keys starting with this prefix are dropped silently (reported as skipped).
    Drop(String),
}

impl KeyRule {
    /// A [`KeyRule::Prefix`].
    pub fn prefix(from: impl Into<String>, to: impl Into<String>) -> Self {
        KeyRule::Prefix { from: from.into(), to: to.into() }
    }

    /// A [`KeyRule::Replace`].
    pub fn replace(from: impl Into<String>, to: impl Into<String>) -> Self {
        KeyRule::Replace { from: from.into(), to: to.into() }
    }

    /// Applies the rule; `None` when the key is dropped.
    fn apply(&self, key: String) -> Option<String> {
        match self {
            KeyRule::Prefix { from, to } => match key.strip_prefix(from.as_str()) {
                Some(rest) => Some(format!("{to}{rest}")),
                None => Some(key),
            },
            KeyRule::Replace { from, to } if !from.is_empty() => Some(key.replace(from.as_str(), to)),
            KeyRule::Replace { .. } => Some(key),
            KeyRule::Drop(p) => (!key.starts_with(p.as_str())).then_some(key),
        }
    }
}

/// How a weight file is matched to a model.
///
/// The default is strict: every model key must be provided with its shape and every file key
/// must be used, or nothing is loaded and the error lists every problem at once.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Fail (loading nothing) unless the report is clean. When false, whatever matches is
    /// loaded and the report tells the rest.
    pub strict: bool,
    /// Rewrites of file keys, applied in order.
    pub rules: Vec<KeyRule>,
    /// Model keys with these prefixes are not loaded (a new classifier head): they are reported
    /// as skipped, and file keys with the same names are not counted as unexpected.
    pub skip_model: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { strict: true, rules: Vec::new(), skip_model: Vec::new() }
    }
}

impl LoadOptions {
    /// Strict loading with no key rules.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Adds a key rule.
    pub fn rule(mut self, r: KeyRule) -> Self {
        self.rules.push(r);
        self
    }

    /// Skips model keys starting with `prefix` (e.g. `"fc."` for a new head).
    pub fn skip(mut self, prefix: impl Into<String>) -> Self {
        self.skip_model.push(prefix.into());
        self
    }

    /// Sets strictness.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    fn map_key(&self, key: &str) -> Option<String> {
        self.rules.iter().try_fold(key.to_string(), |k, r| r.apply(k))
    }

    fn skipped(&self, model_key: &str) -> bool {
        self.skip_model.iter().any(|p| model_key.starts_with(p.as_str()))
    }
}

/// The dtype a file tensor is converted to for an entry, or an error for an impossible one.
fn convert(t: Tensor, target: DType, key: &str) -> Result<Tensor> {
    if t.dtype() == target {
        return Ok(t);
    }
    let float = |d: DType| matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64);
    let int = |d: DType| matches!(d, DType::I64 | DType::U32 | DType::U8 | DType::I32 | DType::I16);
    if (float(t.dtype()) && float(target)) || (int(t.dtype()) && int(target)) {
        return Ok(t.to_dtype(target)?);
    }
    Err(Error::data(key, format!("dtype {:?} in the file cannot become the model's {target:?}", t.dtype())))
}

impl ParamStore {
    /// Applies named tensors (a state dict) to the store, matching keys after `opts.rules`.
    /// `source` names where they came from in messages.
    ///
    /// # Errors
    /// [`Error::Weights`] with the full [`LoadReport`] when `opts.strict` and anything is
    /// missing, unexpected or mis-shaped (nothing is changed then); data errors for tensors of
    /// an incompatible dtype or with NaN/Inf values.
    pub fn load_tensors(
        &self,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
        opts: &LoadOptions,
        source: &str,
    ) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut by_key: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
        for (file_key, t) in tensors {
            match opts.map_key(&file_key) {
                Some(k) => {
                    if let Some((prev, _)) = by_key.get(&k) {
                        return Err(Error::Weights {
                            source_name: source.to_string(),
                            reason: format!("file keys `{prev}` and `{file_key}` both map to `{k}`; fix the key rules"),
                            report: None,
                        });
                    }
                    by_key.insert(k, (file_key, t));
                }
                None => report.skipped.push(file_key),
            }
        }
        let mut plan = Vec::new();
        let mut defaults = Vec::new();
        for (key, entry) in self.entries() {
            if opts.skipped(&key) {
                by_key.remove(&key);
                report.skipped.push(key);
                continue;
            }
            let Some((_, t)) = by_key.remove(&key) else {
                // Files saved before PyTorch 0.4.1 have no BatchNorm counters; PyTorch's loader
                // sets them to 0 (`_load_from_state_dict` without a version), and so do we, for
                // a BatchNorm whose statistics the file does have.
                let stats = key.strip_suffix("num_batches_tracked").map(|p| format!("{p}running_mean"));
                let has_stats = stats.is_some_and(|m| plan.iter().any(|(k, _, _)| *k == m));
                match entry {
                    Entry::Buffer(b) if is_counter(&key) && has_stats => defaults.push((key, b)),
                    _ => report.missing.push(key),
                }
                continue;
            };
            let want = entry.tensor().dims().to_vec();
            // PyTorch saves `num_batches_tracked` as a 0-d tensor; accept [1] too.
            let same = t.dims() == want.as_slice() || (t.elem_count() == 1 && want.iter().product::<usize>() == 1);
            if !same {
                report.shape_mismatch.push((key, want, t.dims().to_vec()));
                continue;
            }
            plan.push((key, entry, t));
        }
        report.unexpected.extend(by_key.into_values().map(|(file_key, _)| file_key));
        report.sort();
        if opts.strict && !report.is_clean() {
            return Err(Error::Weights {
                source_name: source.to_string(),
                reason: format!(
                    "{} problem(s) matching the file to the model; pass LoadOptions with key rules, `skip` for a \
                     replaced head, or strict = false to load what matches",
                    report.num_problems()
                ),
                report: Some(Box::new(report)),
            });
        }
        // Convert and check everything before changing anything.
        let mut ready = Vec::with_capacity(plan.len());
        for (key, entry, t) in plan {
            let current = entry.tensor();
            let t = convert(t, current.dtype(), &key)?.reshape(current.dims())?.to_device(current.device())?;
            if t.dtype().is_float() {
                let bad = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().any(|v| !v.is_finite());
                if bad {
                    return Err(Error::data(
                        format!("{key} in {source}"),
                        "contains NaN or Inf; the file is corrupt or was saved from a diverged run",
                    ));
                }
            }
            ready.push((key, entry, t));
        }
        let zeros =
            defaults.into_iter().map(|(key, b)| Ok((key, b.get().zeros_like()?, b))).collect::<Result<Vec<_>>>()?;
        for (key, entry, t) in ready {
            match entry {
                Entry::Param(v) => v.set(&t)?,
                Entry::Buffer(b) => b.set(t),
            }
            report.loaded.push(key);
        }
        for (key, t, b) in zeros {
            b.set(t);
            report.defaulted.push(key);
        }
        report.sort();
        tracing::debug!(source, %report, "weights loaded");
        Ok(report)
    }

    /// Loads a safetensors file (memory-mapped; f16/bf16/f64 converted to the model's dtype).
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, [`Error::Parse`] for one that is not safetensors,
    /// and the errors of [`ParamStore::load_tensors`].
    pub fn load_safetensors(&self, path: impl AsRef<Path>, opts: &LoadOptions) -> Result<LoadReport> {
        let path = path.as_ref();
        let source = path.display().to_string();
        if let Err(e) = std::fs::metadata(path) {
            return Err(Error::io(path, e));
        }
        let tensors = read_safetensors(path)?;
        self.load_tensors(tensors, opts, &source)
    }

    /// Writes the state dict (parameters and buffers) to `path` as safetensors, atomically: a
    /// temporary file in the same folder is written, flushed to disk and renamed.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder is not writable.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let map: HashMap<String, Tensor> = self.state_dict().into_iter().collect();
        save_safetensors_atomic(&map, path.as_ref())
    }
}

/// BatchNorm's step counter (`num_batches_tracked`), which old files lack.
fn is_counter(key: &str) -> bool {
    key == "num_batches_tracked" || key.ends_with(".num_batches_tracked")
}

/// Every tensor of a safetensors file, read through a memory map.
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let source = path.display().to_string();
    let parse = |e: candle_core::Error| {
        Error::parse(&source, None, format!("not a readable safetensors file ({e}); re-download or re-export it"))
    };
    // SAFETY: the map is read while this function runs and every tensor is copied out before it
    // returns; the file must not be truncated by another process meanwhile, as for any mmap.
    #[allow(unsafe_code)]
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(parse)?;
    let mut out = Vec::new();
    for (name, _) in st.tensors() {
        let t = st.load(&name, &Device::Cpu).map_err(parse)?;
        out.push((name, t));
    }
    Ok(out)
}

/// Writes `tensors` to `path` atomically (temporary file, fsync, rename): a crash never leaves
/// a half-written file under the final name.
///
/// # Errors
/// [`Error::Io`] for an unwritable folder or a failed rename.
pub fn save_safetensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let contiguous: Vec<(String, Tensor)> =
        tensors.iter().map(|(k, t)| Ok((k.clone(), t.contiguous()?))).collect::<Result<_>>()?;
    let write = || -> Result<()> {
        let bytes = safetensors::tensor::serialize(contiguous.iter().map(|(k, t)| (k.as_str(), t)), None)
            .map_err(|e| Error::data(path.display().to_string(), format!("cannot serialise tensors: {e}")))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
