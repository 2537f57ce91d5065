//! Convolution followed by training-mode batch norm (and optionally a ReLU) as one autograd
//! node: the convolution's output never becomes a graph node of its own.
//!
//! candle's backward pass zero-fills a fresh buffer for every node's gradient and adds the
//! incoming gradient into it: for the output of every convolution of a ResNet, a memset and
//! a three-stream add over the largest tensors of the step. Here the batch-norm backward hands
//! its input gradient straight to the convolution backward, inside one op. In eval mode the
//! batch norm is a per-channel scale and shift applied to each image's convolution output as
//! soon as it is computed (still in cache), with no tensor or graph node of its own.

#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use sconce_core::Result;

use crate::batch_norm::{BatchStats, BnTrain, ScaleShift, eval_coefficients};
use crate::conv::{Conv2dBackward, Conv2dConfig, Conv2dOp, Epilogue, Geom};
use crate::kernel::{Kernel3, Real, cpu_fwd3};

/// What the two training ops share: the convolution, the batch norm, and the convolution's
/// output recorded by the forward pass for the backward pass.
struct ConvBnCore {
    geom: Geom,
    bn: BnTrain,
    z: Arc<OnceLock<Tensor>>,
    /// For a "same" convolution whose weight gradient is wanted: a slot for the input's padded
    /// planes ([`Geom::pad_batch`]), filled (in `f32` only) by the forward pass, which reads
    /// them, and read again by the weight gradient.
    xp: Option<Arc<OnceLock<Tensor>>>,
}

impl ConvBnCore {
    /// The op's state before its forward pass; the padded input is kept when the weight
    /// `w` is trained and gradients are recorded.
    fn new(geom: Geom, bn: BnTrain, w: &Tensor) -> Self {
        let keep = w.track_op() && sconce_core::grad_enabled() && geom.padded_dy_layout().is_some();
        Self { geom, bn, z: Arc::new(OnceLock::new()), xp: keep.then(|| Arc::new(OnceLock::new())) }
    }

    /// `conv(x, w)`, through the kept padded planes when [`Self::xp`] asks for them.
    fn conv<T: Real>(&self, name: &str, x: &[T], w: &[T]) -> candle_core::Result<Vec<T>> {
        if self.xp.is_some()
            && let Some(xf) = T::as_f32(x)
            && let Some(xp) = self.geom.pad_batch(xf)?
        {
            return self.conv_planes(name, xp, w);
        }
        self.geom.forward(x, w)
    }

    /// `conv(x, w)` from `x`'s padded planes ([`Geom::pad_batch`]'s layout), kept for the
    /// backward pass when [`Self::xp`] asks for them.
    fn conv_planes<T: Real>(&self, name: &str, xp: Vec<f32>, w: &[T]) -> candle_core::Result<Vec<T>> {
        let Some(wf) = T::as_f32(w) else { candle_core::bail!("{name}: padded planes need f32 weights") };
        let z = self.geom.forward_from_padded(&xp, wf)?;
        if let Some(slot) = &self.xp {
            let len = xp.len();
            if slot.set(Tensor::from_vec(xp, len, &Device::Cpu)?).is_err() {
                candle_core::bail!("{name}: the op ran its forward pass twice");
            }
        }
        match T::from_f32_vec(z) {
            Some(z) => Ok(z),
            None => candle_core::bail!("{name}: an f32 result for another dtype"),
        }
    }
}

impl ConvBnCore {
    /// `bn(conv(x, w))` (`+ residual` before the batch norm's ReLU), recording `conv(x, w)`.
    fn forward<T: Real>(
        &self,
        name: &str,
        x: &[T],
        w: &[T],
        gb: &[T],
        residual: Option<&[T]>,
    ) -> candle_core::Result<Vec<T>> {
        let z = self.conv(name, x, w)?;
        self.normalise(name, z, gb, residual)
    }

    /// The batch norm (and residual, ReLU) after the convolution `z`, recording `z`.
    fn normalise<T: Real>(
        &self,
        name: &str,
        z: Vec<T>,
        gb: &[T],
        residual: Option<&[T]>,
    ) -> candle_core::Result<Vec<T>> {
        let g = &self.geom;
        let (gamma, beta) = gb.split_at(self.bn.channels());
        let y = match residual {
            None => self.bn.run(&z, gamma, beta),
            Some(r) => self.bn.run_add(&z, gamma, beta, r)?,
        };
        let z = Tensor::from_vec(z, (g.n, g.o, g.oh, g.ow), &Device::Cpu)?;
        if self.z.set(z).is_err() {
            candle_core::bail!("{name}: the op ran its forward pass twice");
        }
        Ok(y)
    }

    /// `(dx, dw, dγ, dβ)`: the batch norm's backward (masked by the output `res` when it has a
    /// ReLU) gives `dz`, then the convolution's backward `dx` and (when `need_dw`) `dw`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn backward(
        &self,
        name: &str,
        x: Option<&Tensor>,
        w: &Tensor,
        (need_dx, need_dw): (bool, bool),
        gamma: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Tensor, Tensor)> {
        let Some(z) = self.z.get() else { candle_core::bail!("{name} backward without a recorded forward pass") };
        let g = &self.geom;
        // A "same" convolution in f32 takes `dz` as the padded planes that both of its
        // gradients read: the batch norm writes it so, and neither pads a copy of it.
        if z.dtype() == candle_core::DType::F32
            && let Some((ph, pw)) = g.padded_dy_layout()
        {
            let (dzp, dg, db) = self.bn.backward_padded(z, gamma, res, grad, (g.oh, g.ow, ph, pw))?;
            let x_shape = Shape::from((g.n, g.c, g.h, g.w));
            let (dx, dw) = match (self.xp.as_ref().and_then(|s| s.get()), x) {
                (Some(xp), _) => Conv2dBackward::with_padded_x_and_dy(*g, need_dx, need_dw)
                    .grads_from_padded(&x_shape, xp, w, &dzp)?,
                (None, Some(x)) => Conv2dBackward::with_padded_dy(*g, need_dx, need_dw).grads(x, w, &dzp)?,
                (None, None) => candle_core::bail!("{name} backward without its recorded input"),
            };
            return Ok((dx, dw, dg, db));
        }
        let Some(x) = x else { candle_core::bail!("{name} backward without its recorded input") };
        let (dz, dg, db) = self.bn.backward(z, gamma, res, grad)?;
        let (dx, dw) = Conv2dBackward::new(*g, need_dx, need_dw).grads(x, w, &dz)?;
        Ok((dx, dw, dg, db))
    }
}

