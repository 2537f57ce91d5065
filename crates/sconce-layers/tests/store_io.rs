//! Weight loading and saving: strict reports listing every problem, key rules, skipped
//! heads, dtype conversion, corrupt files, round trips; and layer behaviour (BatchNorm's
//! running statistics, seeded dropout, Linear/Conv2d against hand-computed values).

use std::collections::HashMap;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use sconce_core::Error;
use sconce_layers::{
    Act, BatchNorm2d, Conv2d, ConvBnAct, ConvOptions, Dropout, KeyRule, Linear, LoadOptions, ParamStore,
    save_safetensors_atomic,
};

fn small_model(store: &ParamStore) -> Result<(ConvBnAct, Linear)> {
    let vb = store.builder(3, DType::F32, &Device::Cpu);
    let block = ConvBnAct::new(&vb.pp("features").pp(0), &vb.pp("features").pp(1), 2, 4, 3, 1, 1, Act::Relu)?;
    let fc = Linear::new(&vb.pp("fc"), 4, 3, true)?;
    Ok((block, fc))
}

fn tmpdir(name: &str) -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("sconce-layers-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[test]
fn keys_follow_pytorch_names_in_creation_order() -> Result<()> {
    let store = ParamStore::new();
    small_model(&store)?;
    assert_eq!(
        store.keys(),
        [
            "features.0.weight",
            "features.1.weight",
            "features.1.bias",
            "features.1.running_mean",
            "features.1.running_var",
            "features.1.num_batches_tracked",
            "fc.weight",
            "fc.bias"
        ]
    );
    // 4·2·3·3 conv + 4 + 4 BN affine + 3·4 + 3 linear.
    assert_eq!(store.num_parameters(), 72 + 8 + 15);
    assert_eq!(store.vars().len(), 5);
    Ok(())
}

#[test]
fn same_seed_gives_the_same_weights_and_another_seed_does_not() -> Result<()> {
    let weights = |seed: u64| -> Result<Vec<f32>> {
        let store = ParamStore::new();
        let vb = store.builder(seed, DType::F32, &Device::Cpu);
        let l = Linear::new(&vb, 8, 4, true)?;
        Ok(l.weight().as_tensor().flatten_all()?.to_vec1()?)
    };
    assert_eq!(weights(1)?, weights(1)?);
    assert_ne!(weights(1)?, weights(2)?);
    // PyTorch's default bound 1/√fan_in.
    assert!(weights(1)?.iter().all(|w| w.abs() <= 1.0 / 8f32.sqrt()));
    Ok(())
}

#[test]
fn duplicate_keys_are_refused() -> Result<()> {
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu);
    Linear::new(&vb.pp("fc"), 2, 2, true)?;
    let e = Linear::new(&vb.pp("fc"), 2, 2, true).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("`fc.weight` is created twice"), "{e}");
    Ok(())
}

