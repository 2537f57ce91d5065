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
use sconce_svm::{
    KernelType, SvmModel, SvmParams, SvmType, cross_validation, parse_svm_train_args, read_libsvm, save_model, score,
};

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
-f single : compute kernel columns from float32 features, 0 or 1 (default 0; sconce)
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
    let o = parse_svm_train_args(args).map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?;
    let input = PathBuf::from(o.files.first().with_context(|| USAGE.to_string())?);
    let model = match o.files.get(1) {
        Some(m) => PathBuf::from(m),
        None => {
            let base = input.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            PathBuf::from(format!("{base}.model"))
        }
    };
    if o.files.len() > 2 {
        bail!("too many arguments\n{USAGE}");
    }
    Ok(Cli { params: o.params, folds: o.folds, quiet: o.quiet, input, model })
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
            let cols: usize = model.info().iter().map(|i| i.kernel_columns).sum();
            eprint!("[{cols} kernel columns computed] ");
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
