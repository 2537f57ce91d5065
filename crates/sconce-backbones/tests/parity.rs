//! Parity with torchvision/timm/smp: models filled with the fixtures' deterministic weight
//! pattern give PyTorch's logits, feature maps, gradients and running statistics
//! (fixtures from `scripts/fixtures_backbones.py`).

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, ModuleT, Tensor};
use sconce_backbones::{
    Block, ClassicUnet, DenseNet, DenseNetConfig, ModelOptions, ResNet, ResNetConfig, create_backbone, create_model,
};
use sconce_core::Backbone;
use sconce_layers::{Builder, Entry, LoadOptions, ParamStore};
use sconce_testutil::{Fixture, assert_close, pattern_tensor};
use serde_json::Value;

fn fixture() -> Result<Fixture> {
    sconce_testutil::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"), "backbones")
}

fn case<'a>(fx: &'a Fixture, name: &str) -> Result<&'a Value> {
    fx.cases.iter().find(|c| c["name"] == name).with_context(|| format!("case {name}"))
}

/// Loads the pattern into every parameter and running statistic (strictly, so the key set
/// must equal PyTorch's: the fixtures' models have exactly these names).
fn fill(store: &ParamStore) -> Result<()> {
    let mut tensors = Vec::new();
    for (k, e) in store.entries() {
        let t = e.tensor();
        let t = if k.ends_with("num_batches_tracked") { t } else { pattern_tensor(&k, t.dims())? };
        tensors.push((k, t));
    }
    store.load_tensors(tensors, &LoadOptions::strict(), "pattern")?;
    Ok(())
}

fn builder(store: &ParamStore) -> Builder {
    store.builder(0, DType::F32, &Device::Cpu).skip_init()
}

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-4;

fn eval_case(fx: &Fixture, name: &str, build: impl FnOnce(&Builder) -> Result<Box<dyn Backbone>>) -> Result<()> {
    let c = case(fx, name)?;
    let store = ParamStore::new();
    let model = build(&builder(&store))?;
    assert_eq!(store.num_parameters() as u64, c["params"].as_u64().context("params")?, "{name} parameter count");
    fill(&store)?;
    let x = fx.get(c, "input")?;
    let feats = model.forward_features(&x, false)?;
    for (i, f) in feats.iter().enumerate() {
        assert_close(&format!("{name} feature {i}"), f, &fx.get(c, &format!("feature.{i}"))?, RTOL, ATOL)?;
    }
    let y = model.forward_t(&x, false)?;
    assert_close(&format!("{name} logits"), &y, &fx.get(c, "logits")?, RTOL, ATOL)?;
    // Inference without autograd history (DenseNet then reads its concatenations in place).
    let (feats, y) = sconce_core::no_grad(|| -> Result<_> {
        Ok((model.forward_features(&x, false)?, model.forward_t(&x, false)?))
    })?;
    for (i, f) in feats.iter().enumerate() {
        assert_close(
            &format!("{name} feature {i} under no_grad"),
            f,
            &fx.get(c, &format!("feature.{i}"))?,
            RTOL,
            ATOL,
        )?;
    }
    assert_close(&format!("{name} logits under no_grad"), &y, &fx.get(c, "logits")?, RTOL, ATOL)
}

#[test]
fn resnet50_eval_matches_timm() -> Result<()> {
    let fx = fixture()?;
    eval_case(&fx, "resnet50", |vb| Ok(create_backbone("resnet50", vb, 3, 1000)?))
}

#[test]
fn resnet18_eval_matches_timm_on_a_non_square_batch() -> Result<()> {
    let fx = fixture()?;
    eval_case(&fx, "resnet18", |vb| Ok(create_backbone("resnet18", vb, 3, 10)?))
}

#[test]
fn densenet121_eval_matches_torchvision() -> Result<()> {
    let fx = fixture()?;
    eval_case(&fx, "densenet121", |vb| Ok(create_backbone("densenet121", vb, 3, 1000)?))
}

#[test]
fn other_depths_eval_match_timm_and_torchvision() -> Result<()> {
    // ResNet 34/101/152 (timm) and DenseNet 161/169/201 (torchvision): logits and every
    // feature stage at 32×32 (fixtures from `scripts/fixtures_backbones.py --variants`).
    let fx = sconce_testutil::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"), "variants")?;
    let names: Vec<String> = fx.cases.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
    assert_eq!(names, ["resnet34", "resnet101", "resnet152", "densenet161", "densenet169", "densenet201"]);
    for name in &names {
        eval_case(&fx, name, |vb| Ok(create_backbone(name, vb, 3, 1000)?))?;
    }
    Ok(())
}

fn seg_case(fx: &Fixture, name: &str, model: &str, opts: ModelOptions) -> Result<()> {
    let c = case(fx, name)?;
    let store = ParamStore::new();
    let m = create_model(model, &builder(&store), &opts)?;
    assert_eq!(store.num_parameters() as u64, c["params"].as_u64().context("params")?, "{name} parameter count");
    fill(&store)?;
    let x = fx.get(c, "input")?;
    let y = m.forward_t(&x, false)?;
    assert_close(&format!("{name} logits"), &y, &fx.get(c, "logits")?, RTOL, ATOL)?;
    let y = sconce_core::no_grad(|| m.forward_t(&x, false))?;
    assert_close(&format!("{name} logits under no_grad"), &y, &fx.get(c, "logits")?, RTOL, ATOL)
}

