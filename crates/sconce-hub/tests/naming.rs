//! Key maps: a sconce model's state dict spelled as transformers' `microsoft/resnet-50` or as
//! torchvision's legacy DenseNet loads back strictly, every tensor in its place.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use sconce_backbones::{DenseNet, DenseNetConfig, ResNet, ResNetConfig};
use sconce_hub::{Naming, known_weights};
use sconce_layers::{LoadOptions, ParamStore};

fn to_transformers(k: &str) -> String {
    let k = k.replace("downsample.0.", "shortcut.convolution.").replace("downsample.1.", "shortcut.normalization.");
    let mut out = if let Some(rest) = k.strip_prefix("conv1.") {
        format!("resnet.embedder.embedder.convolution.{rest}")
    } else if let Some(rest) = k.strip_prefix("bn1.") {
        format!("resnet.embedder.embedder.normalization.{rest}")
    } else if let Some(rest) = k.strip_prefix("fc.") {
        format!("classifier.1.{rest}")
    } else {
        k.clone()
    };
    for s in 1..=4 {
        if let Some(rest) = out.strip_prefix(&format!("layer{s}.")) {
            out = format!("resnet.encoder.stages.{}.layers.{rest}", s - 1);
        }
    }
    for j in 1..=3 {
        out = out.replace(&format!(".conv{j}."), &format!(".layer.{}.convolution.", j - 1));
        out = out.replace(&format!(".bn{j}."), &format!(".layer.{}.normalization.", j - 1));
    }
    out
}

fn check_round_trip(store: &ParamStore, rename: impl Fn(&str) -> String, naming: Naming) -> Result<()> {
    // Distinct values per tensor, so a swapped pair of keys would be caught.
    let mut file = Vec::new();
    for (i, (k, t)) in store.state_dict().into_iter().enumerate() {
        let v = if t.dtype() == DType::I64 { t } else { (t.ones_like()? * (i as f64 + 1.0))? };
        file.push((rename(&k), k, v));
    }
    let renamed: Vec<(String, Tensor)> = file.iter().map(|(r, _, t)| (r.clone(), t.clone())).collect();
    assert!(renamed.iter().any(|(r, _)| !store.keys().contains(r)), "the test renamed nothing");
    let opts = naming.rules().into_iter().fold(LoadOptions::strict(), LoadOptions::rule);
    let report = store.load_tensors(renamed, &opts, "renamed")?;
    assert!(report.is_clean(), "{report}");
    for (_, k, want) in &file {
        let got = store.get(k).context("key")?.tensor();
        let diff = (got.to_dtype(DType::F64)? - want.to_dtype(DType::F64)?)?.abs()?.flatten_all()?.max(0)?;
        assert_eq!(diff.to_scalar::<f64>()?, 0.0, "{k}");
    }
    Ok(())
}

#[test]
fn transformers_resnet_names_map_to_torchvision_names() -> Result<()> {
    let store = ParamStore::new();
    let cfg = ResNetConfig::resnet50().widths(8, [4, 8, 8, 8]).num_classes(7);
    ResNet::new(&store.builder(0, DType::F32, &Device::Cpu).skip_init(), &cfg)?;
    assert_eq!(
        to_transformers("layer2.0.downsample.1.running_var"),
        "resnet.encoder.stages.1.layers.0.shortcut.normalization.running_var"
    );
    assert_eq!(to_transformers("layer4.2.conv3.weight"), "resnet.encoder.stages.3.layers.2.layer.2.convolution.weight");
    check_round_trip(&store, to_transformers, Naming::Transformers)?;
    assert_eq!(known_weights("microsoft/resnet-50").map(|k| k.naming), Some(Naming::Transformers));
    Ok(())
}

#[test]
fn legacy_densenet_names_map_to_current_names() -> Result<()> {
    let store = ParamStore::new();
    let cfg = DenseNetConfig {
        growth_rate: 4,
        block_config: [2, 2, 2, 2],
        num_init_features: 8,
        bn_size: 2,
        in_channels: 3,
        num_classes: 3,
    };
    DenseNet::new(&store.builder(0, DType::F32, &Device::Cpu).skip_init(), &cfg)?;
    let legacy = |k: &str| {
        ["norm1", "norm2", "conv1", "conv2"]
            .iter()
            .fold(k.to_string(), |k, m| k.replace(&format!(".{m}."), &format!(".{}.{}.", &m[..4], &m[4..])))
    };
    assert_eq!(
        legacy("features.denseblock1.denselayer2.norm1.weight"),
        "features.denseblock1.denselayer2.norm.1.weight"
    );
    check_round_trip(&store, legacy, Naming::TorchvisionLegacyDenseNet)?;
    // Every known checkpoint names an architecture sconce builds.
    for k in sconce_hub::KNOWN_WEIGHTS {
        assert!(sconce_backbones::MODEL_NAMES.contains(&k.arch), "{}", k.repo);
    }
    Ok(())
}
