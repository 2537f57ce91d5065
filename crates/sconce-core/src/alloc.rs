//! Process-wide glibc `malloc` settings for CPU training: keep freed tensor memory instead of
//! handing it back to the OS after every step.
//!
//! A training step frees and reallocates hundreds of MiB of activations and gradients. With
//! glibc's defaults, blocks above its (adaptive, ≤ 32 MiB) mmap threshold are unmapped on free,
//! and the top of the heap is trimmed whenever more than twice that is free, so the next step
//! touches fresh pages again (~3.5 µs per 4 KiB page measured here: a 25 MiB gradient costs ~20 ms
//! of page faults before any arithmetic). And with an arena per thread, each pool worker keeps
//! its own peak. glibc reads these settings only at start-up, from the environment, so
//! [`tune_allocator`] re-executes the program once with them set — and with candle's worker
//! threads told not to spin between ops ([`THREAD_ENV`]), which candle reads once, too.

/// The environment [`tune_allocator`] sets: no `mmap` for tensors (threshold 4 GB; and no
/// `mmap`ped blocks at all, because glibc before 2.35 refuses thresholds above 32 MiB and would
/// otherwise keep the 128 KiB default with its adaptation switched off), never trim the heap,
/// grow it by 512 MiB at a time, one arena for all threads. `scripts/benchutil.py` and
/// `scripts/bench_backbones.sh` give the PyTorch side the same (a test holds them equal).
pub const ALLOCATOR_ENV: [(&str, &str); 5] = [
    ("MALLOC_MMAP_THRESHOLD_", "4000000000"),
    ("MALLOC_MMAP_MAX_", "0"),
    ("MALLOC_TRIM_THRESHOLD_", "100000000000"),
    ("MALLOC_TOP_PAD_", "536870912"),
    ("MALLOC_ARENA_MAX", "1"),
];

/// Set by [`tune_allocator`] along with [`ALLOCATOR_ENV`] when the caller has not set it:
/// candle's helper threads for element-wise ops (its "barrier pool") park as soon as an op is
/// done instead of spinning for 25 000 `pause` instructions (about a millisecond here) first.
/// In a training step those spins run beside sconce's own two kernel threads on two cores and
/// take their time: alternating runs of the `benchmark` example, `unet-resnet50` train at
/// 2×250², 3 of 3 pairs faster with it, step 1194/1204/1138 → 1167/1163/1107 ms; `resnet50`
/// train at 8×224², medians of 6: 1697 → 1634 ms. Parking costs a wake-up (microseconds) at
/// the next large element-wise op, which runs for milliseconds.
pub const THREAD_ENV: [(&str, &str); 1] = [("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")];

/// What [`tune_allocator`] did, when it returned (when it applies the settings it does not return:
/// the process is replaced by a copy of itself).
#[derive(Debug)]
#[non_exhaustive]
pub enum AllocatorTuning {
    /// The settings (or the caller's own `MALLOC_TOP_PAD_` and thread settings) are already in
    /// the environment.
    AlreadySet,
    /// `SCONCE_MALLOC_DEFAULTS` is set: glibc's defaults are kept.
    OptedOut,
    /// Not a Unix target: the program cannot re-execute itself with the settings.
    Unsupported,
    /// Re-executing failed (the program continues with the defaults).
    Failed(std::io::Error),
}

/// Re-executes the current program with [`ALLOCATOR_ENV`] unless it is already set, so that
/// glibc keeps freed memory for the next training step (and with [`THREAD_ENV`], each variable
/// unless the caller set it). Call it first thing in `main`, before
/// any thread starts or any input is read: the program starts over with the same arguments.
/// Set `SCONCE_MALLOC_DEFAULTS=1` to opt out. Measured effects are in `docs/benchmarks.md`
/// (e.g. a 1×1 64 → 256 convolution's forward + backward on 8×56×56: 104 → 31 ms; the
/// `segment` example's peak memory 1.36 → 0.66 GiB).
///
/// ```no_run
/// // First thing in `main`: returns only when there is nothing to do (or re-executing failed).
/// let outcome = sconce_core::tune_allocator();
/// eprintln!("allocator: {outcome:?}");
/// ```
pub fn tune_allocator() -> AllocatorTuning {
    if std::env::var_os("SCONCE_MALLOC_DEFAULTS").is_some() {
        return AllocatorTuning::OptedOut;
    }
    let env = missing_env(|k| std::env::var_os(k).is_some());
    if env.is_empty() {
        return AllocatorTuning::AlreadySet;
    }
    reexec(&env)
}

