//! Helpers shared by the examples: a small `--flag value` argument parser and peak memory.
#![allow(dead_code)]

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// Parsed `--name value` and `--switch` arguments.
pub(crate) struct Args {
    values: HashMap<String, String>,
    switches: Vec<String>,
    positional: Vec<String>,
}

impl Args {
    /// Parses `std::env::args()`; `switches` names the flags that take no value.
    pub(crate) fn parse(switches: &[&str]) -> Result<Self> {
        Self::from(std::env::args().skip(1), switches)
    }

    /// Parses the given arguments.
    pub(crate) fn from(args: impl IntoIterator<Item = String>, switches: &[&str]) -> Result<Self> {
        let mut it = args.into_iter();
        let (mut values, mut sw, mut positional) = (HashMap::new(), Vec::new(), Vec::new());
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    values.insert(k.to_string(), v.to_string());
                } else if switches.contains(&name) {
                    sw.push(name.to_string());
                } else {
                    let v = it.next().with_context(|| format!("--{name} needs a value"))?;
                    values.insert(name.to_string(), v);
                }
            } else {
                positional.push(a);
            }
        }
        Ok(Self { values, switches: sw, positional })
    }

    /// True when the switch was given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The value of `--name`, parsed, or `default`.
    pub(crate) fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{name} {v}: {e}")),
            None => Ok(default),
        }
    }

    /// The value of `--name` as a string, if given.
    pub(crate) fn opt(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Positional arguments.
    pub(crate) fn positional(&self) -> &[String] {
        &self.positional
    }

    /// Fails on any `--name` not in `known` (typos are errors, not silently ignored).
    pub(crate) fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        for k in self.values.keys().chain(self.switches.iter()) {
            if !known.contains(&k.as_str()) {
                bail!("unknown option --{k}; known: --{}", known.join(", --"));
            }
        }
        Ok(())
    }
}

/// The weights resolver: the Hugging Face cache from the environment, offline with
/// `--offline` (as with `HF_HUB_OFFLINE=1`).
pub(crate) fn resolver(args: &Args) -> sconce::hub::Resolver {
    if args.flag("offline") {
        sconce::hub::Resolver::new(sconce::hub::HubCache::from_env(), true)
    } else {
        sconce::hub::Resolver::from_env()
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for run folders.
pub(crate) fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Creates `base/name` (or `base/name-2`, `-3`, ... when a run started in the same second
/// already has it) and returns it: each run gets a folder of its own.
pub(crate) fn create_run_dir(base: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(base).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", base.display()))?;
    for i in 1..1000 {
        let dir = if i == 1 { base.join(name) } else { base.join(format!("{name}-{i}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("cannot create {}: {e}", dir.display()),
        }
    }
    anyhow::bail!("{}: too many runs named {name}", base.display())
}

/// Removes a new run's folder when dropped before [`RunDirGuard::keep`], unless a checkpoint
/// was saved in it: a run that fails early (a refused head, a bad first image, a divergence
/// in epoch 1) leaves no folder behind.
pub(crate) struct RunDirGuard {
    dir: Option<std::path::PathBuf>,
}

impl RunDirGuard {
    /// Guards `dir` when `fresh` (a resumed run's folder is never removed).
    pub(crate) fn new(dir: &std::path::Path, fresh: bool) -> Self {
        Self { dir: fresh.then(|| dir.to_path_buf()) }
    }

    /// The run finished: keep its folder.
    pub(crate) fn keep(mut self) {
        self.dir = None;
    }
}

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Some(d) = &self.dir
            && !d.join("checkpoints").join("latest.json").exists()
        {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if available.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Logs to stderr at the level in `RUST_LOG` (`error`, `warn` (default), `info`, `debug`,
/// `trace`): by default only warnings, so that the examples' own output stays readable.
pub(crate) fn init_tracing() {
    let level = match std::env::var("RUST_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        "info" => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Writes `value` as pretty JSON, atomically.
pub(crate) fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    sconce::train::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// glibc settings that keep freed memory between training steps (`sconce::tune_allocator`,
/// which re-executes the example once with them; `SCONCE_MALLOC_DEFAULTS=1` keeps glibc's
/// defaults).
pub(crate) fn tune_allocator() {
    if let sconce::AllocatorTuning::Failed(err) = sconce::tune_allocator() {
        tracing::debug!("could not re-execute with allocator settings: {err}");
    }
}
