//! conv2d: PyTorch fixtures (values and all three gradients), f64 finite differences, the
//! C == H == W regression against a naive loop, and bad input as errors.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use sconce_core::{Error, SeededRng};
use sconce_tensor::gradcheck::check_gradient;
use sconce_tensor::{Conv2dConfig, ConvTranspose2dConfig, conv_transpose2d, conv2d};
use sconce_testutil::{check_case_multi, load, pair};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.normal()).collect::<Vec<f64>>(), shape, &Device::Cpu)?)
}

#[test]
fn conv2d_matches_pytorch() -> Result<()> {
    let fx = load(FIXTURES, "conv")?;
    assert!(fx.cases.len() >= 12);
    for case in fx.cases.iter().filter(|c| c["op"] == "conv2d") {
        let cfg = Conv2dConfig {
            stride: pair(&case["stride"])?,
            padding: pair(&case["padding"])?,
            dilation: pair(&case["dilation"])?,
            groups: case["groups"].as_u64().context("groups")? as usize,
        };
        check_case_multi(&fx, case, |t| Ok(conv2d(&t[0], &t[1], t.get(2), &cfg)?))?;
    }
    Ok(())
}

/// Direct 7-loop convolution, the obviously-correct reference.
fn naive_conv(x: &Tensor, w: &Tensor, s: usize, p: usize) -> Result<Vec<f64>> {
    let [n, c, h, wd] = <[usize; 4]>::try_from(x.dims()).map_err(|_| anyhow::anyhow!("rank"))?;
    let [o, _, kh, kw] = <[usize; 4]>::try_from(w.dims()).map_err(|_| anyhow::anyhow!("rank"))?;
    let xv = x.flatten_all()?.to_vec1::<f64>()?;
    let wv = w.flatten_all()?.to_vec1::<f64>()?;
    let (oh, ow) = ((h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1);
    let mut out = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            for y in 0..oh {
                for z in 0..ow {
                    let mut acc = 0.0;
                    for ic in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let (iy, iz) = ((y * s + i) as isize - p as isize, (z * s + j) as isize - p as isize);
                                if iy >= 0 && iz >= 0 && (iy as usize) < h && (iz as usize) < wd {
                                    acc += xv[((b * c + ic) * h + iy as usize) * wd + iz as usize]
                                        * wv[((oc * c + ic) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                    out[((b * o + oc) * oh + y) * ow + z] = acc;
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn c_equal_h_equal_w_matches_a_naive_loop() -> Result<()> {
    // candle 0.9.x skipped the NCHW→NHWC repack when C == H == W and returned garbage.
    for (shape, s) in [([1, 4, 4, 4], 1), ([2, 8, 8, 8], 1), ([1, 6, 6, 6], 2)] {
        let x = random(&shape, 1)?;
        let w = random(&[5, shape[1], 3, 3], 2)?;
        let got = conv2d(&x, &w, None, &Conv2dConfig::default().padding(1).stride(s))?;
        let want = naive_conv(&x, &w, s, 1)?;
        let got = got.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(got.len(), want.len());
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-12, "{shape:?} stride {s}: {err}");
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let cases: [([usize; 4], [usize; 4], Conv2dConfig); 7] = [
        ([2, 3, 7, 8], [4, 3, 3, 3], Conv2dConfig::default().stride(2).padding(1)),
        ([1, 2, 9, 6], [3, 2, 5, 5], Conv2dConfig::default().stride(2).padding(2)),
        ([2, 4, 5, 5], [2, 4, 1, 1], Conv2dConfig::default()),
        ([1, 4, 7, 9], [3, 4, 1, 1], Conv2dConfig::default().stride(2)),
        ([1, 4, 8, 7], [4, 2, 3, 3], Conv2dConfig::default().padding(1).groups(2)),
        ([1, 2, 9, 9], [2, 2, 3, 3], Conv2dConfig::default().padding(2).dilation(2)),
        ([3, 1, 6, 5], [2, 1, 2, 3], Conv2dConfig { stride: (1, 2), padding: (1, 0), ..Default::default() }),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let x = random(xs, 10 + i as u64)?;
        let w = random(ws, 20 + i as u64)?;
        let b = random(&[ws[0]], 30 + i as u64)?;
        let r = check_gradient(|t| conv2d(t, &w, Some(&b), cfg), &x, 1e-6, 1)?;
        assert!(r.max_abs_err < 1e-6, "case {i} input grad: {r:?}");
        let r = check_gradient(|t| conv2d(&x, t, Some(&b), cfg), &w, 1e-6, 2)?;
        assert!(r.max_abs_err < 1e-6, "case {i} weight grad: {r:?}");
        let r = check_gradient(|t| conv2d(&x, &w, Some(t), cfg), &b, 1e-6, 3)?;
        assert!(r.max_abs_err < 1e-6, "case {i} bias grad: {r:?}");
    }
    Ok(())
}

#[test]
fn batch_of_one_and_batch_of_many_agree() -> Result<()> {
    // One image runs gemm on every thread, many run images in parallel: same numbers.
    let x = random(&[3, 4, 10, 9], 5)?;
    let w = Var::from_tensor(&random(&[6, 4, 3, 3], 6)?)?;
    let cfg = Conv2dConfig::default().padding(1).stride(2);
    let all = conv2d(&x, w.as_tensor(), None, &cfg)?;
    let g_all = all.sum_all()?.backward()?;
    let mut g_sum = Tensor::zeros((6, 4, 3, 3), DType::F64, &Device::Cpu)?;
    for i in 0..3 {
        let one = conv2d(&x.narrow(0, i, 1)?, w.as_tensor(), None, &cfg)?;
        let diff = (&one - all.narrow(0, i, 1)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "image {i}: {diff}");
        let g = one.sum_all()?.backward()?;
        g_sum = (g_sum + g.get(w.as_tensor()).context("grad")?)?;
    }
    let g_all = g_all.get(w.as_tensor()).context("grad")?;
    let diff = (g_all - g_sum)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(diff < 1e-10, "{diff}");
    Ok(())
}

#[test]
fn input_gradients_of_a_batch_equal_each_image_alone() -> Result<()> {
    // Strided convs on small output maps take the input gradient of the whole batch as one
    // product, in chunks of images (16×16 outputs: 8 images per chunk, so 10 make two chunks);
    // a single image takes the per-image path.
    let cases = [
        ([10, 3, 32, 32], [5, 3, 3, 3], Conv2dConfig::default().padding(1).stride(2)),
        ([10, 4, 31, 32], [6, 4, 1, 1], Conv2dConfig::default().stride(2)),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&random(xs, 40 + i as u64)?.to_dtype(dtype)?)?;
            let w = random(ws, 50 + i as u64)?.to_dtype(dtype)?;
            let y = conv2d(x.as_tensor(), &w, None, cfg)?;
            let gy = random(y.dims(), 60 + i as u64)?.to_dtype(dtype)?;
            let dx = (&y * &gy)?.sum_all()?.backward()?.get(x.as_tensor()).context("dx")?.clone();
            for n in 0..xs[0] {
                let xi = Var::from_tensor(&x.as_tensor().narrow(0, n, 1)?)?;
                let yi = conv2d(xi.as_tensor(), &w, None, cfg)?;
                let g = (&yi * gy.narrow(0, n, 1)?)?.sum_all()?.backward()?;
                let want = g.get(xi.as_tensor()).context("dx")?.to_dtype(DType::F64)?;
                let got = dx.narrow(0, n, 1)?.to_dtype(DType::F64)?;
                let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
                let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
                assert!(diff < tol, "case {i} {dtype:?} image {n}: {diff}");
            }
        }
    }
    Ok(())
}

#[test]
fn batches_of_small_maps_match_f64() -> Result<()> {
    // In f32, small maps run over the whole batch at once: forwards (and stride-1 input
    // gradients) with ≤ 64 output pixels as one product over every image's output positions,
    // weight gradients with grids of ≤ 256 positions and C·kh·kw ≥ 192 as one product whose
    // depth runs over the images. f64 takes the per-image im2col path: the reference. Padded
    // 3×3 (image boundaries inside and across depth blocks), strided 3×3, an unpadded 1×1 read
    // in place, 70 images (two chunks of images for both), and a single image. Then 1×1 layers
    // over maps that end in a sliver of columns (10×10: 100 = 2·48 + 4), whose forwards and
    // input gradients run whole panels per image and the slivers per task: 3 images (tasks of
    // 2 and 1) and 7 images over a 14×14 map (196 = 4·48 + 4; 256 input channels, so that
    // the weight gradient is batched too). Last, 1×1 layers whose weights the forward reads in
    // place (more than 128 rows of at least 512 values).
    let cases: [([usize; 4], [usize; 4], Conv2dConfig); 12] = [
        ([5, 32, 7, 7], [24, 32, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 24, 13, 13], [16, 24, 3, 3], Conv2dConfig::default().padding(1)),
        ([4, 32, 14, 13], [8, 32, 3, 3], Conv2dConfig::default().padding(1).stride(2)),
        ([6, 256, 7, 7], [16, 256, 1, 1], Conv2dConfig::default()),
        ([70, 24, 8, 8], [8, 24, 3, 3], Conv2dConfig::default().padding(1)),
        ([1, 32, 7, 7], [24, 32, 3, 3], Conv2dConfig::default().padding(1)),
        // Dilated (batched too), and grouped (per image, whatever the map size).
        ([6, 24, 7, 7], [16, 24, 3, 3], Conv2dConfig::default().padding(2).dilation(2)),
        ([6, 48, 7, 7], [16, 24, 3, 3], Conv2dConfig::default().padding(1).groups(2)),
        ([3, 8, 10, 10], [16, 8, 1, 1], Conv2dConfig::default()),
        ([7, 256, 14, 14], [24, 256, 1, 1], Conv2dConfig::default()),
        // Weights read in place by the forward (136 rows of 512 values): over the batch at 7×7,
        // and per image with slivers at 10×10.
        ([3, 512, 7, 7], [136, 512, 1, 1], Conv2dConfig::default()),
        ([3, 512, 10, 10], [136, 512, 1, 1], Conv2dConfig::default()),
    ];
    // The batched paths split their products over the pool and need more than one thread
    // (forwards also N·P ≥ 2·48·threads): run on a pool of two whatever the machine has.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(|| check_small_map_batches(&cases))
}

fn check_small_map_batches(cases: &[([usize; 4], [usize; 4], Conv2dConfig)]) -> Result<()> {
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let x64 = random(xs, 70 + i as u64)?;
        let w64 = random(ws, 80 + i as u64)?;
        let gy = random(conv2d(&x64, &w64, None, cfg)?.dims(), 90 + i as u64)?;
        let run = |dtype: DType| -> Result<[Tensor; 3]> {
            let x = Var::from_tensor(&x64.to_dtype(dtype)?)?;
            let w = Var::from_tensor(&w64.to_dtype(dtype)?)?;
            let y = conv2d(x.as_tensor(), w.as_tensor(), None, cfg)?;
            let g = (&y * gy.to_dtype(dtype)?)?.sum_all()?.backward()?;
            let dx = g.get(x.as_tensor()).context("dx")?;
            let dw = g.get(w.as_tensor()).context("dw")?;
            Ok([y.to_dtype(DType::F64)?, dx.to_dtype(DType::F64)?, dw.to_dtype(DType::F64)?])
        };
        let (want, got) = (run(DType::F64)?, run(DType::F32)?);
        for (name, (want, got)) in ["y", "dx", "dw"].iter().zip(want.iter().zip(&got)) {
            let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff <= 1e-5 * scale, "case {i} {name}: |f32 - f64| = {diff} (scale {scale})");
        }
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev)?;
    let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev)?;
    let cfg = Conv2dConfig::default();
    let err = |r: sconce_core::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(conv2d(&x.flatten_from(2)?, &w, None, &cfg), Err(Error::Shape { .. })));
    assert!(matches!(
        conv2d(&x, &Tensor::zeros((2, 3, 3, 3), DType::F32, &dev)?, None, &cfg),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(conv2d(&x, &w, None, &cfg.stride(0)), Err(Error::Config { .. })));
    assert!(err(conv2d(&x, &w, None, &cfg.groups(3))).contains("groups"));
    let big = Tensor::zeros((2, 4, 11, 11), DType::F32, &dev)?;
    assert!(err(conv2d(&x, &big, None, &cfg)).contains("larger than the padded input"));
    assert!(matches!(conv2d(&x, &w.to_dtype(DType::F64)?, None, &cfg), Err(Error::Config { .. })));
    let bias = Tensor::zeros(3, DType::F32, &dev)?;
    assert!(matches!(conv2d(&x, &w, Some(&bias), &cfg), Err(Error::Shape { .. })));
    let xi = Tensor::zeros((1, 4, 8, 8), DType::U8, &dev)?;
    assert!(matches!(conv2d(&xi, &w, None, &cfg), Err(Error::Config { .. })));
    Ok(())
}

#[test]
fn conv_transpose2d_matches_pytorch_and_finite_differences() -> Result<()> {
    let fx = load(FIXTURES, "conv")?;
    let mut seen = 0;
    for case in fx.cases.iter().filter(|c| c["op"] == "conv_transpose2d") {
        let cfg = ConvTranspose2dConfig {
            stride: pair(&case["stride"])?,
            padding: pair(&case["padding"])?,
            output_padding: pair(&case["output_padding"])?,
            dilation: pair(&case["dilation"])?,
            groups: case["groups"].as_u64().context("groups")? as usize,
        };
        check_case_multi(&fx, case, |t| Ok(conv_transpose2d(&t[0], &t[1], t.get(2), &cfg)?))?;
        seen += 1;
    }
    assert!(seen >= 4);
    let x = random(&[2, 3, 4, 5], 40)?;
    let w = random(&[3, 2, 3, 3], 41)?;
    let b = random(&[2], 42)?;
    let cfg = ConvTranspose2dConfig::default().stride(2).padding(1).output_padding(1);
    let r = check_gradient(|t| conv_transpose2d(t, &w, Some(&b), &cfg), &x, 1e-6, 1)?;
    assert!(r.max_abs_err < 1e-6, "input grad: {r:?}");
    let r = check_gradient(|t| conv_transpose2d(&x, t, Some(&b), &cfg), &w, 1e-6, 2)?;
    assert!(r.max_abs_err < 1e-6, "weight grad: {r:?}");
    // The bias is part of the op (no graph node of its own): its gradient too.
    let r = check_gradient(|t| conv_transpose2d(&x, &w, Some(t), &cfg), &b, 1e-6, 3)?;
    assert!(r.max_abs_err < 1e-6, "bias grad: {r:?}");
    let wrong_b = random(&[3], 44)?;
    assert!(matches!(conv_transpose2d(&x, &w, Some(&wrong_b), &cfg), Err(Error::Shape { .. })));
    let f32_b = b.to_dtype(DType::F32)?;
    assert!(matches!(conv_transpose2d(&x, &w, Some(&f32_b), &cfg), Err(Error::Config { .. })));
    let bad = ConvTranspose2dConfig::default().stride(2).output_padding(2);
    assert!(matches!(conv_transpose2d(&x, &w, None, &bad), Err(Error::Config { .. })));
    let wrong_w = random(&[4, 2, 3, 3], 43)?;
    assert!(matches!(conv_transpose2d(&x, &wrong_w, None, &cfg), Err(Error::Shape { .. })));
    Ok(())
}

#[test]
fn zero_sized_inputs_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = Conv2dConfig::default();
    let x0 = Tensor::zeros((1, 0, 4, 4), DType::F32, &dev)?;
    assert!(conv2d(&x0, &Tensor::zeros((2, 0, 3, 3), DType::F32, &dev)?, None, &cfg).is_err());
    let xh = Tensor::zeros((1, 1, 0, 3), DType::F32, &dev)?;
    assert!(conv2d(&xh, &Tensor::zeros((1, 1, 1, 1), DType::F32, &dev)?, None, &cfg.padding(1)).is_err());
    let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &dev)?;
    let w = Tensor::zeros((2, 0, 2, 2), DType::F32, &dev)?;
    assert!(conv_transpose2d(&x, &w, None, &ConvTranspose2dConfig::default()).is_err());
    let y = Tensor::zeros((1, 1, 0, 4), DType::F32, &dev)?;
    assert!(sconce_tensor::avg_pool2d(&y, &sconce_tensor::AvgPool2d::new(2).padding(1)).is_err());
    assert!(sconce_tensor::global_avg_pool2d(&Tensor::zeros((2, 3, 0, 0), DType::F32, &dev)?).is_err());
    Ok(())
}