/// The settings the program lacks, given which variables are set: on glibc, each
/// [`ALLOCATOR_ENV`] variable the caller has not set, none when `MALLOC_TOP_PAD_` is set (the
/// caller tuned malloc); and each [`THREAD_ENV`] variable the caller has not set.
fn missing_env(is_set: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    let mut env = Vec::new();
    if cfg!(all(unix, target_env = "gnu")) && !is_set("MALLOC_TOP_PAD_") {
        env.extend(ALLOCATOR_ENV.into_iter().filter(|(k, _)| !is_set(k)));
    }
    env.extend(THREAD_ENV.into_iter().filter(|(k, _)| !is_set(k)));
    env
}

#[cfg(unix)]
fn reexec(env: &[(&str, &str)]) -> AllocatorTuning {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return AllocatorTuning::Failed(e),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // `exec` only returns on failure.
    AllocatorTuning::Failed(cmd.exec())
}

#[cfg(not(unix))]
fn reexec(_env: &[(&str, &str)]) -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_what_glibc_reads() {
        // glibc's names end in an underscore (except MALLOC_ARENA_MAX), and the values parse.
        for (k, v) in ALLOCATOR_ENV {
            assert!(k.starts_with("MALLOC_"), "{k}");
            assert!(k.ends_with('_') || k == "MALLOC_ARENA_MAX", "{k}");
            assert!(v.parse::<u64>().is_ok(), "{k}={v}");
        }
        let top_pad = ALLOCATOR_ENV.iter().find(|(k, _)| *k == "MALLOC_TOP_PAD_");
        assert!(top_pad.is_some(), "tune_allocator detects its own settings by MALLOC_TOP_PAD_");
    }

    #[test]
    fn only_missing_settings_are_added_and_the_callers_are_kept() {
        let keys = |env: Vec<(&str, &str)>| env.into_iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
        let glibc = cfg!(all(unix, target_env = "gnu"));
        let all = keys(missing_env(|_| false));
        assert_eq!(all.len(), if glibc { ALLOCATOR_ENV.len() } else { 0 } + THREAD_ENV.len());
        assert!(all.iter().any(|k| k == "CANDLE_BARRIER_POOL_SPIN_LIMIT"));
        // The caller's own malloc settings: the thread settings alone are added.
        let thread_only = keys(missing_env(|k| k == "MALLOC_TOP_PAD_"));
        assert_eq!(thread_only, vec!["CANDLE_BARRIER_POOL_SPIN_LIMIT".to_string()]);
        // The caller's own spin limit is kept: the malloc settings alone are added.
        let malloc_only = keys(missing_env(|k| k == "CANDLE_BARRIER_POOL_SPIN_LIMIT"));
        assert!(!malloc_only.iter().any(|k| k.starts_with("CANDLE_")));
        assert_eq!(malloc_only.len(), if glibc { ALLOCATOR_ENV.len() } else { 0 });
        // A caller's own malloc variable is kept.
        let own_arena = keys(missing_env(|k| k == "MALLOC_ARENA_MAX"));
        assert!(!own_arena.iter().any(|k| k == "MALLOC_ARENA_MAX"));
        assert_eq!(own_arena.len(), all.len() - usize::from(glibc));
        // Everything set: nothing to do (no re-execution, no loop).
        assert!(missing_env(|_| true).is_empty());
    }

    #[test]
    fn thread_settings_are_what_candle_reads() {
        // candle-core 0.11.1 parses CANDLE_BARRIER_POOL_SPIN_LIMIT as a u32 (utils.rs); a value
        // it cannot parse would silently fall back to its default spin.
        for (k, v) in THREAD_ENV {
            assert!(k.starts_with("CANDLE_"), "{k}");
            assert!(v.parse::<u32>().is_ok(), "{k}={v}");
        }
    }

    #[test]
    fn the_pytorch_side_gets_the_same_settings() {
        // The benchmark scripts give PyTorch the same settings: every `KEY=value` (shell) or
        // `"KEY": "value"` (Python) pair is in them.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, fmt) in [("scripts/benchutil.py", "py"), ("scripts/bench_backbones.sh", "sh")] {
            let Ok(text) = std::fs::read_to_string(root.join(file)) else {
                // Packaged alone (crates.io), the scripts are not there.
                continue;
            };
            for (k, v) in ALLOCATOR_ENV {
                let pair = if fmt == "py" { format!("\"{k}\": \"{v}\"") } else { format!("{k}={v}") };
                assert!(text.contains(&pair), "{file} lacks {pair}");
            }
        }
    }
}
