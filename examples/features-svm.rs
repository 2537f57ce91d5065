//! `features-svm`: a frozen backbone's pooled features classified by a C-SVC, against a
//! linear softmax head trained on the same features (accuracy and time) — the "CNN features +
//! SVM" recipe, with any sconce backbone.
//!
//! ```text
//! cargo run --release --example features-svm -- [--dataset letters|digits] [--model resnet18]
//!     [--weights SPEC [--offline]] [--train-size 2600] [--test-size 1040] [--size 32] [--c 10] [--json]
//! ```
//! Without `--weights` the backbone keeps its seeded random initialisation (frozen random
//! features: a baseline); with published weights (`--weights hub:timm/resnet18.a1_in1k`, from
//! the local Hugging Face cache) it is the usual transfer-learning setting. `--smoke` runs a
//! tiny version for CI.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use sconce::OutputEncoding;
use sconce::backbones::create_backbone;
use sconce::data::{
    Dataset, Digits, LabelFormat, Letters, LettersConfig, Loader, LoaderConfig, Pipeline, Split, Subset,
};
use sconce::encodings::OneHot;
use sconce::layers::{Linear, ParamStore};
use sconce::svm::{Features, SvmParams, cross_validation, score};
use sconce::train::{Adam, AdamConfig, Optimizer};