/// `(y, dx, dw)` of `sum(conv2d(x, w) · gy)` in the dtype of `x`.
fn conv_and_grads(x: &Tensor, w: &Tensor, gy_seed: u64, cfg: &Conv2dConfig) -> Result<[Vec<f64>; 3]> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, cfg)?;
    let gy = random(y.dims(), gy_seed)?.to_dtype(x.dtype())?;
    let grads = (&y * &gy)?.sum_all()?.backward()?;
    let flat = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?) };
    Ok([flat(&y)?, flat(grads.get(xv.as_tensor()).context("dx")?)?, flat(grads.get(wv.as_tensor()).context("dw")?)?])
}

#[test]
fn f32_kernels_agree_with_the_f64_path() -> Result<()> {
    // Some paths depend on the pool's size (whole images per task needs as many images as
    // threads): two threads, as the comments below assume.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    pool.install(f32_cases)
}

fn f32_cases() -> Result<()> {
    // f32 convolutions take the AVX-512 path without im2col (padded phase planes read at
    // shifted offsets, grid columns dropped); f64 always takes im2col. Same numbers expected
    // for every padding, dilation, group count, kernel shape, batch size and non-square input.
    let cases: &[([usize; 4], [usize; 4], Conv2dConfig)] = &[
        ([2, 8, 9, 13], [16, 8, 3, 3], Conv2dConfig::default().padding(1)),
        ([3, 5, 11, 7], [9, 5, 3, 3], Conv2dConfig::default()),
        (
            [2, 6, 12, 10],
            [8, 3, 3, 3],
            Conv2dConfig { padding: (2, 1), dilation: (2, 1), groups: 2, ..Default::default() },
        ),
        ([1, 16, 8, 8], [24, 16, 1, 1], Conv2dConfig::default()),
        ([2, 4, 10, 9], [7, 4, 1, 3], Conv2dConfig { padding: (0, 1), ..Default::default() }),
        ([2, 3, 17, 15], [8, 3, 7, 7], Conv2dConfig::default().padding(3)),
        ([2, 3, 17, 15], [8, 3, 7, 7], Conv2dConfig::default().padding(3).stride(2)),
        ([3, 8, 9, 11], [12, 8, 3, 3], Conv2dConfig::default().padding(1).stride(2)),
        ([2, 64, 6, 6], [50, 64, 3, 3], Conv2dConfig::default().padding(1)),
        ([2, 16, 14, 13], [32, 16, 1, 1], Conv2dConfig::default().stride(2)),
        ([2, 5, 13, 12], [6, 5, 3, 3], Conv2dConfig::default().stride(2)),
        ([2, 4, 11, 10], [6, 4, 3, 2], Conv2dConfig { stride: (2, 1), padding: (1, 0), ..Default::default() }),
        ([1, 3, 16, 17], [4, 3, 5, 5], Conv2dConfig { stride: (3, 3), padding: (2, 1), ..Default::default() }),
        ([2, 6, 9, 9], [4, 3, 3, 3], Conv2dConfig { stride: (2, 2), padding: (1, 1), groups: 2, ..Default::default() }),
        // Many output channels over a wide grid (several column blocks of the product, the
        // last one partial) ...
        ([1, 4, 41, 40], [256, 4, 3, 3], Conv2dConfig::default().padding(1)),
        // ... and the same for the input gradient (its adjoint convolution has 256 outputs).
        ([1, 256, 36, 35], [4, 256, 3, 3], Conv2dConfig::default().padding(1)),
        // Few output channels over grids of ≥ 512 positions: the weight gradient as dot
        // products along the image (several images per task; groups).
        ([3, 6, 24, 23], [10, 6, 3, 3], Conv2dConfig::default().padding(1)),
        ([2, 8, 24, 24], [8, 4, 3, 3], Conv2dConfig { padding: (1, 1), groups: 2, ..Default::default() }),
        // Weight gradients with ≥ 4 column panels (C·kh·kw ≥ 192) over grids of > 256
        // positions: whole images per task into partial dW (an even batch; a 1×1) ...
        ([4, 24, 18, 17], [72, 24, 3, 3], Conv2dConfig::default().padding(1)),
        ([2, 200, 17, 16], [70, 200, 1, 1], Conv2dConfig::default()),
        // ... and each image's columns split over the pool (an odd batch).
        ([3, 24, 18, 17], [72, 24, 3, 3], Conv2dConfig::default().padding(1)),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let (x, w) = (random(xs, 100 + i as u64)?, random(ws, 200 + i as u64)?);
        let want = conv_and_grads(&x, &w, 300 + i as u64, cfg)?;
        let got = conv_and_grads(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?, 300 + i as u64, cfg)?;
        for (what, (g, e)) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&want)) {
            assert_eq!(g.len(), e.len());
            let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = g.iter().zip(e).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 2e-5 * scale, "case {i} {what}: max error {err} (scale {scale})");
        }
    }
    Ok(())
}

