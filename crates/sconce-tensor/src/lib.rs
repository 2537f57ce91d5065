//! sconce-tensor: numerically stable math and CPU kernels with correct backward passes, as
//! functions on candle `Tensor`s that take part in autograd.
//!
//! | area | functions |
//! |---|---|
//! | batch norm | [`batch_norm_train`] (fused, memory-lean backward), [`batch_norm_eval`], [`update_running_stats`]; with a fused ReLU: [`batch_norm_relu_train`], [`batch_norm_relu_eval`] |
//! | convolution | [`conv2d`] with [`Conv2dConfig`] (stride, padding, dilation, groups); [`conv_transpose2d`]; [`conv2d_batch_norm_train`] (conv, batch norm and ReLU as one autograd node), [`conv2d_batch_norm_eval`] (batch norm folded into the conv); a residual block's last step [`conv2d_batch_norm_add_relu_train`], [`conv2d_batch_norm_add_relu_eval`]; a U-Net decoder's skip concatenation and first conv [`conv2d_batch_norm_cat_train`]; a pre-activation conv (DenseNet) [`batch_norm_relu_conv2d_train`], and in eval mode over the concatenation's parts in place [`cat_batch_norm_relu_conv1x1_eval`] (with [`BatchNormParams`]) |
//! | activation | [`relu`] (one pass each way, PyTorch's gradient at 0), [`add_relu`] (a residual block's `relu(a + b)`) |
//! | stable math | [`sigmoid`], [`softplus`], [`log_sigmoid`], [`logsumexp`], [`log_softmax`], [`softmax`], [`one_hot`] |
//! | resizing | [`resize`] with [`Interpolation`] nearest, nearest-exact, bilinear (`align_corners` both ways) |
//! | pooling | [`max_pool2d`], [`avg_pool2d`], [`adaptive_max_pool2d`], [`adaptive_avg_pool2d`], [`global_avg_pool2d`] |
//! | threads | [`on_pool`]: run a whole step on the kernels' thread pool (fewer wake-ups) |
//! | optimizer updates | [`sgd_update`] ([`SgdUpdate`]), [`adam_update`] ([`AdamUpdate`]): PyTorch's rules in place, one parallel pass per tensor; [`sum_squares`] for gradient norms |
//!
//! Every op checks its arguments and returns a [`sconce_core::Error`] for bad input (wrong
//! rank, zero or negative sizes, a kernel larger than the padded input), never a panic.
//! The kernels run on the CPU in `f32` and `f64`, parallel over the batch and channels.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod batch_norm;
mod bias;
mod conv;
mod conv_bn;
mod dense;
pub mod gradcheck;
mod kernel;
mod matmul;
mod pool;
mod relu;
mod resize;
mod separable;
mod sgemm;
mod stable;
mod threads;
mod update;

pub use batch_norm::{
    BatchStats, batch_norm_eval, batch_norm_relu_eval, batch_norm_relu_train, batch_norm_train, update_running_stats,
};
pub use conv::{Conv2dConfig, ConvTranspose2dConfig, conv_transpose2d, conv2d};
pub use conv_bn::{
    DenseBlockBuffer, batch_norm_relu_conv2d_train, conv2d_batch_norm_add_relu_eval, conv2d_batch_norm_add_relu_train,
    conv2d_batch_norm_cat_train, conv2d_batch_norm_eval, conv2d_batch_norm_train,
};
pub use dense::{BatchNormParams, cat_batch_norm_relu_conv1x1_eval};
pub use pool::{
    AvgPool2d, MaxPool2d, adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, global_avg_pool2d, max_pool2d,
};
pub use relu::{add_relu, relu};
pub use resize::{Interpolation, resize};
pub use stable::{log_sigmoid, log_softmax, logsumexp, one_hot, sigmoid, softmax, softplus};
pub use threads::on_pool;
pub use update::{AdamUpdate, SgdUpdate, adam_update, sgd_update, sum_squares};