/// `(x, w, [γ | β]) → bn(conv(x, w))`, keeping the convolution's output for the backward pass.
struct ConvBn(ConvBnCore);

impl Kernel3 for ConvBn {
    const NAME: &'static str = "conv2d_batch_norm";
    fn kernel<T: Real>(&self, x: &[T], w: &[T], gb: &[T]) -> candle_core::Result<Vec<T>> {
        self.0.forward(Self::NAME, x, w, gb, None)
    }
}

impl CustomOp3 for ConvBn {
    fn name(&self) -> &'static str {
        "sconce-conv2d-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.0.geom.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gamma = gb.narrow(0, 0, self.0.bn.channels())?;
        let (dx, dw, dg, db) =
            self.0.backward(Self::NAME, Some(x), w, (x.track_op(), w.track_op()), &gamma, res, grad)?;
        Ok((dx, dw, Some(Tensor::cat(&[dg, db], 0)?)))
    }
}

/// `conv2d(x, w)` (no bias) followed by [`batch_norm_train`](crate::batch_norm_train) — and a
/// ReLU when `relu` ([`batch_norm_relu_train`](crate::batch_norm_relu_train)) — as one op with
/// one backward: the same values and gradients as the three ops in a row, without the
/// convolution output's gradient buffer. Returns the output and the batch statistics.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{Conv2dConfig, conv2d_batch_norm_train};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &Device::Cpu)?;
/// let (g, b) = (Tensor::ones(4, DType::F32, &Device::Cpu)?, Tensor::zeros(4, DType::F32, &Device::Cpu)?);
/// let (y, stats) = conv2d_batch_norm_train(&x, &w, &Conv2dConfig::default().padding(1), &g, &b, 1e-5, true)?;
/// assert_eq!(y.dims(), &[2, 4, 8, 8]);
/// assert_eq!(stats.count, 2 * 8 * 8);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`conv2d`](crate::conv2d) and [`batch_norm_train`](crate::batch_norm_train).
pub fn conv2d_batch_norm_train(
    x: &Tensor,
    w: &Tensor,
    cfg: &Conv2dConfig,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let geom = Geom::checked(x, w, cfg)?;
    let bn = BnTrain::checked(&[geom.n, geom.o, geom.oh, geom.ow], x.dtype(), weight, bias, eps, relu)?;
    let saved = bn.saved();
    let gb = Tensor::cat(&[weight, bias], 0)?;
    let op = ConvBn(ConvBnCore::new(geom, bn, w));
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gb, op)?;
    let stats = BnTrain::stats(&saved, &y)?;
    Ok((y, stats))
}

/// `(x, w, [scale | shift]) → conv(x, w)·scale + shift` (then ReLU) per output channel.
struct ConvScaleShift {
    geom: Geom,
    relu: bool,
}

impl Kernel3 for ConvScaleShift {
    const NAME: &'static str = "conv2d_batch_norm_eval";
    fn kernel<T: Real>(&self, x: &[T], w: &[T], ss: &[T]) -> candle_core::Result<Vec<T>> {
        let (scale, shift) = ss.split_at(self.geom.o);
        self.geom.forward_with(x, w, Some(Epilogue { scale, shift, relu: self.relu, residual: None }))
    }
}

impl CustomOp3 for ConvScaleShift {
    fn name(&self) -> &'static str {
        "sconce-conv2d-scale-shift"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.geom.out_shape()))
    }

    /// Recomputes the convolution output `z` (only fine-tuning in eval mode needs this), then
    /// the scale-shift backward gives `dz`, `dscale`, `dshift` and the convolution backward
    /// `dx`, `dw`.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        ss: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom;
        let z = x.apply_op2_no_bwd(w, &Conv2dOp { geom: g })?;
        let (scale, shift) = (ss.narrow(0, 0, g.o)?, ss.narrow(0, g.o, g.o)?);
        let op = ScaleShift::for_shape(z.dims(), self.relu).map_err(sconce_core::Error::into_candle)?;
        let (dz, dscale, dshift) = op.bwd(&z, &scale, &shift, res, grad)?;
        let dz = match dz {
            Some(dz) => dz,
            None => candle_core::bail!("conv2d_batch_norm_eval backward: no gradient for the convolution output"),
        };
        let (dx, dw) = Conv2dBackward::new(g, x.track_op(), w.track_op()).grads(x, w, &dz)?;
        let dss = match (dscale, dshift) {
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0)?),
            _ => None,
        };
        Ok((dx, dw, dss))
    }
}

/// `conv2d(x, w)` (no bias) followed by [`batch_norm_eval`](crate::batch_norm_eval) — or
/// [`batch_norm_relu_eval`](crate::batch_norm_relu_eval) when `relu` — with the batch norm folded
/// into the convolution: its per-channel scale and shift are applied to each image's output
/// right after that image's product. Same values and gradients as the ops in a row.
///
/// # Errors
/// As [`conv2d`](crate::conv2d) and [`batch_norm_eval`](crate::batch_norm_eval).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_eval(
    x: &Tensor,
    w: &Tensor,
    cfg: &Conv2dConfig,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let geom = Geom::checked(x, w, cfg)?;
    let (scale, shift) = eval_coefficients(geom.o, x.dtype(), [running_mean, running_var, weight, bias], eps)?;
    let ss = Tensor::cat(&[&scale, &shift], 0)?;
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &ss, ConvScaleShift { geom, relu })?)
}