#[test]
fn smp_unet_resnet50_eval_matches_smp() -> Result<()> {
    seg_case(&fixture()?, "unet_resnet50", "unet-resnet50", ModelOptions { num_classes: 1, ..Default::default() })
}

#[test]
fn smp_unet_densenet121_eval_matches_smp() -> Result<()> {
    seg_case(&fixture()?, "unet_densenet121", "unet-densenet121", ModelOptions { num_classes: 1, ..Default::default() })
}

#[test]
fn smp_unet_on_an_odd_size_matches_smp() -> Result<()> {
    seg_case(&fixture()?, "unet_resnet18_odd", "unet-resnet18", ModelOptions { num_classes: 2, ..Default::default() })
}

#[test]
fn classic_unet_on_an_odd_size_matches_milesial() -> Result<()> {
    seg_case(
        &fixture()?,
        "unet_classic_odd",
        "unet",
        ModelOptions { num_classes: 1, unet_base: 8, ..Default::default() },
    )
}

#[test]
fn parameter_counts_match_pytorch_for_every_model() -> Result<()> {
    let fx = fixture()?;
    let counts = case(&fx, "param_counts")?["counts"].as_object().context("counts")?;
    for (name, want) in counts {
        let store = ParamStore::new();
        let num_classes = if name.starts_with("unet") { 1 } else { 1000 };
        create_model(name, &builder(&store), &ModelOptions { num_classes, ..Default::default() })?;
        assert_eq!(store.num_parameters() as u64, want.as_u64().context("count")?, "{name}");
    }
    Ok(())
}

/// Stable mean cross-entropy over `[N, C]` logits.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let lp = sconce_tensor::log_softmax(logits, 1)?;
    let picked = lp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    Ok(picked.neg()?.mean_all()?)
}

/// Mean binary cross-entropy from logits.
fn bce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((sconce_tensor::softplus(logits)? - (logits * target)?)?.mean_all()?)
}

fn train_case(name: &str, build: impl FnOnce(&Builder) -> Result<Box<dyn ModuleT>>) -> Result<()> {
    let fx = fixture()?;
    let c = case(&fx, name)?;
    let store = ParamStore::new();
    let model = build(&builder(&store))?;
    assert_eq!(store.num_parameters() as u64, c["params"].as_u64().context("params")?, "{name} parameter count");
    fill(&store)?;
    let x = fx.get(c, "input")?;
    let target = fx.get(c, "target")?;
    let y = model.forward_t(&x, true)?;
    assert_close(&format!("{name} logits"), &y, &fx.get(c, "logits")?, RTOL, ATOL)?;
    let loss = if y.rank() == 2 { cross_entropy(&y, &target)? } else { bce(&y, &target)? };
    assert_close(&format!("{name} loss"), &loss.reshape(1)?, &fx.get(c, "loss")?, RTOL, ATOL)?;
    let grads = loss.backward()?;
    let mut checked = 0;
    for (k, e) in store.entries() {
        match e {
            Entry::Param(v) => {
                let g = grads.get(v.as_tensor()).with_context(|| format!("{name}: no gradient for {k}"))?;
                assert_close(&format!("{name} grad {k}"), g, &fx.get(c, &format!("grad.{k}"))?, 1e-3, 1e-4)?;
                checked += 1;
            }
            Entry::Buffer(b) if k.ends_with("running_mean") || k.ends_with("running_var") => {
                assert_close(&format!("{name} {k}"), &b.get(), &fx.get(c, &format!("buffer.{k}"))?, RTOL, 1e-6)?;
            }
            Entry::Buffer(b) => {
                if b.get().to_dtype(DType::I64)?.to_scalar::<i64>()? != 1 {
                    bail!("{name} {k}: expected 1 after one training step");
                }
            }
        }
    }
    assert!(checked > 10, "{name}: only {checked} gradients compared");
    Ok(())
}

fn tiny_resnet(vb: &Builder, block: Block, layers: [usize; 4]) -> Result<Box<dyn ModuleT>> {
    let cfg = ResNetConfig { block, layers, channels: [8, 16, 32, 64], stem_width: 64, in_channels: 3, num_classes: 5 };
    Ok(Box::new(ResNet::new(vb, &cfg)?))
}

#[test]
fn tiny_bottleneck_resnet_training_step_matches_timm() -> Result<()> {
    train_case("tiny_resnet_bottleneck", |vb| tiny_resnet(vb, Block::Bottleneck, [1, 2, 1, 1]))
}

#[test]
fn tiny_basic_resnet_training_step_matches_timm() -> Result<()> {
    train_case("tiny_resnet_basic", |vb| tiny_resnet(vb, Block::Basic, [1, 1, 2, 1]))
}

#[test]
fn tiny_densenet_training_step_matches_torchvision() -> Result<()> {
    train_case("tiny_densenet", |vb| {
        let cfg = DenseNetConfig {
            growth_rate: 8,
            block_config: [2, 3, 2, 2],
            num_init_features: 16,
            bn_size: 2,
            in_channels: 3,
            num_classes: 5,
        };
        Ok(Box::new(DenseNet::new(vb, &cfg)?))
    })
}

#[test]
fn tiny_classic_unet_training_step_matches_pytorch() -> Result<()> {
    train_case("tiny_unet_classic", |vb| Ok(Box::new(ClassicUnet::new(vb, 3, 1, 4)?)))
}
