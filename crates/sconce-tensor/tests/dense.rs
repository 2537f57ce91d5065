//! cat_batch_norm_relu_conv1x1_eval: DenseNet's eval-mode `conv1(relu(norm1(cat(parts))))`
//! (`→ norm2 → relu2`) against the ops in a row in f64, on the fast path (under `no_grad`,
//! parts read in place) and the differentiable one, and its argument errors.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng, no_grad};
use sconce_tensor::{
    BatchNormParams, Conv2dConfig, batch_norm_eval, batch_norm_relu_eval, cat_batch_norm_relu_conv1x1_eval, conv2d,
    relu,
};
use sconce_testutil::assert_close;

fn random(shape: &[usize], seed: u64, shift: f64, scale: f64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal() * scale + shift).collect::<Vec<f64>>(), shape, &Device::Cpu)?)
}

/// `[mean, var, γ, β]` of a batch norm over `c` channels (variances > 0).
fn bn_params(c: usize, seed: u64) -> Result<[Tensor; 4]> {
    Ok([
        random(&[c], seed, 0.3, 0.5)?,
        random(&[c], seed + 1, 0.0, 1.0)?.abs()?.affine(1.0, 0.2)?,
        random(&[c], seed + 2, 1.0, 0.3)?,
        random(&[c], seed + 3, 0.1, 0.5)?,
    ])
}

fn view(p: &[Tensor; 4]) -> BatchNormParams<'_> {
    BatchNormParams { running_mean: &p[0], running_var: &p[1], weight: &p[2], bias: &p[3], eps: 1e-5 }
}

fn to_f32(p: &[Tensor; 4]) -> Result<[Tensor; 4]> {
    Ok([p[0].to_dtype(DType::F32)?, p[1].to_dtype(DType::F32)?, p[2].to_dtype(DType::F32)?, p[3].to_dtype(DType::F32)?])
}

/// The ops in a row, in f64.
fn reference(parts: &[Tensor], pre: &[Tensor; 4], w: &Tensor, post: Option<(&[Tensor; 4], bool)>) -> Result<Tensor> {
    let x = Tensor::cat(parts, 1)?;
    let a = batch_norm_relu_eval(&x, &pre[0], &pre[1], &pre[2], &pre[3], 1e-5)?;
    let y = conv2d(&a, w, None, &Conv2dConfig::default())?;
    Ok(match post {
        None => y,
        Some((p, r)) => {
            let z = batch_norm_eval(&y, &p[0], &p[1], &p[2], &p[3], 1e-5)?;
            if r { relu(&z)? } else { z }
        }
    })
}

/// Whether the AVX-512 path (the one that reads the parts in place) runs on this CPU.
fn fast_path() -> bool {
    #[cfg(target_arch = "x86_64")]
    let cpu = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = false;
    cpu && std::env::var("SCONCE_NO_AVX512").is_err()
}

#[test]
fn reads_the_parts_in_place_and_matches_the_ops_in_a_row() -> Result<()> {
    // Two threads whatever the machine: large maps then take the images-in-parallel branch.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(parts_in_place_cases)
}

fn parts_in_place_cases() -> Result<()> {
    // (images, parts' channels, H, W, output channels): small maps share a product (7×7, 3×5),
    // large ones (70×70 > 4096 positions) run image by image; one image; channel counts that
    // are not multiples of the register tile's.
    let cases: [(usize, &[usize], usize, usize, usize); 6] = [
        (3, &[16, 8, 8], 7, 7, 24),
        // 1024 positions: products of 4 images, the last one short.
        (6, &[8, 8], 32, 32, 16),
        (5, &[5, 3], 3, 5, 7),
        (2, &[4, 6, 2], 70, 70, 16),
        (1, &[9], 11, 13, 10),
        (9, &[32, 32, 32], 14, 14, 128),
    ];
    for (i, &(n, chans, h, wd, o)) in cases.iter().enumerate() {
        let seed = 100 * i as u64;
        let parts: Vec<Tensor> = chans
            .iter()
            .enumerate()
            .map(|(j, &c)| random(&[n, c, h, wd], seed + j as u64, 0.2, 1.0))
            .collect::<Result<_>>()?;
        let c: usize = chans.iter().sum();
        let w = (random(&[o, c, 1, 1], seed + 10, 0.0, 1.0)? / (c as f64).sqrt())?;
        let (pre, post) = (bn_params(c, seed + 20)?, bn_params(o, seed + 30)?);
        for post_mode in [None, Some(false), Some(true)] {
            let want = reference(&parts, &pre, &w, post_mode.map(|r| (&post, r)))?;
            let parts32: Vec<Tensor> =
                parts.iter().map(|p| p.to_dtype(DType::F32)).collect::<candle_core::Result<_>>()?;
            let (pre32, post32) = (to_f32(&pre)?, to_f32(&post)?);
            // A parameter, as in a model: with gradients enabled the result has a history.
            let w32 = Var::from_tensor(&w.to_dtype(DType::F32)?)?;
            let post_view = view(&post32);
            let pm = post_mode.map(|r| (&post_view, r));
            let fast = no_grad(|| cat_batch_norm_relu_conv1x1_eval(&parts32, &view(&pre32), w32.as_tensor(), pm))?;
            let what = format!("case {i} post {post_mode:?}");
            assert_close(&format!("{what}, no_grad"), &fast, &want, 1e-4, 1e-4)?;
            // The in-place path ran (its result has no autograd history).
            anyhow::ensure!(!fast_path() || !fast.track_op(), "{what}: no_grad took the differentiable path");
            // With gradients enabled: the ops in a row, in f32 and in f64.
            let slow = cat_batch_norm_relu_conv1x1_eval(&parts32, &view(&pre32), w32.as_tensor(), pm)?;
            assert_close(&format!("{what}, grad"), &slow, &want, 1e-4, 1e-4)?;
            anyhow::ensure!(slow.track_op(), "{what}: with gradients enabled the result lost its history");
            let post64 = view(&post);
            let exact = cat_batch_norm_relu_conv1x1_eval(&parts, &view(&pre), &w, post_mode.map(|r| (&post64, r)))?;
            assert_close(&format!("{what}, f64"), &exact, &want, 1e-12, 1e-12)?;
        }
    }
    Ok(())
}

