//! The main job: pixelwise binary segmentation. With no arguments, trains a U-Net on the
//! built-in synthetic 250×250 scenes (one logit per pixel, sigmoid + binary cross-entropy
//! from logits), prints loss/IoU/Dice per epoch, and writes `runs/segment/<timestamp>/` with
//! the checkpoints, `grid.png` (image | ground truth | prediction) and `curves.png` (loss and
//! IoU per epoch).
//!
//! ```text
//! cargo run --release --example segment
//! cargo run --release --example segment -- --head softmax --loss cce        # refused, with the fix
//! cargo run --release --example segment -- --data DIR --backbone resnet34 --epochs 20
//! cargo run --release --example segment -- --resume runs/segment/<timestamp> --epochs 12
//! cargo run --release --example segment -- --predict image.png --checkpoint runs/segment/<timestamp>
//! ```
//! Options: `--data DIR` (`DIR/images`, `DIR/masks`; 0/255 or 0/1 masks), `--backbone
//! unet|resnet18|resnet34|resnet50|densenet121` (`unet` is the classic U-Net, the others smp's
//! U-Net on that encoder), `--weights SPEC` (encoder weights: a safetensors path or
//! `hub:ORG/NAME[@REV][/FILE]` from the local Hugging Face cache; torchvision/timm names;
//! `--offline` never downloads),
//! `--width N` (classic U-Net base channels), `--img-size N`, `--epochs N`, `--batch-size N`,
//! `--lr X`, `--optimizer sgd|adam|adamw`, `--head sigmoid|softmax`, `--channels N`,
//! `--loss bce|dice|bce+dice|focal|cce`, `--train-size N`, `--val-size N`, `--seed N`,
//! `--out DIR`, `--json` (one JSON object per epoch), `--smoke` (a tiny run for CI).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, ModuleT, Tensor};
use sconce::Activation;
use sconce::backbones::{ClassicUnet, Unet, UnetConfig, create_backbone};
use sconce::data::{
    Dataset, Loader, LoaderConfig, MaskFolder, MaskFormat, MaskMapping, Pipeline, Subset, SyntheticConfig,
    SyntheticShapes, Transform, save_png,
};
use sconce::layers::{LoadOptions, ParamStore};
use sconce::losses::{BinaryCrossEntropy, CrossEntropy, FocalLoss, Mode, RegionLoss, WeightedSum};
use sconce::train::{
    Adam, AdamConfig, EpochRecord, Optimizer, SegmentationEvaluator, Sgd, SgdConfig, TrainConfig, Trainer,
};
use serde::{Deserialize, Serialize};

/// Everything needed to rebuild the model and data of a run (saved as `config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunConfig {
    backbone: String,
    width: usize,
    channels: usize,
    head: String,
    loss: String,
    optimizer: String,
    lr: f64,
    img_size: usize,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    data: Option<PathBuf>,
    train_size: usize,
    val_size: usize,
}

const KNOWN: &[&str] = &[
    "data",
    "backbone",
    "weights",
    "width",
    "img-size",
    "epochs",
    "batch-size",
    "lr",
    "optimizer",
    "head",
    "channels",
    "loss",
    "train-size",
    "val-size",
    "seed",
    "out",
    "json",
    "smoke",
    "offline",
    "resume",
    "predict",
    "checkpoint",
];

fn parse_config(args: &common::Args) -> Result<RunConfig> {
    let smoke = args.flag("smoke");
    let head: String = args.get("head", "sigmoid".to_string())?;
    let loss_default = if head == "softmax" { "cce" } else { "bce" };
    Ok(RunConfig {
        backbone: args.get("backbone", "unet".to_string())?,
        width: args.get("width", if smoke { 4 } else { 16 })?,
        channels: args.get("channels", 1)?,
        loss: args.get("loss", loss_default.to_string())?,
        head,
        optimizer: args.get("optimizer", "adam".to_string())?,
        lr: args.get("lr", 2e-3)?,
        img_size: args.get("img-size", if smoke { 48 } else { 250 })?,
        epochs: args.get("epochs", if smoke { 2 } else { 3 })?,
        batch_size: args.get("batch-size", 4)?,
        seed: args.get("seed", 0)?,
        data: args.opt("data").map(PathBuf::from),
        train_size: args.get("train-size", if smoke { 8 } else { 128 })?,
        val_size: args.get("val-size", if smoke { 4 } else { 32 })?,
    })
}

