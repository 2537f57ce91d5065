//! Samples and the dataset trait: an image (`f32`, channels first, values in `[0, 1]`) with a
//! mask or a class label.

use sconce_core::{Error, Result};

/// What a sample is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A per-pixel class map (`height × width`, row-major): 0/1 for binary masks.
    Mask(Vec<u8>),
    /// One class index.
    Class(u32),
}

/// One image with its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Pixels, channels first (`[C, H, W]` row-major), nominally in `[0, 1]`.
    pub image: Vec<f32>,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// The label.
    pub target: Target,
}

impl Sample {
    /// Checks sizes and finiteness.
    ///
    /// # Errors
    /// [`Error::Data`] naming `what` when the buffer sizes disagree or a value is NaN/Inf.
    pub fn validate(&self, what: &str) -> Result<()> {
        let n = self.channels * self.height * self.width;
        if self.image.len() != n || n == 0 {
            return Err(Error::data(
                what,
                format!(
                    "image buffer has {} values for {}×{}×{}",
                    self.image.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
            ));
        }
        if let Some(i) = self.image.iter().position(|v| !v.is_finite()) {
            return Err(Error::data(what, format!("image value {i} is {}", self.image[i])));
        }
        if let Target::Mask(m) = &self.target
            && m.len() != self.height * self.width
        {
            return Err(Error::data(
                what,
                format!("mask has {} pixels but the image is {}×{}", m.len(), self.height, self.width),
            ));
        }
        Ok(())
    }
}

/// A random-access collection of samples. `get` may decode files; it is called from the
/// loader's worker thread.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i`.
    ///
    /// # Errors
    /// [`Error::Data`]/[`Error::Io`] naming the file for unreadable or invalid samples, and
    /// [`Error::Config`] for `i ≥ len()`.
    fn get(&self, i: usize) -> Result<Sample>;

    /// Number of classes (2 for binary masks).
    fn num_classes(&self) -> usize;

    /// Class names, where known.
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }
}

pub(crate) fn check_index(i: usize, len: usize) -> Result<()> {
    if i >= len {
        return Err(Error::config("sample index", format!("{i} is out of range for a dataset of {len}")));
    }
    Ok(())
}

/// The samples of another dataset at the given indices (train/validation splits).
pub struct Subset<D> {
    inner: D,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    /// The samples `indices` of `inner`.
    ///
    /// # Errors
    /// [`Error::Config`] for an index out of range.
    pub fn new(inner: D, indices: Vec<usize>) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::config("subset", format!("index {bad} out of range for {} samples", inner.len())));
        }
        Ok(Self { inner, indices })
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.indices.len())?;
        self.inner.get(self.indices[i])
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn class_names(&self) -> Option<Vec<String>> {
        self.inner.class_names()
    }
}

impl<D: Dataset + ?Sized> Dataset for std::sync::Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        (**self).get(i)
    }
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
    fn class_names(&self) -> Option<Vec<String>> {
        (**self).class_names()
    }
}
