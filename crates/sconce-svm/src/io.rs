//! LIBSVM's text formats: the sparse data format (`label index:value …`) and the model file
//! (`svm_save_model` / `svm_load_model`), byte-compatible, plus C's `%g` number formatting.

use std::fmt::Write as _;
use std::path::Path;

use sconce_core::{Error, Result};

use crate::features::Features;
use crate::kernel::{Kernel, KernelType};
use crate::model::SvmModel;
use crate::params::SvmType;

/// C's `printf("%.{prec}g", x)` (the "C" locale), as LIBSVM writes numbers.
///
/// ```
/// use sconce_svm::format_g;
/// assert_eq!(format_g(0.1, 17), "0.10000000000000001");
/// assert_eq!(format_g(1e-5, 6), "1e-05");
/// assert_eq!(format_g(123456789.0, 8), "1.2345679e+08");
/// assert_eq!(format_g(-0.25, 6), "-0.25");
/// ```
pub fn format_g(x: f64, prec: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf".into() } else { "inf".into() };
    }
    let p = prec.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e_repr = format!("{:.*e}", p - 1, x);
    let (mant, exp) = e_repr.split_once('e').unwrap_or((&e_repr, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s.to_string() }
    };
    if exp < -4 || exp >= p as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mant), exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip(&format!("{x:.decimals$}"))
    }
}

/// Samples and targets read from a LIBSVM data file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The samples, as sparse rows with the file's indices.
    pub x: Features,
    /// The labels or targets.
    pub y: Vec<f64>,
}

fn parse_err(source: &str, line: usize, why: impl Into<String>) -> Error {
    Error::parse(source, Some(line), why)
}

/// Parses LIBSVM's data format: one sample per line, `label index:value …`, indices
/// ascending integers ≥ 1 (≥ 0 when `allow_index_zero`, for precomputed kernels' `0:id`).
/// Errors name the line and what was wrong; NaN/Inf values are refused.
///
/// ```
/// use sconce_svm::parse_libsvm;
/// let d = parse_libsvm("+1 1:0.5 3:-1\n-1 2:0.25\n", "inline", false).unwrap();
/// assert_eq!(d.y, vec![1.0, -1.0]);
/// assert!(parse_libsvm("1 3:1 2:1\n", "inline", false).unwrap_err().to_string().contains("inline:1"));
/// ```
///
/// # Errors
/// [`Error::Parse`] with the 1-based line number.
pub fn parse_libsvm(text: &str, source: &str, allow_index_zero: bool) -> Result<Dataset> {
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    let mut values = Vec::new();
    let mut y = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let n = if text.ends_with('\n') { lines.len() - 1 } else { lines.len() };
    for (ln, raw) in lines[..n].iter().enumerate() {
        let line = ln + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let mut tokens = raw.split([' ', '\t']).filter(|t| !t.is_empty());
        let label = tokens.next().ok_or_else(|| parse_err(source, line, "empty line: every line needs a label"))?;
        let yv: f64 = label.parse().map_err(|_| parse_err(source, line, format!("label `{label}` is not a number")))?;
        if !yv.is_finite() {
            return Err(parse_err(source, line, format!("label `{label}` is not finite")));
        }
        let mut last: i64 = if allow_index_zero { -1 } else { 0 };
        for tok in tokens {
            let (i, v) =
                tok.split_once(':').ok_or_else(|| parse_err(source, line, format!("`{tok}` is not index:value")))?;
            let idx: i64 = i.parse().map_err(|_| parse_err(source, line, format!("index `{i}` is not an integer")))?;
            if idx <= last {
                return Err(parse_err(
                    source,
                    line,
                    if idx == 0 && !allow_index_zero {
                        "index 0: feature indices start at 1 (0 is only for a precomputed kernel's sample id)"
                            .to_string()
                    } else {
                        format!("index {idx} after {last}: indices must be strictly ascending")
                    },
                ));
            }
            if idx > i64::from(u32::MAX) {
                return Err(parse_err(source, line, format!("index {idx} is too large")));
            }
            let val: f64 = v
                .trim()
                .parse()
                .map_err(|_| parse_err(source, line, format!("value `{v}` of index {idx} is not a number")))?;
            if !val.is_finite() {
                return Err(parse_err(
                    source,
                    line,
                    format!("value `{v}` of index {idx} is not finite; impute missing values first"),
                ));
            }
            last = idx;
            indices.push(idx as u32);
            values.push(val);
        }
        indptr.push(indices.len());
        y.push(yv);
    }
    let x = Features::sparse(indptr, indices, values).map_err(|e| Error::parse(source, None, e.to_string()))?;
    Ok(Dataset { x, y })
}