fn build_model(cfg: &RunConfig, store: &ParamStore) -> Result<Box<dyn ModuleT + Send + Sync>> {
    let vb = store.builder(cfg.seed, DType::F32, &Device::Cpu);
    Ok(if cfg.backbone == "unet" {
        Box::new(ClassicUnet::new(&vb, 3, cfg.channels, cfg.width)?)
    } else {
        let encoder = create_backbone(&cfg.backbone, &vb.pp("encoder"), 3, 0)
            .with_context(|| format!("--backbone {}: use unet or a resnet/densenet name", cfg.backbone))?;
        Box::new(Unet::new(&vb, encoder, &UnetConfig { num_classes: cfg.channels, ..Default::default() })?)
    })
}

fn build_loss(cfg: &RunConfig) -> Result<Box<dyn sconce::Loss>> {
    let multi = cfg.channels > 1;
    let mode = if multi { Mode::Multiclass } else { Mode::Binary };
    Ok(match cfg.loss.as_str() {
        "bce" => Box::new(BinaryCrossEntropy::new()),
        "cce" => Box::new(CrossEntropy::new()),
        "dice" => Box::new(RegionLoss::dice(mode)),
        "focal" => Box::new(FocalLoss::new(mode)),
        "bce+dice" if !multi => Box::new(WeightedSum::new(vec![
            (1.0, Box::new(BinaryCrossEntropy::new()) as Box<dyn sconce::Loss>),
            (1.0, Box::new(RegionLoss::dice(Mode::Binary))),
        ])?),
        "bce+dice" => bail!("--loss bce+dice needs one output channel (--channels 1); with softmax use cce or dice"),
        other => bail!("--loss {other}: expected bce, dice, bce+dice, focal or cce"),
    })
}

/// The head is the activation the loss applies to the logits (the model outputs logits): the
/// choice must agree with the loss.
fn check_head_and_loss(cfg: &RunConfig, loss: &dyn sconce::Loss) -> Result<()> {
    let implied = loss.activation();
    match cfg.head.as_str() {
        "sigmoid" if matches!(implied, Activation::Softmax { .. }) => bail!(
            "--head sigmoid with --loss {}: that loss applies softmax over the channels. Use --loss bce (or \
             dice, bce+dice, focal) for sigmoid outputs",
            cfg.loss
        ),
        "softmax" if matches!(implied, Activation::Sigmoid) && cfg.channels == 1 => bail!(
            "--head softmax with --loss {}: that loss applies a sigmoid per output. For softmax use --loss cce with \
             --channels 2 (background and object)",
            cfg.loss
        ),
        "sigmoid" | "softmax" => Ok(()),
        other => bail!("--head {other}: expected sigmoid or softmax"),
    }
}

fn datasets(cfg: &RunConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    match &cfg.data {
        Some(dir) => {
            let all = Arc::new(MaskFolder::new(dir, MaskMapping::Binary)?);
            let n = all.len();
            if n < 2 {
                bail!("{}: need at least 2 image/mask pairs to split into training and validation", dir.display());
            }
            let order = sconce::SeededRng::new(cfg.seed).permutation(n);
            let n_val = (n / 5).max(1);
            let val = Subset::new(all.clone(), order[..n_val].to_vec())?;
            let train = Subset::new(all, order[n_val..].to_vec())?;
            Ok((Arc::new(train), Arc::new(val)))
        }
        None => {
            let mk = |len, seed| {
                SyntheticShapes::new(SyntheticConfig {
                    len,
                    size: (cfg.img_size, cfg.img_size),
                    seed,
                    ..Default::default()
                })
            };
            Ok((Arc::new(mk(cfg.train_size, cfg.seed)?), Arc::new(mk(cfg.val_size, cfg.seed + 1_000_003)?)))
        }
    }
}