/// The `[w | p]` operand of the residual ops: the weights flattened, then per-channel
/// parameters (`[γ | β]` or `[scale | shift]`). candle's custom ops take three inputs, and the
/// residual needs the third. The same packing gives the gradient `[dw | dγ | dβ]`.
fn weights_and(w: &Tensor, params: &[&Tensor]) -> candle_core::Result<Tensor> {
    let mut parts = vec![w.flatten_all()?];
    parts.extend(params.iter().map(|p| (*p).clone()));
    Tensor::cat(&parts, 0)
}

/// Checks that the residual has the convolution output's shape and dtype.
fn check_residual(geom: &Geom, x: &Tensor, residual: &Tensor, what: &str) -> Result<()> {
    let want = geom.out_shape();
    if residual.dims() != want.dims() {
        return Err(sconce_core::Error::shape(
            format!("{what} residual"),
            format!("the convolution output's {:?}", want.dims()),
            residual.dims(),
        ));
    }
    if residual.dtype() != x.dtype() {
        return Err(sconce_core::Error::config(
            format!("{what} residual"),
            format!("dtype {:?} differs from the input's {:?}", residual.dtype(), x.dtype()),
        ));
    }
    Ok(())
}

/// `(x, [w | γ | β], r) → relu(bn(conv(x, w)) + r)`, keeping the convolution's output. The
/// batch norm has its ReLU: the forward pass adds `r` before it, and the backward pass masks by
/// the op's output, which is the mask of `relu(bn + r)`.
struct ConvBnAddRelu(ConvBnCore);

impl Kernel3 for ConvBnAddRelu {
    const NAME: &'static str = "conv2d_batch_norm_add_relu";
    fn kernel<T: Real>(&self, x: &[T], wgb: &[T], r: &[T]) -> candle_core::Result<Vec<T>> {
        let g = &self.0.geom;
        let (wl, c) = (g.weight_len(), self.0.bn.channels());
        if wgb.len() != wl + 2 * c || r.len() != g.n * g.o * g.oh * g.ow {
            candle_core::bail!("{}: operands do not match the geometry {g:?}", Self::NAME);
        }
        let (w, gb) = wgb.split_at(wl);
        self.0.forward(Self::NAME, x, w, gb, Some(r))
    }
}

impl CustomOp3 for ConvBnAddRelu {
    fn name(&self) -> &'static str {
        "sconce-conv2d-batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.0.geom.out_shape()))
    }

    /// The residual's gradient is `dy` masked by the output; the batch norm's backward (masked
    /// the same way) gives `dz`, and the convolution's `dx`, `dw`.
    fn bwd(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0.geom;
        let (wl, c) = (g.weight_len(), self.0.bn.channels());
        let w = wgb.narrow(0, 0, wl)?.reshape((g.o, g.c / g.g, g.kh, g.kw))?;
        let gamma = wgb.narrow(0, wl, c)?;
        let (dx, dw, dg, db) =
            self.0.backward(Self::NAME, Some(x), &w, (x.track_op(), wgb.track_op()), &gamma, res, grad)?;
        let dwgb = dw.map(|dw| weights_and(&dw, &[&dg, &db])).transpose()?;
        let dr = if r.track_op() { Some(crate::relu::relu_grad(res, grad)?) } else { None };
        Ok((dx, dwgb, dr))
    }
}

/// A residual block's last step, `relu(batch_norm_train(conv2d(x, w)) + residual)`, as one op:
/// [`conv2d_batch_norm_train`] with the residual added in the batch norm's output pass. The
/// sum never becomes a tensor or graph node of its own, and the backward pass hands the masked
/// gradient to the residual and, through the batch norm, to the convolution. Returns the output
/// and the batch statistics.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{Conv2dConfig, conv2d_batch_norm_add_relu_train};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 1.0, (4, 4, 1, 1), &Device::Cpu)?;
/// let (g, b) = (Tensor::ones(4, DType::F32, &Device::Cpu)?, Tensor::zeros(4, DType::F32, &Device::Cpu)?);
/// let (y, _) = conv2d_batch_norm_add_relu_train(&x, &w, &Conv2dConfig::default(), &g, &b, 1e-5, &x)?;
/// assert!(y.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`conv2d_batch_norm_train`]; a residual whose shape is not the output's, or of another
/// dtype, is an error.
pub fn conv2d_batch_norm_add_relu_train(
    x: &Tensor,
    w: &Tensor,
    cfg: &Conv2dConfig,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    residual: &Tensor,
) -> Result<(Tensor, BatchStats)> {
    let geom = Geom::checked(x, w, cfg)?;
    let bn = BnTrain::checked(&[geom.n, geom.o, geom.oh, geom.ow], x.dtype(), weight, bias, eps, true)?;
    check_residual(&geom, x, residual, "conv2d_batch_norm_add_relu_train")?;
    let saved = bn.saved();
    let wgb = weights_and(w, &[weight, bias])?;
    let op = ConvBnAddRelu(ConvBnCore::new(geom, bn, w));
    let y = x.contiguous()?.apply_op3(&wgb, &residual.contiguous()?, op)?;
    let stats = BnTrain::stats(&saved, &y)?;
    Ok((y, stats))
}

/// `(x, [w | scale | shift], r) → relu(conv(x, w)·scale + shift + r)` per output channel.
struct ConvScaleShiftAddRelu {
    geom: Geom,
}

impl Kernel3 for ConvScaleShiftAddRelu {
    const NAME: &'static str = "conv2d_batch_norm_add_relu_eval";
    fn kernel<T: Real>(&self, x: &[T], wss: &[T], r: &[T]) -> candle_core::Result<Vec<T>> {
        let g = &self.geom;
        let wl = g.weight_len();
        if wss.len() != wl + 2 * g.o || r.len() != g.n * g.o * g.oh * g.ow {
            candle_core::bail!("conv2d_batch_norm_add_relu_eval: operands do not match the geometry {g:?}");
        }
        let (w, ss) = wss.split_at(wl);
        let (scale, shift) = ss.split_at(g.o);
        g.forward_with(x, w, Some(Epilogue { scale, shift, relu: true, residual: Some(r) }))
    }
}

