//! Image classification: training a ResNet/DenseNet on the built-in 26-class letters dataset
//! (or an image folder), with softmax + cross-entropy or, to show the trap, sigmoid + binary
//! cross-entropy on single-label targets, where the per-output "binary accuracy" looks
//! excellent while the real accuracy does not; and predicting with pretrained weights.
//!
//! ```text
//! cargo run --release --example classify -- train                       # resnet18, letters, softmax + CE, Adam
//! cargo run --release --example classify -- train --loss bce            # the "96% accuracy" illusion, side by side
//! cargo run --release --example classify -- train --data DIR --model resnet50 --weights resnet50.safetensors
//! cargo run --release --example classify -- predict --image photo.jpg --weights hub:timm/resnet50.a1_in1k   # top-5
//! cargo run --release --example classify -- predict --image photo.jpg --weights densenet121.safetensors --model densenet121 --json
//! ```
//! Predict options: `--image PATH` (or the first argument after `predict`), `--weights SPEC`,
//! `--model NAME` (when the checkpoint has no `config.json` and is not a known one),
//! `--resize none` (the image is already at the input size: only normalised), `--topk K`
//! (default 5; `--top K` is the same), `--json` (one object: `model`, `topk` as `index`/`label`/`prob`, `logits`),
//! `--offline` (never download, as `HF_HUB_OFFLINE=1`).
//! Legacy DenseNet key names (`norm.1`) and files without BatchNorm counters load as they are.
//!
//! Training options:
//! `--data DIR` (one folder per class), `--model NAME` (any classifier of
//! `sconce_backbones::MODEL_NAMES`), `--weights SPEC` (a safetensors path or
//! `hub:ORG/NAME[@REV][/FILE]` from the local Hugging Face cache; torchvision/timm names;
//! the classifier is kept when its class count matches, else replaced), `--loss cce|bce`,
//! `--optimizer sgd|adam|adamw`, `--lr X`, `--epochs N`, `--batch-size N`, `--img-size N`,
//! `--train-size N`, `--val-size N`, `--seed N`, `--out DIR` (checkpoints in
//! `DIR/<model>-<loss>-<optimizer>-<timestamp>/`), `--json`, `--smoke`.

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
use sconce::layers::ParamStore;
use sconce::losses::{BinaryCrossEntropy, CrossEntropy};
use sconce::train::{
    Adam, AdamConfig, ClassificationEvaluator, EpochRecord, Optimizer, Schedule, Sgd, SgdConfig, TrainConfig, Trainer,
};

const KNOWN: &[&str] = &[
    "image",
    "resize",
    "top",
    "topk",
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
    "offline",
];

/// `classify predict --image PATH --weights SPEC [--model NAME] [--resize none] [--topk K]
/// [--json]`: timm's eval preprocessing from the checkpoint's `config.json` (or the known
/// table, or timm's defaults), then the top-K classes with their probabilities. The image may
/// also be given as the first argument after `predict`.
fn predict(args: &common::Args) -> Result<()> {
    let image = args
        .opt("image")
        .or(args.positional().get(1).map(String::as_str))
        .context("usage: classify predict --image PATH --weights SPEC")?;
    let weights = args.opt("weights").context("classify predict needs --weights (a path or hub:ORG/NAME)")?;
    let default_k = args.get("top", 5usize)?;
    run_predict(&PredictArgs {
        image,
        weights,
        model: args.opt("model"),
        resize: match args.opt("resize") {
            None => true,
            Some("none") => false,
            Some(other) => bail!("--resize {other}: expected none (the image is already at the input size)"),
        },
        topk: args.get("topk", default_k)?,
        json: args.flag("json"),
        offline: args.flag("offline"),
    })
}

/// What `classify predict` was asked for.
struct PredictArgs<'a> {
    image: &'a str,
    weights: &'a str,
    model: Option<&'a str>,
    resize: bool,
    topk: usize,
    json: bool,
    offline: bool,
}