/// The predicted foreground (1.0) of logits `[N, C, H, W]`: logit ≥ 0 for one channel, any
/// class but 0 for several.
fn foreground(y: &Tensor) -> Result<Tensor> {
    let m = if y.dim(1)? == 1 { y.ge(0.0)? } else { y.argmax(1)?.ne(0u32)? };
    Ok(m.to_dtype(DType::F32)?)
}

/// `image | ground truth | prediction` for the first validation samples.
fn write_grid(path: &Path, model: &dyn ModuleT, val: &dyn Dataset, pipeline: &Pipeline, n: usize) -> Result<()> {
    let n = n.min(val.len());
    let mut rows = Vec::new();
    let (mut h, mut w) = (0, 0);
    for i in 0..n {
        let s = pipeline.apply(val.get(i)?, &mut sconce::SeededRng::new(0))?;
        (h, w) = (s.height, s.width);
        let x = Tensor::from_vec(s.image.clone(), (1, 3, h, w), &Device::Cpu)?;
        let y = sconce::no_grad(|| model.forward_t(&x, false))?;
        let pred: Vec<f32> = foreground(&y)?.flatten_all()?.to_vec1()?;
        let gt: Vec<f32> = match &s.target {
            sconce::data::Target::Mask(m) => m.iter().map(|&v| f32::from(v.min(1))).collect(),
            sconce::data::Target::Class(_) => bail!("segmentation dataset gave a class label"),
        };
        rows.push((s.image, gt, pred));
    }
    let gap = 4;
    let (gw, gh) = (3 * w + 2 * gap, n * h + (n.saturating_sub(1)) * gap);
    let mut canvas = vec![1f32; 3 * gh * gw];
    for (r, (img, gt, pred)) in rows.iter().enumerate() {
        for y in 0..h {
            for x in 0..w {
                let oy = r * (h + gap) + y;
                for k in 0..3 {
                    let at = |col: usize| k * gh * gw + oy * gw + col * (w + gap) + x;
                    canvas[at(0)] = img[k * h * w + y * w + x];
                    canvas[at(1)] = gt[y * w + x];
                    canvas[at(2)] = pred[y * w + x];
                }
            }
        }
    }
    Ok(save_png(path, &canvas, 3, gh, gw)?)
}