impl CustomOp3 for ConvScaleShiftAddRelu {
    fn name(&self) -> &'static str {
        "sconce-conv2d-scale-shift-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.geom.out_shape()))
    }

    /// Recomputes the convolution output `z`; `dy` masked by the output is the residual's
    /// gradient and, through the scale-shift backward, gives `dz`, `dscale`, `dshift`.
    fn bwd(
        &self,
        x: &Tensor,
        wss: &Tensor,
        r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom;
        let wl = g.weight_len();
        let w = wss.narrow(0, 0, wl)?.reshape((g.o, g.c / g.g, g.kh, g.kw))?;
        let z = x.apply_op2_no_bwd(&w, &Conv2dOp { geom: g })?;
        let (scale, shift) = (wss.narrow(0, wl, g.o)?, wss.narrow(0, wl + g.o, g.o)?);
        let masked = crate::relu::relu_grad(res, grad)?;
        let op = ScaleShift::for_shape(z.dims(), false).map_err(sconce_core::Error::into_candle)?;
        let (dz, dscale, dshift) = op.bwd(&z, &scale, &shift, res, &masked)?;
        let (dx, dw) = match dz {
            Some(dz) => Conv2dBackward::new(g, x.track_op(), wss.track_op()).grads(x, &w, &dz)?,
            None => (None, None),
        };
        let dwss = match (dw, dscale, dshift) {
            (Some(dw), Some(a), Some(b)) => Some(Tensor::cat(&[&dw.flatten_all()?, &a, &b], 0)?),
            _ => None,
        };
        let dr = if r.track_op() { Some(masked) } else { None };
        Ok((dx, dwss, dr))
    }
}

/// `relu(batch_norm_eval(conv2d(x, w)) + residual)` with the batch norm, the residual and the
/// ReLU folded into the convolution's per-image epilogue ([`conv2d_batch_norm_eval`] for a
/// residual block's last step). Same values and gradients as the ops in a row.
///
/// # Errors
/// As [`conv2d_batch_norm_eval`]; a residual whose shape is not the output's, or of another
/// dtype, is an error.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_add_relu_eval(
    x: &Tensor,
    w: &Tensor,
    cfg: &Conv2dConfig,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    residual: &Tensor,
) -> Result<Tensor> {
    let geom = Geom::checked(x, w, cfg)?;
    check_residual(&geom, x, residual, "conv2d_batch_norm_add_relu_eval")?;
    let (scale, shift) = eval_coefficients(geom.o, x.dtype(), [running_mean, running_var, weight, bias], eps)?;
    let wss = weights_and(w, &[&scale, &shift])?;
    Ok(x.contiguous()?.apply_op3(&wss, &residual.contiguous()?, ConvScaleShiftAddRelu { geom })?)
}

/// Where the second input of [`conv2d_batch_norm_cat_train`] sits: `cb` channels of `hb×wb`
/// placed at `(top, left)` in the first input's `h×w` (zeros around).
#[derive(Debug, Clone, Copy)]
struct CatPlan {
    n: usize,
    ca: usize,
    cb: usize,
    h: usize,
    w: usize,
    hb: usize,
    wb: usize,
    top: usize,
    left: usize,
}

impl CatPlan {
    /// `cat([a, pad(b)], 1)` as one `[N, ca + cb, h, w]` buffer.
    fn cat<T: Real>(&self, a: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        self.cat_padded(a, b, 0, 0)
    }

    /// [`Self::cat`] with every plane zero-padded by `ph` rows and `pw` columns on each side
    /// (`[N, ca + cb, h + 2ph, w + 2pw]`, [`Geom::pad_batch`]'s layout for a stride-1
    /// convolution): the convolution reads the concatenation without a padded copy of it.
    fn cat_padded<T: Real>(&self, a: &[T], b: &[T], ph: usize, pw: usize) -> candle_core::Result<Vec<T>> {
        let (hw, bhw) = (self.h * self.w, self.hb * self.wb);
        if a.len() != self.n * self.ca * hw || b.len() != self.n * self.cb * bhw {
            candle_core::bail!("conv2d_batch_norm_cat: inputs do not match {self:?}");
        }
        let (w, wq) = (self.w, self.w + 2 * pw);
        let plane = (self.h + 2 * ph) * wq;
        // Every element is written once, row by row: zeros, then the row's values at `lead`
        // (after the padding), then zeros (no zero fill of the whole buffer first).
        let zero = |d: &mut [MaybeUninit<T>]| {
            for v in d {
                v.write(T::zero());
            }
        };
        let put = |dst: &mut [MaybeUninit<T>], lead: usize, row: &[T]| {
            let (l, rest) = dst.split_at_mut(lead);
            let (mid, r) = rest.split_at_mut(row.len());
            zero(l);
            zero(r);
            for (d, &v) in mid.iter_mut().zip(row) {
                d.write(v);
            }
        };
        let len = self.n * (self.ca + self.cb) * plane;
        let mut x: Vec<T> = Vec::with_capacity(len);
        let (top, hb, left, wb) = (self.top, self.hb, self.left, self.wb);
        x.spare_capacity_mut()[..len]
            .par_chunks_exact_mut((self.ca + self.cb) * plane)
            .zip(a.par_chunks_exact(self.ca * hw))
            .zip(b.par_chunks_exact(self.cb * bhw))
            .for_each(|((xi, ai), bi)| {
                let (xa, xb) = xi.split_at_mut(self.ca * plane);
                for (dst, src) in xa.chunks_exact_mut(plane).zip(ai.chunks_exact(hw)) {
                    for (i, drow) in dst.chunks_exact_mut(wq).enumerate() {
                        match i.checked_sub(ph).filter(|&y| y < self.h) {
                            Some(y) => put(drow, pw, &src[y * w..(y + 1) * w]),
                            None => zero(drow),
                        }
                    }
                }
                for (dst, src) in xb.chunks_exact_mut(plane).zip(bi.chunks_exact(bhw)) {
                    for (i, drow) in dst.chunks_exact_mut(wq).enumerate() {
                        match i.checked_sub(ph + top).filter(|&y| y < hb) {
                            Some(y) => put(drow, pw + left, &src[y * wb..(y + 1) * wb]),
                            None => zero(drow),
                        }
                    }
                }
            });
        // SAFETY: the images tile `x`, the planes tile each image and the rows each plane;
        // every row was written whole above.
        unsafe { x.set_len(len) };
        Ok(x)
    }
}

