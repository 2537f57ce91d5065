//! `svm-scale`: LIBSVM's feature scaler, same flags and byte-identical output — each feature
//! to `[lower, upper]` (default `[-1, 1]`), optionally the targets with `-y`, with the
//! factors saved (`-s`) or restored (`-r`) so a test set is scaled like its training set.
//!
//! ```text
//! cargo run --release --example svm-scale -- [-l lower] [-u upper] [-y y_lower y_upper] [-s save_filename] [-r restore_filename] filename
//! ```
//! `--smoke` scales a small file, restores the factors on it and checks both agree (CI).

use std::fmt::Write as _;

use anyhow::{Context, Result, bail, ensure};
use sconce_svm::{format_g, parse_libsvm};

const USAGE: &str = "Usage: svm-scale [options] data_filename
options:
-l lower : x scaling lower limit (default -1)
-u upper : x scaling upper limit (default +1)
-y y_lower y_upper : y scaling limits (default: no y scaling)
-s save_filename : save scaling parameters to save_filename
-r restore_filename : restore scaling parameters from restore_filename";

#[derive(Default)]
struct Opts {
    lower: f64,
    upper: f64,
    y: Option<(f64, f64)>,
    save: Option<String>,
    restore: Option<String>,
}

/// Scaling factors: per-feature [min, max] (index 1..=max_index) and target range.
struct Factors {
    lower: f64,
    upper: f64,
    y: Option<(f64, f64, f64, f64)>,
    min: Vec<f64>,
    max: Vec<f64>,
}

fn parse_restore(text: &str, max_index: usize) -> Result<Factors> {
    let mut lines = text.lines().peekable();
    let mut y = None;
    let nums = |l: Option<&str>, what: &str| -> Result<Vec<f64>> {
        l.with_context(|| format!("restore file: missing {what}"))?
            .split_whitespace()
            .map(|t| t.parse::<f64>().with_context(|| format!("restore file: `{t}` in {what}")))
            .collect()
    };
    if lines.peek() == Some(&"y") {
        lines.next();
        let a = nums(lines.next(), "y limits")?;
        let b = nums(lines.next(), "y range")?;
        ensure!(a.len() == 2 && b.len() == 2, "ERROR: failed to read scaling parameters");
        y = Some((a[0], a[1], b[0], b[1]));
    }
    ensure!(lines.next() == Some("x"), "ERROR: failed to read scaling parameters (no `x` line)");
    let lu = nums(lines.next(), "x limits")?;
    ensure!(lu.len() == 2, "ERROR: failed to read scaling parameters");
    let mut min = vec![0.0; max_index + 1];
    let mut max = vec![0.0; max_index + 1];
    for l in lines {
        let v: Vec<&str> = l.split_whitespace().collect();
        ensure!(v.len() == 3, "restore file: `{l}` is not `index min max`");
        let i: usize = v[0].parse().with_context(|| format!("restore file: index `{}`", v[0]))?;
        if i >= min.len() {
            min.resize(i + 1, 0.0);
            max.resize(i + 1, 0.0);
        }
        min[i] = v[1].parse()?;
        max[i] = v[2].parse()?;
    }
    Ok(Factors { lower: lu[0], upper: lu[1], y, min, max })
}

