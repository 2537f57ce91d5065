//! DenseNet's eval-mode pre-activation 1×1 convolution, `conv1x1(relu(bn(cat(parts))))` with an
//! optional batch norm (and ReLU) after it, reading the concatenation's parts in place.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;
use sconce_core::{Error, Result};

use crate::batch_norm::eval_coefficients;
use crate::conv::{Conv2dConfig, Epilogue};
use crate::kernel::{contiguous_slice, nchw};
use crate::sgemm::{CatRow, CatRows, PackedA, Strided, sgemm_packed};

/// Columns of one product: a chunk of whole images' positions (small maps share a product).
const CHUNK_COLS: usize = 4096;

/// An eval-mode batch norm's parameters, as `torch.nn.BatchNorm2d` holds them.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    /// The running mean, `[C]`.
    pub running_mean: &'a Tensor,
    /// The running (unbiased) variance, `[C]`.
    pub running_var: &'a Tensor,
    /// The scale γ, `[C]`.
    pub weight: &'a Tensor,
    /// The shift β, `[C]`.
    pub bias: &'a Tensor,
    /// Added to the variance.
    pub eps: f64,
}

impl BatchNormParams<'_> {
    /// The per-channel `(scale, shift)` after checking the parameters.
    fn coefficients(&self, c: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
        eval_coefficients(c, dtype, [self.running_mean, self.running_var, self.weight, self.bias], self.eps)
    }
}

const NAME: &str = "cat_batch_norm_relu_conv1x1_eval";

/// `conv2d(relu(batch_norm_eval(cat(parts, 1))), w)` for a 1×1 kernel without bias — a DenseNet
/// layer's `norm1 → relu1 → conv1` in eval mode — then, with `post = Some((bn, relu))`,
/// `bn` (and a ReLU) on the result (the layer's `norm2 → relu2`).
///
/// Under [`sconce_core::no_grad`], on the `f32` AVX-512 path, the parts are read in place: the
/// batch norm and ReLU are applied while the product packs its input, and neither the
/// concatenation nor the activation is ever written (they were two copies of an input that
/// grows with every layer of a dense block). The result then has no autograd history.
/// Otherwise it runs as the ops in a row, differentiable.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use sconce_tensor::{BatchNormParams, cat_batch_norm_relu_conv1x1_eval};
/// # fn main() -> sconce_core::Result<()> {
/// let dev = Device::Cpu;
/// let parts = [Tensor::randn(0f32, 1.0, (2, 4, 5, 5), &dev)?, Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &dev)?];
/// let (zeros, ones) = (Tensor::zeros(7, DType::F32, &dev)?, Tensor::ones(7, DType::F32, &dev)?);
/// let bn = BatchNormParams { running_mean: &zeros, running_var: &ones, weight: &ones, bias: &zeros, eps: 1e-5 };
/// let w = Tensor::randn(0f32, 1.0, (6, 7, 1, 1), &dev)?;
/// let y = sconce_core::no_grad(|| cat_batch_norm_relu_conv1x1_eval(&parts, &bn, &w, None))?;
/// assert_eq!(y.dims(), &[2, 6, 5, 5]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// No parts; parts that are not `[N, Cᵢ, H, W]` with one `N`, `H`, `W` and float dtype on the
/// CPU; a weight that is not `[O, ΣCᵢ, 1, 1]` of the parts' dtype; batch-norm parameters of
/// the wrong length or negative variances.
pub fn cat_batch_norm_relu_conv1x1_eval(
    parts: &[Tensor],
    norm: &BatchNormParams<'_>,
    w: &Tensor,
    post: Option<(&BatchNormParams<'_>, bool)>,
) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::config(format!("{NAME} parts"), "needs at least one input to concatenate"));
    };
    let [n, _, h, wd] = nchw(first, &format!("{NAME} parts[0]"))?;
    let dtype = first.dtype();
    let mut channels = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let what = format!("{NAME} parts[{i}]");
        let d = nchw(part, &what)?;
        if d[0] != n || d[2] != h || d[3] != wd {
            return Err(Error::shape(
                what,
                format!("[{n}, C, {h}, {wd}] (parts[0]'s batch and size: concatenate maps of one size)"),
                &d,
            ));
        }
        if part.dtype() != dtype {
            return Err(Error::config(
                what,
                format!("dtype {:?} differs from parts[0]'s {dtype:?}; convert every part to one dtype", part.dtype()),
            ));
        }
        channels.push(d[1]);
    }
    let c: usize = channels.iter().sum();
    let wdims = sconce_core::check::dims::<4>(w, &format!("{NAME} weight"), "[O, C, 1, 1]")?;
    if wdims[0] == 0 || wdims[1] != c || wdims[2] != 1 || wdims[3] != 1 {
        return Err(Error::shape(
            format!("{NAME} weight"),
            format!("[O > 0, {c}, 1, 1] (a 1x1 kernel over the concatenation)"),
            &wdims,
        ));
    }
    if w.dtype() != dtype {
        return Err(Error::config(
            format!("{NAME} weight"),
            format!("dtype {:?} differs from the input's {dtype:?}", w.dtype()),
        ));
    }
    let o = wdims[0];
    let (scale, shift) = norm.coefficients(c, dtype)?;
    let post = match post {
        Some((bn, relu)) => Some((bn.coefficients(o, dtype)?, relu, bn)),
        None => None,
    };
    if n == 0 {
        return Ok(Tensor::zeros((0, o, h, wd), dtype, &Device::Cpu)?);
    }
    if dtype == DType::F32 && crate::sgemm::available() && !sconce_core::grad_enabled() {
        let p = h * wd;
        let contiguous = parts.iter().map(Tensor::contiguous).collect::<candle_core::Result<Vec<_>>>()?;
        let guards: Vec<_> = contiguous.iter().map(Tensor::storage_and_layout).collect();
        let mut data = Vec::with_capacity(parts.len());
        for (storage, layout) in &guards {
            let Storage::Cpu(s) = &**storage else {
                return Err(Error::config(format!("{NAME} parts"), "must live on the CPU"));
            };
            data.push(contiguous_slice::<f32>(s, layout, NAME)?);
        }
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let (sv, tv) = (scale.to_vec1::<f32>()?, shift.to_vec1::<f32>()?);
        let post_v = match &post {
            Some(((s2, t2), relu, _)) => Some((s2.to_vec1::<f32>()?, t2.to_vec1::<f32>()?, *relu)),
            None => None,
        };
        let epi = post_v.as_ref().map(|(s, t, relu)| Epilogue { scale: s, shift: t, relu: *relu, residual: None });
        let plan = Plan { n, p, o, channels: &channels };
        let y = plan.run(&data, &wv, &sv, &tv, epi.as_ref())?;
        return Ok(Tensor::from_vec(y, (n, o, h, wd), &Device::Cpu)?);
    }
    let x = Tensor::cat(parts, 1)?;
    let a = crate::batch_norm_relu_eval(&x, norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.eps)?;
    let cfg = Conv2dConfig::default();
    match post {
        None => crate::conv2d(&a, w, None, &cfg),
        Some((_, relu, bn)) => crate::conv2d_batch_norm_eval(
            &a,
            w,
            &cfg,
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            bn.eps,
            relu,
        ),
    }
}

