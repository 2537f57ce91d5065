//! Fused in-place optimizer updates and `sum_squares`: f32 and f64 over tensors of several
//! parallel chunks against the update rules written out in f64 here, the in-place semantics,
//! and bad input as errors. (The rules' equality with `torch.optim` is checked in
//! sconce-train's fixture tests, which run through these kernels.)

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use sconce_core::{Error, SeededRng};
use sconce_tensor::{AdamUpdate, SgdUpdate, adam_update, sgd_update, sum_squares};

/// More than three of the kernels' 32 768-element chunks, with a ragged tail.
const N: usize = 3 * 32_768 + 1_237;

fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

fn tensor(v: &[f64], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), &Device::Cpu)?.to_dtype(dtype)?)
}

fn read(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Largest relative error of `got` against `want`, each element scaled by `max(|want|, 1)`.
fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max)
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F32 { 2e-6 } else { 1e-14 }
}

#[test]
fn sgd_with_and_without_momentum_matches_the_rule_over_several_chunks() -> Result<()> {
    let (p0, g0, g1) = (values(1, N), values(2, N), values(3, N));
    for dtype in [DType::F32, DType::F64] {
        let cases = [(0.0, 0.0, false, 0.01), (0.9, 0.0, false, 0.0), (0.8, 0.3, false, 0.01), (0.9, 0.0, true, 0.01)];
        for (momentum, dampening, nesterov, weight_decay) in cases.into_iter().chain([(0.8, 0.3, false, 0.0)]) {
            let cfg = SgdUpdate { lr: 0.1, momentum, dampening, weight_decay, nesterov };
            let p = tensor(&p0, dtype)?;
            let buf = p.zeros_like()?;
            // Two steps: the first copies the gradient into the buffer, the second blends.
            let (mut pw, mut bw) = (p0.clone(), vec![0.0; N]);
            for (step, g) in [&g0, &g1].into_iter().enumerate() {
                sgd_update(&p, &tensor(g, dtype)?, (momentum != 0.0).then_some(&buf), step == 0, &cfg)?;
                for i in 0..N {
                    let gi = g[i] + weight_decay * pw[i];
                    let d = if momentum == 0.0 {
                        gi
                    } else {
                        bw[i] = if step == 0 { gi } else { momentum * bw[i] + (1.0 - dampening) * gi };
                        if nesterov { gi + momentum * bw[i] } else { bw[i] }
                    };
                    pw[i] -= 0.1 * d;
                }
            }
            let e = max_rel(&read(&p)?, &pw);
            assert!(e < tol(dtype), "{dtype:?} momentum {momentum} nesterov {nesterov} wd {weight_decay}: {e}");
            if momentum != 0.0 {
                let e = max_rel(&read(&buf)?, &bw);
                assert!(e < tol(dtype), "{dtype:?} buffer: {e}");
            }
        }
    }
    Ok(())
}

#[test]
fn adam_adamw_and_amsgrad_match_the_rule_over_several_chunks() -> Result<()> {
    let (p0, grads) = (values(4, N), [values(5, N), values(6, N), values(7, N)]);
    for dtype in [DType::F32, DType::F64] {
        for (decoupled, amsgrad, wd) in
            [(false, false, 0.1), (false, true, 0.1), (true, false, 0.1), (false, false, 0.0)]
        {
            let (b1, b2, lr, eps) = (0.8, 0.99, 0.02, 1e-6);
            let p = tensor(&p0, dtype)?;
            let (m, v, mx) = (p.zeros_like()?, p.zeros_like()?, p.zeros_like()?);
            let (mut pw, mut mw, mut vw, mut xw) = (p0.clone(), vec![0.0f64; N], vec![0.0f64; N], vec![0.0f64; N]);
            for (s, g) in grads.iter().enumerate() {
                let step = s as u64 + 1;
                let cfg = AdamUpdate { lr, betas: (b1, b2), eps, weight_decay: wd, decoupled, step };
                adam_update(&p, &tensor(g, dtype)?, &m, &v, amsgrad.then_some(&mx), &cfg)?;
                let (bc1, bc2) = (1.0 - f64::powi(b1, step as i32), 1.0 - f64::powi(b2, step as i32));
                for i in 0..N {
                    let gi = if decoupled { g[i] } else { g[i] + wd * pw[i] };
                    if decoupled {
                        pw[i] *= 1.0 - lr * wd;
                    }
                    mw[i] = b1 * mw[i] + (1.0 - b1) * gi;
                    vw[i] = b2 * vw[i] + (1.0 - b2) * gi * gi;
                    xw[i] = xw[i].max(vw[i]);
                    let second = if amsgrad { xw[i] } else { vw[i] };
                    pw[i] -= lr / bc1 * mw[i] / (second.sqrt() / bc2.sqrt() + eps);
                }
            }
            let e = max_rel(&read(&p)?, &pw);
            assert!(e < 5.0 * tol(dtype), "{dtype:?} decoupled {decoupled} amsgrad {amsgrad} wd {wd}: param {e}");
            assert!(max_rel(&read(&m)?, &mw) < tol(dtype), "{dtype:?} first moment");
            assert!(max_rel(&read(&v)?, &vw) < tol(dtype), "{dtype:?} second moment");
            if amsgrad {
                assert!(max_rel(&read(&mx)?, &xw) < tol(dtype), "{dtype:?} max second moment");
            }
        }
    }
    Ok(())
}

