//! `svm-predict`: LIBSVM's prediction tool — reads a LIBSVM model file (LIBSVM's or sconce's)
//! and a test file, writes one prediction per line and prints LIBSVM's accuracy or
//! regression summary.
//!
//! ```text
//! cargo run --release --example svm-predict -- [-b 0|1] [-q] test_file model_file output_file
//! ```
//! `--smoke` trains a tiny model, predicts with and without probabilities, and checks (CI).

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sconce_svm::{KernelType, SvmParams, SvmType, format_g, load_model, parse_libsvm};

const USAGE: &str = "Usage: svm-predict [options] test_file model_file output_file
options:
-b probability_estimates: whether to predict probability estimates, 0 or 1 (default 0); for one-class SVM only 0 is supported
-q : quiet mode (no outputs)";

/// Predicts `test` with `model`, returns (output file text, summary lines).
fn predict(test: &str, source: &str, model: &sconce_svm::SvmModel, prob: bool) -> Result<(String, Vec<String>)> {
    let data = parse_libsvm(test, source, model.kernel().kind == KernelType::Precomputed)?;
    let mut out = String::new();
    let t = model.svm_type();
    let mut info = Vec::new();
    let pred = if prob {
        if t.is_regression() {
            info.push(format!(
                "Prob. model for test data: target value = predicted value + z,\nz: Laplace distribution e^(-|z|/sigma)/(2sigma),sigma={}",
                format_g(model.prob_a().map_or(0.0, |a| a[0]), 6)
            ));
            let p = model.predict(&data.x)?;
            for v in &p {
                let _ = writeln!(out, "{}", format_g(*v, 17));
            }
            p
        } else {
            if t == SvmType::OneClass {
                out.push_str("label normal outlier\n");
            } else {
                out.push_str("labels");
                for l in model.labels() {
                    let _ = write!(out, " {l}");
                }
                out.push('\n');
            }
            let (labels, probs) = model.predict_probability(&data.x)?;
            let k = model.nr_class();
            for (i, l) in labels.iter().enumerate() {
                out.push_str(&format_g(*l, 6));
                for p in &probs[i * k..(i + 1) * k] {
                    out.push(' ');
                    out.push_str(&format_g(*p, 6));
                }
                out.push('\n');
            }
            labels
        }
    } else {
        let p = model.predict(&data.x)?;
        for v in &p {
            let _ = writeln!(out, "{}", format_g(*v, 17));
        }
        p
    };
    let n = data.y.len();
    if t.is_regression() {
        let s = sconce_svm::score(t, &data.y, &pred);
        info.push(format!("Mean squared error = {} (regression)", format_g(s.mse.unwrap_or(f64::NAN), 6)));
        info.push(format!("Squared correlation coefficient = {} (regression)", format_g(s.r2.unwrap_or(f64::NAN), 6)));
    } else {
        let correct = data.y.iter().zip(&pred).filter(|(a, b)| a == b).count();
        info.push(format!(
            "Accuracy = {}% ({correct}/{n}) (classification)",
            format_g(correct as f64 / n.max(1) as f64 * 100.0, 6)
        ));
    }
    Ok((out, info))
}

fn run(args: &[String]) -> Result<()> {
    let (mut prob, mut quiet, mut i) = (false, false, 0);
    while i < args.len() && args[i].starts_with('-') {
        match args[i].as_str() {
            "-q" => {
                quiet = true;
                i += 1;
            }
            "-b" => {
                prob = args.get(i + 1).with_context(|| USAGE.to_string())? != "0";
                i += 2;
            }
            other => bail!("Unknown option: {other}\n{USAGE}"),
        }
    }
    if args.len() != i + 3 {
        bail!("{USAGE}");
    }
    let (test, model_path, output) = (&args[i], &args[i + 1], &args[i + 2]);
    let model = load_model(model_path).with_context(|| format!("can't open model file {model_path}"))?;
    if prob && !model.has_probability() {
        bail!("Model does not support probabiliy estimates");
    }
    if !prob && model.has_probability() && !quiet {
        println!("Model supports probability estimates, but disabled in prediction.");
    }
    let text = std::fs::read_to_string(test).with_context(|| format!("can't open input file {test}"))?;
    let t0 = Instant::now();
    let (out, info) = predict(&text, test, &model, prob)?;
    std::fs::write(output, out).with_context(|| format!("can't open output file {output}"))?;
    if !quiet {
        for l in info {
            println!("{l}");
        }
        eprintln!("({} samples, {:.3} s)", text.lines().count(), t0.elapsed().as_secs_f64());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--smoke") {
        let text = "1 1:0.1 2:0.2\n1 1:0.2 2:0.1\n1 1:0.15 2:0.15\n1 1:0.05 2:0.1\n1 1:0.1 2:0.05\n\
                    2 1:0.9 2:0.8\n2 1:0.8 2:0.9\n2 1:0.85 2:0.85\n2 1:0.95 2:0.9\n2 1:0.9 2:0.95\n\
                    3 1:0.1 2:0.9\n3 1:0.2 2:0.8\n3 1:0.15 2:0.85\n3 1:0.05 2:0.9\n3 1:0.1 2:0.95\n";
        let d = parse_libsvm(text, "smoke", false)?;
        let model = SvmParams::c_svc().c(10.0).probability(true).train(&d.x, &d.y)?;
        let (out, info) = predict(text, "smoke", &model, false)?;
        anyhow::ensure!(info[0].starts_with("Accuracy = 100% (15/15)"), "{info:?}");
        anyhow::ensure!(out.lines().count() == 15);
        let (out, _) = predict(text, "smoke", &model, true)?;
        anyhow::ensure!(out.starts_with("labels 1 2 3\n"), "{out}");
        println!("smoke ok: {}", info[0]);
        return Ok(());
    }
    run(&args)
}
