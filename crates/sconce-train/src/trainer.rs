//! The training loop: head check before the first step, progress bar, per-epoch evaluation,
//! atomic checkpoints with exact resume, early stopping, and a clear stop on NaN/Inf.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, ModuleT, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sconce_core::{Activation, Error, Loss, Result};
use sconce_layers::{LoadOptions, ParamStore, save_safetensors_atomic};
use sconce_losses::{Finding, HeadChecker, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::optim::{Optimizer, clip_grad_norm, grad_norm};
use crate::schedule::LrSchedule;

/// One batch: inputs and targets.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Model input, e.g. `[N, 3, H, W]`.
    pub x: Tensor,
    /// Targets in the form the loss expects.
    pub y: Tensor,
}

/// A source of batches, one pass per epoch. The order of an epoch must depend only on the
/// source's seed and the epoch number, so that a resumed run sees the same batches.
pub trait BatchSource {
    /// Batches per epoch.
    fn num_batches(&self) -> usize;
    /// Samples per epoch.
    fn num_samples(&self) -> usize;
    /// The batches of `epoch` (0-based).
    ///
    /// # Errors
    /// Data errors (unreadable files, bad labels) as they are met.
    fn batches(&mut self, epoch: usize) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>>;
}

/// Accumulates metrics over an evaluation pass.
pub trait Evaluator {
    /// Starts a new pass.
    fn reset(&mut self);
    /// Adds one batch of logits and targets.
    ///
    /// # Errors
    /// Shape or label errors.
    fn update(&mut self, logits: &Tensor, target: &Tensor) -> Result<()>;
    /// The metrics of the pass, by name (e.g. `iou`, `dice`, `accuracy`).
    ///
    /// # Errors
    /// When nothing was added.
    fn compute(&self) -> Result<Vec<(String, f64)>>;
}

/// Whether a larger or a smaller monitored value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Smaller is better (losses).
    Minimize,
    /// Larger is better (IoU, accuracy).
    Maximize,
}

/// Stop when the monitored value has not improved by `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// `val_loss`, `train_loss` or a metric name of the evaluator.
    pub monitor: String,
    /// Direction of improvement.
    pub goal: Goal,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Minimum change that counts as an improvement.
    pub min_delta: f64,
}

/// Settings of a [`Trainer`].
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Epochs to run (in total, including those of a resumed run).
    pub epochs: usize,
    /// Learning rate per optimizer step.
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Early stopping, if any.
    pub early_stopping: Option<EarlyStopping>,
    /// Where checkpoints go (one per epoch, the last `keep_checkpoints` kept).
    pub checkpoint_dir: Option<PathBuf>,
    /// How many checkpoints to keep.
    pub keep_checkpoints: usize,
    /// Show an `indicatif` progress bar on stderr.
    pub progress: bool,
    /// The activation the model itself applies to its outputs before the loss (for the head
    /// check). `Identity` for models that output logits, as every sconce model does: the loss
    /// implies the sigmoid or softmax.
    pub final_activation: Activation,
    /// Stop after this many optimizer steps within the run (tests of interrupted runs).
    pub max_steps: Option<u64>,
}

impl TrainConfig {
    /// `epochs` at a constant learning rate, no clipping, no checkpoints, progress bar on, a
    /// model that outputs logits.
    pub fn new(epochs: usize, lr: f64) -> Self {
        Self {
            epochs,
            schedule: LrSchedule::constant(lr),
            clip_grad_norm: None,
            early_stopping: None,
            checkpoint_dir: None,
            keep_checkpoints: 2,
            progress: true,
            final_activation: Activation::Identity,
            max_steps: None,
        }
    }
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean validation loss, when there is a validation source.
    pub val_loss: Option<f64>,
    /// Validation metrics by name.
    pub metrics: Vec<(String, f64)>,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_sec: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
}

impl EpochRecord {
    /// A metric by name (`train_loss` and `val_loss` included).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "train_loss" => Some(self.train_loss),
            "val_loss" => self.val_loss,
            _ => self.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| *v),
        }
    }
}

/// The outcome of [`Trainer::fit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Every epoch so far (including those before a resume).
    pub epochs: Vec<EpochRecord>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Head-check findings below error severity (warnings and notes).
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    epochs_done: usize,
    global_step: u64,
    history: Vec<EpochRecord>,
    best: Option<f64>,
    since_best: usize,
    optimizer: Value,
}

