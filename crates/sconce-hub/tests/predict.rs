//! The predict path end to end against timm: checkpoint files in timm's names, in the legacy
//! torchvision DenseNet spelling and without BatchNorm counters, in a fake hub cache (with and
//! without `config.json`) or as a plain file. `Resolver::pretrained` must find each one's
//! preprocessing, architecture, classes and key spelling, and the loaded model's logits and
//! top-5 on a deterministic image must equal those of timm loading the same file
//! (fixtures from `scripts/fixtures_predict.py`). Never touches the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use sconce_backbones::{ModelOptions, create_model};
use sconce_core::Error;
use sconce_hub::{HubCache, Naming, Resolver, WeightsSpec, eval_transform, safetensors_header};
use sconce_layers::{ParamStore, save_safetensors_atomic};
use sconce_testutil::{assert_close, pattern_tensor};
use serde_json::Value;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// The script's classifier scale (spreads the untrained networks' logits; a power of two).
const HEAD_SCALE: f64 = 16.0;

/// `scripts/fixtures_hub.py`'s test image, `h × w × 3` bytes.
fn image(h: usize, w: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            v.push(((x * 7 + y * 3) % 256) as u8);
            v.push(((x * x + 2 * y * y) % 256) as u8);
            v.push((((x / 4 + y / 5) % 2) * 200 + 20) as u8);
        }
    }
    v
}

/// `denselayerN.norm1.weight` → `denselayerN.norm.1.weight` (torchvision's pre-2018 spelling).
fn legacy_name(key: &str) -> String {
    if !key.contains("denselayer") {
        return key.to_string();
    }
    ["norm", "conv"]
        .iter()
        .fold(key.to_string(), |k, m| (1..=2).fold(k, |k, i| k.replace(&format!(".{m}{i}."), &format!(".{m}.{i}."))))
}

/// The fixtures' weight pattern for `arch` (keyed by timm's names; the classifier's times
/// [`HEAD_SCALE`]), spelled as `legacy` says, with or without BatchNorm counters.
fn checkpoint(arch: &str, legacy: bool, counters: bool) -> Result<HashMap<String, Tensor>> {
    let store = ParamStore::new();
    create_model(arch, &store.builder(0, DType::F32, &Device::Cpu).skip_init(), &ModelOptions::default())?;
    let mut map = HashMap::new();
    for (k, e) in store.entries() {
        if k.ends_with("num_batches_tracked") {
            if counters {
                map.insert(k, Tensor::new(0i64, &Device::Cpu)?);
            }
            continue;
        }
        let name = if legacy { legacy_name(&k) } else { k.clone() };
        let t = pattern_tensor(&k, e.tensor().dims())?;
        let t = if k == "fc.weight" || k == "classifier.weight" { (t * HEAD_SCALE)? } else { t };
        map.insert(name, t);
    }
    Ok(map)
}

/// `root/models--ORG--NAME/{refs/main, snapshots/COMMIT/model.safetensors[, config.json]}`.
fn cache_repo(root: &Path, repo: &str, weights: &HashMap<String, Tensor>, config: Option<&Value>) -> Result<()> {
    let dir = root.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(dir.join("refs"))?;
    std::fs::write(dir.join("refs/main"), COMMIT)?;
    let snap = dir.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap)?;
    save_safetensors_atomic(weights, &snap.join("model.safetensors"))?;
    if let Some(c) = config {
        std::fs::write(snap.join("config.json"), c.to_string())?;
    }
    Ok(())
}

