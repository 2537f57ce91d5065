//! `svm-train`: LIBSVM's training tool with LIBSVM's flags, defaults, output and model file,
//! on sconce's solver (plus `-t 5` chi-squared and `-t 6` histogram intersection, `-g scale`).
//!
//! ```text
//! cargo run --release --example svm-train -- [options] training_set_file [model_file]
//! cargo run --release --example svm-train -- -v 5 heart_scale
//! ```
//! `--smoke` trains, saves, reloads and cross-validates on a small generated problem (CI).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sconce_svm::{Gamma, KernelType, SvmModel, SvmParams, SvmType, cross_validation, read_libsvm, save_model, score};

const USAGE: &str = "Usage: svm-train [options] training_set_file [model_file]
options:
-s svm_type : set type of SVM (default 0)
	0 -- C-SVC		(multi-class classification)
	1 -- nu-SVC		(multi-class classification)
	2 -- one-class SVM
	3 -- epsilon-SVR	(regression)
	4 -- nu-SVR		(regression)
-t kernel_type : set type of kernel function (default 2)
	0 -- linear: u'*v
	1 -- polynomial: (gamma*u'*v + coef0)^degree
	2 -- radial basis function: exp(-gamma*|u-v|^2)
	3 -- sigmoid: tanh(gamma*u'*v + coef0)
	4 -- precomputed kernel (kernel values in training_set_file)
	5 -- chi-squared: exp(-gamma*sum((u-v)^2/(u+v)))  (sconce; non-negative features)
	6 -- histogram intersection: sum(min(u,v))        (sconce; non-negative features)
-d degree : set degree in kernel function (default 3)
-g gamma : set gamma in kernel function (default 1/num_features; `scale` = 1/(num_features*var(X)))
-r coef0 : set coef0 in kernel function (default 0)
-c cost : set the parameter C of C-SVC, epsilon-SVR, and nu-SVR (default 1)
-n nu : set the parameter nu of nu-SVC, one-class SVM, and nu-SVR (default 0.5)
-p epsilon : set the epsilon in loss function of epsilon-SVR (default 0.1)
-m cachesize : set cache memory size in MB (default 100)
-e epsilon : set tolerance of termination criterion (default 0.001)
-h shrinking : whether to use the shrinking heuristics, 0 or 1 (default 1)
-b probability_estimates : whether to train a SVC or SVR model for probability estimates, 0 or 1 (default 0)
-wi weight : set the parameter C of class i to weight*C, for C-SVC (default 1)
-v n: n-fold cross validation mode
-q : quiet mode (no outputs)";

struct Cli {
    params: SvmParams,
    folds: Option<usize>,
    quiet: bool,
    input: PathBuf,
    model: PathBuf,
}

fn parse(args: &[String]) -> Result<Cli> {
    let mut p = SvmParams::c_svc().gamma(Gamma::InvFeatures);
    let (mut folds, mut quiet) = (None, false);
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let flag = &args[i][1..];
        if flag == "q" {
            quiet = true;
            i += 1;
            continue;
        }
        let v = args.get(i + 1).with_context(|| format!("-{flag} needs a value\n{USAGE}"))?;
        let num = || v.parse::<f64>().with_context(|| format!("-{flag} {v}: not a number"));
        match flag {
            "s" => {
                let t = SvmType::from_code(v.parse()?).with_context(|| format!("-s {v}: unknown svm type"))?;
                p.svm_type = t;
            }
            "t" => {
                p.kernel = KernelType::from_code(v.parse()?).with_context(|| format!("-t {v}: unknown kernel type"))?
            }
            "d" => p.degree = v.parse().with_context(|| format!("-d {v}: not an integer"))?,
            "g" => p.gamma = if v == "scale" { Gamma::Scale } else { Gamma::Value(num()?) },
            "r" => p.coef0 = num()?,
            "c" => p.c = num()?,
            "n" => p.nu = num()?,
            "p" => p.p = num()?,
            "m" => p.cache_mb = num()?,
            "e" => p.eps = num()?,
            "h" => p.shrinking = v != "0",
            "b" => p.probability = v != "0",
            "v" => {
                let n: usize = v.parse().with_context(|| format!("-v {v}: not a count"))?;
                if n < 2 {
                    bail!("n-fold cross validation: n must >= 2\n{USAGE}");
                }
                folds = Some(n);
            }
            f if f.starts_with('w') => {
                let label: i32 =
                    f[1..].parse().with_context(|| format!("-{f}: the class label after -w must be an integer"))?;
                p.class_weights.push((label, num()?));
            }
            _ => bail!("Unknown option: -{flag}\n{USAGE}"),
        }
        i += 2;
    }
    let input = PathBuf::from(args.get(i).with_context(|| USAGE.to_string())?);
    let model = match args.get(i + 1) {
        Some(m) => PathBuf::from(m),
        None => {
            let base = input.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            PathBuf::from(format!("{base}.model"))
        }
    };
    Ok(Cli { params: p, folds, quiet, input, model })
}

/// LIBSVM's per-sub-problem report.
fn report(m: &SvmModel) {
    for s in m.info() {
        println!("optimization finished, #iter = {}", s.iterations);
        if let Some(nu) = s.nu {
            println!("nu = {nu:.6}");
        }
        if let Some(c) = s.c {
            println!("C = {c:.6}");
        }
        if let Some(e) = s.epsilon {
            println!("epsilon = {e:.6}");
        }
        println!("obj = {:.6}, rho = {:.6}", s.obj, s.rho);
        println!("nSV = {}, nBSV = {}", s.n_sv, s.n_bsv);
        if !s.converged {
            println!("WARNING: reaching max number of iterations");
        }
    }
    if m.svm_type().is_classification() {
        println!("Total nSV = {}", m.total_sv());
    }
}

fn run(cli: &Cli) -> Result<()> {
    let data = read_libsvm(&cli.input, cli.params.kernel == KernelType::Precomputed)?;
    let t0 = Instant::now();
    if let Some(folds) = cli.folds {
        let pred = cross_validation(&cli.params, &data.x, &data.y, folds)?;
        let s = score(cli.params.svm_type, &data.y, &pred);
        if let (Some(mse), Some(r2)) = (s.mse, s.r2) {
            println!("Cross Validation Mean squared error = {}", sconce_svm::format_g(mse, 6));
            println!("Cross Validation Squared correlation coefficient = {}", sconce_svm::format_g(r2, 6));
        } else if let Some(acc) = s.accuracy {
            println!("Cross Validation Accuracy = {}%", sconce_svm::format_g(100.0 * acc, 6));
        }
    } else {
        let model = cli.params.train(&data.x, &data.y)?;
        if !cli.quiet {
            report(&model);
        }
        save_model(&model, &cli.model).with_context(|| format!("can't save model to file {}", cli.model.display()))?;
    }
    if !cli.quiet {
        eprintln!("({} samples, {:.3} s)", data.y.len(), t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// A small two-class problem written as a LIBSVM file: two noisy rings.
fn smoke_file(dir: &Path) -> Result<PathBuf> {
    let mut rng = sconce_core::SeededRng::new(3);
    let mut s = String::new();
    for i in 0..200 {
        let label = if i % 2 == 0 { 1 } else { -1 };
        let r = if label == 1 { 1.0 } else { 2.0 } + 0.3 * rng.normal();
        let a = rng.uniform(0.0, std::f64::consts::TAU);
        s.push_str(&format!("{label} 1:{} 2:{}\n", r * a.cos(), r * a.sin()));
    }
    let path = dir.join("rings.libsvm");
    std::fs::write(&path, s)?;
    Ok(path)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--smoke") {
        let dir = std::env::temp_dir().join(format!("sconce-svm-train-smoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = smoke_file(&dir)?;
        let model = dir.join("rings.model");
        let f = file.display().to_string();
        let m = model.display().to_string();
        run(&parse(&["-c".into(), "10".into(), "-b".into(), "1".into(), f.clone(), m.clone()])?)?;
        let loaded = sconce_svm::load_model(&model)?;
        let data = read_libsvm(&file, false)?;
        let acc = score(SvmType::CSvc, &data.y, &loaded.predict(&data.x)?).accuracy.unwrap_or(0.0);
        anyhow::ensure!(acc > 0.9, "smoke: training accuracy {acc} on two separable rings");
        run(&parse(&["-q".into(), "-v".into(), "5".into(), f])?)?;
        std::fs::remove_dir_all(&dir)?;
        println!("smoke ok: training accuracy {acc:.3}");
        return Ok(());
    }
    if args.is_empty() {
        println!("{USAGE}");
        std::process::exit(1);
    }
    run(&parse(&args)?)
}
