//! Resolution against a fake Hugging Face cache built in a temporary folder: refs, commits,
//! missing files, offline mode, corrupt refs and config files. Never touches the network.

use std::path::PathBuf;

use anyhow::{Result, bail};
use sconce_core::Error;
use sconce_hub::{HubCache, PretrainedCfg, Resolver, WeightsSpec};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fake_cache(name: &str) -> Result<PathBuf> {
    let root = std::env::temp_dir().join(format!("sconce-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let repo = root.join("models--timm--resnet50.a1_in1k");
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n"))?;
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap)?;
    std::fs::write(snap.join("model.safetensors"), b"weights")?;
    std::fs::write(
        snap.join("config.json"),
        r#"{"architecture": "resnet50", "num_classes": 1000,
            "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bicubic",
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.95}}"#,
    )?;
    Ok(root)
}

#[test]
fn hub_specs_resolve_through_refs_and_commits() -> Result<()> {
    let root = fake_cache("refs")?;
    let r = Resolver::new(HubCache::at(&root), true);
    let p = r.resolve(&"hub:timm/resnet50.a1_in1k".parse()?)?;
    assert!(p.ends_with(format!("snapshots/{COMMIT}/model.safetensors")));
    let p2 = r.resolve(&format!("hub:timm/resnet50.a1_in1k@{COMMIT}").parse()?)?;
    assert_eq!(p, p2);
    let cfg = r.pretrained_cfg(&"hub:timm/resnet50.a1_in1k".parse()?)?;
    let Some(cfg) = cfg else { bail!("config.json not found") };
    assert_eq!(cfg.pretrained_cfg.interpolation, "bicubic");
    assert_eq!(cfg.resize_shorter_to(), 235); // floor(224 / 0.95), as timm
    // A local path resolves to itself.
    assert_eq!(r.resolve(&WeightsSpec::File(p.clone()))?, p);
    std::fs::remove_dir_all(root)?;
    Ok(())
}

#[test]
fn misses_list_what_was_tried() -> Result<()> {
    let root = fake_cache("miss")?;
    let r = Resolver::new(HubCache::at(&root), true);
    match r.resolve(&"hub:timm/densenet121.tv_in1k".parse()?) {
        Err(Error::Weights { source_name, reason, .. }) => {
            assert_eq!(source_name, "hub:timm/densenet121.tv_in1k@main/model.safetensors");
            assert!(reason.contains("models--timm--densenet121.tv_in1k/refs/main"), "{reason}");
            assert!(reason.contains("offline (HF_HUB_OFFLINE"), "{reason}");
        }
        other => bail!("expected a weights error, got {other:?}"),
    }
    #[cfg(not(feature = "download"))]
    {
        let online = Resolver::new(HubCache::at(&root), false);
        let e = online.resolve(&"hub:timm/densenet121.tv_in1k".parse()?).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("enable sconce-hub's `download` feature"));
    }
    let e = r.resolve(&"hub:timm/resnet50.a1_in1k/pytorch_model.bin".parse()?).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("pytorch_model.bin: no such file"));
    // A corrupt ref is named as such.
    std::fs::write(root.join("models--timm--resnet50.a1_in1k/refs/main"), "not-a-commit")?;
    let e = r.resolve(&"hub:timm/resnet50.a1_in1k".parse()?).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("not a 40-hex commit"), "{e}");
    let e = Resolver::new(HubCache::at(&root), false).resolve(&WeightsSpec::File(root.join("nope.safetensors")));
    assert!(e.err().map(|e| e.to_string()).unwrap_or_default().contains("no such file"));
    std::fs::remove_dir_all(root)?;
    Ok(())
}

#[test]
fn bad_specs_and_configs_are_errors() -> Result<()> {
    for bad in ["hub:", "hub:timm", "hub:/x", "hub:timm/res net", "hub:a/b/../../etc", "hub:a/b@", ""] {
        assert!(bad.parse::<WeightsSpec>().is_err(), "{bad:?} parsed");
    }
    assert!(PretrainedCfg::from_json("{not json", "c.json").is_err());
    let e = PretrainedCfg::from_json(r#"{"pretrained_cfg": {"mean": [0.5], "std": [0.5, 0.5, 0.5]}}"#, "c.json");
    assert!(matches!(e, Err(Error::Parse { .. })));
    let e = PretrainedCfg::from_json(r#"{"pretrained_cfg": {"crop_pct": 1.5}}"#, "c.json");
    assert!(e.is_err());
    // Missing fields take timm's defaults.
    let d = PretrainedCfg::from_json("{}", "c.json")?;
    assert_eq!((d.pretrained_cfg.input_size, d.resize_shorter_to()), ([3, 224, 224], 256));
    Ok(())
}
