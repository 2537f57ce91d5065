//! Training works and bad input is refused: tiny models overfit one batch with the loss
//! falling every step; every U-Net maps 250×250 to 250×250; wrong channels, tiny images and
//! weights of another architecture give clear errors.

use anyhow::{Result, bail};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use sconce_backbones::{ClassicUnet, DenseNet, DenseNetConfig, ModelOptions, ResNet, ResNetConfig, create_model};
use sconce_core::{Error, SeededRng};
use sconce_layers::{LoadOptions, ParamStore};

/// PyTorch's Adam (no weight decay), enough to drive the overfitting checks.
struct Adam {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
    lr: f64,
}

impl Adam {
    fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let m = vars.iter().map(|v| v.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { v: m.clone(), m, vars, t: 0, lr })
    }

    fn step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            self.m[i] = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mhat = (&self.m[i] / (1.0 - b1.powi(self.t)))?;
            let vhat = (&self.v[i] / (1.0 - b2.powi(self.t)))?;
            let upd = (mhat / (vhat.sqrt()? + eps)?)?;
            var.set(&(var.as_tensor() - (upd * self.lr)?)?)?;
        }
        Ok(())
    }
}

fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>(), shape, &Device::Cpu)?)
}

fn bce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((sconce_tensor::softplus(logits)? - (logits * target)?)?.mean_all()?)
}

/// Loss values over the steps, asserting they fall (allowing BatchNorm's batch-statistics
/// wobble of 2% near the end) and end near zero.
fn assert_overfits(losses: &[f32], end_below: f32) -> Result<()> {
    for w in losses.windows(2) {
        if w[1] > w[0] * 1.02 + 1e-4 {
            bail!("loss rose from {} to {}: {losses:?}", w[0], w[1]);
        }
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    if !(last < end_below && last < first * 0.1) {
        bail!("loss fell only from {first} to {last}: {losses:?}");
    }
    Ok(())
}

/// Under `no_grad` DenseNet's layers keep no history: a backward pass through its output must
/// give its parameters no gradient at all rather than a partial one (the classifier, fed a
/// constant, gets its full gradient), and with gradients enabled every parameter gets one.
#[test]
fn densenet_under_no_grad_gives_its_parameters_no_partial_gradient() -> Result<()> {
    let store = ParamStore::new();
    let cfg = DenseNetConfig {
        growth_rate: 8,
        block_config: [2, 2, 2, 2],
        num_init_features: 16,
        bn_size: 2,
        in_channels: 3,
        num_classes: 4,
    };
    let model = DenseNet::new(&store.builder(5, DType::F32, &Device::Cpu), &cfg)?;
    let x = random(&[2, 3, 32, 32], 6)?;
    for grad in [false, true] {
        let y = sconce_core::set_grad_enabled(grad, || model.forward_t(&x, false))?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        for (name, var) in store.named_vars() {
            let got = grads.get(var.as_tensor()).is_some();
            let want = grad || name.starts_with("classifier");
            if got != want {
                bail!("{name}: gradient {got} with gradients enabled {grad}");
            }
        }
    }
    Ok(())
}

#[test]
fn a_tiny_unet_overfits_one_batch() -> Result<()> {
    let store = ParamStore::new();
    let model = ClassicUnet::new(&store.builder(1, DType::F32, &Device::Cpu), 3, 1, 4)?;
    let x = random(&[2, 3, 32, 32], 2)?;
    // Target: a disc-shaped mask that the input does not trivially reveal.
    let mask: Vec<f32> = (0..2 * 32 * 32)
        .map(|i| {
            let (r, c) = ((i / 32) % 32, i % 32);
            let (dr, dc) = (r as f32 - 15.5, c as f32 - 15.5 - (i / 1024) as f32 * 4.0);
            if dr * dr + dc * dc < 80.0 { 1.0 } else { 0.0 }
        })
        .collect();
    let y = Tensor::from_vec(mask, (2, 1, 32, 32), &Device::Cpu)?;
    let mut opt = Adam::new(store.vars(), 0.03)?;
    let mut losses = Vec::new();
    for _ in 0..60 {
        let loss = bce(&model.forward_t(&x, true)?, &y)?;
        losses.push(loss.to_scalar::<f32>()?);
        opt.step(&loss)?;
    }
    assert_overfits(&losses, 0.05)
}

#[test]
fn a_tiny_resnet_overfits_one_batch() -> Result<()> {
    let store = ParamStore::new();
    let cfg = ResNetConfig::resnet18().widths(8, [8, 16, 16, 32]).depths([1, 1, 1, 1]).num_classes(4);
    let model = ResNet::new(&store.builder(3, DType::F32, &Device::Cpu), &cfg)?;
    let x = random(&[8, 3, 32, 32], 4)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3, 3, 2, 1, 0], &Device::Cpu)?;
    let mut opt = Adam::new(store.vars(), 0.01)?;
    let mut losses = Vec::new();
    for _ in 0..40 {
        let lp = sconce_tensor::log_softmax(&model.forward_t(&x, true)?, 1)?;
        let loss = lp.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
        losses.push(loss.to_scalar::<f32>()?);
        opt.step(&loss)?;
    }
    assert_overfits(&losses, 0.05)
}