fn run_predict(req: &PredictArgs) -> Result<()> {
    let (image_path, w) = (req.image, req.weights);
    let spec: sconce::hub::WeightsSpec = w.parse()?;
    let resolver = if req.offline {
        sconce::hub::Resolver::new(sconce::hub::HubCache::from_env(), true)
    } else {
        sconce::hub::Resolver::from_env()
    };
    let pre = resolver.pretrained(&spec)?;
    let model_name = match (req.model, &pre.arch) {
        (Some(m), _) => m.to_string(),
        (None, Some(a)) => a.clone(),
        (None, None) => {
            bail!("{w}: the architecture is not known (no config.json, not a known checkpoint): pass --model")
        }
    };
    if pre.num_classes == 0 {
        bail!("{w} has no classifier (an encoder's weights): predict needs a classification checkpoint");
    }
    let store = ParamStore::new();
    let vb = store.builder(0, DType::F32, &Device::Cpu).skip_init();
    let model = create_model(&model_name, &vb, &ModelOptions { num_classes: pre.num_classes, ..Default::default() })?;
    let report = store.load_safetensors(&pre.path, &pre.load_options())?;
    tracing::info!("{w} ({:?} key names): {report}", pre.naming);
    let img = image::open(image_path).with_context(|| format!("cannot read {image_path}"))?.to_rgb8();
    let (iw, ih) = img.dimensions();
    let p = &pre.cfg.pretrained_cfg;
    let x = sconce::hub::eval_transform(img.as_raw(), ih as usize, iw as usize, p, req.resize)?;
    let x = Tensor::from_vec(x, (1, 3, p.input_size[1], p.input_size[2]), &Device::Cpu)?;
    let logits: Vec<f32> = sconce::no_grad(|| model.forward_t(&x, false))?.flatten_all()?.to_vec1()?;
    let probs: Vec<f32> = sconce::tensor::softmax(&Tensor::new(logits.as_slice(), &Device::Cpu)?, 0)?.to_vec1()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    if req.json {
        let topk: Vec<_> = order
            .iter()
            .take(req.topk)
            .map(|&i| serde_json::json!({"index": i, "label": pre.label(i), "prob": probs[i]}))
            .collect();
        println!("{}", serde_json::json!({"model": model_name, "topk": topk, "logits": logits}));
    } else {
        for &i in order.iter().take(req.topk) {
            println!("{:>7.3}%  {}", probs[i] * 100.0, pre.label(i));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    common::tune_allocator();
    common::init_tracing();
    let args = common::Args::parse(&["json", "smoke", "offline"])?;
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
    // With --json, stdout carries only JSON lines; everything else goes to stderr.
    let say = |s: String| if json { eprintln!("{s}") } else { println!("{s}") };
    if let Some(w) = args.opt("weights") {
        let pre = common::resolver(&args).pretrained(&w.parse()?)?;
        // A pretrained head is kept when it has this many classes, else replaced.
        let (opts, head_note) = if pre.num_classes == classes {
            (pre.load_options(), format!("its {classes}-class head kept"))
        } else {
            let head = if model_name.starts_with("densenet") { "classifier." } else { "fc." };
            (pre.load_options().skip(head), format!("new {classes}-class head"))
        };
        let report = store.load_safetensors(&pre.path, &opts).with_context(|| format!("loading {w}"))?;
        say(format!("weights from {w}: {report} ({head_note})"));
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
    let mut guard = None;
    if !smoke {
        // A folder per run: a rerun must not prune (or mix with) an earlier run's checkpoints.
        let name = format!("{model_name}-{loss_name}-{opt_name}-{}", common::timestamp());
        let dir = common::create_run_dir(&run_dir, &name)?;
        tc.checkpoint_dir = Some(dir.join("checkpoints"));
        guard = Some(common::RunDirGuard::new(&dir, true));
    }
    // The Trainer runs the head checker on the first batch and logs its findings (warnings
    // show by default); an error stops it before any step.
    let mut trainer = Trainer::new(model.as_ref(), store.clone(), loss.as_ref(), optimizer, tc)?;
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
    if let Some(g) = guard {
        g.keep();
    }
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
    if smoke {
        // The predict path on what was just trained: a plain file (no config.json), so the
        // model name is given and the classes come from the file's `fc.weight`.
        let dir = std::env::temp_dir().join(format!("sconce-classify-smoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (weights, image) = (dir.join("model.safetensors"), dir.join("image.png"));
        store.save_safetensors(&weights)?;
        image::RgbImage::from_fn(40, 36, |x, y| image::Rgb([(x * 6) as u8, (y * 7) as u8, ((x + y) * 3) as u8]))
            .save(&image)?;
        let path_str = |p: &std::path::Path| p.to_str().map(str::to_string).context("temporary path is not UTF-8");
        let (weights, image) = (path_str(&weights)?, path_str(&image)?);
        run_predict(&PredictArgs {
            image: &image,
            weights: &weights,
            model: Some(&model_name),
            resize: true,
            topk: 3,
            json: true,
            offline: true,
        })?;
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