#[test]
fn save_then_load_round_trips_every_tensor() -> Result<()> {
    let dir = tmpdir("roundtrip")?;
    let path = dir.join("m.safetensors");
    let a = ParamStore::new();
    let (block, _) = small_model(&a)?;
    // One training step changes the running statistics and the counter.
    block.forward_t(&Tensor::randn(0f32, 1., (4, 2, 5, 5), &Device::Cpu)?, true)?;
    a.save_safetensors(&path)?;
    let b = ParamStore::new();
    let vb = b.builder(99, DType::F32, &Device::Cpu);
    let block_b = ConvBnAct::new(&vb.pp("features").pp(0), &vb.pp("features").pp(1), 2, 4, 3, 1, 1, Act::Relu)?;
    Linear::new(&vb.pp("fc"), 4, 3, true)?;
    let report = b.load_safetensors(&path, &LoadOptions::strict())?;
    assert_eq!(report.loaded.len(), 8);
    assert!(report.is_clean());
    for ((ka, ta), (kb, tb)) in a.state_dict().into_iter().zip(b.state_dict()) {
        assert_eq!(ka, kb);
        let diff = (ta.to_dtype(DType::F64)? - tb.to_dtype(DType::F64)?)?.abs()?.flatten_all()?.max(0)?;
        assert_eq!(diff.to_scalar::<f64>()?, 0.0, "{ka}");
    }
    assert_eq!(block_b.bn().num_batches_tracked(), 1);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).collect();
    assert_eq!(leftovers.len(), 1);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn files_without_batch_norm_counters_load_with_the_counters_at_zero() -> Result<()> {
    // A trained model (counter 1) loads a file saved before PyTorch 0.4.1: no counters in it.
    let store = ParamStore::new();
    let (block, _) = small_model(&store)?;
    block.forward_t(&Tensor::randn(0f32, 1., (4, 2, 5, 5), &Device::Cpu)?, true)?;
    assert_eq!(block.bn().num_batches_tracked(), 1);
    // Copies (a variable cannot be set from its own storage).
    let mut file = store.state_dict().into_iter().map(|(k, t)| Ok((k, t.copy()?))).collect::<Result<Vec<_>>>()?;
    file.retain(|(k, _)| !k.ends_with("num_batches_tracked"));
    let report = store.load_tensors(file.clone(), &LoadOptions::strict(), "old.safetensors")?;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.defaulted, ["features.1.num_batches_tracked"]);
    assert_eq!(report.loaded.len(), 7);
    assert!(report.to_string().contains("1 set to their default"), "{report}");
    // PyTorch's loader sets the counter to 0 for such files; so do we.
    assert_eq!(block.bn().num_batches_tracked(), 0);
    // Only the counter has a default, and only beside its statistics: without the running
    // mean both are missing.
    file.retain(|(k, _)| k != "features.1.running_mean");
    let Err(Error::Weights { report: Some(report), .. }) = store.load_tensors(file, &LoadOptions::strict(), "f") else {
        bail!("a missing running mean must fail strict loading")
    };
    assert_eq!(report.missing, ["features.1.num_batches_tracked", "features.1.running_mean"]);
    assert!(report.defaulted.is_empty());
    Ok(())
}

