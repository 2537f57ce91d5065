//! The one error type of every sconce library crate, and the `Result` alias that carries it.

use std::fmt;
use std::path::PathBuf;

use crate::weights::LoadReport;

/// Everything that can go wrong in a sconce library call.
///
/// Each variant carries what was wrong and, where it helps, what to do about it, so the
/// message printed by `{}` is enough for a user to fix the call. The enum is
/// `#[non_exhaustive]`: new variants may be added without a breaking release.
///
/// Forward passes implement candle's traits and therefore return `candle_core::Result`; use
/// [`Error::into_candle`] there and `?` (via `From<candle_core::Error>`) everywhere else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or slice had the wrong rank, size or dtype.
    #[error("{op}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The operation or argument that checked the shape, e.g. `"conv2d input"`.
        op: String,
        /// What was expected, in words, e.g. `"rank 4 [N, C, H, W]"`.
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A configuration value or hyper-parameter is out of its valid range or inconsistent.
    #[error("invalid {param}: {reason}")]
    Config {
        /// The parameter's name, e.g. `"nu"` or `"UNet.decoder_channels"`.
        param: String,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
    /// User data is unusable: NaN/Inf, a label out of range, an empty dataset.
    #[error("bad data in {what}: {reason}")]
    Data {
        /// Which argument or file held the data, e.g. `"targets"`.
        what: String,
        /// What was found and what is expected instead.
        reason: String,
    },
    /// A weight file could not be applied to a model (missing, unexpected or mis-shaped keys).
    #[error("weights from {source_name}: {reason}{}", report_suffix(.report))]
    Weights {
        /// Where the weights came from (a path or a hub spec).
        source_name: String,
        /// A one-line summary of the problem.
        reason: String,
        /// The complete list of problems, when the failure came from matching keys.
        report: Option<Box<LoadReport>>,
    },
    /// A file's contents could not be parsed (corrupt or of another format).
    #[error("{}{}: {reason}", .source_name, line_suffix(*.line))]
    Parse {
        /// The file (or stream) being parsed.
        source_name: String,
        /// 1-based line number, where the format is line-oriented.
        line: Option<usize>,
        /// What was wrong.
        reason: String,
    },
    /// An iterative algorithm stopped at its iteration limit before meeting its tolerance.
    #[error("{algorithm} did not converge after {iterations} iterations: {hint}")]
    NotConverged {
        /// The algorithm, e.g. `"SMO (C-SVC)"`.
        algorithm: String,
        /// How many iterations ran.
        iterations: usize,
        /// What to change (raise the limit, scale the features, loosen the tolerance).
        hint: String,
    },
    /// A value that must be finite (loss, gradient, activation) became NaN or infinite.
    #[error("non-finite {what}: {hint}")]
    NonFinite {
        /// What became non-finite and where, e.g. `"loss at step 12"`.
        what: String,
        /// The likely cause and fix.
        hint: String,
    },
    /// The configured output head (activation, loss, targets) is wrong; see the findings.
    #[error("output head check failed:\n{}", bullet_list(.findings))]
    HeadCheck {
        /// One line per problem, each with its fix.
        findings: Vec<String>,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file that was being read or written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of every sconce library call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn report_suffix(report: &Option<Box<LoadReport>>) -> String {
    match report {
        Some(r) if !r.is_clean() => format!("\n{r}"),
        _ => String::new(),
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn bullet_list(items: &[String]) -> String {
    items.iter().map(|s| format!("  - {s}")).collect::<Vec<_>>().join("\n")
}

impl Error {
    /// A [`Error::Shape`] error.
    pub fn shape(op: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::Shape { op: op.into(), expected: expected.into(), got: got.to_vec() }
    }

    /// A [`Error::Config`] error.
    pub fn config(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { param: param.into(), reason: reason.into() }
    }

    /// A [`Error::Data`] error.
    pub fn data(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Data { what: what.into(), reason: reason.into() }
    }

    /// A [`Error::Parse`] error.
    pub fn parse(source_name: impl Into<String>, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Parse { source_name: source_name.into(), line, reason: reason.into() }
    }

    /// An [`Error::Io`] error for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Converts into a candle error (keeping the message) for use inside `Module::forward`
    /// and other candle-trait implementations, which must return `candle_core::Result`.
    pub fn into_candle(self) -> candle_core::Error {
        candle_core::Error::wrap(DisplayOnly(self.to_string()))
    }
}

/// Keeps only the rendered message: candle's `wrap` needs `Display + Send + Sync + 'static`.
struct DisplayOnly(String);

impl fmt::Display for DisplayOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_wrong() {
        let e = Error::shape("conv2d input", "rank 4 [N, C, H, W]", &[3, 32]);
        assert_eq!(e.to_string(), "conv2d input: expected rank 4 [N, C, H, W], got shape [3, 32]");
        let e = Error::config("nu", "must be in (0, 1], got 1.5");
        assert_eq!(e.to_string(), "invalid nu: must be in (0, 1], got 1.5");
        let e = Error::parse("train.svm", Some(12), "expected index:value, got `3-1.0`");
        assert_eq!(e.to_string(), "train.svm:12: expected index:value, got `3-1.0`");
        let e = Error::parse("model.bin", None, "truncated header");
        assert_eq!(e.to_string(), "model.bin: truncated header");
        let e = Error::HeadCheck { findings: vec!["a".into(), "b".into()] };
        assert_eq!(e.to_string(), "output head check failed:\n  - a\n  - b");
    }

    #[test]
    fn weights_error_lists_every_problem() {
        let mut report = LoadReport::default();
        report.missing.push("fc.weight".into());
        report.unexpected.push("classifier.bias".into());
        report.shape_mismatch.push(("conv1.weight".into(), vec![64, 3, 7, 7], vec![64, 1, 7, 7]));
        let e = Error::Weights {
            source_name: "resnet50.safetensors".into(),
            reason: "3 problems".into(),
            report: Some(Box::new(report)),
        };
        let msg = e.to_string();
        for needle in ["fc.weight", "classifier.bias", "conv1.weight", "[64, 3, 7, 7]", "[64, 1, 7, 7]"] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
    }

    #[test]
    fn candle_errors_convert_both_ways() {
        let candle_err = candle_core::Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
            .and_then(|t| t.reshape((4, 2)))
            .err();
        let Some(candle_err) = candle_err else { unreachable!("reshape of 6 elements into 8 must fail") };
        let ours: Error = candle_err.into();
        assert!(matches!(ours, Error::Candle(_)));
        let back = Error::data("targets", "contains NaN at index 3").into_candle();
        assert!(back.to_string().contains("contains NaN at index 3"));
    }

    #[test]
    fn io_error_names_the_path() {
        let e = Error::io("/no/such/file", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/no/such/file: "));
    }
}