/// `(a, b, [w | γ | β]) → bn(conv(cat([a, pad(b)], 1), w))`, keeping the concatenated input and
/// the convolution's output for the backward pass.
struct ConvBnCat {
    core: ConvBnCore,
    plan: CatPlan,
    x: Arc<OnceLock<Tensor>>,
}

impl Kernel3 for ConvBnCat {
    const NAME: &'static str = "conv2d_batch_norm_cat";
    fn kernel<T: Real>(&self, a: &[T], b: &[T], wgb: &[T]) -> candle_core::Result<Vec<T>> {
        let g = &self.core.geom;
        let (wl, c) = (g.weight_len(), self.core.bn.channels());
        if wgb.len() != wl + 2 * c {
            candle_core::bail!("{}: weights do not match the geometry {g:?}", Self::NAME);
        }
        let (w, gb) = wgb.split_at(wl);
        // Training an f32 "same" convolution: the concatenation is written as the padded
        // planes that the forward pass and the weight gradient read, and nothing else.
        if self.core.xp.is_some()
            && let (Some(af), Some(bf)) = (T::as_f32(a), T::as_f32(b))
            && let Some((ph, pw)) = g.padded_dy_layout()
        {
            let xp = self.plan.cat_padded(af, bf, ph, pw)?;
            let z = self.core.conv_planes(Self::NAME, xp, w)?;
            return self.core.normalise(Self::NAME, z, gb, None);
        }
        let x = self.plan.cat(a, b)?;
        let y = self.core.forward(Self::NAME, &x, w, gb, None)?;
        // Here no padded planes were kept: the backward pass reads the concatenation.
        let x = Tensor::from_vec(x, (g.n, g.c, g.h, g.w), &Device::Cpu)?;
        if self.x.set(x).is_err() {
            candle_core::bail!("{}: the op ran its forward pass twice", Self::NAME);
        }
        Ok(y)
    }
}

impl CustomOp3 for ConvBnCat {
    fn name(&self) -> &'static str {
        "sconce-conv2d-batch-norm-cat"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.core.geom.out_shape()))
    }

    /// The convolution's input gradient, split into views: `a`'s channels, and `b`'s channels
    /// cropped to `b`'s window.
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        wgb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.core.geom;
        let (wl, c) = (g.weight_len(), self.core.bn.channels());
        let w = wgb.narrow(0, 0, wl)?.reshape((g.o, g.c / g.g, g.kh, g.kw))?;
        let gamma = wgb.narrow(0, wl, c)?;
        let need_dx = a.track_op() || b.track_op();
        let (dx, dw, dg, db) =
            self.core.backward(Self::NAME, self.x.get(), &w, (need_dx, wgb.track_op()), &gamma, res, grad)?;
        let dwgb = dw.map(|dw| weights_and(&dw, &[&dg, &db])).transpose()?;
        let p = self.plan;
        let (da, dbx) = match dx {
            Some(dx) => (
                if a.track_op() { Some(dx.narrow(1, 0, p.ca)?) } else { None },
                if b.track_op() {
                    Some(dx.narrow(1, p.ca, p.cb)?.narrow(2, p.top, p.hb)?.narrow(3, p.left, p.wb)?)
                } else {
                    None
                },
            ),
            None => (None, None),
        };
        Ok((da, dbx, dwgb))
    }
}

