//! Image classification, training mode: a ResNet/DenseNet on the built-in 26-class letters
//! dataset (or an image folder), with softmax + cross-entropy or, to show the trap, sigmoid +
//! binary cross-entropy on single-label targets, where the per-output "binary accuracy" looks
//! excellent while the real accuracy does not.
//!
//! ```text
//! cargo run --release --example classify -- train                       # resnet18, letters, softmax + CE, Adam
//! cargo run --release --example classify -- train --loss bce            # the "96% accuracy" illusion, side by side
//! cargo run --release --example classify -- train --data DIR --model resnet50 --weights resnet50.safetensors
//! cargo run --release --example classify -- predict photo.jpg --weights hub:timm/resnet50.a1_in1k   # top-5
//! ```
//! Options: `--data DIR` (one folder per class), `--model NAME` (any classifier of
//! `sconce_backbones::MODEL_NAMES`), `--weights SPEC` (a safetensors path or
//! `hub:ORG/NAME[@REV][/FILE]` from the local Hugging Face cache; torchvision/timm names;
//! the classifier is replaced when the class count differs), `--loss cce|bce`,
//! `--optimizer sgd|adam|adamw`, `--lr X`, `--epochs N`, `--batch-size N`, `--img-size N`,
//! `--train-size N`, `--val-size N`, `--seed N`, `--out DIR`, `--json`, `--smoke`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use sconce::backbones::{ModelOptions, create_model};
use sconce::data::{
    Dataset, ImageFolder, LabelFormat, Letters, LettersConfig, Loader, LoaderConfig, Pipeline, Subset, Transform,
};
use sconce::layers::{LoadOptions, ParamStore};
use sconce::losses::{BinaryCrossEntropy, CrossEntropy};
use sconce::train::{
    Adam, AdamConfig, Batch, ClassificationEvaluator, EpochRecord, Optimizer, Schedule, Sgd, SgdConfig, TrainConfig,
    Trainer,
};

const KNOWN: &[&str] = &[
    "resize",
    "top",
    "data",
    "model",
    "weights",
    "loss",
    "optimizer",
    "lr",
    "epochs",
    "batch-size",
    "img-size",
    "train-size",
    "val-size",
    "seed",
    "out",
    "json",
    "smoke",
];

/// `classify predict IMAGE --weights SPEC [--model NAME] [--resize none] [--top K]`: timm's
/// eval preprocessing from the checkpoint's `config.json` (or the known table), then the top-K
/// classes with their probabilities.
fn predict(args: &common::Args) -> Result<()> {
    let image_path = args.positional().get(1).context("usage: classify predict IMAGE --weights SPEC")?;
    let w = args.opt("weights").context("classify predict needs --weights (a path or hub:ORG/NAME)")?;
    let spec: sconce::hub::WeightsSpec = w.parse()?;
    let resolver = sconce::hub::Resolver::from_env();
    let path = resolver.resolve(&spec)?;
    let known = match &spec {
        sconce::hub::WeightsSpec::Hub { repo, .. } => sconce::hub::known_weights(repo),
        sconce::hub::WeightsSpec::File(_) => None,
    };
    let cfg = match resolver.pretrained_cfg(&spec)? {
        Some(c) => c,
        None => {
            let mut c = sconce::hub::PretrainedCfg::from_json("{}", "defaults")?;
            if let Some(k) = known {
                c.pretrained_cfg.input_size = [3, k.input_size, k.input_size];
                c.pretrained_cfg.crop_pct = k.crop_pct;
                c.pretrained_cfg.interpolation = k.interpolation.to_string();
            }
            c
        }
    };
    let model_name: String = match (args.opt("model"), &cfg.architecture, known) {
        (Some(m), _, _) => m.to_string(),
        (None, Some(a), _) => a.clone(),
        (None, None, Some(k)) => k.arch.to_string(),
        _ => bail!("unknown architecture: pass --model"),
    };
    let classes = cfg.num_classes.or(known.map(|k| k.num_classes)).unwrap_or(1000);
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu).skip_init();
    let model = create_model(&model_name, &vb, &ModelOptions { num_classes: classes, ..Default::default() })?;
    let rules = known.map(|k| k.naming.rules()).unwrap_or_default();
    let report = store.load_safetensors(&path, &rules.into_iter().fold(LoadOptions::strict(), LoadOptions::rule))?;
    tracing::info!("{w}: {report}");
    let img = image::open(image_path).with_context(|| format!("cannot read {image_path}"))?.to_rgb8();
    let (iw, ih) = img.dimensions();
    let resize = args.opt("resize") != Some("none");
    let x = sconce::hub::eval_transform(img.as_raw(), ih as usize, iw as usize, &cfg.pretrained_cfg, resize)?;
    let [_, h, wd] = cfg.pretrained_cfg.input_size;
    let x = Tensor::from_vec(x, (1, 3, h, wd), &Device::Cpu)?;
    let probs: Vec<f32> =
        sconce::tensor::softmax(&sconce::no_grad(|| model.forward_t(&x, false))?, 1)?.flatten_all()?.to_vec1()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let top: usize = args.get("top", 5)?;
    for &i in order.iter().take(top) {
        let label = cfg.label_names.as_ref().and_then(|l| l.get(i)).cloned().unwrap_or_else(|| format!("class {i}"));
        println!("{:>7.3}%  {label}", probs[i] * 100.0);
    }
    Ok(())
}

