//! Tidy: mechanically checks the architecture invariants of `docs/ARCHITECTURE.md` — the
//! dependency rules between crates, read from each `Cargo.toml`, and source-file hygiene.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Which sconce crates each crate may depend on (normal and build dependencies). A crate not
/// listed here may not exist: add it to this table and to ARCHITECTURE.md together.
const ALLOWED_INTERNAL: &[(&str, &[&str])] = &[
    ("sconce-core", &[]),
    ("sconce-tensor", &["sconce-core"]),
    ("sconce-layers", &["sconce-core", "sconce-tensor"]),
    ("sconce-losses", &["sconce-core", "sconce-tensor"]),
    ("sconce-metrics", &["sconce-core"]),
    ("sconce-encodings", &["sconce-core", "sconce-tensor"]),
    ("sconce-svm", &["sconce-core"]),
    ("sconce-data", &["sconce-core"]),
    ("sconce-backbones", &["sconce-core", "sconce-tensor", "sconce-layers"]),
    ("sconce-hub", &["sconce-core", "sconce-tensor", "sconce-layers", "sconce-backbones"]),
    // Dev-only test helpers: depends on no sconce crate (a dev-dependency back onto sconce-core
    // would give sconce-core's own tests a second copy of its types).
    ("sconce-testutil", &[]),
    (
        "sconce-train",
        &["sconce-core", "sconce-tensor", "sconce-layers", "sconce-losses", "sconce-metrics", "sconce-data"],
    ),
];

/// Leaf crates: none of them may depend on another, in any dependency section.
const LEAVES: &[&str] = &["sconce-losses", "sconce-metrics", "sconce-encodings", "sconce-svm", "sconce-data"];

/// External crates a sconce crate must not reach, directly or through other sconce crates.
const FORBIDDEN_EXTERNAL: &[(&str, &[&str])] = &[
    // The core stays small: candle-core and plain Rust only.
    ("sconce-core", &["candle-nn", "hf-hub"]),
    // Plain-slice numerics: no neural-network layer crate, no download client.
    ("sconce-svm", &["candle-nn", "hf-hub"]),
    ("sconce-metrics", &["candle-nn", "hf-hub"]),
];

/// Only this crate may depend on the Hugging Face hub client.
const HUB_CLIENT: (&str, &str) = ("hf-hub", "sconce-hub");

/// Test helpers: may only appear in `[dev-dependencies]`.
const TESTUTIL: &str = "sconce-testutil";

/// Never a dependency of anything: huge, and its ResNet is inference-only.
const BANNED: &[&str] = &["candle-transformers"];

/// A crate's manifest, reduced to what the rules need.
#[derive(Debug, Default)]
struct Manifest {
    /// `[dependencies]` and `[build-dependencies]`, by package name (renames resolved).
    deps: BTreeSet<String>,
    /// `[dev-dependencies]`, by package name.
    dev_deps: BTreeSet<String>,
    /// `[lints] workspace = true` is present.
    workspace_lints: bool,
}

fn parse_manifest(text: &str) -> Result<(String, Manifest), String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let name = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or("no [package] name")?
        .to_string();
    let names = |section: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut sections: Vec<&toml::Value> = table.get(section).into_iter().collect();
        // Platform-specific sections: [target.'cfg(..)'.dependencies].
        if let Some(targets) = table.get("target").and_then(|t| t.as_table()) {
            sections.extend(targets.values().filter_map(|t| t.get(section)));
        }
        for deps in sections.iter().filter_map(|s| s.as_table()) {
            for (key, spec) in deps {
                let pkg = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
                out.insert(pkg.to_string());
            }
        }
        out
    };
    let mut deps = names("dependencies");
    deps.extend(names("build-dependencies"));
    let dev_deps = names("dev-dependencies");
    let workspace_lints =
        table.get("lints").and_then(|l| l.get("workspace")).and_then(|w| w.as_bool()).unwrap_or(false);
    Ok((name, Manifest { deps, dev_deps, workspace_lints }))
}

