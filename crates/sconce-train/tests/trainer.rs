//! The Trainer: an interrupted run resumes to exactly the uninterrupted result, NaN stops
//! training with the step named, a wrong head is refused before any step, early stopping
//! stops, and the loader feeds every sample exactly once per epoch.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use sconce_core::{Activation, Error, SeededRng};
use sconce_data::{Dataset, LabelFormat, Loader, LoaderConfig, Pipeline, Sample, Target};
use sconce_layers::{Linear, ParamStore};
use sconce_losses::{BinaryCrossEntropy, CrossEntropy};
use sconce_train::{
    Adam, AdamConfig, ClassificationEvaluator, EarlyStopping, EpochRecord, Goal, History, Schedule, TrainConfig,
    Trainer,
};

/// 3-class points in 4-D: class = argmax of the first three coordinates (learnable by a linear map).
struct Points {
    n: usize,
}

impl Dataset for Points {
    fn len(&self) -> usize {
        self.n
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn get(&self, i: usize) -> sconce_core::Result<Sample> {
        let mut rng = SeededRng::new(99).fork(i as u64);
        let v: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
        let class = (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0) as u32;
        Ok(Sample { image: v, channels: 4, height: 1, width: 1, target: Target::Class(class) })
    }
}

/// A linear classifier over `[N, 4, 1, 1]` inputs.
struct Flat(Linear);

impl Module for Flat {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&x.flatten_from(1)?)
    }
}

fn tmp(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sconce-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn loader(format: LabelFormat) -> Result<Loader> {
    let mut cfg = LoaderConfig::new(8, 5);
    cfg.label_format = format;
    Ok(Loader::new(Arc::new(Points { n: 60 }), cfg, Pipeline::default())?)
}

struct Run {
    store: ParamStore,
    model: Flat,
}

fn model(seed: u64) -> Result<Run> {
    let store = ParamStore::new();
    let model = Flat(Linear::new(&store.builder(seed, DType::F32, &Device::Cpu), 4, 3, true)?);
    Ok(Run { store, model })
}

fn train(run: &Run, dir: Option<PathBuf>, max_steps: Option<u64>, resume: bool) -> Result<History> {
    let loss = CrossEntropy::new();
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig { lr: 0.05, ..AdamConfig::adam() })?);
    let mut cfg = TrainConfig::new(3, 0.05);
    cfg.schedule = cfg.schedule.with(Schedule::Cosine { t_max: 24, eta_min: 0.001 });
    cfg.checkpoint_dir = dir.clone();
    cfg.progress = false;
    cfg.max_steps = max_steps;
    let mut t = Trainer::new(&run.model, run.store.clone(), &loss, opt, cfg)?;
    if resume && let Some(d) = &dir {
        t.resume(d)?;
    }
    let mut tr = loader(LabelFormat::Index)?;
    let mut val = loader(LabelFormat::Index)?;
    let mut ev = ClassificationEvaluator::new(3)?;
    Ok(t.fit(&mut tr, Some(&mut val), &mut ev, &mut |_: &EpochRecord| {})?)
}

