//! `BatchNorm2d` with PyTorch's semantics: batch statistics and a running-stat update in
//! training, running statistics in eval, `num_batches_tracked` saved and loaded.

use candle_core::{DType, Module, ModuleT, Tensor, Var};
use sconce_core::{Error, Init, Result};

use crate::conv::Conv2d;
use crate::store::{Buffer, Builder};

/// `nn.BatchNorm2d(C, eps, momentum, affine=True, track_running_stats=True)`; also accepts
/// `[N, C]` input (`BatchNorm1d`). Keys: `weight`, `bias`, `running_mean`, `running_var`,
/// `num_batches_tracked`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Var,
    bias: Var,
    running_mean: Buffer,
    running_var: Buffer,
    num_batches_tracked: Buffer,
    eps: f64,
    momentum: Option<f64>,
}

impl BatchNorm2d {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`, weight 1, bias 0.
    ///
    /// # Errors
    /// [`Error::Config`] for zero channels or a duplicate key.
    pub fn new(vb: &Builder, channels: usize) -> Result<Self> {
        Self::with_options(vb, channels, 1e-5, Some(0.1))
    }

    /// With explicit `eps` and `momentum` (`None`: cumulative moving average, as PyTorch).
    ///
    /// # Errors
    /// [`Error::Config`] for zero channels, `eps ≤ 0` or a momentum outside `[0, 1]`.
    pub fn with_options(vb: &Builder, channels: usize, eps: f64, momentum: Option<f64>) -> Result<Self> {
        if channels == 0 {
            return Err(Error::config("BatchNorm2d channels", "must be > 0"));
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::config("BatchNorm2d eps", format!("must be > 0, got {eps}")));
        }
        if let Some(m) = momentum
            && !(0.0..=1.0).contains(&m)
        {
            return Err(Error::config("BatchNorm2d momentum", format!("must be in [0, 1], got {m}")));
        }
        let dev = vb.device();
        let weight = vb.param("weight", &[channels], Init::Ones)?;
        let bias = vb.param("bias", &[channels], Init::Zeros)?;
        let running_mean = vb.buffer("running_mean", Tensor::zeros(channels, vb.dtype(), dev)?)?;
        let running_var = vb.buffer("running_var", Tensor::ones(channels, vb.dtype(), dev)?)?;
        let num_batches_tracked = vb.buffer("num_batches_tracked", Tensor::new(0i64, dev)?)?;
        Ok(Self { weight, bias, running_mean, running_var, num_batches_tracked, eps, momentum })
    }

    /// The scale γ.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The shift β.
    pub fn bias(&self) -> &Var {
        &self.bias
    }

    /// The running mean.
    pub fn running_mean(&self) -> Tensor {
        self.running_mean.get()
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> Tensor {
        self.running_var.get()
    }

    /// Training steps seen.
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked.get().to_dtype(DType::I64).and_then(|t| t.to_scalar::<i64>()).unwrap_or(0)
    }

    /// `relu(self(x))` as one fused op (one pass, one autograd node less): what ResNet,
    /// DenseNet and U-Net blocks apply after their batch norms.
    ///
    /// # Errors
    /// As the plain forward pass: shape, dtype and single-value-per-channel errors.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_impl(x, train, true).map_err(Error::into_candle)
    }

    /// `self(conv(x))`, then a ReLU when `relu`. For a convolution without bias the three run as
    /// one op — [`sconce_tensor::conv2d_batch_norm_train`] in training, without the convolution
    /// output's node in the autograd graph; [`sconce_tensor::conv2d_batch_norm_eval`] in eval
    /// mode, the batch norm folded into the convolution — with the same values and gradients.
    ///
    /// # Errors
    /// As [`Conv2d`]'s forward pass and this layer's.
    pub fn forward_conv_t(&self, conv: &Conv2d, x: &Tensor, train: bool, relu: bool) -> candle_core::Result<Tensor> {
        if conv.bias().is_some() {
            let z = conv.forward(x)?;
            return self.forward_impl(&z, train, relu).map_err(Error::into_candle);
        }
        if !train {
            return sconce_tensor::conv2d_batch_norm_eval(
                x,
                conv.weight().as_tensor(),
                conv.config(),
                &self.running_mean.get(),
                &self.running_var.get(),
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                self.eps,
                relu,
            )
            .map_err(Error::into_candle);
        }
        self.recorded(|| {
            sconce_tensor::conv2d_batch_norm_train(
                x,
                conv.weight().as_tensor(),
                conv.config(),
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                self.eps,
                relu,
            )
        })
    }

    /// `conv(relu(self(x)))`: a pre-activation convolution (DenseNet's `norm → relu → conv`).
    /// In training, for a convolution without bias, one op
    /// ([`sconce_tensor::batch_norm_relu_conv2d_train`]) that neither keeps the activation nor
    /// gives it a graph node; otherwise [`Self::forward_relu_t`], then the convolution.
    ///
    /// # Errors
    /// As [`Self::forward_relu_t`] and [`Conv2d`]'s forward pass.
    pub fn forward_relu_conv_t(&self, x: &Tensor, conv: &Conv2d, train: bool) -> candle_core::Result<Tensor> {
        if train && conv.bias().is_none() {
            return self.recorded(|| {
                sconce_tensor::batch_norm_relu_conv2d_train(
                    x,
                    self.weight.as_tensor(),
                    self.bias.as_tensor(),
                    self.eps,
                    conv.weight().as_tensor(),
                    conv.config(),
                )
            });
        }
        conv.forward(&self.forward_relu_t(x, train)?)
    }

    /// [`Self::forward_relu_conv_t`] in training over every channel of a DenseNet block's
    /// shared buffer so far (`last`: the tensor its newest channels came from), without a
    /// concatenation kept per layer ([`sconce_tensor::DenseBlockBuffer`]).
    ///
    /// # Errors
    /// As [`sconce_tensor::DenseBlockBuffer::bn_relu_conv_train`]; a convolution with a bias.
    pub fn forward_relu_conv_buffered(
        &self,
        buffer: &sconce_tensor::DenseBlockBuffer,
        last: &Tensor,
        conv: &Conv2d,
    ) -> candle_core::Result<Tensor> {
        if conv.bias().is_some() {
            candle_core::bail!("forward_relu_conv_buffered: the convolution must have no bias (DenseNet's have none)");
        }
        self.recorded(|| {
            buffer.bn_relu_conv_train(
                last,
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                self.eps,
                conv.weight().as_tensor(),
                conv.config(),
            )
        })
    }

    /// `conv(relu(self(cat(parts, 1))))` in eval mode, then `post`'s batch norm (and a ReLU when
    /// its flag is set): a DenseNet layer's `norm1 → relu1 → conv1 → norm2 → relu2`. For a 1×1
    /// convolution without bias, stride, padding or groups, under [`sconce_core::no_grad`], the
    /// parts are read in place ([`sconce_tensor::cat_batch_norm_relu_conv1x1_eval`]: neither
    /// the concatenation nor the activation is written); otherwise the ops in a row.
    ///
    /// # Errors
    /// As [`Self::forward_relu_t`], [`Conv2d`]'s forward pass and `post`'s; parts of another
    /// batch size, map size or dtype.
    pub fn forward_cat_relu_conv_eval(
        &self,
        parts: &[Tensor],
        conv: &Conv2d,
        post: Option<(&BatchNorm2d, bool)>,
    ) -> candle_core::Result<Tensor> {
        let pointwise = conv.bias().is_none()
            && conv.weight().dims().get(2..) == Some(&[1, 1][..])
            && *conv.config() == sconce_tensor::Conv2dConfig::default();
        if pointwise {
            let (mean, var) = (self.running_mean.get(), self.running_var.get());
            let pre = self.eval_params(&mean, &var);
            let post_stats = post.map(|(bn, relu)| (bn.running_mean.get(), bn.running_var.get(), bn, relu));
            let post_params = post_stats.as_ref().map(|(m, v, bn, relu)| (bn.eval_params(m, v), *relu));
            return sconce_tensor::cat_batch_norm_relu_conv1x1_eval(
                parts,
                &pre,
                conv.weight().as_tensor(),
                post_params.as_ref().map(|(p, relu)| (p, *relu)),
            )
            .map_err(Error::into_candle);
        }
        let a = self.forward_relu_t(&Tensor::cat(parts, 1)?, false)?;
        match post {
            None => conv.forward(&a),
            Some((bn, relu)) => bn.forward_conv_t(conv, &a, false, relu),
        }
    }

    /// This layer's eval-mode parameters, with its running statistics `mean` and `var`.
    fn eval_params<'a>(&'a self, mean: &'a Tensor, var: &'a Tensor) -> sconce_tensor::BatchNormParams<'a> {
        sconce_tensor::BatchNormParams {
            running_mean: mean,
            running_var: var,
            weight: self.weight.as_tensor(),
            bias: self.bias.as_tensor(),
            eps: self.eps,
        }
    }

    /// [`Self::forward_conv_t`] on `cat([a, pad(b)], 1)`, `b` zero-padded to `a`'s size as
    /// [`sconce_tensor::conv2d_batch_norm_cat_train`] pads it (extra row/column at the
    /// bottom/right): a U-Net decoder's skip concatenation and first convolution. In training,
    /// for a convolution without bias, one op without the concatenation's graph node;
    /// otherwise the padding and concatenation, then [`Self::forward_conv_t`].
    ///
    /// # Errors
    /// As [`Self::forward_conv_t`]; `a` and `b` of another batch size or rank, or `b` larger
    /// than `a`.
    pub fn forward_conv_cat_t(
        &self,
        conv: &Conv2d,
        a: &Tensor,
        b: &Tensor,
        train: bool,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        if train && conv.bias().is_none() {
            return self.recorded(|| {
                sconce_tensor::conv2d_batch_norm_cat_train(
                    a,
                    b,
                    conv.weight().as_tensor(),
                    conv.config(),
                    self.weight.as_tensor(),
                    self.bias.as_tensor(),
                    self.eps,
                    relu,
                )
            });
        }
        let (a4, b4) = (a.dims(), b.dims());
        if a4.len() != 4 || b4.len() != 4 || b4[2] > a4[2] || b4[3] > a4[3] {
            return Err(
                Error::shape("forward_conv_cat_t b", format!("[N, C2, <= H, <= W] of a's {a4:?}"), b4).into_candle()
            );
        }
        let (dh, dw) = (a4[2] - b4[2], a4[3] - b4[3]);
        let b = if dh + dw > 0 {
            b.pad_with_zeros(2, dh / 2, dh - dh / 2)?.pad_with_zeros(3, dw / 2, dw - dw / 2)?
        } else {
            b.clone()
        };
        self.forward_conv_t(conv, &Tensor::cat(&[a, &b], 1)?, train, relu)
    }

    /// `relu(self(conv(x)) + residual)`: a residual block's last convolution, batch norm,
    /// shortcut addition and ReLU. For a convolution without bias this is one op —
    /// [`sconce_tensor::conv2d_batch_norm_add_relu_train`] or, in eval mode,
    /// [`sconce_tensor::conv2d_batch_norm_add_relu_eval`] — whose sum never becomes a tensor
    /// of its own; otherwise the ops in a row. Same values and gradients either way.
    ///
    /// # Errors
    /// As [`Self::forward_conv_t`]; a residual whose shape is not the output's is an error.
    pub fn forward_conv_add_relu_t(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if conv.bias().is_some() {
            let y = self.forward_conv_t(conv, x, train, false)?;
            return sconce_tensor::add_relu(&y, residual).map_err(Error::into_candle);
        }
        let w = conv.weight().as_tensor();
        let (g, b) = (self.weight.as_tensor(), self.bias.as_tensor());
        let run = || -> Result<Tensor> {
            if !train {
                let (rm, rv) = (self.running_mean.get(), self.running_var.get());
                return sconce_tensor::conv2d_batch_norm_add_relu_eval(
                    x,
                    w,
                    conv.config(),
                    &rm,
                    &rv,
                    g,
                    b,
                    self.eps,
                    residual,
                );
            }
            let (y, stats) =
                sconce_tensor::conv2d_batch_norm_add_relu_train(x, w, conv.config(), g, b, self.eps, residual)?;
            self.record(&stats)?;
            Ok(y)
        };
        run().map_err(Error::into_candle)
    }

    /// Runs a training op that returns `(output, batch statistics)`, records the statistics in
    /// the running buffers and returns the output.
    fn recorded(
        &self,
        op: impl FnOnce() -> Result<(Tensor, sconce_tensor::BatchStats)>,
    ) -> candle_core::Result<Tensor> {
        let (y, stats) = op().map_err(Error::into_candle)?;
        self.record(&stats).map_err(Error::into_candle)?;
        Ok(y)
    }

    /// Folds a training batch's statistics into the running ones.
    fn record(&self, stats: &sconce_tensor::BatchStats) -> Result<()> {
        let n = self.num_batches_tracked() + 1;
        let (m, v) = sconce_tensor::update_running_stats(
            &self.running_mean.get(),
            &self.running_var.get(),
            stats,
            self.momentum,
            n.max(1) as u64,
        )?;
        self.running_mean.set(m);
        self.running_var.set(v);
        self.num_batches_tracked.set(Tensor::new(n, stats.mean.device())?);
        Ok(())
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if train {
            let bn = if relu { sconce_tensor::batch_norm_relu_train } else { sconce_tensor::batch_norm_train };
            let (y, stats) = bn(x, self.weight.as_tensor(), self.bias.as_tensor(), self.eps)?;
            self.record(&stats)?;
            Ok(y)
        } else {
            let bn = if relu { sconce_tensor::batch_norm_relu_eval } else { sconce_tensor::batch_norm_eval };
            bn(
                x,
                &self.running_mean.get(),
                &self.running_var.get(),
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                self.eps,
            )
        }
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_impl(x, train, false).map_err(Error::into_candle)
    }
}
