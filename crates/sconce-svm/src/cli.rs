//! LIBSVM's `svm-train` option syntax (`-s 0 -t 2 -c 10 -w1 2 …`) parsed into [`SvmParams`],
//! so that option strings from LIBSVM scripts, papers and `grid.py` work unchanged.

use sconce_core::{Error, Result};

use crate::kernel::{Gamma, KernelType};
use crate::params::{SvmParams, SvmType};

/// What an `svm-train` command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// The parameters (γ defaults to LIBSVM's `1/num_features`).
    pub params: SvmParams,
    /// `-v n`: n-fold cross-validation instead of training.
    pub folds: Option<usize>,
    /// `-q`.
    pub quiet: bool,
    /// The arguments after the options (training file, model file).
    pub files: Vec<String>,
}

/// Parses `svm-train`'s options: `-s -t -d -g -r -c -n -p -m -e -h -b -wi -v -q` with
/// LIBSVM's defaults, plus `-t 5` (chi²), `-t 6` (intersection), `-g scale` and `-f 1`
/// (single-precision kernel columns, [`SvmParams::single_precision`]).
///
/// ```
/// use sconce_svm::{KernelType, SvmType, parse_svm_train_args};
/// let o = parse_svm_train_args(&["-s", "1", "-t", "0", "-n", "0.3", "-w2", "4", "data.txt"]).unwrap();
/// assert_eq!((o.params.svm_type, o.params.kernel, o.params.nu), (SvmType::NuSvc, KernelType::Linear, 0.3));
/// assert_eq!(o.params.class_weights, vec![(2, 4.0)]);
/// assert_eq!(o.files, vec!["data.txt".to_string()]);
/// ```
///
/// # Errors
/// [`Error::Config`] naming the bad option.
pub fn parse_svm_train_args<S: AsRef<str>>(args: &[S]) -> Result<TrainOptions> {
    let mut p = SvmParams::c_svc().gamma(Gamma::InvFeatures);
    let (mut folds, mut quiet) = (None, false);
    let mut i = 0;
    let bad = |flag: &str, why: String| Error::config(format!("-{flag}"), why);
    while i < args.len() && args[i].as_ref().starts_with('-') && args[i].as_ref().len() > 1 {
        let flag = &args[i].as_ref()[1..];
        if flag == "q" {
            quiet = true;
            i += 1;
            continue;
        }
        let v = args.get(i + 1).map(AsRef::as_ref).ok_or_else(|| bad(flag, "needs a value".into()))?;
        let num = || v.parse::<f64>().map_err(|_| bad(flag, format!("`{v}` is not a number")));
        let int = || v.parse::<i64>().map_err(|_| bad(flag, format!("`{v}` is not an integer")));
        match flag {
            "s" => {
                p.svm_type =
                    SvmType::from_code(int()?).ok_or_else(|| bad(flag, format!("unknown svm type {v} (0–4)")))?
            }
            "t" => {
                p.kernel =
                    KernelType::from_code(int()?).ok_or_else(|| bad(flag, format!("unknown kernel type {v} (0–6)")))?
            }
            "d" => p.degree = i32::try_from(int()?).map_err(|_| bad(flag, format!("{v} is out of range")))?,
            "g" => p.gamma = if v == "scale" { Gamma::Scale } else { Gamma::Value(num()?) },
            "r" => p.coef0 = num()?,
            "c" => p.c = num()?,
            "n" => p.nu = num()?,
            "p" => p.p = num()?,
            "m" => p.cache_mb = num()?,
            "e" => p.eps = num()?,
            "h" => p.shrinking = int()? != 0,
            "b" => p.probability = int()? != 0,
            "f" => p.single_precision = int()? != 0,
            "v" => {
                let n = int()?;
                if n < 2 {
                    return Err(bad(flag, "n-fold cross validation: n must >= 2".into()));
                }
                folds = Some(n as usize);
            }
            f if f.starts_with('w') => {
                let label: i32 =
                    f[1..].parse().map_err(|_| bad(f, "the class label after -w must be an integer".into()))?;
                p.class_weights.push((label, num()?));
            }
            _ => return Err(bad(flag, "unknown option".into())),
        }
        i += 2;
    }
    Ok(TrainOptions { params: p, folds, quiet, files: args[i..].iter().map(|s| s.as_ref().to_string()).collect() })
}