fn weights(run: &Run) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (_, t) in run.store.state_dict() {
        if t.dtype() == DType::F32 {
            out.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() -> Result<()> {
    let full = model(1)?;
    let h_full = train(&full, Some(tmp("full")?), None, false)?;
    assert_eq!(h_full.epochs.len(), 3);
    assert!(h_full.epochs[2].train_loss < h_full.epochs[0].train_loss);

    // Killed in the middle of epoch 2 (8 batches per epoch): only epoch 1's checkpoint exists,
    // plus a half-written temporary folder from the interrupted save.
    let dir = tmp("killed")?;
    let killed = model(1)?;
    let h_killed = train(&killed, Some(dir.clone()), Some(12), false)?;
    assert_eq!(h_killed.epochs.len(), 1);
    std::fs::create_dir_all(dir.join(".checkpoint-epoch0002.tmp"))?;
    std::fs::write(dir.join(".checkpoint-epoch0002.tmp/model.safetensors"), b"garbage")?;

    // A new process: a model initialised differently, restored from the checkpoint.
    let resumed = model(777)?;
    let h = train(&resumed, Some(dir.clone()), None, true)?;
    assert_eq!(h.epochs.len(), 3);
    assert_eq!(weights(&resumed)?, weights(&full)?, "resumed weights differ from the uninterrupted run");
    for (a, b) in h.epochs.iter().zip(&h_full.epochs) {
        assert_eq!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
    }
    // Only the last two checkpoints are kept.
    let kept: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-epoch"))
        .collect();
    assert_eq!(kept.len(), 2);
    Ok(())
}

#[test]
fn resuming_into_another_model_is_refused_with_the_keys() -> Result<()> {
    let dir = tmp("other")?;
    let run = model(1)?;
    train(&run, Some(dir.clone()), Some(9), false)?;
    let store = ParamStore::new();
    let other = Flat(Linear::new(&store.builder(0, DType::F32, &Device::Cpu).pp("head"), 4, 3, true)?);
    let loss = CrossEntropy::new();
    let opt = Box::new(Adam::new(store.named_vars(), AdamConfig::adam())?);
    let mut t = Trainer::new(&other, store.clone(), &loss, opt, TrainConfig::new(2, 0.01))?;
    match t.resume(&dir) {
        Err(Error::Weights { report: Some(r), .. }) => assert!(r.missing.contains(&"head.weight".to_string())),
        other => bail!("expected a weights error, got {:?}", other.err()),
    }
    assert!(matches!(t.resume(&dir.join("nothing-here")), Err(Error::Io { .. })));
    Ok(())
}

#[test]
fn a_diverging_run_stops_naming_the_step() -> Result<()> {
    let run = model(1)?;
    let loss = CrossEntropy::new();
    // Inputs scaled to overflow f32 after a few huge steps.
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig { lr: 1e38, ..AdamConfig::adam() })?);
    let mut cfg = TrainConfig::new(3, 1e38);
    cfg.progress = false;
    let mut t = Trainer::new(&run.model, run.store.clone(), &loss, opt, cfg)?;
    let mut tr = loader(LabelFormat::Index)?;
    let mut ev = ClassificationEvaluator::new(3)?;
    match t.fit(&mut tr, None, &mut ev, &mut |_: &EpochRecord| {}) {
        Err(Error::NonFinite { what, hint }) => {
            assert!(what.contains("at step"), "{what}");
            assert!(hint.contains("learning rate"), "{hint}");
        }
        other => bail!("expected a non-finite error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_wrong_head_is_refused_before_the_first_step() -> Result<()> {
    let run = model(1)?;
    let before = weights(&run)?;
    // Categorical CE with... a model ending in softmax applied twice.
    let loss = CrossEntropy::new();
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig::adam())?);
    let mut cfg = TrainConfig::new(1, 0.01);
    cfg.progress = false;
    cfg.final_activation = Activation::Softmax { axis: 1 };
    let mut t = Trainer::new(&run.model, run.store.clone(), &loss, opt, cfg)?;
    let mut tr = loader(LabelFormat::Index)?;
    let mut ev = ClassificationEvaluator::new(3)?;
    let r = t.fit(&mut tr, None, &mut ev, &mut |_: &EpochRecord| {});
    assert!(matches!(r, Err(Error::HeadCheck { .. })), "{r:?}");
    assert_eq!(weights(&run)?, before, "no step may run before the head check");
    Ok(())
}

