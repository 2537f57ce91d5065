//! Output encodings compared on real data: the same small CNN trained with a softmax one-hot
//! head, ⌈log₂ n⌉ sigmoid bits, Hoffer's fixed Hadamard head and an ECOC code, on
//! scikit-learn's 8×8 digits and the 26-class letters, reporting accuracy, NLL, calibration
//! error and training time for each.
//!
//! ```text
//! cargo run --release --example encodings [-- --dataset digits|letters|both --epochs N --json]
//! ```
//! `--json` prints one object per encoding per dataset with `dataset`, `encoding`, `outputs`,
//! `head_params`, `accuracy`, `nll`, `ece`, `seconds`. `--smoke` runs a tiny version for CI.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use sconce::OutputEncoding;
use sconce::data::{
    Dataset, Digits, LabelFormat, Letters, LettersConfig, Loader, LoaderConfig, Pipeline, Split, Subset,
};
use sconce::encodings::{BinaryCode, CodeAssignment, Ecoc, Hadamard, OneHot};
use sconce::layers::{Act, AdaptiveAvgPool, Builder, ConvBnAct, Head, Linear, MaxPool, ParamStore};
use sconce::train::{Adam, AdamConfig, Optimizer};

/// conv-BN-ReLU ×3 (two 2×2 max pools), average pooling to 2×2 (keeping the coarse layout that
/// tells letters apart), a 128-wide hidden layer, then the head.
struct Net {
    convs: Vec<ConvBnAct>,
    fc: Linear,
    head: Head,
}

impl Net {
    fn new(vb: &Builder, in_ch: usize, enc: &dyn OutputEncoding) -> Result<Self> {
        let widths = [in_ch, 32, 64, 128];
        let mut convs = Vec::new();
        for i in 0..3 {
            let v = vb.pp(format!("conv{i}"));
            convs.push(ConvBnAct::new(&v.pp("conv"), &v.pp("bn"), widths[i], widths[i + 1], 3, 1, 1, Act::Relu)?);
        }
        let fc = Linear::new(&vb.pp("fc"), 128 * 4, 128, true)?;
        let head = Head::new(&vb.pp("head"), 128, &enc.head(128)?)?;
        Ok(Self { convs, fc, head })
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let pool = MaxPool(sconce::tensor::MaxPool2d::new(2));
        let mut y = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward_t(&y, train)?;
            if i < 2 {
                y = pool.forward(&y)?;
            }
        }
        let f = self.fc.forward(&AdaptiveAvgPool((2, 2)).forward(&y)?.flatten_from(1)?)?.relu()?;
        self.head.forward(&f)
    }
}

struct Outcome {
    accuracy: f64,
    nll: f64,
    ece: f64,
}

fn evaluate(net: &Net, enc: &dyn OutputEncoding, test: &Loader) -> Result<Outcome> {
    let (mut probs, mut labels, mut nll) = (Vec::new(), Vec::new(), 0.0);
    for b in test.epoch(0) {
        let b = b?;
        let logits = net.forward_t(&b.x, false)?;
        // Class scores normalised into log-probabilities (exact for one-hot and binary codes,
        // a softmax over the decoder's scores for the others).
        let lp = sconce::tensor::log_softmax(&enc.scores(&logits)?.to_dtype(DType::F64)?, 1)?;
        let y: Vec<u32> = b.y.to_vec1()?;
        let rows: Vec<Vec<f64>> = lp.to_vec2()?;
        for (r, &l) in rows.iter().zip(&y) {
            nll -= r[l as usize];
            probs.extend(r.iter().map(|v| v.exp().clamp(0.0, 1.0)));
        }
        labels.extend(y);
    }
    let k = enc.num_classes();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            let row = &probs[i * k..(i + 1) * k];
            row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j as u32) == Some(**l)
        })
        .count();
    let n = labels.len() as f64;
    Ok(Outcome {
        accuracy: correct as f64 / n,
        nll: nll / n,
        ece: sconce::metrics::expected_calibration_error(&probs, &labels, k, 15)?,
    })
}

