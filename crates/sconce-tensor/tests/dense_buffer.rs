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

/// Three layers of growth 2 on a 3-channel block input (a 1×1 then two 3×3 convolutions):
/// the outputs, statistics, loss and the gradients of every input, buffered or concatenated.
fn block(buffered: bool, dtype: DType) -> Result<Vec<Tensor>> {
    let (n, c0, k, h, w) = (2, 3, 2, 5, 4);
    let x = Var::from_tensor(&random(&[n, c0, h, w], 1, 0.3, dtype)?)?;
    let mut params = Vec::new();
    for i in 0..3 {
        let c = c0 + i * k;
        let ks = if i == 0 { 1 } else { 3 };
        params.push((
            Var::from_tensor(&random(&[c], 10 + i as u64, 1.0, dtype)?)?,
            Var::from_tensor(&random(&[c], 20 + i as u64, 0.0, dtype)?)?,
            Var::from_tensor(&random(&[k, c, ks, ks], 30 + i as u64, 0.0, dtype)?.affine(0.4, 0.0)?)?,
            Conv2dConfig::default().padding(ks / 2),
        ));
    }
    let buffer = if buffered { Some(DenseBlockBuffer::new(x.as_tensor(), c0 + 3 * k)?) } else { None };
    let mut parts = vec![x.as_tensor().clone()];
    let mut out = Vec::new();
    for (g, b, wv, cfg) in &params {
        let last = parts.last().context("parts")?.clone();
        let (y, stats) = match &buffer {
            Some(buf) => buf.bn_relu_conv_train(&last, g.as_tensor(), b.as_tensor(), 1e-5, wv.as_tensor(), cfg)?,
            None => batch_norm_relu_conv2d_train(
                &Tensor::cat(&parts, 1)?,
                g.as_tensor(),
                b.as_tensor(),
                1e-5,
                wv.as_tensor(),
                cfg,
            )?,
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
    let grads = loss.backward()?;
    out.push(loss);
    out.push(grads.get(x.as_tensor()).context("dx")?.clone());
    for (g, b, wv, _) in &params {
        for v in [g, b, wv] {
            out.push(grads.get(v.as_tensor()).context("parameter gradient")?.clone());
        }
    }
    Ok(out)
}

#[test]
fn the_buffered_block_equals_the_concatenating_one() -> Result<()> {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let (a, b) = (block(true, dtype)?, block(false, dtype)?);
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_close(&format!("{dtype:?} output {i}"), x, y, tol, tol)?;
        }
    }
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
