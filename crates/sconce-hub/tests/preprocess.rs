//! The eval transform equals timm's (PIL resize with antialiasing, centre crop, normalise) on
//! fixtures from `scripts/fixtures_hub.py`.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use sconce_hub::{PretrainedCfg, eval_transform};

#[test]
fn eval_transform_matches_timm_and_pil() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/preprocess.json"))?)?;
    let tensors = candle_core::safetensors::load(format!("{dir}/preprocess.safetensors"), &Device::Cpu)?;
    for c in &cases {
        let name = c["name"].as_str().context("name")?;
        let img = tensors.get(&format!("{name}.image")).context("image")?;
        let (h, w, _) = img.dims3()?;
        let rgb: Vec<u8> = img.flatten_all()?.to_vec1()?;
        let size = c["size"].as_u64().context("size")? as usize;
        let json = format!(
            r#"{{"pretrained_cfg": {{"input_size": [3, {size}, {size}], "interpolation": {}, "crop_pct": {}}}}}"#,
            c["interpolation"], c["crop_pct"]
        );
        let cfg = PretrainedCfg::from_json(&json, "case")?;
        let out = eval_transform(&rgb, h, w, &cfg.pretrained_cfg, true)?;
        let got = Tensor::from_vec(out, (3, size, size), &Device::Cpu)?;
        let want = tensors.get(&format!("{name}.out")).context("out")?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // Exact up to f32 normalisation rounding (one 8-bit level would be 0.017).
        assert!(diff < 1e-5, "{name}: max difference {diff}");
    }
    Ok(())
}

#[test]
fn bad_images_are_errors() -> Result<()> {
    let cfg = PretrainedCfg::from_json("{}", "c")?;
    assert!(eval_transform(&[0u8; 10], 2, 2, &cfg.pretrained_cfg, true).is_err());
    assert!(eval_transform(&[0u8; 12], 2, 2, &cfg.pretrained_cfg, false).is_err());
    let mut bad = cfg.pretrained_cfg.clone();
    bad.interpolation = "lanczos7".into();
    assert!(eval_transform(&[0u8; 3 * 300 * 300], 300, 300, &bad, true).is_err());
    let ok = eval_transform(&[128u8; 3 * 224 * 224], 224, 224, &cfg.pretrained_cfg, false)?;
    assert!((ok[0] - (128.0 / 255.0 - 0.485) / 0.229).abs() < 1e-6);
    Ok(())
}
