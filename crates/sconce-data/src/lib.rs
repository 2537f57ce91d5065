//! sconce-data: datasets, transforms and a seeded batch loader.
//!
//! | item | what it is for |
//! |---|---|
//! | [`Dataset`], [`Sample`], [`Target`], [`Subset`] | random access to images with a mask or a class |
//! | [`SyntheticShapes`] | the built-in binary segmentation scenes (250×250 by default), deterministic by seed |
//! | [`Letters`] | the built-in 26-class letters (A–Z rendered with random affine distortions) |
//! | [`Digits`] | scikit-learn's 8×8 digits, embedded, with a fixed train/test split |
//! | [`MaskFolder`], [`ImageFolder`] | `images/` + `masks/` pairs; one folder per class (PNG/JPEG) |
//! | [`Pipeline`], [`Transform`] | flips, rotations, crops, resize (identical on image and mask), colour jitter, normalise |
//! | [`Loader`] | seeded shuffling (every sample once per epoch), decoding on a worker thread |
//! | [`save_png`] | writing images and masks |
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod digits;
mod folder;
mod letters;
mod loader;
mod sample;
mod synthetic;
mod transform;

pub use digits::{Digits, Split};
pub use folder::{ImageFolder, MaskFolder, MaskMapping, image_to_chw, save_png};
pub use letters::{Letters, LettersConfig, glyph_5x7};
pub use loader::{EpochIter, LabelFormat, LoadedBatch, Loader, LoaderConfig, MaskFormat, collate};
pub use sample::{Dataset, Sample, Subset, Target};
pub use synthetic::{SyntheticConfig, SyntheticShapes};
pub use transform::{Pipeline, Transform};