/// `conv1x1(relu(x·scale + shift))` (per input channel, no bias) on the AVX-512 path, the
/// affine map and ReLU applied while packing: `x` `[N, C, P]`, `w` `[O, C]`, out `[N, O, P]`.
/// A training-mode pre-activation convolution's forward pass (`batch_norm_relu_conv2d_train`)
/// without writing and reading back the activation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv1x1_affine_relu(
    x: &[f32],
    n: usize,
    c: usize,
    p: usize,
    w: &[f32],
    o: usize,
    scale: &[f32],
    shift: &[f32],
) -> candle_core::Result<Vec<f32>> {
    if w.len() != o * c || scale.len() != c || shift.len() != c {
        candle_core::bail!("{NAME}: {} weights, {} scales, {} shifts for {o}x{c}", w.len(), scale.len(), shift.len());
    }
    Plan { n, p, o, channels: &[c] }.run(&[x], w, scale, shift, None)
}

/// The fast path's sizes: `n` images of `p` positions, `o` output channels, the parts' channels.
struct Plan<'a> {
    n: usize,
    p: usize,
    o: usize,
    channels: &'a [usize],
}

impl Plan<'_> {
    /// The output `[N, O, P]`: products over chunks of whole images (one image per product for
    /// large maps, written in place; several for small maps, then copied out), each image's
    /// epilogue as soon as it is complete.
    fn run(
        &self,
        data: &[&[f32]],
        w: &[f32],
        scale: &[f32],
        shift: &[f32],
        epi: Option<&Epilogue<'_, f32>>,
    ) -> candle_core::Result<Vec<f32>> {
        let (n, p, o) = (self.n, self.p, self.o);
        if n == 0 || p == 0 {
            return Ok(Vec::new());
        }
        let c: usize = self.channels.iter().sum();
        for (d, &ci) in data.iter().zip(self.channels) {
            if d.len() != n * ci * p {
                candle_core::bail!("{NAME}: a part of {} values for {n}x{ci}x{p}", d.len());
            }
        }
        let rows: Vec<CatRow> = self
            .channels
            .iter()
            .enumerate()
            .flat_map(|(part, &ci)| (0..ci).map(move |ch| CatRow { part, offset: ch * p, stride: ci * p }))
            .collect();
        let a = PackedA::new(o, c, &Strided { data: w, rs: c, cs: 1 })?;
        let threads = rayon::current_num_threads();
        let per = (CHUNK_COLS / p).clamp(1, n);
        // The parts' slices from image `i0` on.
        let from =
            |i0: usize| -> Vec<&[f32]> { data.iter().zip(self.channels).map(|(d, &ci)| &d[i0 * ci * p..]).collect() };
        let mut out: Vec<f32> = Vec::with_capacity(n * o * p);
        let y = &mut out.spare_capacity_mut()[..n * o * p];
        let finish = |img: usize, yi: &mut [MaybeUninit<f32>]| {
            if let Some(e) = epi {
                // SAFETY: the product (or copy) wrote every element of `yi`, and
                // `MaybeUninit<f32>` has `f32`'s layout.
                let yi = unsafe { &mut *(std::ptr::from_mut(yi) as *mut [f32]) };
                e.apply(img, yi, p);
            }
        };
        if per == 1 {
            let image = |img: usize, yi: &mut [MaybeUninit<f32>], gemm_threads: usize| -> candle_core::Result<()> {
                let d = from(img);
                let b = CatRows { data: &d, rows: &rows, p, images: 1, scale, shift, relu: true };
                sgemm_packed(p, &mut yi[..], p, false, &a, &b, gemm_threads)?;
                finish(img, yi);
                Ok(())
            };
            if n >= threads {
                y.par_chunks_mut(o * p).enumerate().try_for_each(|(img, yi)| image(img, yi, 1))?;
            } else {
                for (img, yi) in y.chunks_mut(o * p).enumerate() {
                    image(img, yi, threads)?;
                }
            }
        } else {
            <f32 as crate::kernel::Real>::with_scratch(o * per * p, |scratch| -> candle_core::Result<()> {
                for (chunk, yc) in y.chunks_mut(per * o * p).enumerate() {
                    let images = yc.len() / (o * p);
                    let cols = images * p;
                    let d = from(chunk * per);
                    let b = CatRows { data: &d, rows: &rows, p, images, scale, shift, relu: true };
                    let cm = &mut scratch[..o * cols];
                    sgemm_packed(cols, &mut cm[..], cols, false, &a, &b, threads)?;
                    let cm = &*cm;
                    yc.par_chunks_exact_mut(o * p).enumerate().for_each(|(i, yi)| {
                        for (oc, yo) in yi.chunks_exact_mut(p).enumerate() {
                            for (dst, &v) in yo.iter_mut().zip(&cm[oc * cols + i * p..][..p]) {
                                dst.write(v);
                            }
                        }
                        finish(chunk * per + i, yi);
                    });
                }
                Ok(())
            })?;
        }
        // SAFETY: every image's `o·p` values were written above (or an error returned).
        unsafe { out.set_len(n * o * p) };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_norm::BnTrain;
    use crate::sgemm::{NR, PackB};

    /// The fused forward's activation (packed by [`CatRows`] from [`BnTrain::coefficients`])
    /// must equal [`BnTrain::replay`]'s bit for bit: the backward pass takes its ReLU mask and
    /// weight-gradient operand from the replay.
    #[test]
    fn packed_activation_is_the_replay_bit_for_bit() -> Result<()> {
        if !crate::sgemm::available() {
            return Ok(());
        }
        let (n, c, p) = (3, 5, 29);
        let mut s = 7u64;
        let mut x: Vec<f32> = (0..n * c * p)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        // Values at the ReLU's edge after the affine map are likely among signed zeros and tiny
        // numbers; an infinity too.
        x[..4].copy_from_slice(&[0.0, -0.0, 1e-30, f32::INFINITY]);
        let g = [0.7f32, -1.3, 2.0, 1e-3, 3.5];
        let b = [0.1f32, 0.2, -0.3, 0.0, -1.0];
        let dev = Device::Cpu;
        let (gt, bt) = (Tensor::new(&g[..], &dev)?, Tensor::new(&b[..], &dev)?);
        let bn = BnTrain::checked(&[n, c, 1, p], DType::F32, &gt, &bt, 1e-5, true)?;
        let (scale, shift) = bn.coefficients(&x, &g, &b);
        let replay = bn.replay(&x, &g, &b)?;
        let data: [&[f32]; 1] = [&x];
        let rows: Vec<CatRow> = (0..c).map(|k| CatRow { part: 0, offset: k * p, stride: c * p }).collect();
        let op = CatRows { data: &data, rows: &rows, p, images: n, scale: &scale, shift: &shift, relu: true };
        op.check(c, n * p)?;
        let panels = (n * p).div_ceil(NR);
        let mut packed = vec![f32::NAN; c * panels * NR];
        op.pack(0, c, 0, n * p, &mut packed);
        for k in 0..c {
            for j in 0..panels * NR {
                let got = packed[(j / NR * c + k) * NR + j % NR];
                let want = if j < n * p { replay[(j / p) * c * p + k * p + j % p] } else { 0.0 };
                assert_eq!(got.to_bits(), want.to_bits(), "channel {k} column {j}: {got} vs {want}");
            }
        }
        Ok(())
    }
}
