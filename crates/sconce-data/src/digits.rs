//! scikit-learn's 8×8 handwritten digits (1797 images, 10 classes), embedded in the crate
//! (exported by `scripts/export_digits.py`), with a fixed stratified-by-order test split.

use sconce_core::{Error, Result};

use crate::sample::{Dataset, Sample, Target, check_index};

static DIGITS: &[u8] = include_bytes!("../data/digits.bin");
const RECORD: usize = 65;

/// Which part of the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Every image.
    All,
    /// Images whose index is not ≡ 4 (mod 5): 1438 images.
    Train,
    /// Every fifth image (index ≡ 4 mod 5): 359 images, all classes represented.
    Test,
}

/// The digits as 1×8×8 images with values `pixel / 16` in [0, 1].
///
/// ```
/// use sconce_data::{Dataset, Digits, Split, Target};
/// # fn main() -> sconce_core::Result<()> {
/// let test = Digits::new(Split::Test)?;
/// assert_eq!((Digits::new(Split::All)?.len(), test.len()), (1797, 359));
/// assert_eq!(Digits::new(Split::All)?.get(0)?.target, Target::Class(0)); // scikit-learn's first digit is a 0
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Digits {
    indices: Vec<usize>,
}

impl Digits {
    /// The split.
    ///
    /// # Errors
    /// [`Error::Data`] if the embedded file is damaged (a build problem).
    pub fn new(split: Split) -> Result<Self> {
        if !DIGITS.len().is_multiple_of(RECORD) || DIGITS.is_empty() {
            return Err(Error::data(
                "embedded digits",
                format!("{} bytes is not a whole number of records", DIGITS.len()),
            ));
        }
        let n = DIGITS.len() / RECORD;
        let indices = (0..n)
            .filter(|i| match split {
                Split::All => true,
                Split::Train => i % 5 != 4,
                Split::Test => i % 5 == 4,
            })
            .collect();
        Ok(Self { indices })
    }
}

impl Dataset for Digits {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn num_classes(&self) -> usize {
        10
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some((0..10).map(|d| d.to_string()).collect())
    }

    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.indices.len())?;
        let r = &DIGITS[self.indices[i] * RECORD..(self.indices[i] + 1) * RECORD];
        if r[0] > 9 || r[1..].iter().any(|&v| v > 16) {
            return Err(Error::data("embedded digits", format!("record {} is out of range", self.indices[i])));
        }
        Ok(Sample {
            image: r[1..].iter().map(|&v| f32::from(v) / 16.0).collect(),
            channels: 1,
            height: 8,
            width: 8,
            target: Target::Class(u32::from(r[0])),
        })
    }
}
