//! The batch loader: a seeded order per epoch (every sample exactly once), transforms with a
//! per-sample seeded RNG, and decoding on a worker thread a few batches ahead of training.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use sconce_core::{Error, Result, SeededRng};

use crate::sample::{Dataset, Sample, Target};
use crate::transform::Pipeline;

/// How masks are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// `[N, 1, H, W]` f32 in {0, 1}: one-logit binary segmentation with BCE/Dice.
    Binary,
    /// `[N, H, W]` u32 class indices: softmax over C channels with cross-entropy.
    Index,
}

/// How class labels are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelFormat {
    /// `[N]` u32 indices (cross-entropy).
    Index,
    /// `[N, C]` f32 one-hot rows (binary cross-entropy per output).
    OneHot,
}

/// Settings of a [`Loader`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order each epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Seed of the order and of the transforms.
    pub seed: u64,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Batches decoded ahead by the worker thread.
    pub prefetch: usize,
    /// Mask batching.
    pub mask_format: MaskFormat,
    /// Label batching.
    pub label_format: LabelFormat,
}

impl LoaderConfig {
    /// Batches of `batch_size`, shuffled with `seed`, binary masks and index labels.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            shuffle: true,
            seed,
            drop_last: false,
            prefetch: 2,
            mask_format: MaskFormat::Binary,
            label_format: LabelFormat::Index,
        }
    }
}

/// One batch with the dataset indices it holds.
#[derive(Debug, Clone)]
pub struct LoadedBatch {
    /// Images `[N, C, H, W]` f32.
    pub x: Tensor,
    /// Targets in the configured format.
    pub y: Tensor,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
}

/// Batches from a [`Dataset`] (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use sconce_data::{Loader, LoaderConfig, Pipeline, SyntheticConfig, SyntheticShapes};
/// # fn main() -> sconce_core::Result<()> {
/// let ds = SyntheticShapes::new(SyntheticConfig { len: 10, size: (32, 32), ..Default::default() })?;
/// let loader = Loader::new(Arc::new(ds), LoaderConfig::new(4, 7), Pipeline::default())?;
/// let mut seen: Vec<usize> = Vec::new();
/// for b in loader.epoch(0) {
///     let b = b?;
///     assert_eq!(b.x.dims()[1..], [3, 32, 32]);
///     seen.extend(b.indices);
/// }
/// seen.sort();
/// assert_eq!(seen, (0..10).collect::<Vec<_>>()); // every sample exactly once
/// # Ok(()) }
/// ```
pub struct Loader {
    ds: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    pipeline: Arc<Pipeline>,
}

impl Loader {
    /// A loader over `ds`.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero batch size; [`Error::Data`] for an empty dataset.
    pub fn new(ds: Arc<dyn Dataset>, cfg: LoaderConfig, pipeline: Pipeline) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        if ds.is_empty() {
            return Err(Error::data("dataset", "is empty; check the folder or the split"));
        }
        Ok(Self { ds, cfg, pipeline: Arc::new(pipeline) })
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.ds.len();
        if self.cfg.drop_last { n / self.cfg.batch_size } else { n.div_ceil(self.cfg.batch_size) }
    }

    /// Samples per epoch.
    pub fn num_samples(&self) -> usize {
        if self.cfg.drop_last { self.num_batches() * self.cfg.batch_size } else { self.ds.len() }
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.ds
    }

    /// The order of `epoch`: a permutation that depends only on the seed and the epoch.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let n = self.ds.len();
        if self.cfg.shuffle {
            SeededRng::new(self.cfg.seed).fork(epoch as u64 + 1).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    /// The batches of `epoch`, decoded on a worker thread.
    pub fn epoch(&self, epoch: usize) -> EpochIter {
        let order = self.order(epoch);
        let mut chunks: Vec<Vec<usize>> = order.chunks(self.cfg.batch_size).map(<[usize]>::to_vec).collect();
        if self.cfg.drop_last && chunks.last().is_some_and(|c| c.len() < self.cfg.batch_size) {
            chunks.pop();
        }
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
        let (ds, pipeline, cfg) = (self.ds.clone(), self.pipeline.clone(), self.cfg.clone());
        let handle = std::thread::Builder::new()
            .name("sconce-loader".into())
            .spawn(move || {
                for idx in chunks {
                    let b = load_batch(ds.as_ref(), &pipeline, &cfg, epoch, &idx);
                    let stop = b.is_err();
                    if tx.send(b).is_err() || stop {
                        return;
                    }
                }
            })
            .ok();
        let spawn_failed = handle.is_none();
        EpochIter { rx, handle, spawn_failed }
    }
}