/// Reads a LIBSVM data file.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Parse`] with the line number.
pub fn read_libsvm(path: impl AsRef<Path>, allow_index_zero: bool) -> Result<Dataset> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_libsvm(&text, &path.display().to_string(), allow_index_zero)
}

/// Writes samples in LIBSVM's data format: labels with `%.17g` and values with `%.17g`
/// (exact round trip); dense zeros are omitted.
pub fn format_libsvm(x: &Features, y: &[f64]) -> String {
    let mut s = String::new();
    for (r, &label) in y.iter().enumerate().take(x.rows()) {
        s.push_str(&format_g(label, 17));
        for (i, v) in x.row(r).entries() {
            if v != 0.0 || matches!(x, Features::Sparse { .. }) {
                let _ = write!(s, " {i}:{}", format_g(v, 17));
            }
        }
        s.push('\n');
    }
    s
}

/// Writes a model in LIBSVM's model-file format, byte for byte as `svm_save_model`.
pub fn format_model(m: &SvmModel) -> String {
    let mut s = String::new();
    let k = m.kernel;
    let _ = writeln!(s, "svm_type {}", m.svm_type.name());
    let _ = writeln!(s, "kernel_type {}", k.kind.name());
    if k.kind == KernelType::Poly {
        let _ = writeln!(s, "degree {}", k.degree);
    }
    if k.kind.uses_gamma() {
        let _ = writeln!(s, "gamma {}", format_g(k.gamma, 17));
    }
    if k.kind.uses_coef0() {
        let _ = writeln!(s, "coef0 {}", format_g(k.coef0, 17));
    }
    let _ = writeln!(s, "nr_class {}", m.nr_class);
    let _ = writeln!(s, "total_sv {}", m.sv.rows());
    let line = |s: &mut String, name: &str, v: &[f64]| {
        s.push_str(name);
        for x in v {
            s.push(' ');
            s.push_str(&format_g(*x, 17));
        }
        s.push('\n');
    };
    line(&mut s, "rho", &m.rho);
    if !m.labels.is_empty() {
        s.push_str("label");
        for l in &m.labels {
            let _ = write!(s, " {l}");
        }
        s.push('\n');
    }
    if let Some(a) = &m.prob_a {
        line(&mut s, "probA", a);
    }
    if let Some(b) = &m.prob_b {
        line(&mut s, "probB", b);
    }
    if let Some(d) = &m.prob_density_marks {
        line(&mut s, "prob_density_marks", d);
    }
    if !m.n_sv.is_empty() {
        s.push_str("nr_sv");
        for n in &m.n_sv {
            let _ = write!(s, " {n}");
        }
        s.push('\n');
    }
    s.push_str("SV\n");
    for i in 0..m.sv.rows() {
        for c in &m.sv_coef {
            s.push_str(&format_g(c[i], 17));
            s.push(' ');
        }
        let row = m.sv.row(i);
        if k.kind == KernelType::Precomputed {
            let _ = write!(s, "0:{} ", row.get(0) as i64);
        } else {
            for (idx, v) in row.entries() {
                if v != 0.0 || matches!(m.sv, Features::Sparse { .. }) {
                    let _ = write!(s, "{idx}:{} ", format_g(v, 8));
                }
            }
        }
        s.push('\n');
    }
    s
}

/// Writes a model file (atomically: a temporary file renamed into place).
///
/// # Errors
/// [`Error::Io`].
pub fn save_model(m: &SvmModel, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tmp = path.with_extension("tmp-sconce");
    std::fs::write(&tmp, format_model(m)).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a model file.
///
/// # Errors
/// [`Error::Io`]; [`Error::Parse`] naming the line for anything malformed.
pub fn load_model(path: impl AsRef<Path>) -> Result<SvmModel> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_model(&text, &path.display().to_string())
}