/// Checks the dependency rules over a set of crate manifests `(path, contents)`; returns one
/// line per violation.
fn check_manifests(manifests: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut crates: BTreeMap<String, Manifest> = BTreeMap::new();
    for (path, text) in manifests {
        match parse_manifest(text) {
            Ok((name, m)) => {
                crates.insert(name, m);
            }
            Err(e) => problems.push(format!("{path}: {e}")),
        }
    }
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_INTERNAL.iter().copied().collect();
    for (name, m) in &crates {
        if !m.workspace_lints {
            problems.push(format!("{name}: missing `[lints] workspace = true`"));
        }
        let Some(ok) = allowed.get(name.as_str()) else {
            problems.push(format!("{name}: not in tidy's ALLOWED_INTERNAL table (and ARCHITECTURE.md)"));
            continue;
        };
        for dep in m.deps.iter().filter(|d| d.starts_with("sconce")) {
            if !ok.contains(&dep.as_str()) {
                problems.push(format!("{name} must not depend on {dep} (allowed: {ok:?})"));
            }
        }
        if name == TESTUTIL {
            // Used only as a dev-dependency (checked below), never published.
        } else if name != "sconce-core" && !m.deps.contains("sconce-core") {
            problems.push(format!("{name} must depend on sconce-core (it owns the error type and traits)"));
        }
        if LEAVES.contains(&name.as_str()) {
            for dep in m.deps.iter().chain(&m.dev_deps) {
                if dep != name && LEAVES.contains(&dep.as_str()) {
                    problems.push(format!(
                        "leaf crate {name} must not depend on leaf crate {dep}; compose through sconce-core's traits"
                    ));
                }
            }
        }
        for dep in m.deps.iter().chain(&m.dev_deps) {
            if BANNED.contains(&dep.as_str()) {
                problems.push(format!("{name} must not depend on {dep}"));
            }
        }
        if m.deps.contains(TESTUTIL) {
            problems.push(format!("{name} must use {TESTUTIL} only as a dev-dependency"));
        }
        if m.deps.contains(HUB_CLIENT.0) && name != HUB_CLIENT.1 {
            problems.push(format!("{name} must not depend on {}; only {} may", HUB_CLIENT.0, HUB_CLIENT.1));
        }
    }
    // Transitive rules: follow sconce-internal edges, collect every external direct dependency.
    for (name, forbidden) in FORBIDDEN_EXTERNAL {
        if !crates.contains_key(*name) {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(c) = stack.pop() {
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(m) = crates.get(&c) {
                for dep in &m.deps {
                    if forbidden.contains(&dep.as_str()) {
                        let via = if c == *name { String::new() } else { format!(" (through {c})") };
                        problems.push(format!("{name} must not pull in {dep}{via}"));
                    }
                    if crates.contains_key(dep) {
                        stack.push(dep.clone());
                    }
                }
            }
        }
    }
    problems
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crate_manifests() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let crates_dir = root().join("crates");
    let Ok(entries) = fs::read_dir(&crates_dir) else { return out };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        if let Ok(text) = fs::read_to_string(&path) {
            out.push((path.display().to_string(), text));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's first non-blank line must be a `//!` inner doc comment saying what it is for.
fn header_problem(path: &str, text: &str) -> Option<String> {
    match text.lines().find(|l| !l.trim().is_empty()) {
        Some(l) if l.starts_with("//!") && l.trim().len() > 4 => None,
        _ => Some(format!("{path}: must start with a `//!` line saying what the file is for")),
    }
}

/// Placeholders and disabled tests, spelled so that this file does not match itself.
fn placeholder_problems(path: &str, text: &str) -> Vec<String> {
    let patterns =
        [concat!("#[", "ignore"), concat!("todo", "!("), concat!("unimplemented", "!("), concat!("should", "_panic")];
    text.lines()
        .enumerate()
        .flat_map(|(i, line)| {
            patterns
                .iter()
                .filter(move |p| line.contains(*p))
                .map(move |p| format!("{path}:{}: `{p}` is not allowed", i + 1))
        })
        .collect()
}

#[test]
fn dependency_rules_hold() {
    let manifests = crate_manifests();
    assert!(manifests.iter().any(|(p, _)| p.ends_with("sconce-core/Cargo.toml")), "crates/sconce-core not found");
    let problems = check_manifests(&manifests);
    assert!(problems.is_empty(), "dependency rules violated:\n{}", problems.join("\n"));
}

#[test]
fn every_source_file_has_a_header_and_no_placeholders() {
    let mut files = Vec::new();
    for dir in ["crates", "src", "tests", "examples", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() >= 5, "found only {} .rs files", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_default();
        let rel = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        problems.extend(header_problem(&rel, &text));
        problems.extend(placeholder_problems(&rel, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn library_roots_deny_panicking_shortcuts() {
    let lint = "#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]";
    let mut problems = Vec::new();
    for (path, _) in crate_manifests() {
        let lib = Path::new(&path).with_file_name("src").join("lib.rs");
        let text = fs::read_to_string(&lib).unwrap_or_default();
        if !text.contains(lint) {
            problems.push(format!("{}: crate root must carry `{lint}`", lib.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The only files that may opt out of the workspace's `unsafe_code = "deny"`, each with why.
const UNSAFE_ALLOWED: &[(&str, &str)] = &[
    ("crates/sconce-tensor/src/matmul.rs", "the call into the gemm crate, after length checks"),
    ("crates/sconce-tensor/src/sgemm.rs", "the AVX-512 micro-kernel and its packing, behind bound checks"),
    ("crates/sconce-tensor/src/conv.rs", "outputs written into uninitialised capacity, every element"),
    ("crates/sconce-tensor/src/batch_norm.rs", "outputs written into uninitialised capacity, every element"),
    ("crates/sconce-tensor/src/separable.rs", "outputs written into uninitialised capacity, every element"),
    ("crates/sconce-tensor/src/relu.rs", "outputs written into uninitialised capacity, every element"),
    ("crates/sconce-layers/src/io.rs", "memory-mapping safetensors files"),
    ("crates/sconce-losses/src/ce.rs", "the logits' gradient written into uninitialised capacity, every element"),
    ("crates/sconce-tensor/src/bias.rs", "the biased output written into uninitialised capacity, plane by plane"),
    ("crates/sconce-losses/src/bce.rs", "the gradient written into uninitialised capacity by the forward pass"),
    (
        "crates/sconce-tensor/src/conv_bn.rs",
        "the skip concatenation written into uninitialised capacity, every element",
    ),
    ("crates/sconce-tensor/src/dense.rs", "DenseNet's eval output written into uninitialised capacity, every element"),
    (
        "crates/sconce-tensor/src/conv/winograd.rs",
        "the AVX-512 tile transforms, masked loads and stores inside checked bounds",
    ),
];

/// Files that allow `unsafe` code but are not in the list.
fn unsafe_problems(files: &[(String, String)], allowed: &[(&str, &str)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, text)| text.contains(concat!("allow(", "unsafe_code)")))
        .filter(|(path, _)| !allowed.iter().any(|(a, _)| path == a))
        .map(|(path, _)| format!("{path}: allows unsafe code but is not in tidy's UNSAFE_ALLOWED list"))
        .collect()
}

#[test]
fn unsafe_code_stays_in_the_listed_files() {
    let mut files = Vec::new();
    for dir in ["crates", "src", "examples", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root()).unwrap_or(f).display().to_string();
            (rel, fs::read_to_string(f).unwrap_or_default())
        })
        .collect();
    let problems = unsafe_problems(&texts, UNSAFE_ALLOWED);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check can fail: an unlisted file that opts out is reported.
    let rogue = vec![("crates/x/src/lib.rs".to_string(), format!("#![{}]", concat!("allow(", "unsafe_code)")))];
    assert_eq!(unsafe_problems(&rogue, UNSAFE_ALLOWED).len(), 1);
}

// ---- The checker itself must be able to fail: synthetic manifests, never the real ones. ----

fn manifest(name: &str, deps: &[&str], dev: &[&str]) -> (String, String) {
    let mut s = format!("[package]\nname = \"{name}\"\n\n[dependencies]\n");
    for d in deps {
        s.push_str(&format!("{d}.workspace = true\n"));
    }
    s.push_str("\n[dev-dependencies]\n");
    for d in dev {
        s.push_str(&format!("{d}.workspace = true\n"));
    }
    s.push_str("\n[lints]\nworkspace = true\n");
    (format!("synthetic/{name}/Cargo.toml"), s)
}

fn clean_set() -> Vec<(String, String)> {
    vec![
        manifest("sconce-core", &["candle-core", "thiserror"], &[]),
        manifest("sconce-tensor", &["sconce-core", "candle-core"], &[]),
        manifest("sconce-layers", &["sconce-core", "sconce-tensor", "candle-nn"], &[]),
        manifest("sconce-svm", &["sconce-core"], &["anyhow"]),
        manifest("sconce-metrics", &["sconce-core"], &[]),
        manifest("sconce-hub", &["sconce-core", "sconce-layers", "hf-hub"], &[]),
    ]
}

fn with_replaced(set: Vec<(String, String)>, replacement: (String, String)) -> Vec<(String, String)> {
    set.into_iter().map(|(p, t)| if p == replacement.0 { replacement.clone() } else { (p, t) }).collect()
}

#[test]
fn tidy_accepts_a_clean_synthetic_workspace() {
    let problems = check_manifests(&clean_set());
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn tidy_rejects_a_forbidden_internal_dependency() {
    let set = with_replaced(clean_set(), manifest("sconce-svm", &["sconce-core", "sconce-layers"], &[]));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p.contains("sconce-svm must not depend on sconce-layers")), "{problems:?}");
}

#[test]
fn tidy_rejects_the_hub_client_pulled_in_transitively() {
    // sconce-svm → sconce-hub → hf-hub: caught both as a forbidden edge and transitively.
    let set = with_replaced(clean_set(), manifest("sconce-svm", &["sconce-core", "sconce-hub"], &[]));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p == "sconce-svm must not pull in hf-hub (through sconce-hub)"), "{problems:?}");
    let set = with_replaced(clean_set(), manifest("sconce-metrics", &["sconce-core", "hf-hub"], &[]));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p.contains("sconce-metrics must not depend on hf-hub")), "{problems:?}");
}

#[test]
fn tidy_rejects_candle_nn_in_the_core_and_leaf_to_leaf_edges() {
    let set = with_replaced(clean_set(), manifest("sconce-core", &["candle-core", "candle-nn"], &[]));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p == "sconce-core must not pull in candle-nn"), "{problems:?}");
    // The core is under every crate, so svm and metrics inherit the violation.
    assert!(
        problems.iter().any(|p| p == "sconce-svm must not pull in candle-nn (through sconce-core)"),
        "{problems:?}"
    );

    let set = with_replaced(clean_set(), manifest("sconce-metrics", &["sconce-core"], &["sconce-svm"]));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p.contains("leaf crate sconce-metrics must not depend on leaf crate sconce-svm")));
}