/// Trains a model whose parameters live in a [`ParamStore`] with a loss and an optimizer.
pub struct Trainer<'a> {
    model: &'a (dyn ModuleT + Sync),
    store: ParamStore,
    loss: &'a dyn Loss,
    optimizer: Box<dyn Optimizer + 'a>,
    cfg: TrainConfig,
    state: RunState,
    checked: bool,
}

impl<'a> Trainer<'a> {
    /// A trainer for `model` (parameters in `store`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid schedule or zero epochs.
    pub fn new(
        model: &'a (dyn ModuleT + Sync),
        store: ParamStore,
        loss: &'a dyn Loss,
        optimizer: Box<dyn Optimizer + 'a>,
        cfg: TrainConfig,
    ) -> Result<Self> {
        cfg.schedule.validate()?;
        if cfg.epochs == 0 {
            return Err(Error::config("epochs", "must be > 0"));
        }
        let state = RunState {
            epochs_done: 0,
            global_step: 0,
            history: Vec::new(),
            best: None,
            since_best: 0,
            optimizer: Value::Null,
        };
        Ok(Self { model, store, loss, optimizer, cfg, state, checked: false })
    }

    /// Epochs completed (after a resume, those of the interrupted run).
    pub fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    /// Runs the head checker on one batch: errors stop training (returned as
    /// [`Error::HeadCheck`]), warnings are logged and returned.
    ///
    /// # Errors
    /// [`Error::HeadCheck`] for a configuration that cannot train (softmax over one channel,
    /// targets the loss cannot take, ...).
    pub fn check_head(&self, batch: &Batch) -> Result<Vec<Finding>> {
        let logits = sconce_core::no_grad(|| sconce_tensor::on_pool(|| self.model.forward_t(&batch.x, false)))?;
        let findings =
            HeadChecker::new(logits.dims(), self.cfg.final_activation, self.loss).targets(&batch.y).enforce()?;
        for f in &findings {
            match f.severity {
                Severity::Warning | Severity::Error => tracing::warn!("{f}"),
                Severity::Info => tracing::info!("{f}"),
            }
        }
        Ok(findings)
    }

