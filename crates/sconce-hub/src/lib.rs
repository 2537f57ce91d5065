//! sconce-hub: resolves a weights spec — a local `.safetensors` path or
//! `hub:ORG/NAME[@REV][/FILE]` — to a file, looking in the local Hugging Face cache first, and
//! reads the checkpoint's preprocessing config (timm's `pretrained_cfg`).
//!
//! | item | what it is for |
//! |---|---|
//! | [`WeightsSpec`] | parsed `PATH` or `hub:ORG/NAME[@REV][/FILE]` |
//! | [`HubCache`] | the cache folder from `HF_HUB_CACHE` / `HUGGINGFACE_HUB_CACHE` / `HF_HOME` / the default, and lookups in it |
//! | [`Resolver`] | spec → file; every lookup tried is listed when none succeeds |
//! | [`PretrainedCfg`] | input size, mean/std, interpolation, crop_pct, classes, label names |
//! | [`eval_transform`] | timm's eval preprocessing (Pillow-exact antialiased resize, centre crop, normalise) |
//! | [`KNOWN_WEIGHTS`], [`Naming`] | the known checkpoints (timm, smp, `microsoft/resnet-50`) and the key maps they need |
//! | [`Pretrained`] | [`Resolver::pretrained`]: a checkpoint's file, preprocessing, architecture, classes and key spelling (detected from the file for plain files) |
//! | [`safetensors_header`] | a safetensors file's tensor names and shapes, without reading the tensors |
//!
//! Downloading (when a file is not cached and `HF_HUB_OFFLINE` is not set) uses hf-hub behind
//! the optional `download` feature (it brings ~280 crates); without it the error says so and
//! names the cache path to fill.
//!
//! ```
//! use sconce_hub::WeightsSpec;
//! # fn main() -> sconce_core::Result<()> {
//! let s: WeightsSpec = "hub:timm/resnet50.a1_in1k".parse()?;
//! assert_eq!(s, WeightsSpec::Hub { repo: "timm/resnet50.a1_in1k".into(), revision: "main".into(), file: "model.safetensors".into() });
//! let s: WeightsSpec = "hub:smp-hub/resnet50.imagenet@v1/encoder.safetensors".parse()?;
//! assert!(matches!(s, WeightsSpec::Hub { ref revision, ref file, .. } if revision == "v1" && file == "encoder.safetensors"));
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cfg;
mod known;
mod preprocess;
mod pretrained;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sconce_core::{Error, Result};

pub use cfg::{Preprocess, PretrainedCfg};
pub use known::{KNOWN_WEIGHTS, KnownWeights, Naming, known_weights};
pub use preprocess::eval_transform;
pub use pretrained::{Pretrained, safetensors_header};

/// Where weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSpec {
    /// A file on disk.
    File(PathBuf),
    /// A file of a Hugging Face model repository.
    Hub {
        /// `ORG/NAME`.
        repo: String,
        /// Branch, tag or 40-hex commit (`main` by default).
        revision: String,
        /// File inside the repository (`model.safetensors` by default).
        file: String,
    },
}

impl FromStr for WeightsSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix("hub:") else {
            if s.is_empty() {
                return Err(Error::config("weights", "empty spec; give a .safetensors path or hub:ORG/NAME"));
            }
            return Ok(WeightsSpec::File(PathBuf::from(s)));
        };
        let bad =
            |why: &str| Error::config("weights", format!("`{s}`: {why}; expected hub:ORG/NAME[@REVISION][/FILE]"));
        let mut parts = rest.splitn(3, '/');
        let (Some(org), Some(name_rev)) = (parts.next(), parts.next()) else {
            return Err(bad("missing the repository name"));
        };
        let file = parts.next().unwrap_or("model.safetensors");
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, r),
            None => (name_rev, "main"),
        };
        let ok = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok(org) || !ok(name) {
            return Err(bad("organisation and name may hold letters, digits, '-', '_' and '.'"));
        }
        if revision.is_empty()
            || revision.contains("..")
            || file.is_empty()
            || file.split('/').any(|p| p == ".." || p.is_empty())
        {
            return Err(bad("empty or unsafe revision or file"));
        }
        Ok(WeightsSpec::Hub { repo: format!("{org}/{name}"), revision: revision.into(), file: file.into() })
    }
}

impl std::fmt::Display for WeightsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsSpec::File(p) => write!(f, "{}", p.display()),
            WeightsSpec::Hub { repo, revision, file } => write!(f, "hub:{repo}@{revision}/{file}"),
        }
    }
}