#[test]
fn updates_write_the_storage_in_place_and_accept_offset_gradients() -> Result<()> {
    // A clone shares the storage: it sees the step, as PyTorch's `p.add_` would show.
    let p = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
    let alias = p.clone();
    // The gradient is a contiguous view at an offset inside a larger tensor.
    let big = Tensor::new(&[9.0f32, 0.5, -1.0, 2.0], &Device::Cpu)?;
    let g = big.narrow(0, 1, 3)?;
    let cfg = SgdUpdate { lr: 0.5, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false };
    sgd_update(&p, &g, None, true, &cfg)?;
    assert_eq!(alias.to_vec1::<f32>()?, vec![0.75, 2.5, 2.0]);
    // An f64 gradient for an f32 parameter is converted.
    sgd_update(&p, &Tensor::new(&[1.0f64, 1.0, 1.0], &Device::Cpu)?, None, true, &cfg)?;
    assert_eq!(p.to_vec1::<f32>()?, vec![0.25, 2.0, 1.5]);
    Ok(())
}

#[test]
fn sum_squares_accumulates_in_f64_over_several_chunks() -> Result<()> {
    let v = values(8, N);
    let want: f64 = v.iter().map(|x| x * x).sum();
    let got = sum_squares(&tensor(&v, DType::F64)?)?;
    assert!((got - want).abs() < 1e-10 * want, "{got} vs {want}");
    // f32 values summed in f64: exact sums of the f32 values' squares.
    let t32 = tensor(&v, DType::F32)?;
    let want32: f64 = read(&t32)?.iter().map(|x| x * x).sum();
    let got32 = sum_squares(&t32)?;
    assert!((got32 - want32).abs() < 1e-10 * want32, "{got32} vs {want32}");
    // A non-contiguous view, and nothing at all.
    let m = Tensor::from_slice(&v[..600], (20, 30), &Device::Cpu)?.t()?;
    let want_m: f64 = v[..600].iter().map(|x| x * x).sum();
    assert!((sum_squares(&m)? - want_m).abs() < 1e-10 * want_m);
    assert_eq!(sum_squares(&Tensor::zeros(0, DType::F32, &Device::Cpu)?)?, 0.0);
    // Same value on every run (partial sums added in a fixed order).
    assert_eq!(sum_squares(&t32)?.to_bits(), got32.to_bits());
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> Result<()> {
    let p = Tensor::zeros(6, DType::F32, &Device::Cpu)?;
    let sgd = SgdUpdate { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
    let g5 = Tensor::zeros(5, DType::F32, &Device::Cpu)?;
    assert!(matches!(sgd_update(&p, &g5, Some(&p.zeros_like()?), true, &sgd), Err(Error::Shape { .. })));
    let g = p.ones_like()?;
    // Momentum without its buffer, a buffer of another dtype or shape.
    assert!(matches!(sgd_update(&p, &g, None, true, &sgd), Err(Error::Config { .. })));
    let b64 = Tensor::zeros(6, DType::F64, &Device::Cpu)?;
    assert!(matches!(sgd_update(&p, &g, Some(&b64), true, &sgd), Err(Error::Config { .. })));
    assert!(matches!(sgd_update(&p, &g, Some(&g5), true, &sgd), Err(Error::Shape { .. })));
    // A parameter the kernels cannot update: integer, or a non-contiguous view; refused before
    // anything is written (the momentum buffer keeps its values).
    let pi = Tensor::zeros(6, DType::U32, &Device::Cpu)?;
    let plain = SgdUpdate { momentum: 0.0, ..sgd };
    assert!(matches!(sgd_update(&pi, &pi.zeros_like()?, None, true, &plain), Err(Error::Config { .. })));
    let pt = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?.t()?;
    let buf = Tensor::full(7f32, (3, 2), &Device::Cpu)?;
    assert!(matches!(sgd_update(&pt, &pt.ones_like()?, Some(&buf), false, &sgd), Err(Error::Config { .. })));
    assert_eq!(buf.flatten_all()?.to_vec1::<f32>()?, vec![7.0; 6]);
    // A non-contiguous buffer is refused too.
    let p23 = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let bt = Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?.t()?;
    assert!(matches!(sgd_update(&p23, &p23.ones_like()?, Some(&bt), true, &sgd), Err(Error::Config { .. })));
    assert_eq!(p23.flatten_all()?.to_vec1::<f32>()?, vec![0.0; 6]);
    // Adam: step 0, moments of the wrong shape.
    let adam = AdamUpdate { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 0 };
    assert!(matches!(adam_update(&p, &g, &p.zeros_like()?, &p.zeros_like()?, None, &adam), Err(Error::Config { .. })));
    let adam = AdamUpdate { step: 1, ..adam };
    assert!(matches!(adam_update(&p, &g, &g5, &p.zeros_like()?, None, &adam), Err(Error::Shape { .. })));
    assert!(matches!(
        adam_update(&p, &g, &p.zeros_like()?, &p.zeros_like()?, Some(&g5), &adam),
        Err(Error::Shape { .. })
    ));
    // Nothing was written by the refused calls.
    assert_eq!(p.to_vec1::<f32>()?, vec![0.0; 6]);
    assert!(sum_squares(&pi).is_err());
    Ok(())
}