    /// Loads the latest checkpoint in `dir` (weights, optimizer state, history), so that
    /// [`Trainer::fit`] continues with the next epoch exactly as the interrupted run would have.
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Parse`] for a missing or corrupt checkpoint, [`Error::Weights`]
    /// when it belongs to another model.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let ckpt = latest_checkpoint(dir)?;
        let state_path = ckpt.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: RunState = serde_json::from_str(&text).map_err(|e| {
            Error::parse(state_path.display().to_string(), None, format!("not a sconce run state: {e}"))
        })?;
        self.store.load_safetensors(ckpt.join("model.safetensors"), &LoadOptions::strict())?;
        let opt_path = ckpt.join("optimizer.safetensors");
        let tensors: HashMap<String, Tensor> = if opt_path.exists() {
            candle_core::safetensors::load(&opt_path, &candle_core::Device::Cpu).map_err(|e| {
                Error::parse(opt_path.display().to_string(), None, format!("unreadable optimizer state: {e}"))
            })?
        } else {
            HashMap::new()
        };
        self.optimizer.load_state(&tensors, &state.optimizer)?;
        tracing::info!(checkpoint = %ckpt.display(), epochs_done = state.epochs_done, "resumed");
        self.state = state;
        Ok(())
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = format!("checkpoint-epoch{:04}", self.state.epochs_done);
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        let r = self.write_checkpoint(dir, &name, &tmp);
        if r.is_err() {
            // A failed save leaves no half-written folder behind.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }

    fn write_checkpoint(&self, dir: &Path, name: &str, tmp: &Path) -> Result<()> {
        let fin = dir.join(name);
        std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
        self.store.save_safetensors(tmp.join("model.safetensors"))?;
        let opt: HashMap<String, Tensor> = self.optimizer.state_tensors()?.into_iter().collect();
        save_safetensors_atomic(&opt, &tmp.join("optimizer.safetensors"))?;
        let mut state = self.state.clone();
        state.optimizer = self.optimizer.state_json();
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::data("run state", format!("cannot be written as JSON: {e}")))?;
        write_atomic(&tmp.join("state.json"), text.as_bytes())?;
        let _ = std::fs::remove_dir_all(&fin);
        std::fs::rename(tmp, &fin).map_err(|e| Error::io(&fin, e))?;
        write_atomic(&dir.join("latest.json"), json!({ "checkpoint": name }).to_string().as_bytes())?;
        // Keep the newest `keep_checkpoints`.
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-epoch")))
            .collect();
        all.sort();
        let keep = self.cfg.keep_checkpoints.max(1);
        if all.len() > keep {
            for p in &all[..all.len() - keep] {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        Ok(())
    }

    fn evaluate(&self, val: &mut dyn BatchSource, eval: &mut dyn Evaluator) -> Result<(f64, Vec<(String, f64)>)> {
        eval.reset();
        let (mut total, mut n) = (0.0, 0usize);
        for b in val.batches(0)? {
            let b = b?;
            // Evaluation needs no autograd history (as PyTorch's `torch.no_grad()`).
            let (logits, l) = sconce_core::no_grad(|| {
                sconce_tensor::on_pool(|| -> Result<(Tensor, f64)> {
                    let logits = self.model.forward_t(&b.x, false)?;
                    let l = self.loss.loss(&logits, &b.y)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    Ok((logits, l))
                })
            })?;
            let bs = b.x.dim(0)?;
            total += l * bs as f64;
            n += bs;
            eval.update(&logits, &b.y)?;
        }
        if n == 0 {
            return Err(Error::data("validation data", "is empty; give at least one sample or no validation source"));
        }
        Ok((total / n as f64, eval.compute()?))
    }

    /// Trains until `cfg.epochs` epochs are done (or early stopping), evaluating on `val`
    /// after each epoch and calling `on_epoch` with the record (for printing or JSON).
    ///
    /// # Errors
    /// [`Error::HeadCheck`] before the first step for a wrong head; [`Error::NonFinite`] naming
    /// the step when the loss or the gradient norm becomes NaN/Inf; data and I/O errors.
    pub fn fit(
        &mut self,
        train: &mut dyn BatchSource,
        mut val: Option<&mut dyn BatchSource>,
        eval: &mut dyn Evaluator,
        on_epoch: &mut dyn FnMut(&EpochRecord),
    ) -> Result<History> {
        let vars = self.store.vars();
        let mut findings = Vec::new();
        let mut stopped_early = false;
        let mut steps_this_run = 0u64;
        'epochs: while self.state.epochs_done < self.cfg.epochs {
            let epoch = self.state.epochs_done;
            let t0 = Instant::now();
            let bar = if self.cfg.progress {
                let b = ProgressBar::new(train.num_batches() as u64);
                b.set_draw_target(ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} batches, {msg} [{elapsed_precise} < {eta_precise}]",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_prefix(format!("{}/{}", epoch + 1, self.cfg.epochs));
                b
            } else {
                ProgressBar::hidden()
            };
            // The previous epoch's validation metrics ride along in the bar's message.
            let prev = self
                .state
                .history
                .last()
                .filter(|r| !r.metrics.is_empty())
                .map(|r| {
                    let m: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                    format!("; epoch {}: {}", r.epoch, m.join(", "))
                })
                .unwrap_or_default();
            let (mut loss_sum, mut seen, mut nb) = (0.0f64, 0usize, 0usize);
            let mut lr = self.optimizer.lr();
            for b in train.batches(epoch)? {
                let b = b?;
                if !self.checked {
                    findings = self.check_head(&b)?;
                    self.checked = true;
                }
                let step = self.state.global_step;
                lr = self.cfg.schedule.lr_at(step);
                self.optimizer.set_lr(lr);
                // The whole step on the kernels' pool: see `sconce_tensor::on_pool`.
                let (model, loss_fn, clip) = (self.model, self.loss, self.cfg.clip_grad_norm);
                let optimizer = &mut self.optimizer;
                let lv = sconce_tensor::on_pool(|| -> Result<f64> {
                    let logits = model.forward_t(&b.x, true)?;
                    let loss = loss_fn.loss(&logits, &b.y)?;
                    let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    if !lv.is_finite() {
                        return Err(Error::NonFinite {
                            what: format!("loss ({lv}) at step {step} (epoch {}, batch {})", epoch + 1, nb + 1),
                            hint: "the learning rate is probably too high (lower it or clip gradients), or the inputs \
                                   contain NaN/Inf; losses computed from logits cannot overflow by themselves"
                                .into(),
                        });
                    }
                    let mut grads = loss.backward()?;
                    let norm = match clip {
                        Some(max) => clip_grad_norm(&mut grads, &vars, max)?,
                        None => grad_norm(&grads, &vars)?,
                    };
                    if !norm.is_finite() {
                        return Err(Error::NonFinite {
                            what: format!(
                                "gradient norm ({norm}) at step {step} (epoch {}, batch {})",
                                epoch + 1,
                                nb + 1
                            ),
                            hint: "lower the learning rate or set a gradient clipping norm".into(),
                        });
                    }
                    optimizer.step(&grads)?;
                    Ok(lv)
                })?;
                self.state.global_step += 1;
                steps_this_run += 1;
                let bs = b.x.dim(0)?;
                loss_sum += lv * bs as f64;
                seen += bs;
                nb += 1;
                let el = t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {:.4}, {:.1} samples/s{prev}", loss_sum / seen as f64, seen as f64 / el));
                bar.inc(1);
                if self.cfg.max_steps.is_some_and(|m| steps_this_run >= m) {
                    bar.finish_and_clear();
                    break 'epochs;
                }
            }
            bar.finish_and_clear();
            if seen == 0 {
                return Err(Error::data("training data", "gave no batches; check the dataset folder and batch size"));
            }
            let train_secs = t0.elapsed().as_secs_f64();
            let (val_loss, metrics) = match val.as_deref_mut() {
                Some(v) => {
                    let (l, m) = self.evaluate(v, eval)?;
                    (Some(l), m)
                }
                None => (None, Vec::new()),
            };
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss: loss_sum / seen as f64,
                val_loss,
                metrics,
                seconds: t0.elapsed().as_secs_f64(),
                samples_per_sec: seen as f64 / train_secs.max(1e-9),
                lr,
            };
            tracing::info!(epoch = record.epoch, train_loss = record.train_loss, val_loss = ?record.val_loss, metrics = ?record.metrics, "epoch done");
            self.state.history.push(record.clone());
            self.state.epochs_done += 1;
            if let Some(es) = &self.cfg.early_stopping {
                let value = record.get(&es.monitor).ok_or_else(|| {
                    Error::config("early_stopping.monitor", format!("`{}` is not a recorded metric", es.monitor))
                })?;
                let improved = match (self.state.best, es.goal) {
                    (None, _) => true,
                    (Some(b), Goal::Minimize) => value < b - es.min_delta,
                    (Some(b), Goal::Maximize) => value > b + es.min_delta,
                };
                if improved {
                    self.state.best = Some(value);
                    self.state.since_best = 0;
                } else {
                    self.state.since_best += 1;
                }
            }
            if let Some(dir) = self.cfg.checkpoint_dir.clone() {
                self.save_checkpoint(&dir)?;
            }
            on_epoch(&record);
            if let Some(es) = &self.cfg.early_stopping
                && self.state.since_best >= es.patience
            {
                tracing::info!(monitor = %es.monitor, patience = es.patience, "early stopping");
                stopped_early = true;
                break;
            }
        }
        Ok(History { epochs: self.state.history.clone(), stopped_early, findings })
    }
}

/// The checkpoint folder `latest.json` in `dir` points to.
///
/// # Errors
/// [`Error::Io`] when there is none, [`Error::Parse`] when `latest.json` is corrupt.
pub fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    let latest = dir.join("latest.json");
    let text = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::parse(latest.display().to_string(), None, format!("corrupt: {e}")))?;
    let name = v["checkpoint"]
        .as_str()
        .ok_or_else(|| Error::parse(latest.display().to_string(), None, "no `checkpoint` entry"))?;
    Ok(dir.join(name))
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let r = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

impl BatchSource for sconce_data::Loader {
    fn num_batches(&self) -> usize {
        sconce_data::Loader::num_batches(self)
    }

    fn num_samples(&self) -> usize {
        sconce_data::Loader::num_samples(self)
    }

    fn batches(&mut self, epoch: usize) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        Ok(Box::new(self.epoch(epoch).map(|b| b.map(|b| Batch { x: b.x, y: b.y }))))
    }
}
