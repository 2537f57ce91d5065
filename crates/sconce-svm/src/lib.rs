//! sconce-svm: LIBSVM's five SVM formulations — C-SVC, ν-SVC, one-class, ε-SVR, ν-SVR —
//! with LIBSVM's exact solver semantics, multi-threaded kernel computation, and LIBSVM's
//! data and model file formats.
//!
//! | item | what it is |
//! |---|---|
//! | [`SvmParams`], [`SvmType`] | hyper-parameters per formulation, LIBSVM's defaults, checks before training |
//! | [`KernelType`], [`Gamma`], [`Kernel`] | linear, polynomial, RBF, sigmoid, precomputed, chi², intersection; γ `scale` / `1/num_features` |
//! | [`Features`] | dense rows or sparse CSR rows with LIBSVM indices |
//! | [`SvmModel`] | predictions, one-vs-one and one-vs-rest decision values, probabilities |
//! | [`cross_validation`], [`grid_search`], [`Grid`] | `svm-train -v`, `grid.py`, OpenCV `trainAuto` |
//! | [`read_libsvm`], [`load_model`], [`save_model`], [`format_model`] | LIBSVM's file formats, byte-compatible |
//! | [`parse_svm_train_args`] | LIBSVM's `svm-train` option strings |
//!
//! The solver is LIBSVM 3.x's SMO (second-order working-set selection, shrinking, an LRU
//! cache of `f32` kernel columns bounded by `cache_mb`), ported statement by statement so that
//! support vectors, objective and rho equal LIBSVM's; kernel columns and predictions run on
//! all cores, and one-vs-one pairs train concurrently.
//!
//! ```
//! use sconce_svm::{Features, SvmParams, SvmType};
//! # fn main() -> sconce_core::Result<()> {
//! // Two interleaved classes on a line: RBF separates them.
//! let x = Features::dense(6, 1, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])?;
//! let y = [1.0, 1.0, 2.0, 2.0, 1.0, 1.0];
//! let model = SvmParams::c_svc().c(100.0).train(&x, &y)?;
//! assert_eq!(model.predict(&x)?, y.to_vec());
//! assert_eq!(model.svm_type(), SvmType::CSvc);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
// The solver and probability code follow LIBSVM's C statement by statement (index loops over
// parallel arrays, LIBSVM's argument lists) so that they can be checked line against line.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

mod cache;
mod cli;
mod cv;
mod features;
mod io;
mod kernel;
mod model;
mod params;
mod predict;
pub mod prob;
mod solver;
mod tensor;

pub use cli::{TrainOptions, parse_svm_train_args};
pub use cv::{CvScore, Grid, GridPoint, GridResult, cross_validation, grid_search, score};
pub use features::{Features, Row};
pub use io::{
    Dataset, format_g, format_libsvm, format_model, load_model, parse_libsvm, parse_model, read_libsvm, save_model,
};
pub use kernel::{Gamma, Kernel, KernelType};
pub use model::{SolveInfo, SvmModel};
pub use params::{SvmParams, SvmType};
pub use tensor::features_from_tensor;