#[test]
fn void_labels_pass_the_head_check_when_the_loss_ignores_them() -> Result<()> {
    let run = model(1)?;
    let mut cfg = TrainConfig::new(1, 0.01);
    cfg.progress = false;
    let batch = sconce_train::Batch {
        x: Tensor::ones((4, 4, 1, 1), DType::F32, &Device::Cpu)?,
        y: Tensor::new(&[0u32, 255, 2, 1], &Device::Cpu)?,
    };
    // 255 (void) is out of range for 3 classes unless the loss ignores it.
    let ignoring = CrossEntropy::new().ignore_index(255);
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig::adam())?);
    let t = Trainer::new(&run.model, run.store.clone(), &ignoring, opt, cfg.clone())?;
    t.check_head(&batch)?;
    let plain = CrossEntropy::new();
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig::adam())?);
    let t = Trainer::new(&run.model, run.store.clone(), &plain, opt, cfg)?;
    let r = t.check_head(&batch);
    assert!(matches!(&r, Err(Error::HeadCheck { .. })) && format!("{r:?}").contains("labels-out-of-range"), "{r:?}");
    Ok(())
}

#[test]
fn bce_on_single_label_targets_warns_and_reports_binary_accuracy() -> Result<()> {
    let run = model(1)?;
    let loss = BinaryCrossEntropy::new();
    let opt = Box::new(Adam::new(run.store.named_vars(), AdamConfig { lr: 0.05, ..AdamConfig::adam() })?);
    let mut cfg = TrainConfig::new(2, 0.05);
    cfg.progress = false;
    cfg.early_stopping =
        Some(EarlyStopping { monitor: "accuracy".into(), goal: Goal::Maximize, patience: 0, min_delta: 2.0 });
    let mut t = Trainer::new(&run.model, run.store.clone(), &loss, opt, cfg)?;
    let mut tr = loader(LabelFormat::OneHot)?;
    let mut val = loader(LabelFormat::OneHot)?;
    let mut ev = ClassificationEvaluator::new(3)?;
    let h = t.fit(&mut tr, Some(&mut val), &mut ev, &mut |_: &EpochRecord| {})?;
    assert!(h.findings.iter().any(|f| f.rule == "one-hot-with-bce"), "{:?}", h.findings);
    let last = &h.epochs[h.epochs.len() - 1];
    let (acc, bin) = (last.get("accuracy").unwrap_or(f64::NAN), last.get("binary_accuracy").unwrap_or(f64::NAN));
    assert!(bin > acc || (bin - acc).abs() < 0.2, "binary accuracy {bin} vs accuracy {acc}");
    // min_delta 2 can never be met: patience 0 stops after the first epoch.
    assert!(h.stopped_early);
    assert_eq!(h.epochs.len(), 1);
    Ok(())
}

#[test]
fn the_loader_yields_every_sample_once_per_epoch_in_a_seeded_order() -> Result<()> {
    let l = loader(LabelFormat::Index)?;
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let mut seen = Vec::new();
        for b in l.epoch(epoch) {
            seen.extend(b?.indices);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..60).collect::<Vec<_>>());
        orders.push(seen);
    }
    assert_ne!(orders[0], orders[1], "epochs must be shuffled differently");
    let again: Vec<usize> = l.epoch(1).flat_map(|b| b.map(|b| b.indices).unwrap_or_default()).collect();
    assert_eq!(again, orders[1], "the order of an epoch depends only on the seed");
    // Dropping an epoch early stops its worker (no hang).
    let mut it = l.epoch(0);
    assert!(it.next().is_some());
    drop(it);
    Ok(())
}

#[test]
fn zero_epochs_and_bad_schedules_are_refused() -> Result<()> {
    let run = model(1)?;
    let loss = CrossEntropy::new();
    let opt = || -> Result<Box<Adam>> { Ok(Box::new(Adam::new(run.store.named_vars(), AdamConfig::adam())?)) };
    assert!(Trainer::new(&run.model, run.store.clone(), &loss, opt()?, TrainConfig::new(0, 0.1)).is_err());
    let mut cfg = TrainConfig::new(1, 0.1);
    cfg.schedule = cfg.schedule.with(Schedule::Step { step_size: 0, gamma: 0.5 });
    assert!(Trainer::new(&run.model, run.store.clone(), &loss, opt()?, cfg).is_err());
    let _ = ModuleT::forward_t(&run.model, &Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu)?, false)?;
    Ok(())
}