#[test]
fn with_gradients_enabled_it_stays_differentiable() -> Result<()> {
    let parts = [random(&[2, 3, 4, 4], 1, 0.0, 1.0)?, random(&[2, 2, 4, 4], 2, 0.0, 1.0)?];
    let pv: Vec<Var> = parts.iter().map(Var::from_tensor).collect::<candle_core::Result<_>>()?;
    let pt: Vec<Tensor> = pv.iter().map(|v| v.as_tensor().clone()).collect();
    let w = Var::from_tensor(&random(&[4, 5, 1, 1], 3, 0.0, 0.5)?)?;
    let pre = bn_params(5, 4)?;
    let y = cat_batch_norm_relu_conv1x1_eval(&pt, &view(&pre), w.as_tensor(), None)?;
    let grads = y.sqr()?.sum_all()?.backward()?;
    let want = reference(&pt, &pre, w.as_tensor(), None)?.sqr()?.sum_all()?.backward()?;
    for v in pv.iter().chain(std::iter::once(&w)) {
        let (Some(g), Some(r)) = (grads.get(v.as_tensor()), want.get(v.as_tensor())) else {
            anyhow::bail!("a gradient is missing");
        };
        assert_close("gradient", g, r, 1e-12, 1e-12)?;
    }
    Ok(())
}

#[test]
fn an_empty_batch_gives_an_empty_output() -> Result<()> {
    let dev = Device::Cpu;
    let parts = [Tensor::zeros((0, 3, 5, 5), DType::F32, &dev)?, Tensor::zeros((0, 2, 5, 5), DType::F32, &dev)?];
    let pre = to_f32(&bn_params(5, 1)?)?;
    let w = Tensor::zeros((4, 5, 1, 1), DType::F32, &dev)?;
    for grad in [false, true] {
        let y =
            sconce_core::set_grad_enabled(grad, || cat_batch_norm_relu_conv1x1_eval(&parts, &view(&pre), &w, None))?;
        assert_eq!(y.dims(), &[0, 4, 5, 5], "gradients {grad}");
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors_naming_the_input() -> Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev)?;
    let b = Tensor::zeros((2, 2, 5, 5), DType::F32, &dev)?;
    let pre = to_f32(&bn_params(5, 1)?)?;
    let w = Tensor::zeros((4, 5, 1, 1), DType::F32, &dev)?;
    let run = |parts: &[Tensor], w: &Tensor| no_grad(|| cat_batch_norm_relu_conv1x1_eval(parts, &view(&pre), w, None));
    let shape_err = |r: sconce_core::Result<Tensor>, needle: &str| -> Result<()> {
        match r {
            Err(e @ (Error::Shape { .. } | Error::Config { .. })) => {
                anyhow::ensure!(e.to_string().contains(needle), "{e} does not name {needle}");
                Ok(())
            }
            other => anyhow::bail!("expected an error naming {needle}, got {other:?}"),
        }
    };
    assert!(run(&[a.clone(), b.clone()], &w).is_ok());
    shape_err(run(&[], &w), "parts")?;
    shape_err(run(&[a.clone(), Tensor::zeros((2, 2, 5, 4), DType::F32, &dev)?], &w), "parts[1]")?;
    shape_err(run(&[a.clone(), Tensor::zeros((3, 2, 5, 5), DType::F32, &dev)?], &w), "parts[1]")?;
    shape_err(run(&[a.clone(), Tensor::zeros((2, 2, 5, 5), DType::F64, &dev)?], &w), "parts[1]")?;
    shape_err(run(&[a.clone(), Tensor::zeros((2, 5, 5), DType::F32, &dev)?], &w), "parts[1]")?;
    shape_err(run(&[a.clone(), b.clone()], &Tensor::zeros((4, 6, 1, 1), DType::F32, &dev)?), "weight")?;
    shape_err(run(&[a.clone(), b.clone()], &Tensor::zeros((4, 5, 3, 3), DType::F32, &dev)?), "weight")?;
    shape_err(run(&[a.clone(), b.clone()], &Tensor::zeros((4, 5, 1, 1), DType::F64, &dev)?), "weight")?;
    // Batch-norm parameters for another channel count.
    let short = to_f32(&bn_params(4, 1)?)?;
    let r = no_grad(|| cat_batch_norm_relu_conv1x1_eval(&[a.clone(), b.clone()], &view(&short), &w, None));
    anyhow::ensure!(r.is_err(), "4 batch-norm channels for 5 were accepted");
    Ok(())
}
