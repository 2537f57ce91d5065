//! Export round trip: a sconce model's state dict — what `ParamStore::save_safetensors`
//! writes — has exactly the keys, shapes and dtypes of the PyTorch model's `state_dict()`
//! (timm, smp, the classic U-Net), which is what `load_state_dict(strict=True)` requires.
//! Fixture: `scripts/fixtures_export.py`; end to end on a real file: `scripts/check_export.py`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use candle_core::{DType, Device};
use sconce_backbones::{ModelOptions, create_model};
use sconce_layers::ParamStore;
use serde_json::Value;

type Layout = BTreeMap<String, (Vec<usize>, String)>;

fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::I64 => "int64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "other",
    }
}

fn compare(model: &str, ours: &Layout, theirs: &Layout) -> Result<()> {
    let missing: Vec<&String> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let unexpected: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    ensure!(missing.is_empty() && unexpected.is_empty(), "{model}: missing {missing:?}, unexpected {unexpected:?}");
    for (k, (shape, dtype)) in theirs {
        let (s, d) = &ours[k];
        ensure!(s == shape && d == dtype, "{model}: {k} is {s:?} {d}, PyTorch expects {shape:?} {dtype}");
    }
    Ok(())
}

#[test]
fn exported_state_dicts_load_strictly_into_the_pytorch_models() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/export_keys.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let models = fixture["models"].as_array().context("models")?;
    ensure!(models.len() >= 6);
    for m in models {
        let name = m["model"].as_str().context("model")?;
        let opts = ModelOptions {
            num_classes: m["num_classes"].as_u64().context("classes")? as usize,
            unet_base: m["unet_base"].as_u64().context("base")? as usize,
            ..Default::default()
        };
        let theirs: Layout = m["state_dict"]
            .as_array()
            .context("state_dict")?
            .iter()
            .map(|e| {
                let shape = e[1].as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|v| v as usize).collect());
                (
                    e[0].as_str().unwrap_or_default().to_string(),
                    (shape.unwrap_or_default(), e[2].as_str().unwrap_or_default().to_string()),
                )
            })
            .collect();
        let store = ParamStore::new();
        let _model = create_model(name, &store.builder(0, DType::F32, &Device::Cpu).skip_init(), &opts)?;
        let ours: Layout = store
            .state_dict()
            .into_iter()
            .map(|(k, t)| (k, (t.dims().to_vec(), torch_dtype(t.dtype()).to_string())))
            .collect();
        compare(name, &ours, &theirs)?;
        // The file itself (ResNet-18 only, to keep the test fast): keys, shapes and dtypes survive.
        if name == "resnet18" {
            let dir = std::env::temp_dir().join(format!("sconce-export-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let file = dir.join("model.safetensors");
            store.save_safetensors(&file)?;
            let back: Layout = candle_core::safetensors::load(&file, &Device::Cpu)?
                .into_iter()
                .map(|(k, t)| (k, (t.dims().to_vec(), torch_dtype(t.dtype()).to_string())))
                .collect();
            std::fs::remove_dir_all(&dir)?;
            compare("resnet18 (file)", &back, &theirs)?;
        }
    }
    Ok(())
}
