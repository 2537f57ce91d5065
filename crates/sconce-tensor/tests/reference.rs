//! Pooling, resizing and stable math against PyTorch: values and gradients on the shapes
//! ResNet50, DenseNet121 and a U-Net meet at 250×250 (fixtures from `scripts/fixtures_tensor.py`).

use anyhow::{Context, Result, bail};
use sconce_tensor::{
    AvgPool2d, Interpolation, MaxPool2d, adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, log_sigmoid,
    log_softmax, logsumexp, max_pool2d, resize, sigmoid, softmax, softplus,
};
use sconce_testutil::{check_case, load, pair};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[test]
fn pooling_matches_pytorch() -> Result<()> {
    let fx = load(FIXTURES, "pool")?;
    assert!(fx.cases.len() >= 10);
    for case in &fx.cases {
        match case["op"].as_str() {
            Some("max_pool2d") => {
                let cfg = MaxPool2d {
                    kernel: pair(&case["kernel"])?,
                    stride: pair(&case["stride"])?,
                    padding: pair(&case["padding"])?,
                    dilation: pair(&case["dilation"])?,
                    ceil_mode: case["ceil_mode"].as_bool().context("ceil_mode")?,
                };
                check_case(&fx, case, |x| Ok(max_pool2d(x, &cfg)?))?;
            }
            Some("avg_pool2d") => {
                let cfg = AvgPool2d {
                    kernel: pair(&case["kernel"])?,
                    stride: pair(&case["stride"])?,
                    padding: pair(&case["padding"])?,
                    ceil_mode: case["ceil_mode"].as_bool().context("ceil_mode")?,
                    count_include_pad: case["count_include_pad"].as_bool().context("count_include_pad")?,
                    divisor_override: case["divisor_override"].as_u64().map(|d| d as usize),
                };
                check_case(&fx, case, |x| Ok(avg_pool2d(x, &cfg)?))?;
            }
            Some("adaptive_avg_pool2d") => {
                let out = pair(&case["output"])?;
                check_case(&fx, case, |x| Ok(adaptive_avg_pool2d(x, out)?))?;
            }
            Some("adaptive_max_pool2d") => {
                let out = pair(&case["output"])?;
                check_case(&fx, case, |x| Ok(adaptive_max_pool2d(x, out)?))?;
            }
            other => bail!("unknown op {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn resizing_matches_pytorch() -> Result<()> {
    let fx = load(FIXTURES, "resize")?;
    assert!(fx.cases.len() >= 8);
    for case in &fx.cases {
        let size = pair(&case["size"])?;
        let mode = match (case["mode"].as_str(), case["align_corners"].as_bool()) {
            (Some("nearest"), _) => Interpolation::Nearest,
            (Some("nearest-exact"), _) => Interpolation::NearestExact,
            (Some("bilinear"), Some(a)) => Interpolation::Bilinear { align_corners: a },
            other => bail!("unknown mode {other:?}"),
        };
        check_case(&fx, case, |x| Ok(resize(x, size, mode)?))?;
    }
    Ok(())
}

#[test]
fn stable_math_matches_pytorch_at_extreme_inputs() -> Result<()> {
    let fx = load(FIXTURES, "stable")?;
    assert!(fx.cases.len() >= 20);
    for case in &fx.cases {
        let axis = case["axis"].as_u64().unwrap_or(0) as usize;
        match case["op"].as_str() {
            Some("sigmoid") => check_case(&fx, case, |x| Ok(sigmoid(x)?))?,
            Some("softplus") => check_case(&fx, case, |x| Ok(softplus(x)?))?,
            Some("log_sigmoid") => check_case(&fx, case, |x| Ok(log_sigmoid(x)?))?,
            Some("logsumexp") => check_case(&fx, case, |x| Ok(logsumexp(x, axis, false)?))?,
            Some("log_softmax") => check_case(&fx, case, |x| Ok(log_softmax(x, axis)?))?,
            Some("softmax") => check_case(&fx, case, |x| Ok(softmax(x, axis)?))?,
            other => bail!("unknown op {other:?}"),
        }
    }
    Ok(())
}