/// Training and validation loss (red, orange; divided by the largest loss) and validation IoU
/// (blue, 0..1) per epoch, with labelled axes.
fn write_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let (w, h, m) = (640usize, 360usize, 30usize);
    let mut c = vec![1f32; 3 * w * h];
    let mut put = |x: usize, y: usize, rgb: [f32; 3]| {
        if x < w && y < h {
            for k in 0..3 {
                c[k * w * h + y * w + x] = rgb[k];
            }
        }
    };
    for i in 0..=10 {
        let y = m + (h - 2 * m) * i / 10;
        for x in m..w - m {
            put(x, y, [0.88, 0.88, 0.88]);
        }
    }
    for y in m..=h - m {
        put(m, y, [0.0, 0.0, 0.0]);
    }
    for x in m..=w - m {
        put(x, h - m, [0.0, 0.0, 0.0]);
    }
    let n = history.len().max(2);
    let max_loss = history.iter().flat_map(|r| [Some(r.train_loss), r.val_loss]).flatten().fold(1e-12, f64::max);
    type Series = (Box<dyn Fn(&EpochRecord) -> f64>, [f32; 3]);
    let series: [Series; 3] = [
        (Box::new(move |r: &EpochRecord| r.train_loss / max_loss), [0.85, 0.1, 0.1]),
        (Box::new(move |r: &EpochRecord| r.val_loss.unwrap_or(f64::NAN) / max_loss), [0.95, 0.6, 0.1]),
        (Box::new(|r: &EpochRecord| r.get("iou").unwrap_or(f64::NAN)), [0.1, 0.2, 0.85]),
    ];
    // Labels: y ticks every 0.2, epoch numbers on x, a legend on top (5×7 glyphs, scale 1).
    let mut text = |s: &str, x0: usize, y0: usize, rgb: [f32; 3]| {
        for (i, ch) in s.chars().enumerate() {
            if let Some(g) = sconce::data::glyph_5x7(ch) {
                for (r, row) in g.iter().enumerate() {
                    for col in 0..5 {
                        if row >> (4 - col) & 1 == 1 {
                            put(x0 + i * 6 + col, y0 + r, rgb);
                        }
                    }
                }
            }
        }
    };
    for i in 0..=5 {
        let y = (h - m) - (h - 2 * m) * i / 5;
        text(&format!("{:.1}", i as f64 / 5.0), 4, y.saturating_sub(3), [0.3, 0.3, 0.3]);
    }
    let n_ep = history.len();
    for (i, r) in history.iter().enumerate() {
        let x = m + (w - 2 * m) * i / n_ep.saturating_sub(1).max(1);
        text(&r.epoch.to_string(), x.saturating_sub(2), h - m + 6, [0.3, 0.3, 0.3]);
    }
    text("TRAIN LOSS", m + 10, 8, [0.85, 0.1, 0.1]);
    text("VAL LOSS", m + 90, 8, [0.95, 0.6, 0.1]);
    text("VAL IOU", m + 160, 8, [0.1, 0.2, 0.85]);
    text("LOSS / MAX LOSS, IOU  VS  EPOCH", w - m - 190, 8, [0.3, 0.3, 0.3]);
    for (f, rgb) in &series {
        let pts: Vec<(f64, f64)> = history
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let x = m as f64 + (w - 2 * m) as f64 * i as f64 / (n - 1) as f64;
                let y = (h - m) as f64 - (h - 2 * m) as f64 * f(r).clamp(0.0, 1.0);
                (x, y)
            })
            .filter(|p| p.1.is_finite())
            .collect();
        for seg in pts.windows(2) {
            let steps = ((seg[1].0 - seg[0].0).abs().max((seg[1].1 - seg[0].1).abs()) as usize).max(1);
            for s in 0..=steps {
                let t = s as f64 / steps as f64;
                let (x, y) = (seg[0].0 + (seg[1].0 - seg[0].0) * t, seg[0].1 + (seg[1].1 - seg[0].1) * t);
                for d in 0..2 {
                    put(x as usize + d, y as usize, *rgb);
                    put(x as usize, y as usize + d, *rgb);
                }
            }
        }
        for &(x, y) in &pts {
            for dy in 0..5 {
                for dx in 0..5 {
                    put((x as usize + dx).saturating_sub(2), (y as usize + dy).saturating_sub(2), *rgb);
                }
            }
        }
    }
    Ok(save_png(path, &c, 3, h, w)?)
}

fn predict(args: &common::Args, image: &str) -> Result<()> {
    let run = PathBuf::from(args.opt("checkpoint").context("--predict needs --checkpoint RUN_DIR")?);
    let cfg: RunConfig = serde_json::from_str(
        &std::fs::read_to_string(run.join("config.json")).with_context(|| format!("{}/config.json", run.display()))?,
    )
    .with_context(|| format!("{}/config.json is not a segment run config", run.display()))?;
    let store = ParamStore::new();
    let model = build_model(&cfg, &store)?;
    let ckpt = sconce::train::latest_checkpoint(&run.join("checkpoints"))?;
    store.load_safetensors(ckpt.join("model.safetensors"), &LoadOptions::strict())?;
    let img = image::open(image).with_context(|| format!("cannot read {image}"))?;
    let (ow, oh) = (img.width() as usize, img.height() as usize);
    let x = Tensor::from_vec(sconce::data::image_to_chw(&img), (1, 3, oh, ow), &Device::Cpu)?;
    let x = sconce::tensor::resize(
        &x,
        (cfg.img_size, cfg.img_size),
        sconce::tensor::Interpolation::Bilinear { align_corners: false },
    )?;
    let y = sconce::no_grad(|| model.forward_t(&x, false))?;
    let y = sconce::tensor::resize(&y, (oh, ow), sconce::tensor::Interpolation::Bilinear { align_corners: false })?;
    let mask = foreground(&y)?;
    let out = PathBuf::from(args.opt("out").map(String::from).unwrap_or_else(|| {
        let p = Path::new(image);
        format!("{}.mask.png", p.with_extension("").display())
    }));
    save_png(&out, &mask.flatten_all()?.to_vec1::<f32>()?, 1, oh, ow)?;
    println!("wrote {} ({} foreground pixels of {})", out.display(), mask.sum_all()?.to_scalar::<f32>()?, oh * ow);
    Ok(())
}