fn tmp(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sconce-hub-predict-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Resolves `spec`, checks what was found against the case, loads, preprocesses the image
/// and compares logits and top-5 with timm's.
fn predict_case(fx: &sconce_testutil::Fixture, case: &Value, resolver: &Resolver, spec: &WeightsSpec) -> Result<()> {
    let name = case["name"].as_str().context("name")?;
    let arch = case["arch"].as_str().context("arch")?;
    let legacy = case["naming"] == "legacy";
    let counters = case["counters"].as_bool().context("counters")?;
    let pre = resolver.pretrained(spec)?;
    // The preprocessing timm was given must be the one found (config, known table or defaults).
    let p = &pre.cfg.pretrained_cfg;
    assert_eq!(p.interpolation, case["interpolation"].as_str().context("interpolation")?, "{name}");
    assert_eq!(p.crop_pct, case["crop_pct"].as_f64().context("crop_pct")?, "{name}");
    assert_eq!(p.input_size, [3, 224, 224], "{name}");
    assert_eq!(pre.num_classes, 1000, "{name}");
    let want_naming = if legacy { Naming::TorchvisionLegacyDenseNet } else { Naming::Timm };
    assert_eq!(pre.naming, want_naming, "{name}");
    // A plain file names no architecture: the caller (`--model`) does.
    let model_name = match (&pre.arch, spec) {
        (None, WeightsSpec::File(_)) => arch.to_string(),
        (Some(a), WeightsSpec::Hub { .. }) => a.clone(),
        (a, _) => bail!("{name}: architecture {a:?} for {spec}"),
    };
    assert_eq!(model_name, arch, "{name}");

    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu).skip_init();
    let model = create_model(&model_name, &vb, &ModelOptions { num_classes: pre.num_classes, ..Default::default() })?;
    let report = store.load_safetensors(&pre.path, &pre.load_options())?;
    let n_counters = store.keys().iter().filter(|k| k.ends_with("num_batches_tracked")).count();
    assert!(report.is_clean(), "{name}: {report}");
    assert!(n_counters > 50, "{name}: {n_counters} BatchNorm counters");
    assert_eq!(report.defaulted.len(), if counters { 0 } else { n_counters }, "{name}: {report}");

    let [h, w] = [&case["image"][0], &case["image"][1]].map(|v| v.as_u64().unwrap_or(0) as usize);
    let x = eval_transform(&image(h, w), h, w, p, true)?;
    let x = Tensor::from_vec(x, (1, 3, 224, 224), &Device::Cpu)?;
    let logits = sconce_core::no_grad(|| model.forward_t(&x, false))?.squeeze(0)?;
    assert_close(&format!("{name} logits"), &logits, &fx.get(case, "logits")?, 1e-4, 1e-4)?;
    let v: Vec<f32> = logits.to_vec1()?;
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    let want: Vec<usize> = serde_json::from_value(case["top5"].clone())?;
    assert_eq!(order[..5], want[..], "{name} top-5");
    Ok(())
}

#[test]
fn checkpoints_predict_what_timm_predicts() -> Result<()> {
    let fx = sconce_testutil::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"), "predict")?;
    let root = tmp("cases")?;
    let cache = root.join("hub");
    let resolver = Resolver::new(HubCache::at(&cache), true);
    let mut seen = 0;
    for case in &fx.cases {
        let name = case["name"].as_str().context("name")?;
        let arch = case["arch"].as_str().context("arch")?;
        let legacy = case["naming"] == "legacy";
        let weights = checkpoint(arch, legacy, case["counters"].as_bool().context("counters")?)?;
        let spec: WeightsSpec = match name {
            // timm's names and a config.json with timm/resnet50.a1_in1k's preprocessing (as timm
            // gave it to the fixture script) and labels.
            "resnet50_hub" => {
                let labels: Vec<String> = (0..1000).map(|i| format!("label {i}")).collect();
                let config = serde_json::json!({
                    "architecture": "resnet50", "num_classes": 1000, "label_names": labels,
                    "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": case["interpolation"],
                                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                       "crop_pct": case["crop_pct"]}});
                cache_repo(&cache, "timm/resnet50.a1_in1k", &weights, Some(&config))?;
                let spec: WeightsSpec = "hub:timm/resnet50.a1_in1k".parse()?;
                assert_eq!(resolver.pretrained(&spec)?.label(7), "label 7");
                spec
            }
            // No config.json: the known table's preprocessing for timm/densenet121.tv_in1k, which
            // must be what timm says it is.
            "densenet121_known" => {
                cache_repo(&cache, "timm/densenet121.tv_in1k", &weights, None)?;
                "hub:timm/densenet121.tv_in1k".parse()?
            }
            // A plain file in the legacy spelling without counters: timm's defaults (bicubic).
            "densenet121_legacy" => {
                let path = root.join("densenet121-legacy.safetensors");
                save_safetensors_atomic(&weights, &path)?;
                WeightsSpec::File(path)
            }
            other => bail!("unknown case {other}"),
        };
        drop(weights);
        predict_case(&fx, case, &resolver, &spec)?;
        seen += 1;
    }
    assert_eq!(seen, 3);
    std::fs::remove_dir_all(root)?;
    Ok(())
}