fn main() -> Result<()> {
    common::tune_allocator();
    common::init_tracing();
    let args = common::Args::parse(&["json", "smoke"])?;
    args.reject_unknown(&["dataset", "epochs", "json", "smoke", "seed"])?;
    let smoke = args.flag("smoke");
    let json = args.flag("json");
    let which: String = args.get("dataset", "both".to_string())?;
    let seed: u64 = args.get("seed", 0)?;
    let datasets: Vec<&str> = match which.as_str() {
        "both" => vec!["digits", "letters"],
        "digits" => vec!["digits"],
        "letters" => vec!["letters"],
        other => bail!("--dataset {other}: expected digits, letters or both"),
    };
    if !json {
        println!(
            "{:<8} {:<22} {:>7} {:>10} {:>9} {:>8} {:>7} {:>8}",
            "dataset", "encoding", "outputs", "head params", "accuracy", "NLL", "ECE", "seconds"
        );
    }
    for ds_name in datasets {
        let (train_ds, test_ds, in_ch, k, default_epochs): (Arc<dyn Dataset>, Arc<dyn Dataset>, usize, usize, usize) =
            match ds_name {
                "digits" => (Arc::new(Digits::new(Split::Train)?), Arc::new(Digits::new(Split::Test)?), 1, 10, 30),
                _ => {
                    let mk = |len, seed| Letters::new(LettersConfig { len, size: 32, seed, ..Default::default() });
                    (Arc::new(mk(2600, seed)?), Arc::new(mk(520, seed + 1_000_003)?), 3, 26, 10)
                }
            };
        let (train_ds, test_ds): (Arc<dyn Dataset>, Arc<dyn Dataset>) = if smoke {
            (Arc::new(Subset::new(train_ds, (0..32).collect())?), Arc::new(Subset::new(test_ds, (0..16).collect())?))
        } else {
            (train_ds, test_ds)
        };
        let epochs: usize = args.get("epochs", if smoke { 1 } else { default_epochs })?;
        let encodings: Vec<(&str, Box<dyn OutputEncoding>)> = vec![
            ("one-hot (softmax)", Box::new(OneHot::new(k)?)),
            ("binary code (sigmoid)", Box::new(BinaryCode::new(k, CodeAssignment::Plain)?)),
            ("hadamard (fixed)", Box::new(Hadamard::new(k)?)),
            ("ecoc (hadamard rows)", Box::new(Ecoc::hadamard(k)?)),
        ];
        for (name, enc) in encodings {
            let store = ParamStore::new();
            let net = Net::new(&store.builder(seed, DType::F32, &Device::Cpu), in_ch, enc.as_ref())?;
            let head_params: usize =
                store.named_vars().iter().filter(|(k, _)| k.starts_with("head.")).map(|(_, v)| v.elem_count()).sum();
            let lc = LoaderConfig { label_format: LabelFormat::Index, ..LoaderConfig::new(64, seed) };
            let train = Loader::new(train_ds.clone(), lc.clone(), Pipeline::default())?;
            let test = Loader::new(test_ds.clone(), LoaderConfig { shuffle: false, ..lc }, Pipeline::default())?;
            let mut opt = Adam::new(store.named_vars(), AdamConfig { lr: 2e-3, ..AdamConfig::adam() })?;
            let t0 = Instant::now();
            for epoch in 0..epochs {
                for b in train.epoch(epoch) {
                    let b = b?;
                    let loss = enc.loss(&net.forward_t(&b.x, true)?, &b.y)?;
                    let v = loss.to_scalar::<f32>()?;
                    if !v.is_finite() {
                        bail!("{name} on {ds_name}: loss became {v} in epoch {}", epoch + 1);
                    }
                    opt.step(&loss.backward()?)?;
                }
            }
            let seconds = t0.elapsed().as_secs_f64();
            let o = evaluate(&net, enc.as_ref(), &test)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"dataset": ds_name, "encoding": name, "outputs": enc.code_len(),
                        "head_params": head_params, "accuracy": o.accuracy, "nll": o.nll, "ece": o.ece,
                        "seconds": seconds, "epochs": epochs})
                );
            } else {
                println!(
                    "{ds_name:<8} {name:<22} {:>7} {head_params:>10} {:>9.4} {:>8.4} {:>7.4} {seconds:>8.1}",
                    enc.code_len(),
                    o.accuracy,
                    o.nll,
                    o.ece
                );
            }
        }
    }
    Ok(())
}
