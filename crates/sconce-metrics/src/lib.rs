//! sconce-metrics: streaming metrics that equal scikit-learn's, computed on plain counts and
//! slices (candle tensors are accepted at the boundary).
//!
//! | item | what it is |
//! |---|---|
//! | [`ConfusionMatrix`] | streaming counts: update per batch, merge across workers, reset; `ignore_index` |
//! | [`precision_recall_fscore`], [`per_class_prf`], [`Average`], [`ZeroDivision`] | P/R/F-beta with binary/micro/macro/weighted averaging |
//! | [`MultilabelConfusion`], [`MultilabelAverage`] | multi-label counts with per-label thresholds; micro/macro/weighted/samples |
//! | [`SegmentationScores`], [`EmptyPolicy`] | IoU and Dice per class and mean, global and per image; pixel accuracy |
//! | [`roc_auc`], [`average_precision`], [`roc_auc_ovr`], [`average_precision_ovr`] | exact ranking metrics (binary, one-vs-rest macro/weighted) |
//! | [`expected_calibration_error`], [`brier`], [`binary_brier`] | calibration |
//! | [`RegressionMetrics`] | MSE, MAE, R², explained variance (streaming) |
//! | [`ClassificationReport`] | scikit-learn's `classification_report`, text and JSON |
//! | [`MetricSet`], [`Task`] | per-batch updates, one-line and JSON summaries for a training loop |
//! | [`top_k_accuracy`], [`binary_accuracy`], [`Threshold`] | top-k; binary accuracy with an explicit probability or logit threshold |
//! | [`accuracy`], [`balanced_accuracy`], [`matthews_corrcoef`], [`cohen_kappa`] | single-number summaries |
//!
//! Accuracy here is always *categorical* accuracy over classes: the "96 % accuracy" of a
//! 26-class model trained with binary cross-entropy was a per-bit binary accuracy, which this
//! crate never reports for single-label data.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod classification;
mod confusion;
mod multilabel;
mod ranking;
mod regression;
mod report;
mod segmentation;

pub use classification::{
    Average, PerClass, Prf, ZeroDivision, accuracy, balanced_accuracy, cohen_kappa, matthews_corrcoef, per_class_prf,
    precision_recall_fscore,
};
pub use confusion::ConfusionMatrix;
pub use multilabel::{MultilabelAverage, MultilabelConfusion, MultilabelReport};
pub use ranking::{
    OvrAverage, average_precision, average_precision_ovr, binary_brier, brier, expected_calibration_error, roc_auc,
    roc_auc_ovr,
};
pub use regression::RegressionMetrics;
pub use report::{ClassificationReport, MetricSet, ReportRow, Task, Threshold, binary_accuracy, top_k_accuracy};
pub use segmentation::{EmptyPolicy, SegmentationScores};