fn main() -> Result<()> {
    common::tune_allocator();
    common::init_tracing();
    let args = common::Args::parse(&["json", "smoke"])?;
    args.reject_unknown(KNOWN)?;
    match args.positional().first().map(String::as_str) {
        Some("train") => {}
        Some("predict") => return predict(&args),
        None if args.flag("smoke") => {}
        _ => bail!("usage: classify train [options]  (see the file's header for the options)"),
    }
    let smoke = args.flag("smoke");
    let model_name: String = args.get("model", "resnet18".to_string())?;
    let loss_name: String = args.get("loss", "cce".to_string())?;
    let opt_name: String = args.get("optimizer", "adam".to_string())?;
    let default_lr = if opt_name == "sgd" { 0.05 } else { 1e-3 };
    let lr: f64 = args.get("lr", default_lr)?;
    let epochs: usize = args.get("epochs", if smoke { 1 } else { 4 })?;
    let batch: usize = args.get("batch-size", if smoke { 8 } else { 32 })?;
    let img: usize = args.get("img-size", 32)?;
    let seed: u64 = args.get("seed", 0)?;
    let json = args.flag("json");

    // Data: the letters (26 classes) or an image folder, split 80/20.
    let (train_ds, val_ds): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match args.opt("data") {
        Some(dir) => {
            let all = Arc::new(ImageFolder::new(dir)?);
            let n = all.len();
            if n < 2 {
                bail!("{dir}: need at least 2 images");
            }
            let order = sconce::SeededRng::new(seed).permutation(n);
            let n_val = (n / 5).max(1);
            (
                Arc::new(Subset::new(all.clone(), order[n_val..].to_vec())?),
                Arc::new(Subset::new(all, order[..n_val].to_vec())?),
            )
        }
        None => {
            let train_n: usize = args.get("train-size", if smoke { 32 } else { 2600 })?;
            let val_n: usize = args.get("val-size", if smoke { 16 } else { 520 })?;
            let mk = |len, seed| Letters::new(LettersConfig { len, size: img.max(16), seed, ..Default::default() });
            (Arc::new(mk(train_n, seed)?), Arc::new(mk(val_n, seed + 1_000_003)?))
        }
    };
    let classes = train_ds.num_classes();
    let names = train_ds.class_names();
    let label_format = match loss_name.as_str() {
        "cce" => LabelFormat::Index,
        "bce" => LabelFormat::OneHot,
        other => bail!("--loss {other}: expected cce or bce"),
    };
    let lc = LoaderConfig { label_format, ..LoaderConfig::new(batch, seed) };
    let pipe = Pipeline(vec![Transform::Resize(img, img)]);
    let mut train = Loader::new(train_ds, lc.clone(), pipe.clone())?;
    let mut val = Loader::new(val_ds, LoaderConfig { shuffle: false, ..lc }, pipe)?;

    let store = ParamStore::new();
    let vb = store.builder(seed, DType::F32, &Device::Cpu);
    let model = create_model(&model_name, &vb, &ModelOptions { num_classes: classes, ..Default::default() })?;
    if model_name.starts_with("unet") {
        bail!("--model {model_name} is a segmentation model; use the segment example");
    }
    if let Some(w) = args.opt("weights") {
        let head = if model_name.starts_with("densenet") { "classifier." } else { "fc." };
        let spec: sconce::hub::WeightsSpec = w.parse()?;
        let naming = match &spec {
            sconce::hub::WeightsSpec::Hub { repo, .. } => sconce::hub::known_weights(repo).map(|k| k.naming.rules()),
            sconce::hub::WeightsSpec::File(_) => None,
        };
        let opts = naming.unwrap_or_default().into_iter().fold(LoadOptions::strict(), LoadOptions::rule).skip(head);
        let path = sconce::hub::Resolver::from_env().resolve(&spec)?;
        let report = store.load_safetensors(&path, &opts).with_context(|| format!("loading {w}"))?;
        println!("weights from {w}: {report} (new {classes}-class head)");
    }
    let loss: Box<dyn sconce::Loss> =
        if loss_name == "bce" { Box::new(BinaryCrossEntropy::new()) } else { Box::new(CrossEntropy::new()) };
    let params = store.named_vars();
    let optimizer: Box<dyn Optimizer> = match opt_name.as_str() {
        "sgd" => Box::new(Sgd::new(params, SgdConfig { lr, momentum: 0.9, weight_decay: 5e-4, ..Default::default() })?),
        "adam" => Box::new(Adam::new(params, AdamConfig { lr, ..AdamConfig::adam() })?),
        "adamw" => Box::new(Adam::new(params, AdamConfig { lr, ..AdamConfig::adamw() })?),
        other => bail!("--optimizer {other}: expected sgd, adam or adamw"),
    };
    let mut tc = TrainConfig::new(epochs, lr);
    tc.schedule =
        tc.schedule.with(Schedule::Cosine { t_max: (epochs * train.num_batches()) as u64, eta_min: lr * 0.01 });
    tc.progress = !json && !smoke;
    let run_dir = PathBuf::from(args.get("out", "runs/classify".to_string())?);
    if !smoke {
        tc.checkpoint_dir = Some(run_dir.join(format!("{model_name}-{loss_name}-{opt_name}")).join("checkpoints"));
    }
    let mut trainer = Trainer::new(model.as_ref(), store.clone(), loss.as_ref(), optimizer, tc)?;
    if let Some(first) = train.epoch(0).next() {
        let b = first?;
        for f in trainer.check_head(&Batch { x: b.x, y: b.y })? {
            println!("head check: {f}");
        }
    }
    if !json {
        println!(
            "classify: {model_name} ({} parameters), {classes} classes, {loss_name} + {opt_name} (lr {lr}), {img}×{img} \
             images, {} train / {} val",
            store.num_parameters(),
            train.num_samples(),
            val.num_samples()
        );
    }
    let mut evaluator = ClassificationEvaluator::new(classes)?;
    let t0 = std::time::Instant::now();
    let history = trainer.fit(&mut train, Some(&mut val), &mut evaluator, &mut |r: &EpochRecord| {
        let acc = r.get("accuracy").unwrap_or(f64::NAN);
        let f1 = r.get("macro_f1").unwrap_or(f64::NAN);
        let bin = r.get("binary_accuracy");
        if json {
            println!(
                "{}",
                serde_json::json!({"epoch": r.epoch, "train_loss": r.train_loss, "val_loss": r.val_loss,
                    "val_accuracy": acc, "val_macro_f1": f1, "val_binary_accuracy": bin, "seconds": r.seconds,
                    "samples_per_sec": r.samples_per_sec})
            );
        } else {
            let bin = bin.map(|b| format!("  binary accuracy {b:.4}")).unwrap_or_default();
            println!(
                "epoch {:>3}  train loss {:.4}  val loss {:.4}  accuracy {acc:.4}  macro F1 {f1:.4}{bin}  {:.1} s ({:.1} samples/s)",
                r.epoch,
                r.train_loss,
                r.val_loss.unwrap_or(f64::NAN),
                r.seconds,
                r.samples_per_sec
            );
        }
    })?;
    if !json && let Some(last) = history.epochs.last() {
        let acc = last.get("accuracy").unwrap_or(f64::NAN);
        println!("done in {:.1} s", t0.elapsed().as_secs_f64());
        println!("  accuracy (arg-max over the {classes} outputs, what a classifier is judged by): {acc:.4}");
        if let Some(bin) = last.get("binary_accuracy") {
            println!(
                "  binary accuracy (each of the {classes} sigmoid outputs vs its 0/1 target; Keras's 'accuracy' with \
                 binary_crossentropy): {bin:.4}"
            );
            println!(
                "  a model that always outputs 'no' scores {:.4} binary accuracy here: use softmax + cross-entropy \
                 (--loss cce) for single-label classes",
                1.0 - 1.0 / classes as f64
            );
        }
        let _ = names;
    }
    Ok(())
}
