//! sconce-encodings: output encodings — how class labels become a network's outputs and back —
//! each a [`sconce_core::OutputEncoding`] usable on pooled features or per pixel.
//!
//! | encoding | outputs | head | decoding |
//! |---|---|---|---|
//! | [`OneHot`] | n (or 1 for [`OneHot::binary`]) | learned | softmax (sigmoid) |
//! | [`BinaryCode`] | ⌈log₂ n⌉ | learned | exact posterior over the n valid codewords, `softmax(C·z)` |
//! | [`Hadamard`] | n | fixed ±1 Sylvester block on L2-normalised features, learned scale + bias | softmax |
//! | [`Ecoc`] | L code bits over {−1, 0, +1} | learned, or one binary estimator per bit ([`Ecoc::fit_bits`]) | logistic loss-based or Hamming |
//!
//! The `encodings` example compares them on digits and letters (`docs/encodings.md`);
//! [`Ecoc::fit_bits`] trains each bit with any binary [`sconce_core::Fit`] estimator (an SVM).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod binary_code;
mod common;
mod ecoc;
mod hadamard;
mod onehot;

pub use binary_code::{BinaryCode, BitTraining, CodeAssignment};
pub use ecoc::{Decoding, Ecoc, EcocModel};
pub use hadamard::{Hadamard, sylvester};
pub use onehot::OneHot;