/// Parses a LIBSVM model file (also sconce's `chi2`/`intersection` kernels).
///
/// # Errors
/// [`Error::Parse`] naming the line for anything malformed or inconsistent.
pub fn parse_model(text: &str, source: &str) -> Result<SvmModel> {
    let mut lines = text.split('\n').enumerate();
    let mut svm_type = None;
    let mut kind = None;
    let (mut degree, mut gamma, mut coef0) = (3i32, 0.0, 0.0);
    let (mut nr_class, mut total_sv) = (None::<usize>, None::<usize>);
    let (mut rho, mut labels, mut prob_a, mut prob_b, mut marks, mut n_sv) =
        (None, Vec::new(), None, None, None, Vec::new());
    let mut found_sv = false;
    let nums = |line: usize, toks: &[&str], n: usize, what: &str| -> Result<Vec<f64>> {
        if toks.len() != n {
            return Err(parse_err(source, line, format!("{what} needs {n} values, found {}", toks.len())));
        }
        toks.iter()
            .map(|t| match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(parse_err(source, line, format!("{what}: `{t}` is not a finite number"))),
            })
            .collect()
    };
    let ints = |line: usize, toks: &[&str], n: usize, what: &str| -> Result<Vec<i64>> {
        if toks.len() != n {
            return Err(parse_err(source, line, format!("{what} needs {n} values, found {}", toks.len())));
        }
        toks.iter()
            .map(|t| t.parse::<i64>().map_err(|_| parse_err(source, line, format!("{what}: `{t}` is not an integer"))))
            .collect()
    };
    let pairs = |nc: Option<usize>, line: usize| -> Result<usize> {
        nc.map(|k| k * (k - 1) / 2).ok_or_else(|| parse_err(source, line, "nr_class must come before this line"))
    };
    for (i, raw) in lines.by_ref() {
        let line = i + 1;
        let toks: Vec<&str> = raw.split_whitespace().collect();
        let Some((&key, rest)) = toks.split_first() else {
            return Err(parse_err(source, line, "empty header line"));
        };
        match key {
            "svm_type" => {
                svm_type = Some(
                    rest.first()
                        .and_then(|t| SvmType::from_name(t))
                        .ok_or_else(|| parse_err(source, line, "unknown svm_type"))?,
                );
            }
            "kernel_type" => {
                kind = Some(
                    rest.first()
                        .and_then(|t| KernelType::from_name(t))
                        .ok_or_else(|| parse_err(source, line, "unknown kernel_type"))?,
                );
            }
            "degree" => degree = ints(line, rest, 1, "degree")?[0] as i32,
            "gamma" => gamma = nums(line, rest, 1, "gamma")?[0],
            "coef0" => coef0 = nums(line, rest, 1, "coef0")?[0],
            "nr_class" => {
                let k = ints(line, rest, 1, "nr_class")?[0];
                // The rho line holds k(k−1)/2 numbers: a k that the file cannot hold is corrupt.
                if !(2..=1 << 20).contains(&k) || (k as usize) * (k as usize - 1) / 2 > text.len() {
                    return Err(parse_err(source, line, format!("nr_class {k}: must be ≥ 2 and fit the file")));
                }
                nr_class = Some(k as usize);
            }
            "total_sv" => {
                let t = ints(line, rest, 1, "total_sv")?[0];
                if t < 0 || t as usize > text.len() {
                    return Err(parse_err(source, line, format!("total_sv {t} is out of range")));
                }
                total_sv = Some(t as usize);
            }
            "rho" => rho = Some(nums(line, rest, pairs(nr_class, line)?, "rho")?),
            "label" => {
                let k = nr_class.ok_or_else(|| parse_err(source, line, "nr_class must come before label"))?;
                labels = ints(line, rest, k, "label")?
                    .into_iter()
                    .map(|v| i32::try_from(v).map_err(|_| parse_err(source, line, "label out of range")))
                    .collect::<Result<_>>()?;
            }
            "probA" => prob_a = Some(nums(line, rest, pairs(nr_class, line)?, "probA")?),
            "probB" => prob_b = Some(nums(line, rest, pairs(nr_class, line)?, "probB")?),
            "prob_density_marks" => marks = Some(nums(line, rest, 10, "prob_density_marks")?),
            "nr_sv" => {
                let k = nr_class.ok_or_else(|| parse_err(source, line, "nr_class must come before nr_sv"))?;
                n_sv = ints(line, rest, k, "nr_sv")?
                    .into_iter()
                    .map(|v| usize::try_from(v).map_err(|_| parse_err(source, line, "nr_sv must be ≥ 0")))
                    .collect::<Result<_>>()?;
            }
            "SV" => {
                found_sv = true;
                break;
            }
            other => return Err(parse_err(source, line, format!("unknown text in model file: [{other}]"))),
        }
    }
    if !found_sv {
        return Err(Error::parse(source, None, "no `SV` line: the file is truncated or not a LIBSVM model"));
    }
    let svm_type = svm_type.ok_or_else(|| Error::parse(source, None, "missing svm_type"))?;
    let kind = kind.ok_or_else(|| Error::parse(source, None, "missing kernel_type"))?;
    let nr_class = nr_class.ok_or_else(|| Error::parse(source, None, "missing nr_class"))?;
    let total = total_sv.ok_or_else(|| Error::parse(source, None, "missing total_sv"))?;
    let rho = rho.ok_or_else(|| Error::parse(source, None, "missing rho"))?;
    let m = nr_class - 1;
    let mut sv_coef = vec![Vec::new(); m];
    let mut indptr = vec![0usize];
    let (mut indices, mut values) = (Vec::new(), Vec::new());
    let mut read = 0;
    for (i, raw) in lines {
        let line = i + 1;
        if read == total {
            if raw.trim().is_empty() {
                continue;
            }
            return Err(parse_err(source, line, format!("more support vectors than total_sv = {total}")));
        }
        let mut toks = raw.split([' ', '\t']).filter(|t| !t.is_empty());
        for c in sv_coef.iter_mut() {
            let t = toks
                .next()
                .ok_or_else(|| parse_err(source, line, format!("a support vector line needs {m} coefficients")))?;
            let v: f64 =
                t.parse().map_err(|_| parse_err(source, line, format!("coefficient `{t}` is not a number")))?;
            if !v.is_finite() {
                return Err(parse_err(source, line, format!("coefficient `{t}` is not finite")));
            }
            c.push(v);
        }
        let mut last: i64 = -1;
        for tok in toks {
            let (a, b) =
                tok.split_once(':').ok_or_else(|| parse_err(source, line, format!("`{tok}` is not index:value")))?;
            let idx: i64 = a.parse().map_err(|_| parse_err(source, line, format!("index `{a}` is not an integer")))?;
            if idx <= last || idx > i64::from(u32::MAX) {
                return Err(parse_err(source, line, format!("index {idx}: indices must be ascending and ≥ 0")));
            }
            let v: f64 = b.parse().map_err(|_| parse_err(source, line, format!("value `{b}` is not a number")))?;
            if !v.is_finite() {
                return Err(parse_err(source, line, format!("value `{b}` is not finite")));
            }
            last = idx;
            indices.push(idx as u32);
            values.push(v);
        }
        indptr.push(indices.len());
        read += 1;
    }
    if read != total {
        return Err(Error::parse(
            source,
            None,
            format!("{read} support vectors but total_sv = {total}: the file is truncated"),
        ));
    }
    let sv = Features::sparse(indptr, indices, values).map_err(|e| Error::parse(source, None, e.to_string()))?;
    let n_features = sv.max_index();
    let model = SvmModel {
        svm_type,
        kernel: Kernel { kind, degree, gamma, coef0 },
        nr_class,
        labels,
        n_sv,
        sv,
        sv_coef,
        rho,
        prob_a,
        prob_b,
        prob_density_marks: marks,
        sv_indices: Vec::new(),
        info: Vec::new(),
        n_features,
        predict_from_probability: false,
    };
    model.check_layout().map_err(|e| Error::parse(source, None, e.to_string()))?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // LIBSVM's printed values, digit for digit
    fn format_g_matches_c() {
        // Values checked against glibc printf.
        let cases: &[(f64, usize, &str)] = &[
            (0.42446205176771579, 17, "0.42446205176771579"),
            (-1.6841032239202511, 17, "-1.6841032239202511"),
            (0.076923076923076927, 17, "0.076923076923076927"),
            (1.0, 17, "1"),
            (100.0, 6, "100"),
            (1e6, 6, "1e+06"),
            (123456.0, 6, "123456"),
            (1234567.0, 6, "1.23457e+06"),
            (0.0001, 6, "0.0001"),
            (0.00001234, 6, "1.234e-05"),
            (83.33333333, 6, "83.3333"),
            (-0.5, 8, "-0.5"),
            (0.70833333, 8, "0.70833333"),
            (1e-300, 17, "1e-300"),
            (0.1, 17, "0.10000000000000001"),
            (9.9999999e-5, 8, "9.9999999e-05"),
            (0.99999999999, 6, "1"),
            (999999.5, 6, "1e+06"),
        ];
        for &(x, p, want) in cases {
            assert_eq!(format_g(x, p), want, "{x} %.{p}g");
        }
    }

    #[test]
    fn data_errors_name_the_line() {
        for (text, needle) in [
            ("1 1:1\n\n", "t:2:"),
            ("1 1:x\n", "not a number"),
            ("1 0:1\n", "index 0"),
            ("1 2:1 2:3\n", "ascending"),
            ("a 1:1\n", "label"),
            ("1 1:nan\n", "finite"),
            ("1 1\n", "index:value"),
            ("1 -3:1\n", "ascending"),
        ] {
            let e = parse_libsvm(text, "t", false).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        assert!(parse_libsvm("1 0:1 1:2\n", "t", true).is_ok());
        let model =
            "svm_type c_svc\nkernel_type rbf\ngamma nan\nnr_class 2\ntotal_sv 0\nrho 0\nlabel 1 -1\nnr_sv 0 0\nSV\n";
        let e = parse_model(model, "m").unwrap_err().to_string();
        assert!(e.contains("gamma") && e.contains("finite"), "{e}");
        let d = parse_libsvm("2 1:1.5\t3:-2\r\n-1\n", "t", false).unwrap();
        assert_eq!(d.y, vec![2.0, -1.0]);
        assert_eq!(d.x.row(1).entries(), vec![]);
    }
}