/// The local Hugging Face hub cache (`models--ORG--NAME/{refs,snapshots}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    dir: PathBuf,
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl HubCache {
    /// The cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache the Hugging Face tools use: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else
    /// `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        let dir = env_path("HF_HUB_CACHE")
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| env_path("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| env_path("XDG_CACHE_HOME").map(|h| h.join("huggingface").join("hub")))
            .or_else(|| env_path("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        Self { dir }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of a repository: `models--ORG--NAME`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.dir.join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The cached file, or a description of what was missing.
    ///
    /// # Errors
    /// A one-line reason (a missing ref, a corrupt ref, a missing file) for the error list.
    pub fn lookup(&self, repo: &str, revision: &str, file: &str) -> std::result::Result<PathBuf, String> {
        let rd = self.repo_dir(repo);
        let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit {
            revision.to_string()
        } else {
            let r = rd.join("refs").join(revision);
            let text = std::fs::read_to_string(&r).map_err(|e| format!("{}: {e}", r.display()))?;
            let c = text.trim().to_string();
            if !(c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit())) {
                return Err(format!("{}: holds `{c}`, not a 40-hex commit (corrupt cache entry)", r.display()));
            }
            c
        };
        let p = rd.join("snapshots").join(&commit).join(file);
        if p.is_file() { Ok(p) } else { Err(format!("{}: no such file", p.display())) }
    }
}

/// Downloads `file` into `cache` with hf-hub (the `download` feature).
#[cfg(feature = "download")]
fn download(cache: &HubCache, repo: &str, revision: &str, file: &str) -> std::result::Result<PathBuf, String> {
    let (owner, name) = repo.split_once('/').ok_or_else(|| format!("`{repo}` is not ORG/NAME"))?;
    let client = hf_hub::HFClient::builder()
        .cache_dir(cache.dir())
        .build_sync()
        .map_err(|e| format!("cannot start the hub client: {e}"))?;
    client
        .model(owner, name)
        .download_file()
        .filename(file)
        .revision(revision)
        .send()
        .map_err(|e| format!("download from the hub failed: {e}"))
}

#[cfg(not(feature = "download"))]
fn download(_: &HubCache, _: &str, _: &str, _: &str) -> std::result::Result<PathBuf, String> {
    Err("not built in (enable sconce-hub's `download` feature, or the facade's `download`)".into())
}

/// True when `HF_HUB_OFFLINE` is set to `1`, `true`, `yes` or `on`.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Resolves specs to files: local paths as given, hub files from the cache.
#[derive(Debug, Clone)]
pub struct Resolver {
    cache: HubCache,
    offline: bool,
}

impl Resolver {
    /// The cache and offline mode from the environment.
    pub fn from_env() -> Self {
        Self { cache: HubCache::from_env(), offline: offline_from_env() }
    }

    /// A resolver over `cache`.
    pub fn new(cache: HubCache, offline: bool) -> Self {
        Self { cache, offline }
    }

    /// The file `spec` names. For a known checkpoint asked for at `main` (the default), its
    /// pinned commit is looked up first ([`KnownWeights::revision`]), then `main`.
    ///
    /// # Errors
    /// [`Error::Weights`] naming the spec and listing every lookup tried and why it failed.
    pub fn resolve(&self, spec: &WeightsSpec) -> Result<PathBuf> {
        match spec {
            WeightsSpec::File(p) => {
                if p.is_file() {
                    Ok(p.clone())
                } else {
                    Err(Error::Weights {
                        source_name: spec.to_string(),
                        reason: format!("no such file {} (for a hub repository write hub:ORG/NAME)", p.display()),
                        report: None,
                    })
                }
            }
            WeightsSpec::Hub { repo, revision, file } => match self.lookup_pinned(repo, revision, file) {
                Ok(p) => {
                    tracing::debug!(%spec, path = %p.display(), "weights found in the hub cache");
                    Ok(p)
                }
                Err(why) => {
                    let next = if self.offline {
                        "offline (HF_HUB_OFFLINE, or the resolver was made offline), so nothing is downloaded"
                            .to_string()
                    } else {
                        match download(&self.cache, repo, pinned(repo, revision), file) {
                            Ok(p) => {
                                tracing::info!(%spec, path = %p.display(), "downloaded");
                                return Ok(p);
                            }
                            Err(e) => e,
                        }
                    };
                    Err(Error::Weights {
                        source_name: spec.to_string(),
                        reason: format!(
                            "not available locally. Tried:\n  - hub cache {}: {why}\n  - download: {next}\nPut the \
                             file there (e.g. `huggingface-cli download {repo} {file} --revision {}`) or pass a \
                             local path",
                            self.cache.dir().display(),
                            pinned(repo, revision)
                        ),
                        report: None,
                    })
                }
            },
        }
    }

    /// The `config.json` beside a hub file (same snapshot), parsed, if the repository has one:
    /// from the cache, else downloaded with the weights (unless offline; a repository without
    /// one is not an error).
    ///
    /// # Errors
    /// [`Error::Parse`] for a `config.json` that is not valid JSON or has wrongly typed fields.
    pub fn pretrained_cfg(&self, spec: &WeightsSpec) -> Result<Option<PretrainedCfg>> {
        let WeightsSpec::Hub { repo, revision, .. } = spec else {
            return Ok(None);
        };
        let found = self.lookup_pinned(repo, revision, "config.json").or_else(|why| {
            if self.offline { Err(why) } else { download(&self.cache, repo, pinned(repo, revision), "config.json") }
        });
        match found {
            Ok(p) => PretrainedCfg::from_file(&p).map(Some),
            Err(_) => Ok(None),
        }
    }
}

impl Resolver {
    /// A cached file at the known checkpoint's pinned commit (when the spec says `main`), else
    /// at the spec's revision: a cache filled by smp (the pinned commit, no `refs/main`) and
    /// one filled by `huggingface-cli download` (`refs/main`) both resolve.
    fn lookup_pinned(&self, repo: &str, revision: &str, file: &str) -> std::result::Result<PathBuf, String> {
        let first = pinned(repo, revision);
        match self.cache.lookup(repo, first, file) {
            Ok(p) => Ok(p),
            Err(why) if first != revision => {
                self.cache.lookup(repo, revision, file).map_err(|why2| format!("{why}; {why2}"))
            }
            Err(why) => Err(why),
        }
    }
}

/// The revision to look up first: a known checkpoint's pinned commit when the spec asks for
/// the default `main` (smp's encoders live at pinned commits, which the cache may hold without
/// a `refs/main`), else the spec's.
fn pinned<'a>(repo: &str, revision: &'a str) -> &'a str {
    match known_weights(repo) {
        Some(k) if revision == "main" => k.revision,
        _ => revision,
    }
}
