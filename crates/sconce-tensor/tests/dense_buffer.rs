//! DenseBlockBuffer: a block of pre-activation layers reading one shared feature buffer gives
//! the concatenating version's outputs, batch statistics and every gradient (the block input,
//! each layer's γ, β and weights), in f64 and f32, and bad input is an error.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::SeededRng;
use sconce_tensor::{Conv2dConfig, DenseBlockBuffer, batch_norm_relu_conv2d_train};
use sconce_testutil::assert_close;

fn random(shape: &[usize], seed: u64, shift: f64, dtype: DType) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() + shift).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

/// Four layers of growth 2 on a 3-channel block input (a 1×1 then three 3×3 convolutions):
/// the outputs, statistics, loss and the gradients of every trained input, buffered or
/// concatenated. `frozen_first`: the block input and the first layer are constants (a frozen
/// prefix). `backwards`: how many backward passes run over the one graph (each must give the
/// same gradients).
fn block(buffered: bool, dtype: DType, frozen_first: bool, backwards: usize) -> Result<Vec<Tensor>> {
    let (n, c0, k, h, w) = (2, 3, 2, 5, 4);
    let var = |t: Tensor, frozen: bool| -> Result<(Tensor, Option<Var>)> {
        if frozen {
            Ok((t, None))
        } else {
            let v = Var::from_tensor(&t)?;
            Ok((v.as_tensor().clone(), Some(v)))
        }
    };
    let x = var(random(&[n, c0, h, w], 1, 0.3, dtype)?, frozen_first)?;
    let mut params = Vec::new();
    for i in 0..4 {
        let c = c0 + i * k;
        let ks = if i == 0 { 1 } else { 3 };
        let frozen = frozen_first && i == 0;
        params.push((
            var(random(&[c], 10 + i as u64, 1.0, dtype)?, frozen)?,
            var(random(&[c], 20 + i as u64, 0.0, dtype)?, frozen)?,
            var(random(&[k, c, ks, ks], 30 + i as u64, 0.0, dtype)?.affine(0.4, 0.0)?, frozen)?,
            Conv2dConfig::default().padding(ks / 2),
        ));
    }
    let buffer = if buffered { Some(DenseBlockBuffer::new(&x.0, c0 + 4 * k)?) } else { None };
    let mut parts = vec![x.0.clone()];
    let mut out = Vec::new();
    for ((g, _), (b, _), (wv, _), cfg) in &params {
        let last = parts.last().context("parts")?.clone();
        let (y, stats) = match &buffer {
            Some(buf) => buf.bn_relu_conv_train(&last, g, b, 1e-5, wv, cfg)?,
            None => batch_norm_relu_conv2d_train(&Tensor::cat(&parts, 1)?, g, b, 1e-5, wv, cfg)?,
        };
        if let Some(buf) = &buffer {
            buf.write(&y)?;
        }
        out.extend([y.clone(), stats.mean, stats.var]);
        parts.push(y);
    }
    // A loss on every layer's output and on the block output (the transition's input).
    let all = Tensor::cat(&parts, 1)?;
    let r = random(all.dims(), 99, 0.0, dtype)?;
    let mut loss = (&all * &r)?.sum_all()?;
    for (j, y) in parts.iter().enumerate().skip(1) {
        loss = (loss + (y.sqr()? * (0.1 * j as f64))?.sum_all()?)?;
    }
    out.push(loss.clone());
    for _ in 0..backwards {
        let grads = loss.backward()?;
        let vars = std::iter::once(&x.1).chain(params.iter().flat_map(|(g, b, wv, _)| [&g.1, &b.1, &wv.1]));
        for v in vars.flatten() {
            out.push(grads.get(v.as_tensor()).context("gradient of a trained input")?.clone());
        }
    }
    Ok(out)
}

#[test]
fn the_buffered_block_equals_the_concatenating_one() -> Result<()> {
    // Plain, a frozen prefix (nothing before layer 1 trains), each with two backward passes
    // over one graph (the shared gradient buffer must start from zero each time: with the
    // prefix frozen, the first layer never resets it, and layer 3's part for layer 1's output
    // would be counted twice).
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        for frozen_first in [false, true] {
            let (a, b) = (block(true, dtype, frozen_first, 2)?, block(false, dtype, frozen_first, 2)?);
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_close(&format!("{dtype:?} frozen {frozen_first} output {i}"), x, y, tol, tol)?;
            }
        }
    }
    Ok(())
}

#[test]
fn the_graph_input_must_be_the_part_written_last() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::ones((2, 3, 4, 4), DType::F32, &dev)?;
    let buf = DenseBlockBuffer::new(&x, 7)?;
    let params = |c: usize| -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            Tensor::ones(c, DType::F32, &dev)?,
            Tensor::zeros(c, DType::F32, &dev)?,
            Tensor::ones((2, c, 1, 1), DType::F32, &dev)?,
        ))
    };
    let cfg = Conv2dConfig::default();
    let (g, b, w) = params(3)?;
    // A copy of the block input is not the tensor written.
    assert!(buf.bn_relu_conv_train(&x.copy()?, &g, &b, 1e-5, &w, &cfg).is_err());
    let (y, _) = buf.bn_relu_conv_train(&x, &g, &b, 1e-5, &w, &cfg)?;
    // A second op on the same part, before its output is written, is refused.
    assert!(buf.bn_relu_conv_train(&x, &g, &b, 1e-5, &w, &cfg).is_err());
    buf.write(&y)?;
    let (g, b, w) = params(5)?;
    // The block input is no longer the newest part; the layer's output is.
    assert!(buf.bn_relu_conv_train(&x, &g, &b, 1e-5, &w, &cfg).is_err());
    assert!(buf.bn_relu_conv_train(&y, &g, &b, 1e-5, &w, &cfg).is_ok());
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu)?;
    assert!(DenseBlockBuffer::new(&x, 2).is_err(), "room for fewer channels than the input");
    assert!(DenseBlockBuffer::new(&Tensor::zeros((3, 4, 4), DType::F32, &Device::Cpu)?, 8).is_err());
    let buf = DenseBlockBuffer::new(&x, 5)?;
    assert_eq!(buf.channels(), 3);
    // Too many channels, another map size, another dtype.
    assert!(buf.write(&Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu)?).is_err());
    assert!(buf.write(&Tensor::zeros((2, 1, 4, 5), DType::F32, &Device::Cpu)?).is_err());
    assert!(buf.write(&Tensor::zeros((2, 1, 4, 4), DType::F64, &Device::Cpu)?).is_err());
    buf.write(&Tensor::zeros((2, 2, 4, 4), DType::F32, &Device::Cpu)?)?;
    assert_eq!(buf.channels(), 5);
    // A graph input wider than what was written.
    let (g, b) = (Tensor::ones(5, DType::F32, &Device::Cpu)?, Tensor::zeros(5, DType::F32, &Device::Cpu)?);
    let w = Tensor::zeros((1, 5, 1, 1), DType::F32, &Device::Cpu)?;
    let wide = Tensor::zeros((2, 6, 4, 4), DType::F32, &Device::Cpu)?;
    assert!(buf.bn_relu_conv_train(&wide, &g, &b, 1e-5, &w, &Conv2dConfig::default()).is_err());
    Ok(())
}
