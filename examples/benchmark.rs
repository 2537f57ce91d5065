//! Model throughput like timm's `benchmark.py`: samples/s and median step time of inference
//! or a training step (forward, loss, backward, SGD update) for any model of
//! `sconce_backbones::create_model`, plus the process's peak memory.
//!
//! ```text
//! cargo run --release --example benchmark -- --model resnet50 --batch-size 8 --img-size 224 --bench train [--json]
//! ```
//! Options: `--model NAME` (see `sconce_backbones::MODEL_NAMES`), `--batch-size N`,
//! `--img-size N`, `--bench inference|train|load`, `--steps N` (timed), `--warmup N`,
//! `--weights FILE` (for `load`: the safetensors file to load; default a file of this model
//! written to a temporary folder first),
//! `--num-classes N` (default 1000, 1 for U-Nets), `--unet-base N` (classic U-Net width, 64),
//! `--json` (one JSON object), `--smoke`.
//! `scripts/bench_backbones.py` measures timm/smp with the same options for the comparison in
//! `docs/benchmarks.md`; `scripts/bench_load.py` compares `--bench load` (a fresh model plus a
//! strict mmap load of a cached file) with timm's `create_model(pretrained=True)` on that file.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use sconce::SeededRng;
use sconce::backbones::{ModelOptions, create_model};
use sconce::layers::ParamStore;
use sconce::train::{Optimizer, Sgd, SgdConfig};

fn random(shape: &[usize], rng: &mut SeededRng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>(), shape, &Device::Cpu)?)
}

fn main() -> Result<()> {
    common::tune_allocator();
    let args = common::Args::parse(&["json", "smoke"])?;
    args.reject_unknown(&[
        "model",
        "batch-size",
        "img-size",
        "bench",
        "steps",
        "warmup",
        "num-classes",
        "unet-base",
        "weights",
        "json",
        "smoke",
    ])?;
    let smoke = args.flag("smoke");
    let model_name: String = args.get("model", if smoke { "resnet18".to_string() } else { "resnet50".to_string() })?;
    let batch: usize = args.get("batch-size", if smoke { 2 } else { 8 })?;
    let img: usize = args.get("img-size", if smoke { 32 } else { 224 })?;
    let steps: usize = args.get("steps", if smoke { 1 } else { 10 })?;
    let warmup: usize = args.get("warmup", if smoke { 0 } else { 3 })?;
    let segmentation = model_name.starts_with("unet");
    let num_classes: usize = args.get("num-classes", if segmentation { 1 } else { 1000 })?;
    let benches: Vec<String> = match args.opt("bench") {
        Some(b) => vec![b.to_string()],
        None if smoke => vec!["inference".into(), "train".into()],
        None => vec!["inference".into()],
    };
    if steps == 0 || batch == 0 {
        bail!("--steps and --batch-size must be > 0");
    }

    let unet_base: usize = args.get("unet-base", 64)?;
    if benches.iter().any(|b| b == "load") {
        return bench_load(
            &args,
            &model_name,
            ModelOptions { num_classes, unet_base, ..Default::default() },
            steps,
            smoke,
        );
    }
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu);
    let model = create_model(&model_name, &vb, &ModelOptions { num_classes, unet_base, ..Default::default() })?;
    let mut rng = SeededRng::new(1);
    let x = random(&[batch, 3, img, img], &mut rng)?;
    // As timm's benchmark: `torch.optim.SGD(lr=0.01)`, sconce-train's in-place update.
    let opt = std::sync::Mutex::new(Sgd::new(store.named_vars(), SgdConfig { lr: 0.01, ..SgdConfig::default() })?);
    for bench in benches {
        let train = match bench.as_str() {
            "inference" => false,
            "train" => true,
            other => bail!("--bench {other}: expected inference or train"),
        };
        let target = if segmentation {
            let m: Vec<f32> = (0..batch * num_classes * img * img).map(|i| ((i / 7) % 2) as f32).collect();
            Tensor::from_vec(m, (batch, num_classes, img, img), &Device::Cpu)?
        } else {
            Tensor::from_vec((0..batch).map(|i| (i % num_classes) as u32).collect::<Vec<_>>(), batch, &Device::Cpu)?
        };
        let step_inner = || -> Result<()> {
            if !train {
                // As timm's benchmark runs inference under `torch.no_grad()`.
                sconce::no_grad(|| model.forward_t(&x, false))?;
                return Ok(());
            }
            let y = model.forward_t(&x, true)?;
            let loss = if segmentation {
                (sconce::tensor::softplus(&y)? - (&y * &target)?)?.mean_all()?
            } else {
                sconce::tensor::log_softmax(&y, 1)?.gather(&target.unsqueeze(1)?, 1)?.neg()?.mean_all()?
            };
            let grads = loss.backward()?;
            opt.lock().map_err(|_| anyhow::anyhow!("optimizer lock poisoned"))?.step(&grads)?;
            Ok(())
        };
        // Each step runs on the kernels' thread pool, as `sconce_train::Trainer` runs it.
        let step = || sconce::tensor::on_pool(step_inner);
        for _ in 0..warmup {
            step()?;
        }
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t = Instant::now();
            step()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let sps = batch as f64 / median;
        let peak = common::peak_rss_mib().unwrap_or(f64::NAN);
        if args.flag("json") {
            let j = serde_json::json!({
                "model": model_name, "bench": bench, "batch_size": batch, "img_size": img,
                "samples_per_sec": sps, "step_ms": median * 1e3, "peak_rss_mib": peak,
                "steps": steps, "warmup": warmup, "threads": rayon::current_num_threads(),
            });
            println!("{j}");
        } else {
            println!(
                "{model_name} {bench} batch {batch} at {img}×{img}: {sps:.2} samples/s, step {:.1} ms (median of \
                 {steps} after {warmup} warm-up), peak RSS {peak:.0} MiB, {} parameters",
                median * 1e3,
                store.num_parameters()
            );
        }
    }
    Ok(())
}

/// Median time to build a model and strictly load a safetensors file into it (mmap).
fn bench_load(args: &common::Args, name: &str, opts: ModelOptions, steps: usize, smoke: bool) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("sconce-bench-load-{}", std::process::id()));
    let file = match args.opt("weights") {
        Some(f) => std::path::PathBuf::from(f),
        None => {
            std::fs::create_dir_all(&tmp)?;
            let store = ParamStore::new();
            create_model(name, &store.builder(0, DType::F32, &Device::Cpu), &opts)?;
            let f = tmp.join("model.safetensors");
            store.save_safetensors(&f)?;
            f
        }
    };
    let load = || -> Result<ParamStore> {
        let store = ParamStore::new();
        let model = create_model(name, &store.builder(0, DType::F32, &Device::Cpu).skip_init(), &opts)?;
        store.load_safetensors(&file, &sconce::layers::LoadOptions::strict())?;
        drop(model);
        Ok(store)
    };
    load()?; // warm the page cache, as a cached hub file is
    let mut times = Vec::new();
    for _ in 0..steps.max(if smoke { 1 } else { 5 }) {
        let t = Instant::now();
        let s = load()?;
        times.push(t.elapsed().as_secs_f64());
        drop(s);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if args.flag("json") {
        println!("{}", serde_json::json!({"model": name, "bench": "load", "load_ms": median * 1e3, "file": file}));
    } else {
        println!(
            "{name} load: build + strict mmap load of {} in {:.1} ms (median of {})",
            file.display(),
            median * 1e3,
            times.len()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