/// [`conv2d_batch_norm_train`] (with its optional ReLU) on `cat([a, pad(b)], 1)`: a U-Net
/// decoder's skip concatenation and its first convolution as one op. `b` may be smaller than
/// `a` spatially; it is zero-padded to `a`'s size with the extra row/column at the bottom/right
/// when odd — `F.pad(b, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])`, as milesial's U-Net
/// pads its upsampled map. Neither the padded `b` nor the concatenation becomes a graph node:
/// their gradient buffers (a zero fill and an add each over the concatenation's size) and the
/// padding's copies are gone. Same values and gradients as the ops in a row.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{Conv2dConfig, conv2d_batch_norm_cat_train};
/// # fn main() -> sconce_core::Result<()> {
/// let skip = Tensor::randn(0f32, 1.0, (2, 4, 9, 9), &Device::Cpu)?;
/// let up = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 1.0, (6, 8, 3, 3), &Device::Cpu)?;
/// let (g, b) = (Tensor::ones(6, DType::F32, &Device::Cpu)?, Tensor::zeros(6, DType::F32, &Device::Cpu)?);
/// let cfg = Conv2dConfig::default().padding(1);
/// let (y, _) = conv2d_batch_norm_cat_train(&skip, &up, &w, &cfg, &g, &b, 1e-5, true)?;
/// assert_eq!(y.dims(), &[2, 6, 9, 9]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`conv2d_batch_norm_train`] for the concatenation; `a` and `b` of another rank, batch
/// size or dtype, or `b` larger than `a`, are errors.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_cat_train(
    a: &Tensor,
    b: &Tensor,
    w: &Tensor,
    cfg: &Conv2dConfig,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let [n, ca, h, wd] = sconce_core::check::dims::<4>(a, "conv2d_batch_norm_cat_train a", "[N, C1, H, W]")?;
    let [nb, cb, hb, wb] = sconce_core::check::dims::<4>(b, "conv2d_batch_norm_cat_train b", "[N, C2, H2, W2]")?;
    if ca == 0 || h == 0 || wd == 0 {
        return Err(sconce_core::Error::shape(
            "conv2d_batch_norm_cat_train a",
            "[N, C1, H, W] with no zero size",
            &[n, ca, h, wd],
        ));
    }
    if nb != n || cb == 0 || hb == 0 || wb == 0 || hb > h || wb > wd {
        return Err(sconce_core::Error::shape(
            "conv2d_batch_norm_cat_train b",
            format!("[{n}, C2 > 0, 0 < H2 <= {h}, 0 < W2 <= {wd}] (a's batch, at most a's size)"),
            b.dims(),
        ));
    }
    if b.dtype() != a.dtype() {
        return Err(sconce_core::Error::config(
            "conv2d_batch_norm_cat_train b",
            format!("dtype {:?} differs from a's {:?}", b.dtype(), a.dtype()),
        ));
    }
    crate::kernel::float_dtype(a, "conv2d_batch_norm_cat_train a")?;
    crate::kernel::cpu(a, "conv2d_batch_norm_cat_train a")?;
    let wdims = sconce_core::check::dims::<4>(w, "conv2d weight", "[O, C/groups, kh, kw]")?;
    if w.dtype() != a.dtype() {
        return Err(sconce_core::Error::config(
            "conv2d weight dtype",
            format!("must match the input's {:?}, got {:?}", a.dtype(), w.dtype()),
        ));
    }
    let geom = Geom::new(&[n, ca + cb, h, wd], &wdims, cfg)?;
    let bn = BnTrain::checked(&[geom.n, geom.o, geom.oh, geom.ow], a.dtype(), weight, bias, eps, relu)?;
    let saved = bn.saved();
    let plan = CatPlan { n, ca, cb, h, w: wd, hb, wb, top: (h - hb) / 2, left: (wd - wb) / 2 };
    let wgb = weights_and(w, &[weight, bias])?;
    let op = ConvBnCat { core: ConvBnCore::new(geom, bn, w), plan, x: Arc::new(OnceLock::new()) };
    let y = a.contiguous()?.apply_op3(&b.contiguous()?, &wgb, op)?;
    let stats = BnTrain::stats(&saved, &y)?;
    Ok((y, stats))
}

/// `(x, [γ | β], w) → conv(relu(bn(x)), w)`: a pre-activation convolution (DenseNet's). The
/// activation `relu(bn(x))` is neither kept nor a graph node: the backward pass recomputes it
/// from `x` and the recorded statistics.
struct BnReluConv {
    bn: BnTrain,
    geom: Geom,
}

impl Kernel3 for BnReluConv {
    const NAME: &'static str = "batch_norm_relu_conv2d";
    fn kernel<T: Real>(&self, x: &[T], gb: &[T], w: &[T]) -> candle_core::Result<Vec<T>> {
        let c = self.bn.channels();
        if gb.len() != 2 * c {
            candle_core::bail!("{}: {} batch-norm parameters for {c} channels", Self::NAME, gb.len());
        }
        let (gamma, beta) = gb.split_at(c);
        let g = &self.geom;
        // A 1×1 convolution applies the batch norm and ReLU while packing its input: the
        // activation is never written (nor read back).
        // (`batch_norm_relu_conv2d_train` always builds the op with its ReLU.)
        if self.bn.relu()
            && g.pointwise()
            && g.g == 1
            && crate::sgemm::available()
            && let (Some(xf), Some(wf)) = (T::as_f32(x), T::as_f32(w))
        {
            let (scale, shift) = self.bn.coefficients(x, gamma, beta);
            if let (Some(sf), Some(tf)) = (T::as_f32(&scale), T::as_f32(&shift)) {
                let y = crate::dense::conv1x1_affine_relu(xf, g.n, g.c, g.h * g.w, wf, g.o, sf, tf)?;
                if let Some(y) = T::from_f32_vec(y) {
                    return Ok(y);
                }
            }
        }
        let a = self.bn.run(x, gamma, beta);
        self.geom.forward(&a, w)
    }
}

impl CustomOp3 for BnReluConv {
    fn name(&self) -> &'static str {
        "sconce-batch-norm-relu-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, _) = cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.geom.out_shape()))
    }

    /// Recomputes `a = relu(bn(x))`; the convolution's backward gives `da` and `dw`, the batch
    /// norm's (masked by `a > 0`) `dx`, `dγ`, `dβ`.
    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.bn.channels();
        let xc = x.contiguous()?;
        let a = xc.apply_op2_no_bwd(&gb.contiguous()?, &Replay { bn: &self.bn })?;
        let need_da = x.track_op() || gb.track_op();
        let (da, dw) = Conv2dBackward::new(self.geom, need_da, w.track_op()).grads(&a, w, grad)?;
        let (dx, dgb) = match da {
            Some(da) => {
                let (dx, dg, db) = self.bn.backward(&xc, &gb.narrow(0, 0, c)?, &a, &da)?;
                (x.track_op().then_some(dx), if gb.track_op() { Some(Tensor::cat(&[dg, db], 0)?) } else { None })
            }
            None => (None, None),
        };
        Ok((dx, dgb, dw))
    }
}

/// `(x, [γ | β]) → relu(bn(x))` from the recorded statistics (no graph node: used inside a
/// backward pass).
struct Replay<'a> {
    bn: &'a BnTrain,
}

impl crate::kernel::Kernel2 for Replay<'_> {
    const NAME: &'static str = "batch_norm replay";
    fn kernel<T: Real>(&self, x: &[T], gb: &[T]) -> candle_core::Result<Vec<T>> {
        let c = self.bn.channels();
        if gb.len() != 2 * c {
            candle_core::bail!("{}: {} parameters for {c} channels", Self::NAME, gb.len());
        }
        let (g, b) = gb.split_at(c);
        self.bn.replay(x, g, b)
    }
}

