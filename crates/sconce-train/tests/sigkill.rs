//! A run killed with SIGKILL between two checkpoints resumes to exactly the result of an
//! uninterrupted run: the test re-executes itself as a child process that trains, kills it
//! after the first checkpoint, and resumes in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use candle_core::{DType, Device, Module, Tensor};
use sconce_core::SeededRng;
use sconce_data::{Dataset, Loader, LoaderConfig, Pipeline, Sample, Target};
use sconce_layers::{Linear, ParamStore};
use sconce_losses::CrossEntropy;
use sconce_train::{Adam, AdamConfig, ClassificationEvaluator, EpochRecord, History, TrainConfig, Trainer};

const CHILD_ENV: &str = "SCONCE_SIGKILL_CHILD_DIR";

struct Points;

impl Dataset for Points {
    fn len(&self) -> usize {
        48
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn get(&self, i: usize) -> sconce_core::Result<Sample> {
        let mut rng = SeededRng::new(5).fork(i as u64);
        let v: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
        let class = (0..3).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0) as u32;
        Ok(Sample { image: v, channels: 4, height: 1, width: 1, target: Target::Class(class) })
    }
}

struct Flat(Linear);

impl Module for Flat {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&x.flatten_from(1)?)
    }
}

/// Trains 3 epochs (checkpoints in `dir`); `on_epoch` runs after each checkpoint.
fn run(seed: u64, dir: &Path, resume: bool, on_epoch: &mut dyn FnMut(&EpochRecord)) -> Result<(ParamStore, History)> {
    let store = ParamStore::new();
    let model = Flat(Linear::new(&store.builder(seed, DType::F32, &Device::Cpu), 4, 3, true)?);
    let loss = CrossEntropy::new();
    let opt = Box::new(Adam::new(store.named_vars(), AdamConfig { lr: 0.05, ..AdamConfig::adam() })?);
    let mut cfg = TrainConfig::new(3, 0.05);
    cfg.checkpoint_dir = Some(dir.to_path_buf());
    cfg.progress = false;
    let mut t = Trainer::new(&model, store.clone(), &loss, opt, cfg)?;
    if resume {
        t.resume(dir)?;
    }
    let mut train = Loader::new(Arc::new(Points), LoaderConfig::new(8, 3), Pipeline::default())?;
    let mut ev = ClassificationEvaluator::new(3)?;
    let h = t.fit(&mut train, None, &mut ev, on_epoch)?;
    Ok((store, h))
}

fn flat(store: &ParamStore) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (_, t) in store.state_dict() {
        if t.dtype() == DType::F32 {
            out.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

fn tmp(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sconce-sigkill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[test]
fn a_sigkilled_run_resumes_exactly() -> Result<()> {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // Child: train; after the first checkpoint, hang until killed.
        run(1, Path::new(&dir), false, &mut |r: &EpochRecord| {
            if r.epoch == 1 {
                std::thread::sleep(Duration::from_secs(120));
            }
        })?;
        bail!("the child was not killed");
    }
    let dir = tmp("killed")?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "a_sigkilled_run_resumes_exactly", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while !dir.join("latest.json").exists() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            bail!("the child wrote no checkpoint within 60 s");
        }
        if let Some(status) = child.try_wait()? {
            bail!("the child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL on Unix
    child.wait()?;
    assert!(std::fs::read_to_string(dir.join("latest.json"))?.contains("checkpoint-epoch0001"));

    let (full, h_full) = run(1, &tmp("full")?, false, &mut |_: &EpochRecord| {})?;
    let (resumed, h) = run(99, &dir, true, &mut |_: &EpochRecord| {})?;
    assert_eq!(h.epochs.len(), 3);
    assert_eq!(flat(&resumed)?, flat(&full)?, "weights after resuming differ from the uninterrupted run");
    for (a, b) in h.epochs.iter().zip(&h_full.epochs) {
        assert_eq!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
    }
    Ok(())
}