#[test]
fn pinned_revisions_and_transformers_configs_are_read() -> Result<()> {
    let root = tmp("pinned")?;
    let resolver = Resolver::new(HubCache::at(&root), true);
    let tiny = |keys: &[(&str, &[usize])]| -> Result<HashMap<String, Tensor>> {
        keys.iter().map(|(k, s)| Ok((k.to_string(), Tensor::zeros(*s, DType::F32, &Device::Cpu)?))).collect()
    };
    // smp's encoder weights as smp caches them: only the pinned commit's snapshot, no refs/main.
    let known = sconce_hub::known_weights("smp-hub/resnet50.imagenet").context("known")?;
    let snap = root.join("models--smp-hub--resnet50.imagenet/snapshots").join(known.revision);
    std::fs::create_dir_all(&snap)?;
    save_safetensors_atomic(&tiny(&[("conv1.weight", &[64, 3, 7, 7])])?, &snap.join("model.safetensors"))?;
    let pre = resolver.pretrained(&"hub:smp-hub/resnet50.imagenet".parse()?)?;
    assert!(pre.path.starts_with(&snap), "{}", pre.path.display());
    assert_eq!((pre.num_classes, pre.arch.as_deref()), (0, Some("resnet50")));
    // Another revision is looked up as given (and is not in this cache).
    let e = resolver.pretrained(&"hub:smp-hub/resnet50.imagenet@v2".parse()?).err().map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|m| m.contains("refs/v2")), "{e:?}");
    // A cache filled by `huggingface-cli download` (refs/main → another commit) still resolves.
    cache_repo(&root, "smp-hub/densenet121.imagenet", &tiny(&[("features.conv0.weight", &[64, 3, 7, 7])])?, None)?;
    let pre = resolver.pretrained(&"hub:smp-hub/densenet121.imagenet".parse()?)?;
    assert!(pre.path.to_string_lossy().contains(COMMIT), "{}", pre.path.display());

    // microsoft/resnet-50: transformers' names and config (id2label, no pretrained_cfg), so
    // the known table's preprocessing (bicubic) applies and the labels come from id2label.
    let id2label: serde_json::Map<String, Value> =
        (0..1000).map(|i| (i.to_string(), Value::String(format!("name {i}")))).collect();
    let config = serde_json::json!({"architectures": ["ResNetForImageClassification"], "id2label": id2label});
    let weights = tiny(&[
        ("resnet.embedder.embedder.convolution.weight", &[64, 3, 7, 7]),
        ("classifier.1.weight", &[1000, 2048]),
    ])?;
    cache_repo(&root, "microsoft/resnet-50", &weights, Some(&config))?;
    let pre = resolver.pretrained(&"hub:microsoft/resnet-50".parse()?)?;
    assert_eq!(pre.naming, Naming::Transformers);
    assert_eq!(pre.cfg.pretrained_cfg.interpolation, "bicubic");
    assert_eq!((pre.num_classes, pre.arch.as_deref(), pre.label(7)), (1000, Some("resnet50"), "name 7".to_string()));
    std::fs::remove_dir_all(root)?;
    Ok(())
}

#[test]
fn naming_is_told_from_the_keys() {
    let timm = ["features.denseblock1.denselayer1.norm1.weight", "features.norm0.weight", "classifier.weight"];
    assert_eq!(Naming::detect(timm), None);
    assert_eq!(
        Naming::detect(["features.denseblock2.denselayer3.conv.2.weight"]),
        Some(Naming::TorchvisionLegacyDenseNet)
    );
    assert_eq!(
        Naming::detect(["resnet.embedder.embedder.convolution.weight", "classifier.1.weight"]),
        Some(Naming::Transformers)
    );
    // `norm.1` outside a dense layer is not the legacy DenseNet spelling.
    assert_eq!(Naming::detect(["decoder.norm.1.weight"]), None);
    assert_eq!(
        legacy_name("features.denseblock1.denselayer2.conv2.weight"),
        "features.denseblock1.denselayer2.conv.2.weight"
    );
    assert_eq!(legacy_name("features.transition1.conv.weight"), "features.transition1.conv.weight");
}

#[test]
fn headers_are_read_and_bad_files_refused() -> Result<()> {
    let dir = tmp("headers")?;
    let mut m = HashMap::new();
    m.insert("fc.weight".to_string(), Tensor::zeros((7, 3), DType::F32, &Device::Cpu)?);
    m.insert("fc.bias".to_string(), Tensor::zeros(7, DType::F32, &Device::Cpu)?);
    let good = dir.join("good.safetensors");
    save_safetensors_atomic(&m, &good)?;
    let mut h = safetensors_header(&good)?;
    h.sort();
    assert_eq!(h, [("fc.bias".to_string(), vec![7]), ("fc.weight".to_string(), vec![7, 3])]);
    // A plain file: classes from the classifier's rows, no architecture, timm's names.
    let pre = Resolver::new(HubCache::at(&dir), true).pretrained(&WeightsSpec::File(good.clone()))?;
    assert_eq!((pre.num_classes, pre.arch.clone(), pre.naming), (7, None, Naming::Timm));
    assert_eq!(pre.label(3), "class 3");

    let bytes = std::fs::read(&good)?;
    let framed = |header: &[u8]| [&(header.len() as u64).to_le_bytes()[..], header].concat();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("short", bytes[..5].to_vec(), "shorter than the 8-byte header length"),
        ("long_header", [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat(), "the header claims"),
        ("not_json", framed(b"not json"), "header is not a JSON object"),
        ("no_shape", framed(br#"{"a": {"dtype": "F32"}}"#), "tensor `a` has no shape"),
    ];
    for (name, data, why) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        std::fs::write(&path, data)?;
        match Resolver::new(HubCache::at(&dir), true).pretrained(&WeightsSpec::File(path)) {
            Err(e @ Error::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(why) && msg.contains("not a safetensors file"), "{name}: {msg}");
            }
            other => bail!("{name}: expected a parse error, got {other:?}"),
        }
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