impl candle_core::CustomOp2 for Replay<'_> {
    fn name(&self) -> &'static str {
        "sconce-batch-norm-replay"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = crate::kernel::cpu_fwd2(self, (s1, l1), (s2, l2))?;
        Ok((out, l1.shape().clone()))
    }
}

/// `conv2d(relu(batch_norm_train(x)), w)` — a pre-activation convolution, DenseNet's
/// `norm → relu → conv` — as one op: the batch norm's output is neither a graph node nor kept
/// for the backward pass (which recomputes it from `x` in one pass), so training needs one
/// activation fewer per layer and no gradient buffer (zero fill + add) for it. Same values and
/// gradients as the ops in a row. Returns the output and the batch statistics of `x`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{Conv2dConfig, batch_norm_relu_conv2d_train};
/// # fn main() -> sconce_core::Result<()> {
/// let x = Tensor::randn(0f32, 1.0, (2, 6, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 1.0, (4, 6, 1, 1), &Device::Cpu)?;
/// let (g, b) = (Tensor::ones(6, DType::F32, &Device::Cpu)?, Tensor::zeros(6, DType::F32, &Device::Cpu)?);
/// let (y, stats) = batch_norm_relu_conv2d_train(&x, &g, &b, 1e-5, &w, &Conv2dConfig::default())?;
/// assert_eq!(y.dims(), &[2, 4, 8, 8]);
/// assert_eq!(stats.mean.dims(), &[6]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`batch_norm_train`](crate::batch_norm_train) for `x` and the parameters, and
/// [`conv2d`](crate::conv2d) for the convolution.
pub fn batch_norm_relu_conv2d_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    w: &Tensor,
    cfg: &Conv2dConfig,
) -> Result<(Tensor, BatchStats)> {
    let (op, saved, gb) = BnReluConv::checked(x, weight, bias, eps, w, cfg)?;
    let y = x.contiguous()?.apply_op3(&gb, &w.contiguous()?, op)?;
    // The statistics are `x`'s (their count is `N·H·W` of `x`, not of the output).
    let stats = BnTrain::stats(&saved, x)?;
    Ok((y, stats))
}

impl BnReluConv {
    /// The op for `conv(relu(bn(x)), w)` after checking shapes and parameters (only `x`'s
    /// shape, dtype and device are read), its statistics slot and `[γ | β]`.
    fn checked(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
        w: &Tensor,
        cfg: &Conv2dConfig,
    ) -> Result<(Self, crate::batch_norm::Saved, Tensor)> {
        let geom = Geom::checked(x, w, cfg)?;
        let bn = BnTrain::checked(x.dims(), x.dtype(), weight, bias, eps, true)?;
        let saved = bn.saved();
        Ok((Self { bn, geom }, saved, Tensor::cat(&[weight, bias], 0)?))
    }
}

/// A DenseNet block's features in one buffer, so that training keeps them once (linear in the
/// block's width) instead of a concatenation per layer (quadratic).
///
/// The buffer holds the block input and each layer's new features side by side on axis 1,
/// written in place ([`DenseBlockBuffer::write`]); [`DenseBlockBuffer::bn_relu_conv_train`]
/// runs a layer's `conv(relu(bn(features so far)))` reading the buffer, where a plain
/// concatenation would have been kept by the graph. Its graph input is only the previous
/// layer's output (or the block input), so the backward pass runs from the last layer to the
/// first; each layer recomputes its input from the buffer, hands the gradient of its own
/// part to candle and adds the rest into a shared gradient buffer, which each earlier layer
/// adds to its own part. Values and gradients equal the concatenating version's.
#[derive(Debug, Clone)]
pub struct DenseBlockBuffer {
    state: Arc<DenseState>,
}

#[derive(Debug)]
struct DenseState {
    /// `[N, C_total, H, W]`, untracked; channels `0..filled` are written.
    features: Tensor,
    filled: std::sync::Mutex<usize>,
    /// The tensor written last (an op's graph input must be it), and whether an op took it.
    newest: std::sync::Mutex<(candle_core::TensorId, bool)>,
    /// Gradient parts of the earlier channels, added by later layers' backward passes.
    grad: std::sync::Mutex<Option<Tensor>>,
}

impl DenseBlockBuffer {
    /// A buffer of `total` channels holding `x` (`[N, C, H, W]`, `C ≤ total`) first.
    ///
    /// # Errors
    /// [`sconce_core::Error::Shape`] for another rank or `C > total`.
    pub fn new(x: &Tensor, total: usize) -> Result<Self> {
        let [n, c, h, w] = sconce_core::check::dims::<4>(x, "dense block input", "[N, C, H, W]")?;
        if c > total {
            return Err(sconce_core::Error::shape("dense block input", format!("at most {total} channels"), x.dims()));
        }
        let features = Tensor::zeros((n, total, h, w), x.dtype(), x.device())?;
        features.slice_set(&x.detach().contiguous()?, 1, 0)?;
        let state = DenseState {
            features,
            filled: std::sync::Mutex::new(c),
            newest: std::sync::Mutex::new((x.id(), false)),
            grad: std::sync::Mutex::new(None),
        };
        Ok(Self { state: Arc::new(state) })
    }