#[test]
fn tidy_rejects_banned_crates_unknown_crates_and_missing_lints() {
    let mut set = clean_set();
    set.push(manifest("sconce-extra", &["sconce-core"], &[]));
    set.push((
        "synthetic/sconce-data/Cargo.toml".into(),
        "[package]\nname = \"sconce-data\"\n[dependencies]\nsconce-core = { path = \"../sconce-core\" }\n\
         [target.'cfg(unix)'.dependencies]\nmodels = { package = \"candle-transformers\", version = \"0.11\" }\n"
            .into(),
    ));
    let problems = check_manifests(&set);
    assert!(problems.iter().any(|p| p.contains("sconce-extra: not in tidy's ALLOWED_INTERNAL")), "{problems:?}");
    assert!(problems.iter().any(|p| p == "sconce-data must not depend on candle-transformers"), "{problems:?}");
    assert!(problems.iter().any(|p| p == "sconce-data: missing `[lints] workspace = true`"), "{problems:?}");
    let set = vec![manifest("sconce-tensor", &["candle-core"], &[])];
    assert!(check_manifests(&set).iter().any(|p| p.contains("must depend on sconce-core")));
}

#[test]
fn tidy_rejects_missing_headers_and_placeholders() {
    assert!(header_problem("a.rs", "//! What this file is for.\nfn main() {}").is_none());
    assert!(header_problem("a.rs", "\n\n//! Header after blank lines.\n").is_none());
    assert!(header_problem("a.rs", "// plain comment\n").is_some());
    assert!(header_problem("a.rs", "//!\n").is_some());
    assert!(header_problem("a.rs", "").is_some());
    let src = concat!("//! x\n#[test]\n#[", "ignore]\nfn t() { todo", "!() }\n");
    let found = placeholder_problems("t.rs", src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("t.rs:3:"));
}