#[test]
fn every_unet_maps_250_to_250() -> Result<()> {
    // Full-size models, structure only (zero weights) to keep the test fast: the shapes are
    // what is checked. One full-size forward per architecture.
    let x = Tensor::zeros((1, 3, 250, 250), DType::F32, &Device::Cpu)?;
    for (name, base) in
        [("unet", 8), ("unet", 64), ("unet-resnet18", 64), ("unet-resnet50", 64), ("unet-densenet121", 64)]
    {
        let store = ParamStore::new();
        let vb = store.builder(0, DType::F32, &Device::Cpu).skip_init();
        let m = create_model(name, &vb, &ModelOptions { num_classes: 1, unet_base: base, ..Default::default() })?;
        assert_eq!(m.forward_t(&x, false)?.dims(), &[1, 1, 250, 250], "{name}");
    }
    Ok(())
}

#[test]
fn bad_input_gives_clear_errors() -> Result<()> {
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu);
    let cfg = ResNetConfig::resnet18().widths(8, [8, 8, 8, 8]).num_classes(2);
    let m = ResNet::new(&vb, &cfg)?;
    let msg = |r: candle_core::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = msg(m.forward_t(&Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu)?, false));
    assert!(e.contains("3 channels") && e.contains("[1, 1, 64, 64]"), "{e}");
    let e = msg(m.forward_t(&Tensor::zeros((1, 3, 16, 40), DType::F32, &Device::Cpu)?, false));
    assert!(e.contains("at least 32×32"), "{e}");
    let e = msg(m.forward_t(&Tensor::zeros((3, 64, 64), DType::F32, &Device::Cpu)?, false));
    assert!(e.contains("[N, 3, H, W]"), "{e}");
    let e = create_model("resnet51", &vb.pp("x"), &ModelOptions::default()).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("unknown model `resnet51`; choose one of resnet18"));

    // A ResNet-18 checkpoint offered to a DenseNet: every key is reported, nothing loads.
    let dir = std::env::temp_dir().join(format!("sconce-backbones-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("resnet.safetensors");
    store.save_safetensors(&path)?;
    let other = ParamStore::new();
    let opts = ModelOptions { num_classes: 2, ..Default::default() };
    create_model("densenet121", &other.builder(0, DType::F32, &Device::Cpu).skip_init(), &opts)?;
    match other.load_safetensors(&path, &LoadOptions::strict()) {
        Err(Error::Weights { report: Some(r), .. }) => {
            assert!(r.missing.iter().any(|k| k == "features.conv0.weight"));
            assert!(r.unexpected.iter().any(|k| k == "layer1.0.conv1.weight"));
            assert!(r.loaded.is_empty());
        }
        other => bail!("expected a weights error, got {other:?}"),
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