    /// Channels written so far.
    pub fn channels(&self) -> usize {
        *self.state.filled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a layer's features `y` (`[N, k, H, W]`) after the channels written so far.
    ///
    /// # Errors
    /// [`sconce_core::Error::Shape`] when `y` does not fit (batch, map size, room left).
    pub fn write(&self, y: &Tensor) -> Result<()> {
        let mut filled = self.state.filled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let f = self.state.features.dims();
        let ok = y.rank() == 4
            && y.dims()[0] == f[0]
            && y.dims()[2..] == f[2..]
            && y.dtype() == self.state.features.dtype()
            && *filled + y.dims()[1] <= f[1];
        if !ok {
            return Err(sconce_core::Error::shape(
                "dense layer output",
                format!("[{}, ≤ {}, {}, {}] ({:?})", f[0], f[1] - *filled, f[2], f[3], self.state.features.dtype()),
                y.dims(),
            ));
        }
        self.state.features.slice_set(&y.detach().contiguous()?, 1, *filled)?;
        *filled += y.dims()[1];
        *self.state.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (y.id(), false);
        Ok(())
    }

    /// The first `c` channels, contiguous (the concatenation a layer reads).
    fn input(&self, c: usize) -> candle_core::Result<Tensor> {
        self.state.features.narrow(1, 0, c)?.contiguous()
    }

    /// `conv(relu(bn(features)), w)` over every channel written so far, as
    /// [`batch_norm_relu_conv2d_train`] computes it on their concatenation; `last` is the
    /// tensor the newest channels were written from (the previous layer's output, or the
    /// block input): the op's graph input, which carries the gradient back.
    ///
    /// # Errors
    /// As [`batch_norm_relu_conv2d_train`]; [`sconce_core::Error::Shape`] when `last` is not
    /// the newest part of the buffer's shape.
    pub fn bn_relu_conv_train(
        &self,
        last: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
        w: &Tensor,
        cfg: &Conv2dConfig,
    ) -> Result<(Tensor, BatchStats)> {
        let c = self.channels();
        let f = self.state.features.dims();
        let own = last.dims().get(1).copied().unwrap_or(0);
        if last.rank() != 4 || last.dims()[0] != f[0] || last.dims()[2..] != f[2..] || own == 0 || own > c {
            return Err(sconce_core::Error::shape(
                "dense layer input",
                format!("[{}, ≤ {c}, {}, {}] (the newest part of the block's buffer)", f[0], f[2], f[3]),
                last.dims(),
            ));
        }
        if last.dtype() != self.state.features.dtype() {
            return Err(sconce_core::Error::config(
                "dense layer input",
                format!("dtype {:?}, the buffer's is {:?}", last.dtype(), self.state.features.dtype()),
            ));
        }
        // Shapes and the statistics' count only: a view, not a copy (the op reads its own).
        let x = self.state.features.narrow(1, 0, c)?;
        let (inner, saved, gb) = BnReluConv::checked(&x, weight, bias, eps, w, cfg)?;
        // The gradient routing needs the graph input to be the part written last, and one op
        // per part (each op hands its part's gradient to candle exactly once).
        {
            let mut newest = self.state.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if newest.0 != last.id() || newest.1 {
                return Err(sconce_core::Error::config(
                    "dense layer input",
                    "must be the tensor written into the block's buffer last (the previous layer's output, or the \
                     block input), once per write: write each layer's output before the next layer runs",
                ));
            }
            newest.1 = true;
        }
        let op = BufferedBnReluConv { inner, buffer: self.clone(), channels: c, own };
        let y = last.contiguous()?.apply_op3(&gb, &w.contiguous()?, op)?;
        let stats = BnTrain::stats(&saved, &x)?;
        Ok((y, stats))
    }
}

/// [`BnReluConv`] over a [`DenseBlockBuffer`]'s first `channels` channels; its graph input is
/// the newest `own` of them.
struct BufferedBnReluConv {
    inner: BnReluConv,
    buffer: DenseBlockBuffer,
    channels: usize,
    own: usize,
}

impl CustomOp3 for BufferedBnReluConv {
    fn name(&self) -> &'static str {
        "sconce-dense-buffer-batch-norm-relu-conv2d"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = self.buffer.input(self.channels)?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(s1) = &*storage else {
            candle_core::bail!("{}: the dense block buffer is not on the CPU", self.name());
        };
        self.inner.cpu_fwd(s1, layout, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        last: &Tensor,
        gb: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let bn = &self.inner.bn;
        let c = bn.channels();
        let x = self.buffer.input(self.channels)?;
        let a = x.apply_op2_no_bwd(&gb.contiguous()?, &Replay { bn })?;
        let (da, dw) = Conv2dBackward::new(self.inner.geom, true, w.track_op()).grads(&a, w, grad)?;
        let Some(da) = da else {
            candle_core::bail!("{}: the convolution's backward gave no input gradient", self.name());
        };
        let (dx, dg, db) = bn.backward(&x, &gb.narrow(0, 0, c)?, &a, &da)?;
        let dgb = if gb.track_op() { Some(Tensor::cat(&[dg, db], 0)?) } else { None };
        // The newest channels' gradient goes back through the graph input, with what later
        // layers left for them; the earlier channels' waits in the shared buffer.
        let rest = self.channels - self.own;
        let mut slot = self.buffer.state.grad.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !last.track_op() {
            // Nothing before this layer trains (its input and every earlier layer are
            // constants): no earlier part will read the shared buffer.
            *slot = None;
            return Ok((None, dgb, dw));
        }
        let mut mine = dx.narrow(1, rest, self.own)?;
        if let Some(g) = slot.as_ref() {
            mine = (mine + g.narrow(1, rest, self.own)?)?;
            // Read once: a second backward pass over the same graph starts from zero here.
            let f = g.dims();
            g.slice_set(&Tensor::zeros((f[0], self.own, f[2], f[3]), g.dtype(), g.device())?, 1, rest)?;
        }
        if rest > 0 {
            let g = match slot.take() {
                Some(g) => g,
                None => self.buffer.state.features.zeros_like()?,
            };
            let sum = (g.narrow(1, 0, rest)? + dx.narrow(1, 0, rest)?)?;
            g.slice_set(&sum.contiguous()?, 1, 0)?;
            *slot = Some(g);
        } else {
            // The first layer: nothing earlier is left to receive a gradient.
            *slot = None;
        }
        Ok((Some(mine.contiguous()?), dgb, dw))
    }
}