#[test]
fn strict_loading_lists_every_problem_at_once_and_changes_nothing() -> Result<()> {
    let store = ParamStore::new();
    small_model(&store)?;
    let before = store.state_dict();
    let dev = Device::Cpu;
    let mut file: Vec<(String, Tensor)> = store.state_dict();
    file.retain(|(k, _)| k != "fc.bias"); // missing
    file.push(("head.weight".into(), Tensor::zeros((3, 4), DType::F32, &dev)?)); // unexpected
    for (k, t) in file.iter_mut() {
        if k == "fc.weight" {
            *t = Tensor::zeros((5, 4), DType::F32, &dev)?; // mis-shaped
        } else if k == "features.0.weight" {
            *t = t.ones_like()?;
        }
    }
    let err = store.load_tensors(file, &LoadOptions::strict(), "model.safetensors");
    let Err(Error::Weights { report: Some(report), source_name, .. }) = err else { bail!("expected a Weights error") };
    assert_eq!(source_name, "model.safetensors");
    assert_eq!(report.missing, ["fc.bias"]);
    assert_eq!(report.unexpected, ["head.weight"]);
    assert_eq!(report.shape_mismatch, [("fc.weight".to_string(), vec![3, 4], vec![5, 4])]);
    let msg = Error::Weights { source_name, reason: "x".into(), report: Some(report) }.to_string();
    assert!(msg.contains("missing:    fc.bias") && msg.contains("model expects [3, 4], file has [5, 4]"), "{msg}");
    // Nothing was loaded: the conv weight is still the initial one.
    let w = store.get("features.0.weight").map(|e| e.tensor()).ok_or_else(|| anyhow::anyhow!("key"))?;
    assert_eq!(w.flatten_all()?.to_vec1::<f32>()?, before[0].1.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

#[test]
fn a_new_head_is_skipped_and_key_rules_rename_file_keys() -> Result<()> {
    let source = ParamStore::new();
    small_model(&source)?;
    // A file saved from a wrapped model ("module." prefix) with a 10-class head.
    let mut file: Vec<(String, Tensor)> =
        source.state_dict().into_iter().map(|(k, t)| (format!("module.{k}"), t)).collect();
    file.retain(|(k, _)| !k.starts_with("module.fc."));
    file.push(("module.fc.weight".into(), Tensor::zeros((10, 4), DType::F32, &Device::Cpu)?));
    file.push(("module.fc.bias".into(), Tensor::zeros(10, DType::F32, &Device::Cpu)?));
    let target = ParamStore::new();
    small_model(&target)?;
    let opts = LoadOptions::strict().rule(KeyRule::prefix("module.", "")).skip("fc.");
    let report = target.load_tensors(file, &opts, "wrapped")?;
    assert_eq!(report.loaded.len(), 6);
    assert_eq!(report.skipped, ["fc.bias", "fc.weight"]);
    assert!(report.is_clean());
    // Replace rules map torchvision's legacy DenseNet names.
    let legacy = vec![("features.0.weight".to_string(), Tensor::zeros((4, 2, 3, 3), DType::F32, &Device::Cpu)?)];
    let opts = LoadOptions::strict().with_strict(false).rule(KeyRule::replace(".0.", ".zero."));
    let r = target.load_tensors(legacy, &opts, "legacy")?;
    assert_eq!(r.unexpected, ["features.0.weight"]);
    // Dropped keys are reported as skipped, not unexpected.
    let extra = vec![("aux.weight".to_string(), Tensor::zeros(1, DType::F32, &Device::Cpu)?)];
    let r = target.load_tensors(
        extra,
        &LoadOptions::strict().with_strict(false).rule(KeyRule::Drop("aux.".into())),
        "x",
    )?;
    assert_eq!((r.skipped.len(), r.unexpected.len()), (1, 0));
    Ok(())
}

#[test]
fn half_precision_files_are_converted_and_non_finite_values_refused() -> Result<()> {
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu);
    let l = Linear::new(&vb, 2, 2, false)?;
    let w = Tensor::new(&[[1.5f32, -2.0], [0.25, 4.0]], &Device::Cpu)?;
    for dt in [DType::F16, DType::BF16, DType::F64] {
        store.load_tensors(vec![("weight".into(), w.to_dtype(dt)?)], &LoadOptions::strict(), "half")?;
        assert_eq!(l.weight().as_tensor().dtype(), DType::F32);
        assert_eq!(l.weight().as_tensor().flatten_all()?.to_vec1::<f32>()?, [1.5, -2.0, 0.25, 4.0]);
    }
    let bad = Tensor::new(&[[f32::NAN, 0.0], [0.0, 0.0]], &Device::Cpu)?;
    let e = store.load_tensors(vec![("weight".into(), bad)], &LoadOptions::strict(), "bad").err();
    assert!(matches!(e, Some(Error::Data { .. })), "{e:?}");
    assert_eq!(l.weight().as_tensor().flatten_all()?.to_vec1::<f32>()?, [1.5, -2.0, 0.25, 4.0]);
    Ok(())
}

#[test]
fn corrupt_and_missing_files_give_clear_errors() -> Result<()> {
    let dir = tmpdir("corrupt")?;
    let path = dir.join("broken.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")?;
    let store = ParamStore::new();
    small_model(&store)?;
    match store.load_safetensors(&path, &LoadOptions::strict()) {
        Err(Error::Parse { source_name, reason, .. }) => {
            assert!(source_name.ends_with("broken.safetensors"));
            assert!(reason.contains("not a readable safetensors file"), "{reason}");
        }
        other => bail!("expected a parse error, got {other:?}"),
    }
    let e = store.load_safetensors(dir.join("absent.safetensors"), &LoadOptions::strict()).err();
    assert!(matches!(e, Some(Error::Io { .. })), "{e:?}");
    // A valid header whose tensor data was cut off (an interrupted download): a parse error
    // naming the file, and nothing loaded.
    let good = dir.join("good.safetensors");
    store.save_safetensors(&good)?;
    let bytes = std::fs::read(&good)?;
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 40])?;
    let before = store.state_dict();
    match store.load_safetensors(&cut, &LoadOptions::strict()) {
        Err(Error::Parse { source_name, reason, .. }) => {
            assert!(source_name.ends_with("cut.safetensors"), "{source_name}");
            assert!(reason.contains("re-download"), "{reason}");
        }
        other => bail!("expected a parse error for a truncated file, got {other:?}"),
    }
    for ((k, a), (_, b)) in before.iter().zip(store.state_dict()) {
        let same = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?.abs()?.flatten_all()?.max(0)?;
        assert_eq!(same.to_scalar::<f64>()?, 0.0, "{k} changed by a failed load");
    }
    // An unwritable destination is an error, not a panic.
    let map: HashMap<String, Tensor> = HashMap::new();
    assert!(save_safetensors_atomic(&map, &dir.join("no/such/dir/x.safetensors")).is_err());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn batch_norm_updates_running_stats_like_pytorch() -> Result<()> {
    // x[:, 0] = [1, 2, 3, 4] (mean 2.5, unbiased var 5/3), x[:, 1] = 7 (var 0).
    let store = ParamStore::new();
    let bn = BatchNorm2d::new(&store.builder(0, DType::F64, &Device::Cpu), 2)?;
    let x = Tensor::new(&[[1f64, 7.], [2., 7.], [3., 7.], [4., 7.]], &Device::Cpu)?;
    let y = bn.forward_t(&x, true)?;
    let rm = bn.running_mean().to_vec1::<f64>()?;
    let rv = bn.running_var().to_vec1::<f64>()?;
    assert!((rm[0] - 0.25).abs() < 1e-12 && (rm[1] - 0.7).abs() < 1e-12, "{rm:?}");
    assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-12 && (rv[1] - 0.9).abs() < 1e-12, "{rv:?}");
    assert_eq!(bn.num_batches_tracked(), 1);
    // Batch statistics in training: the first column is standardised with the biased variance.
    let y0: Vec<f64> = y.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
    let s = (1.25f64 + 1e-5).sqrt();
    assert!((y0[0] + 1.5 / s).abs() < 1e-9, "{y0:?}");
    // Eval uses the running statistics.
    let e = bn.forward_t(&x, false)?.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f64>()?;
    assert!((e[0] - (1.0 - 0.25) / (rv[0] + 1e-5).sqrt()).abs() < 1e-9);
    Ok(())
}