#[test]
fn f32_transposed_convolution_agrees_with_the_f64_path() -> Result<()> {
    // Its forward pass is a convolution's input gradient, its input gradient a forward pass:
    // both directions of the f32 AVX-512 path against f64's im2col.
    let cases: &[([usize; 4], [usize; 4], ConvTranspose2dConfig)] = &[
        ([2, 6, 7, 9], [6, 4, 3, 3], ConvTranspose2dConfig::default().padding(1)),
        ([2, 6, 7, 9], [6, 4, 3, 3], ConvTranspose2dConfig::default().stride(2).padding(1).output_padding(1)),
        ([1, 8, 5, 5], [8, 3, 1, 1], ConvTranspose2dConfig::default()),
    ];
    for (i, (xs, ws, cfg)) in cases.iter().enumerate() {
        let run = |dtype: DType| -> Result<[Vec<f64>; 4]> {
            let x = Var::from_tensor(&random(xs, 500 + i as u64)?.to_dtype(dtype)?)?;
            let w = Var::from_tensor(&random(ws, 600 + i as u64)?.to_dtype(dtype)?)?;
            // With a bias (one op with it) in every case but the last.
            let b = Var::from_tensor(&random(&[ws[1]], 800 + i as u64)?.to_dtype(dtype)?)?;
            let bias = (i + 1 < cases.len()).then(|| b.as_tensor());
            let y = conv_transpose2d(x.as_tensor(), w.as_tensor(), bias, cfg)?;
            let gy = random(y.dims(), 700 + i as u64)?.to_dtype(dtype)?;
            let grads = (&y * &gy)?.sum_all()?.backward()?;
            let flat = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?) };
            Ok([
                flat(&y)?,
                flat(grads.get(x.as_tensor()).context("dx")?)?,
                flat(grads.get(w.as_tensor()).context("dw")?)?,
                match bias {
                    Some(_) => flat(grads.get(b.as_tensor()).context("db")?)?,
                    None => Vec::new(),
                },
            ])
        };
        let (want, got) = (run(DType::F64)?, run(DType::F32)?);
        for (what, (g, e)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            let scale = e.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = g.iter().zip(e).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 2e-5 * scale, "case {i} {what}: max error {err} (scale {scale})");
        }
    }
    Ok(())
}

#[test]
fn an_empty_batch_gives_empty_outputs_and_zero_weight_gradients() -> Result<()> {
    // N = 0 is a valid (empty) batch: no panic in any path, f32 (AVX-512 kernels, including the
    // dot-product weight gradient for few output channels) or f64.
    for dtype in [DType::F32, DType::F64] {
        for (o, k) in [(8, 3), (96, 1)] {
            let x = Var::from_tensor(&Tensor::zeros((0, 4, 24, 24), dtype, &Device::Cpu)?)?;
            let w = Var::from_tensor(&random(&[o, 4, k, k], 5)?.to_dtype(dtype)?)?;
            let y = conv2d(x.as_tensor(), w.as_tensor(), None, &Conv2dConfig::default().padding(k / 2))?;
            assert_eq!(y.dims(), &[0, o, 24, 24]);
            let grads = y.sum_all()?.backward()?;
            let dw = grads.get(w.as_tensor()).context("dw")?;
            assert_eq!(dw.abs()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?, 0.0, "{dtype:?} o{o}");
        }
    }
    Ok(())
}