/// Global-average-pooled last-stage features and labels of a whole dataset (eval mode).
/// Inputs smaller than `min` (8×8 digits) are upsampled bilinearly to `min`×`min` first.
fn features(backbone: &dyn sconce::Backbone, ds: Arc<dyn Dataset>, min: usize) -> Result<(Vec<f32>, Vec<u32>, usize)> {
    let lc = LoaderConfig { label_format: LabelFormat::Index, shuffle: false, ..LoaderConfig::new(64, 0) };
    let loader = Loader::new(ds, lc, Pipeline::default())?;
    let (mut feats, mut labels, mut dim) = (Vec::new(), Vec::new(), 0);
    for b in loader.epoch(0) {
        let b = b?;
        let (h, w) = (b.x.dim(2)?, b.x.dim(3)?);
        let x = if h < min || w < min {
            sconce::tensor::resize(
                &b.x,
                (min.max(h), min.max(w)),
                sconce::tensor::Interpolation::Bilinear { align_corners: false },
            )?
        } else {
            b.x
        };
        let maps = sconce::no_grad(|| backbone.forward_features(&x, false))?;
        let last = maps.last().context("backbone returned no feature maps")?;
        let pooled = last.mean(3)?.mean(2)?; // [N, C]
        dim = pooled.dim(1)?;
        feats.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
        labels.extend(b.y.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    Ok((feats, labels, dim))
}

/// z-scores the columns of `train` and `test` with the training statistics.
fn standardise(train: &mut [f32], test: &mut [f32], dim: usize) {
    let n = train.len() / dim;
    for c in 0..dim {
        let mean = (0..n).map(|r| f64::from(train[r * dim + c])).sum::<f64>() / n as f64;
        let var = (0..n).map(|r| (f64::from(train[r * dim + c]) - mean).powi(2)).sum::<f64>() / n as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in train.iter_mut().skip(c).step_by(dim).chain(test.iter_mut().skip(c).step_by(dim)) {
            *v = ((f64::from(*v) - mean) / sd) as f32;
        }
    }
}

fn main() -> Result<()> {
    common::tune_allocator();
    common::init_tracing();
    let args = common::Args::parse(&["json", "smoke", "offline"])?;
    args.reject_unknown(&[
        "dataset",
        "model",
        "weights",
        "train-size",
        "test-size",
        "size",
        "c",
        "epochs",
        "json",
        "smoke",
        "offline",
        "seed",
    ])?;
    let smoke = args.flag("smoke");
    let seed: u64 = args.get("seed", 0)?;
    let dataset: String = args.get("dataset", "letters".to_string())?;
    let model: String = args.get("model", "resnet18".to_string())?;
    let size: usize = args.get("size", 32)?;
    let (n_train, n_test) =
        if smoke { (96, 48) } else { (args.get("train-size", 2600)?, args.get("test-size", 1040)?) };
    let (train_ds, test_ds, in_ch): (Arc<dyn Dataset>, Arc<dyn Dataset>, usize) = match dataset.as_str() {
        "letters" => {
            let mk = |len, seed| Letters::new(LettersConfig { len, size, seed, ..Default::default() });
            (Arc::new(mk(n_train, seed)?), Arc::new(mk(n_test, seed + 1_000_003)?), 3)
        }
        "digits" => {
            let (tr, te) = (Arc::new(Digits::new(Split::Train)?), Arc::new(Digits::new(Split::Test)?));
            let cut = |d: Arc<Digits>, n: usize| -> Result<Arc<dyn Dataset>> {
                let n = n.min(d.len());
                Ok(Arc::new(Subset::new(d, (0..n).collect())?))
            };
            (cut(tr, n_train)?, cut(te, n_test)?, 1)
        }
        other => bail!("--dataset {other}: expected letters or digits"),
    };
    let k = train_ds.num_classes();

    let store = ParamStore::new();
    let vb = store.builder(seed, DType::F32, &Device::Cpu);
    let backbone = create_backbone(&model, &vb, in_ch, 0)?;
    if let Some(w) = args.opt("weights") {
        let pre = common::resolver(&args).pretrained(&w.parse()?)?;
        let opts = pre.load_options().skip("fc.").skip("classifier.");
        let report = store.load_safetensors(&pre.path, &opts)?;
        tracing::info!("{w}: {report}");
    }
    let t0 = Instant::now();
    let (mut xtr, ytr, dim) = features(backbone.as_ref(), train_ds, size)?;
    let (mut xte, yte, _) = features(backbone.as_ref(), test_ds, size)?;
    let t_feat = t0.elapsed().as_secs_f64();
    standardise(&mut xtr, &mut xte, dim);
    let (ntr, nte) = (ytr.len(), yte.len());

    // C-SVC, RBF, gamma='scale' (features are z-scored, so γ = 1/dim).
    let c: f64 = args.get("c", 10.0)?;
    let ftr = Features::dense_f32(ntr, dim, &xtr)?;
    let fte = Features::dense_f32(nte, dim, &xte)?;
    let yf: Vec<f64> = ytr.iter().map(|&v| f64::from(v)).collect();
    let params = SvmParams::c_svc().c(c);
    let t1 = Instant::now();
    let svm = params.train(&ftr, &yf)?;
    let t_svm_fit = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let pred = svm.predict(&fte)?;
    let t_svm_pred = t2.elapsed().as_secs_f64();
    let yte_f: Vec<f64> = yte.iter().map(|&v| f64::from(v)).collect();
    let svm_acc = score(params.svm_type, &yte_f, &pred).accuracy.unwrap_or(0.0);
    let cv = if smoke {
        None
    } else {
        Some(score(params.svm_type, &yf, &cross_validation(&params, &ftr, &yf, 5)?).accuracy.unwrap_or(0.0))
    };

    // Linear softmax head on the same features: full-batch Adam on cross-entropy.
    let dev = Device::Cpu;
    let head_store = ParamStore::new();
    let head = Linear::new(&head_store.builder(seed, DType::F32, &dev).pp("head"), dim, k, true)?;
    let enc = OneHot::new(k)?;
    let xt = Tensor::from_vec(xtr.clone(), (ntr, dim), &dev)?;
    let yt = Tensor::from_vec(ytr.clone(), ntr, &dev)?;
    let mut opt = Adam::new(head_store.named_vars(), AdamConfig { lr: 1e-2, ..AdamConfig::adam() })?;
    let epochs: usize = args.get("epochs", if smoke { 20 } else { 300 })?;
    let t3 = Instant::now();
    for _ in 0..epochs {
        let loss = enc.loss(&candle_core::Module::forward(&head, &xt)?, &yt)?;
        opt.step(&loss.backward()?)?;
    }
    let t_head = t3.elapsed().as_secs_f64();
    let logits = candle_core::Module::forward(&head, &Tensor::from_vec(xte.clone(), (nte, dim), &dev)?)?;
    let hp: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let head_acc = hp.iter().zip(&yte).filter(|(a, b)| a == b).count() as f64 / nte as f64;

    if args.flag("json") {
        println!(
            "{}",
            serde_json::json!({"dataset": dataset, "model": model, "weights": args.opt("weights"), "feature_dim": dim,
                "train": ntr, "test": nte, "feature_seconds": t_feat,
                "svm": {"C": c, "gamma": svm.kernel().gamma, "n_sv": svm.total_sv(), "accuracy": svm_acc, "cv5_accuracy": cv,
                        "fit_seconds": t_svm_fit, "predict_seconds": t_svm_pred},
                "softmax_head": {"epochs": epochs, "accuracy": head_acc, "fit_seconds": t_head}})
        );
    } else {
        println!("{dataset}: {model} features ({dim}-d, {ntr} train / {nte} test), extracted in {t_feat:.1} s");
        println!(
            "  C-SVC (RBF, C={c}, γ={:.4})  test accuracy {svm_acc:.4}{}  fit {t_svm_fit:.2} s  predict {t_svm_pred:.3} s  ({} SVs)",
            svm.kernel().gamma,
            cv.map(|a| format!(" (5-fold CV on train {a:.4})")).unwrap_or_default(),
            svm.total_sv()
        );
        println!(
            "  linear softmax head        test accuracy {head_acc:.4}  fit {t_head:.2} s  ({epochs} full-batch Adam steps)"
        );
    }
    if smoke && !(svm_acc.is_finite() && head_acc.is_finite()) {
        bail!("smoke: non-finite accuracy");
    }
    Ok(())
}