#[test]
fn dropout_is_seeded_scaled_and_off_in_eval() -> Result<()> {
    let x = Tensor::ones((1000,), DType::F32, &Device::Cpu)?;
    let run = |seed: u64| -> Result<Vec<f32>> {
        let store = ParamStore::new();
        let d = Dropout::new(&store.builder(seed, DType::F32, &Device::Cpu), 0.25)?;
        Ok(d.forward_t(&x, true)?.to_vec1()?)
    };
    let a = run(5)?;
    assert_eq!(a, run(5)?);
    assert_ne!(a, run(6)?);
    let zeros = a.iter().filter(|v| **v == 0.0).count();
    assert!((200..300).contains(&zeros), "{zeros} zeros of 1000 at p = 0.25");
    assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    let store = ParamStore::new();
    let d = Dropout::new(&store.builder(0, DType::F32, &Device::Cpu), 0.25)?;
    assert_eq!(d.forward_t(&x, false)?.to_vec1::<f32>()?, vec![1.0; 1000]);
    assert!(Dropout::new(&store.builder(0, DType::F32, &Device::Cpu), 1.0).is_err());
    Ok(())
}

#[test]
fn linear_and_conv_compute_what_they_should() -> Result<()> {
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F64, &Device::Cpu);
    let l = Linear::new(&vb.pp("l"), 2, 1, true)?;
    store.load_tensors(
        vec![
            ("l.weight".into(), Tensor::new(&[[2f64, -1.]], &Device::Cpu)?),
            ("l.bias".into(), Tensor::new(&[0.5f64], &Device::Cpu)?),
        ],
        &LoadOptions::strict().with_strict(false),
        "t",
    )?;
    let y = l.forward(&Tensor::new(&[[3f64, 4.]], &Device::Cpu)?)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, [2.5]);
    let e =
        l.forward(&Tensor::zeros((1, 3), DType::F64, &Device::Cpu)?).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("Linear input"), "{e}");
    // A 1×1 conv with weight 2 doubles; wrong channel counts are reported.
    let c = Conv2d::new(&vb.pp("c"), 1, 1, 1, ConvOptions::default().bias(false))?;
    c.weight().set(&Tensor::new(&[[[[2f64]]]], &Device::Cpu)?)?;
    let y = c.forward(&Tensor::new(&[[[[1f64, 2.], [3., 4.]]]], &Device::Cpu)?)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, [2., 4., 6., 8.]);
    assert!(c.forward(&Tensor::zeros((1, 2, 2, 2), DType::F64, &Device::Cpu)?).is_err());
    assert!(Conv2d::new(&vb.pp("g"), 3, 4, 3, ConvOptions::default().groups(2)).is_err());
    Ok(())
}

