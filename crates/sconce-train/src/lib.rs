//! sconce-train: optimizers with PyTorch's exact update rules, learning-rate schedules,
//! gradient clipping, evaluators, and a [`Trainer`] that checks the output head before the
//! first step, shows progress, evaluates every epoch, writes atomic checkpoints it can resume
//! from exactly, stops early, and stops with a clear error on NaN/Inf.
//!
//! | item | what it is for |
//! |---|---|
//! | [`Sgd`], [`Adam`] (Adam/AdamW), [`Optimizer`] | `torch.optim.SGD`/`Adam`/`AdamW` updates, state save/restore |
//! | [`LrSchedule`], [`Schedule`] | constant, step, cosine, one-cycle, linear warm-up |
//! | [`clip_grad_norm`] | `torch.nn.utils.clip_grad_norm_` |
//! | [`Trainer`], [`TrainConfig`], [`BatchSource`], [`Evaluator`] | the loop |
//! | [`SegmentationEvaluator`], [`ClassificationEvaluator`] | IoU/Dice; accuracy, macro F1, binary accuracy |
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod eval;
mod optim;
mod schedule;
mod trainer;

pub use eval::{ClassificationEvaluator, SegmentationEvaluator};
pub use optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm, grad_norm};
pub use schedule::{LrSchedule, Schedule};
pub use trainer::{
    Batch, BatchSource, EarlyStopping, EpochRecord, Evaluator, Goal, History, TrainConfig, Trainer, latest_checkpoint,
    write_atomic,
};