/// Returns (scaled file text, save-file text, stderr warnings).
fn scale(text: &str, source: &str, o: &Opts, restore: Option<&str>) -> Result<(String, Option<String>, Vec<String>)> {
    let d = parse_libsvm(text, source, true)?;
    let n = d.y.len();
    // As LIBSVM: the largest index of the data or of the restored factors.
    let restored = match restore {
        Some(rt) => Some(parse_restore(rt, d.x.max_index() as usize)?),
        None => None,
    };
    let max_index = (d.x.max_index() as usize).max(restored.as_ref().map_or(0, |r| r.min.len() - 1));
    let mut warnings = Vec::new();
    let (mut fmin, mut fmax) = (vec![f64::MAX; max_index + 1], vec![-f64::MAX; max_index + 1]);
    for r in 0..n {
        let mut next = 1;
        for (i, v) in d.x.row(r).entries() {
            let i = i as usize;
            for k in next..i {
                fmax[k] = fmax[k].max(0.0);
                fmin[k] = fmin[k].min(0.0);
            }
            fmax[i] = fmax[i].max(v);
            fmin[i] = fmin[i].min(v);
            next = i + 1;
        }
        for k in next..=max_index {
            fmax[k] = fmax[k].max(0.0);
            fmin[k] = fmin[k].min(0.0);
        }
    }
    let ymin = d.y.iter().copied().fold(f64::MAX, f64::min);
    let ymax = d.y.iter().copied().fold(-f64::MAX, f64::max);
    let mut f =
        Factors { lower: o.lower, upper: o.upper, y: o.y.map(|(a, b)| (a, b, ymin, ymax)), min: fmin, max: fmax };
    if let Some(r) = restored {
        if r.y.is_some() {
            f.y = r.y;
        }
        f.lower = r.lower;
        f.upper = r.upper;
        let len = f.min.len().max(r.min.len());
        f.min.resize(len, 0.0);
        f.max.resize(len, 0.0);
        for i in 1..len {
            let (rmin, rmax) = (r.min.get(i).copied().unwrap_or(0.0), r.max.get(i).copied().unwrap_or(0.0));
            if rmin == 0.0 && rmax == 0.0 && f.min[i] != f.max[i] && i <= max_index {
                warnings.push(format!(
                    "WARNING: feature index {i} appeared in file {source} was not seen in the scaling factor file {}. The feature is scaled to 0.",
                    o.restore.as_deref().unwrap_or("")
                ));
            }
            f.min[i] = rmin;
            f.max[i] = rmax;
        }
    }
    let save = o.save.as_ref().map(|_| {
        let mut s = String::new();
        if let Some((yl, yu, a, b)) = f.y {
            let _ =
                write!(s, "y\n{} {}\n{} {}\n", format_g(yl, 17), format_g(yu, 17), format_g(a, 17), format_g(b, 17));
        }
        let _ = writeln!(s, "x\n{} {}", format_g(f.lower, 17), format_g(f.upper, 17));
        for i in 1..=max_index {
            if f.min[i] != f.max[i] {
                let _ = writeln!(s, "{i} {} {}", format_g(f.min[i], 17), format_g(f.max[i], 17));
            }
        }
        s
    });
    let mut out = String::new();
    let (mut nnz_old, mut nnz_new) = (0usize, 0usize);
    let output = |out: &mut String, nnz: &mut usize, i: usize, v: f64| {
        let (lo, hi) = (f.min.get(i).copied().unwrap_or(0.0), f.max.get(i).copied().unwrap_or(0.0));
        if lo == hi {
            return;
        }
        let v = if v == lo {
            f.lower
        } else if v == hi {
            f.upper
        } else {
            f.lower + (f.upper - f.lower) * (v - lo) / (hi - lo)
        };
        if v != 0.0 {
            let _ = write!(out, "{i}:{} ", format_g(v, 6));
            *nnz += 1;
        }
    };
    for r in 0..n {
        let mut t = d.y[r];
        if let Some((yl, yu, a, b)) = f.y {
            t = if t == a {
                yl
            } else if t == b {
                yu
            } else {
                yl + (yu - yl) * (t - a) / (b - a)
            };
        }
        let _ = write!(out, "{} ", format_g(t, 17));
        let mut next = 1;
        for (i, v) in d.x.row(r).entries() {
            let i = i as usize;
            if i == 0 {
                continue;
            }
            nnz_old += 1;
            for k in next..i {
                output(&mut out, &mut nnz_new, k, 0.0);
            }
            output(&mut out, &mut nnz_new, i, v);
            next = i + 1;
        }
        for k in next..=max_index {
            output(&mut out, &mut nnz_new, k, 0.0);
        }
        out.push('\n');
    }
    if nnz_new > nnz_old {
        warnings.push(format!(
            "WARNING: original #nonzeros {nnz_old}\n       > new      #nonzeros {nnz_new}\nIf feature values are non-negative and sparse, use -l 0 rather than the default -l -1"
        ));
    }
    Ok((out, save, warnings))
}

fn run(args: &[String]) -> Result<()> {
    let mut o = Opts { lower: -1.0, upper: 1.0, ..Default::default() };
    let mut i = 0;
    let num = |s: Option<&String>| -> Result<f64> { Ok(s.with_context(|| USAGE.to_string())?.parse()?) };
    while i < args.len() && args[i].starts_with('-') && args[i].len() == 2 {
        match args[i].as_str() {
            "-l" => o.lower = num(args.get(i + 1))?,
            "-u" => o.upper = num(args.get(i + 1))?,
            "-y" => {
                o.y = Some((num(args.get(i + 1))?, num(args.get(i + 2))?));
                i += 1;
            }
            "-s" => o.save = args.get(i + 1).cloned(),
            "-r" => o.restore = args.get(i + 1).cloned(),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
        i += 2;
    }
    let ordered = |lo: f64, hi: f64| lo.partial_cmp(&hi) == Some(std::cmp::Ordering::Less);
    if !ordered(o.lower, o.upper) || o.y.is_some_and(|(a, b)| !ordered(a, b)) {
        bail!("inconsistent lower/upper specification");
    }
    if o.save.is_some() && o.restore.is_some() {
        bail!("cannot use -r and -s simultaneously");
    }
    let file = args.get(i).with_context(|| USAGE.to_string())?;
    let text = std::fs::read_to_string(file).with_context(|| format!("can't open file {file}"))?;
    let restore = match &o.restore {
        Some(r) => Some(std::fs::read_to_string(r).with_context(|| format!("can't open file {r}"))?),
        None => None,
    };
    let (out, save, warnings) = scale(&text, file, &o, restore.as_deref())?;
    if let (Some(path), Some(s)) = (&o.save, save) {
        std::fs::write(path, s).with_context(|| format!("can't open file {path}"))?;
    }
    for w in warnings {
        eprintln!("{w}");
    }
    print!("{out}");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--smoke") {
        let text = "1 1:2 3:-4\n-1 1:4 2:1\n1 2:3 3:4\n";
        let o = Opts { lower: -1.0, upper: 1.0, save: Some("-".into()), ..Default::default() };
        let (out, save, _) = scale(text, "smoke", &o, None)?;
        ensure!(out == "1 2:-1 3:-1 \n-1 1:1 2:-0.333333 \n1 1:-1 2:1 3:1 \n", "{out}");
        let save = save.context("save text")?;
        let (again, _, _) = scale(text, "smoke", &Opts { lower: 0.0, upper: 1.0, ..Default::default() }, Some(&save))?;
        ensure!(again == out, "restored scaling differs:\n{again}");
        println!("smoke ok");
        return Ok(());
    }
    run(&args)
}