#[test]
fn heads_follow_their_spec() -> Result<()> {
    use sconce_core::HeadSpec;
    use sconce_layers::Head;
    let dev = Device::Cpu;
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F64, &dev);
    // A fixed ±1 matrix after L2 normalisation, a learned scale of 2, no bias: only `scale` trains.
    let w = Tensor::new(&[[1f64, 1.], [1., -1.]], &dev)?;
    let spec = HeadSpec::Fixed {
        projection: None,
        weight: w.clone(),
        normalize_input: true,
        learned_scale: Some(2.0),
        bias: false,
    };
    let h = Head::new(&vb.pp("fixed"), 2, &spec)?;
    assert_eq!(store.named_vars().iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["fixed.scale"]);
    let y = h.forward(&Tensor::new(&[[3f64, 4.]], &dev)?)?.flatten_all()?.to_vec1::<f64>()?;
    // (3, 4)/5 = (0.6, 0.8): rows give 1.4 and −0.2, times 2.
    assert!((y[0] - 2.8).abs() < 1e-12 && (y[1] + 0.4).abs() < 1e-12, "{y:?}");
    // A projection is required when the matrix needs another feature size.
    let bad =
        HeadSpec::Fixed { projection: None, weight: w.clone(), normalize_input: true, learned_scale: None, bias: true };
    assert!(Head::new(&vb.pp("bad"), 3, &bad).is_err());
    let proj =
        HeadSpec::Fixed { projection: Some(2), weight: w, normalize_input: false, learned_scale: None, bias: true };
    let hp = Head::new(&vb.pp("proj"), 5, &proj)?;
    assert_eq!(hp.forward(&Tensor::zeros((4, 5), DType::F64, &dev)?)?.dims(), &[4, 2]);
    let l = Head::new(&vb.pp("learned"), 5, &HeadSpec::Learned { out_features: 3, bias: true })?;
    assert_eq!(l.forward(&Tensor::zeros((2, 5), DType::F64, &dev)?)?.dims(), &[2, 3]);
    // Per pixel ([N, F, H, W] → [N, out, H, W]): the head applied to each pixel's features.
    let x = Tensor::arange(0f64, 2.0 * 2.0 * 3.0 * 4.0, &dev)?.reshape((2, 2, 3, 4))?.affine(0.1, -1.0)?;
    let y = h.forward_pixels(&x)?;
    assert_eq!(y.dims(), &[2, 2, 3, 4]);
    for (ni, i, j) in [(0, 0, 0), (1, 2, 3), (0, 1, 2)] {
        let px = x.narrow(0, ni, 1)?.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, 2))?;
        let want = h.forward(&px)?.flatten_all()?.to_vec1::<f64>()?;
        let got = y.narrow(0, ni, 1)?.narrow(2, i, 1)?.narrow(3, j, 1)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(
            want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-12),
            "pixel ({ni}, {i}, {j}): {got:?} vs {want:?}"
        );
    }
    assert!(h.forward_pixels(&Tensor::zeros((2, 2), DType::F64, &dev)?).is_err());
    Ok(())
}