fn load_batch(ds: &dyn Dataset, p: &Pipeline, cfg: &LoaderConfig, epoch: usize, idx: &[usize]) -> Result<LoadedBatch> {
    let mut samples: Vec<Sample> = Vec::with_capacity(idx.len());
    for &i in idx {
        let mut rng = SeededRng::new(cfg.seed ^ 0x5EED_DA7A).fork(((epoch as u64) << 32) | i as u64);
        let s = p.apply(ds.get(i)?, &mut rng)?;
        s.validate(&format!("sample {i}"))?;
        samples.push(s);
    }
    collate(&samples, ds.num_classes(), cfg, idx.to_vec())
}

/// Stacks samples into a batch.
///
/// # Errors
/// [`Error::Data`] when samples differ in size or target kind, or a label is out of range.
pub fn collate(samples: &[Sample], num_classes: usize, cfg: &LoaderConfig, indices: Vec<usize>) -> Result<LoadedBatch> {
    let Some(first) = samples.first() else {
        return Err(Error::data("batch", "is empty"));
    };
    let (c, h, w) = (first.channels, first.height, first.width);
    let n = samples.len();
    let mut x = Vec::with_capacity(n * c * h * w);
    for (s, i) in samples.iter().zip(&indices) {
        if (s.channels, s.height, s.width) != (c, h, w) {
            return Err(Error::data(
                format!("sample {i}"),
                format!(
                    "is {}×{}×{} but the batch is {c}×{h}×{w}; add a Resize or crop transform",
                    s.channels, s.height, s.width
                ),
            ));
        }
        x.extend_from_slice(&s.image);
    }
    let x = Tensor::from_vec(x, (n, c, h, w), &Device::Cpu)?;
    let y = match &first.target {
        Target::Mask(_) => {
            let mut m: Vec<u8> = Vec::with_capacity(n * h * w);
            for (s, i) in samples.iter().zip(&indices) {
                let Target::Mask(mask) = &s.target else {
                    return Err(Error::data(format!("sample {i}"), "has a class label in a batch of masks"));
                };
                if let Some(bad) = mask.iter().find(|&&v| usize::from(v) >= num_classes) {
                    return Err(Error::data(
                        format!("mask of sample {i}"),
                        format!("has class {bad} but the dataset has {num_classes} classes"),
                    ));
                }
                m.extend_from_slice(mask);
            }
            match cfg.mask_format {
                MaskFormat::Binary => {
                    if num_classes != 2 {
                        return Err(Error::config(
                            "mask_format",
                            format!("Binary needs 2 classes, the dataset has {num_classes}; use MaskFormat::Index"),
                        ));
                    }
                    let v: Vec<f32> = m.iter().map(|&b| f32::from(b)).collect();
                    Tensor::from_vec(v, (n, 1, h, w), &Device::Cpu)?
                }
                MaskFormat::Index => {
                    let v: Vec<u32> = m.iter().map(|&b| u32::from(b)).collect();
                    Tensor::from_vec(v, (n, h, w), &Device::Cpu)?
                }
            }
        }
        Target::Class(_) => {
            let mut labels = Vec::with_capacity(n);
            for (s, i) in samples.iter().zip(&indices) {
                let Target::Class(l) = s.target else {
                    return Err(Error::data(format!("sample {i}"), "has a mask in a batch of class labels"));
                };
                if l as usize >= num_classes {
                    return Err(Error::data(format!("sample {i}"), format!("label {l} ≥ {num_classes} classes")));
                }
                labels.push(l);
            }
            match cfg.label_format {
                LabelFormat::Index => Tensor::from_vec(labels, n, &Device::Cpu)?,
                LabelFormat::OneHot => {
                    let mut v = vec![0f32; n * num_classes];
                    for (r, l) in labels.iter().enumerate() {
                        v[r * num_classes + *l as usize] = 1.0;
                    }
                    Tensor::from_vec(v, (n, num_classes), &Device::Cpu)?
                }
            }
        }
    };
    Ok(LoadedBatch { x, y, indices })
}

/// The batches of one epoch; dropping it early stops the worker.
pub struct EpochIter {
    rx: Receiver<Result<LoadedBatch>>,
    handle: Option<JoinHandle<()>>,
    spawn_failed: bool,
}

impl Iterator for EpochIter {
    type Item = Result<LoadedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.spawn_failed {
            self.spawn_failed = false;
            return Some(Err(Error::config("loader", "could not start the loader's worker thread")));
        }
        self.rx.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Unblock the worker (its next send fails), then wait for it.
        let (_tx, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