fn main() -> Result<()> {
    common::tune_allocator();
    common::init_tracing();
    let args = common::Args::parse(&["json", "smoke", "offline"])?;
    args.reject_unknown(KNOWN)?;
    if let Some(image) = args.opt("predict") {
        return predict(&args, image);
    }
    let (cfg, run_dir) = match args.opt("resume") {
        Some(dir) => {
            // The run's configuration is its own: only the epoch count may change.
            let fixed: Vec<&str> = KNOWN
                .iter()
                .copied()
                .filter(|k| !matches!(*k, "resume" | "epochs" | "json" | "offline"))
                .filter(|k| args.opt(k).is_some() || args.flag(k))
                .collect();
            if !fixed.is_empty() {
                bail!(
                    "--resume continues a run with its own configuration ({dir}/config.json); only --epochs can \
                     change. Remove --{}",
                    fixed.join(", --")
                );
            }
            let dir = PathBuf::from(dir);
            let mut cfg: RunConfig = serde_json::from_str(
                &std::fs::read_to_string(dir.join("config.json"))
                    .with_context(|| format!("{}/config.json", dir.display()))?,
            )?;
            cfg.epochs = args.get("epochs", cfg.epochs)?;
            (cfg, dir)
        }
        None => {
            let cfg = parse_config(&args)?;
            let out = PathBuf::from(args.get("out", "runs/segment".to_string())?);
            (cfg, out)
        }
    };
    let json = args.flag("json");

    let store = ParamStore::new();
    let model = build_model(&cfg, &store)?;
    if let Some(w) = args.opt("weights") {
        if cfg.backbone == "unet" {
            bail!(
                "--weights loads encoder weights; the classic U-Net has no pretrained encoder (use --backbone resnet50)"
            );
        }
        let pre = common::resolver(&args).pretrained(&w.parse()?)?;
        // The checkpoint's own spelling first (transformers, legacy DenseNet: detected from the
        // file's keys), then the encoder prefix of smp's U-Net.
        let opts = pre
            .load_options()
            .rule(sconce::layers::KeyRule::prefix("", "encoder."))
            .rule(sconce::layers::KeyRule::Drop("encoder.fc.".into()))
            .rule(sconce::layers::KeyRule::Drop("encoder.classifier.".into()))
            .skip("decoder.")
            .skip("segmentation_head.");
        let report = store.load_safetensors(&pre.path, &opts)?;
        tracing::info!("encoder weights from {w}: {report}");
    }
    let loss = build_loss(&cfg)?;
    check_head_and_loss(&cfg, loss.as_ref())?;
    let (train_ds, val_ds) = datasets(&cfg)?;
    let size = cfg.img_size;
    let mask_format = if cfg.channels == 1 { MaskFormat::Binary } else { MaskFormat::Index };
    let mut lc = LoaderConfig::new(cfg.batch_size, cfg.seed);
    lc.mask_format = mask_format;
    let train_pipe = Pipeline(vec![Transform::Resize(size, size), Transform::HFlip(0.5), Transform::VFlip(0.5)]);
    let val_pipe = Pipeline(vec![Transform::Resize(size, size)]);
    let mut train = Loader::new(train_ds, lc.clone(), train_pipe)?;
    let mut val = Loader::new(val_ds.clone(), LoaderConfig { shuffle: false, ..lc }, val_pipe.clone())?;

    let params = store.named_vars();
    let optimizer: Box<dyn Optimizer> = match cfg.optimizer.as_str() {
        "sgd" => {
            Box::new(Sgd::new(params, SgdConfig { lr: cfg.lr, momentum: 0.9, nesterov: true, ..Default::default() })?)
        }
        "adam" => Box::new(Adam::new(params, AdamConfig { lr: cfg.lr, ..AdamConfig::adam() })?),
        "adamw" => Box::new(Adam::new(params, AdamConfig { lr: cfg.lr, ..AdamConfig::adamw() })?),
        other => bail!("--optimizer {other}: expected sgd, adam or adamw"),
    };
    let steps = (cfg.epochs * train.num_batches()) as u64;
    let mut tc = TrainConfig::new(cfg.epochs, cfg.lr);
    tc.schedule = tc.schedule.with(sconce::train::Schedule::Cosine { t_max: steps.max(1), eta_min: cfg.lr * 0.05 });
    // A new run gets a folder of its own under --out; a resumed one continues in its folder.
    let fresh = args.opt("resume").is_none();
    let run_dir = if fresh { common::create_run_dir(&run_dir, &common::timestamp())? } else { run_dir };
    let guard = common::RunDirGuard::new(&run_dir, fresh);
    tc.checkpoint_dir = Some(run_dir.join("checkpoints"));
    tc.progress = !json && !args.flag("smoke");
    let mut trainer = Trainer::new(model.as_ref(), store.clone(), loss.as_ref(), optimizer, tc)?;
    // Check the head on a real batch before anything is written: a refused configuration
    // leaves no run folder behind.
    if let Some(first) = train.epoch(0).next() {
        let b = first?;
        trainer.check_head(&sconce::train::Batch { x: b.x, y: b.y }).map_err(|e| {
            anyhow::anyhow!(
                "{e}\nIn this example: `--head sigmoid --loss bce` (one logit per pixel, the default), or `--head \
                 softmax --loss cce --channels 2` (background and object channels)."
            )
        })?;
    }
    common::write_json(&run_dir.join("config.json"), &cfg)?;
    if !fresh {
        trainer.resume(&run_dir.join("checkpoints"))?;
    }
    if !json {
        println!(
            "segment: {} (width {}, {} output channel(s), {} + {}), {} parameters, {}×{} images, {} train / {} val, run dir {}",
            cfg.backbone,
            cfg.width,
            cfg.channels,
            cfg.head,
            cfg.loss,
            store.num_parameters(),
            size,
            size,
            train.num_samples(),
            val.num_samples(),
            run_dir.display()
        );
    }
    let mut evaluator = SegmentationEvaluator::new(2)?;
    let t0 = std::time::Instant::now();
    let history = trainer.fit(&mut train, Some(&mut val), &mut evaluator, &mut |r: &EpochRecord| {
        let (iou, dice) = (r.get("iou").unwrap_or(f64::NAN), r.get("dice").unwrap_or(f64::NAN));
        if json {
            println!(
                "{}",
                serde_json::json!({"epoch": r.epoch, "train_loss": r.train_loss, "val_loss": r.val_loss,
                    "val_iou": iou, "val_dice": dice, "seconds": r.seconds, "samples_per_sec": r.samples_per_sec})
            );
        } else {
            println!(
                "epoch {:>3}  train loss {:.4}  val loss {:.4}  IoU {:.4}  Dice {:.4}  {:.1} s ({:.2} samples/s)",
                r.epoch,
                r.train_loss,
                r.val_loss.unwrap_or(f64::NAN),
                iou,
                dice,
                r.seconds,
                r.samples_per_sec
            );
        }
    })?;
    guard.keep();
    common::write_json(&run_dir.join("history.json"), &history.epochs)?;
    write_grid(&run_dir.join("grid.png"), model.as_ref(), val_ds.as_ref(), &val_pipe, 4)?;
    write_curves(&run_dir.join("curves.png"), &history.epochs)?;
    if !json {
        let last = history.epochs.last();
        println!(
            "done in {:.1} s: val IoU {:.4}, Dice {:.4}; wrote {}/{{grid.png, curves.png, history.json, checkpoints/}}",
            t0.elapsed().as_secs_f64(),
            last.and_then(|r| r.get("iou")).unwrap_or(f64::NAN),
            last.and_then(|r| r.get("dice")).unwrap_or(f64::NAN),
            run_dir.display()
        );
    }
    Ok(())
}
