//! Criterion benches of the CPU kernels on ResNet50/DenseNet121/U-Net shapes, each paired with
//! PyTorch timed on the same shapes and thread count by `scripts/bench_tensor.py`; prints
//! `ours / PyTorch` per benchmark at the end (target: conv ≤ 1.0, others ≤ 1.5).
//!
//! Run: `cargo bench -p sconce-tensor --bench kernels` (PyTorch side:
//! `.venv-ref/bin/python scripts/bench_tensor.py`, which writes `benches/reference_torch.json`).

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, criterion_group};
use sconce_core::SeededRng;
use sconce_tensor::{
    AvgPool2d, Conv2dConfig, Interpolation, MaxPool2d, avg_pool2d, batch_norm_train, conv2d, max_pool2d, resize,
};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap_or_else(|e| panic!("bench input: {e}"))
}

/// Runs the backward pass of `y` seeded with ones, candle's own `y.backward()` on a
/// non-scalar output, the same work as PyTorch's `y.backward(torch.ones_like(y))` that
/// `scripts/bench_tensor.py` times: one fill of the upstream gradient, handed to the op as is.
/// True if `x` got a gradient. (A random upstream gradient needs a seeding op, and candle then
/// adds it into a zero-filled buffer, a cost PyTorch's `y.backward(gy)` has no counterpart for:
/// it made the 1×1 rows ~5 ms slower.)
fn backward_ones(y: &Tensor, x: &Var) -> bool {
    y.backward().map(|g| g.get(x.as_tensor()).is_some()).unwrap_or(false)
}

/// `(name, x shape, w shape, stride, padding)`: ResNet50's 3×3 and 1×1 convolutions at batch 8
/// on 224×224 images, its 7×7 stem, and the classic U-Net's (width 16, the `segment` model's)
/// 3×3 convolutions at 250² and 125² with batch 4.
type ConvCase = (&'static str, [usize; 4], [usize; 4], usize, usize);

const CONVS: &[ConvCase] = &[
    ("3x3_c64_h56_b8", [8, 64, 56, 56], [64, 64, 3, 3], 1, 1),
    ("1x1_c64_h56_b8", [8, 64, 56, 56], [256, 64, 1, 1], 1, 0),
    ("1x1_c256_h56_b8", [8, 256, 56, 56], [64, 256, 1, 1], 1, 0),
    ("3x3_c128_h28_b8", [8, 128, 28, 28], [128, 128, 3, 3], 1, 1),
    ("3x3_c256_h14_b8", [8, 256, 14, 14], [256, 256, 3, 3], 1, 1),
    ("1x1_c1024_h14_b8", [8, 1024, 14, 14], [256, 1024, 1, 1], 1, 0),
    ("3x3_c512_h7_b8", [8, 512, 7, 7], [512, 512, 3, 3], 1, 1),
    ("1x1_c2048_h7_b8", [8, 2048, 7, 7], [512, 2048, 1, 1], 1, 0),
    ("7x7_c3_h224_b8", [8, 3, 224, 224], [64, 3, 7, 7], 2, 3),
    ("3x3_c16_h250_b4", [4, 16, 250, 250], [16, 16, 3, 3], 1, 1),
    ("3x3_c32_h125_b4", [4, 32, 125, 125], [32, 32, 3, 3], 1, 1),
];

fn bench_conv(c: &mut Criterion) {
    for &(name, xs, ws, s, p) in CONVS {
        let mut group = c.benchmark_group(format!("conv2d/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        let cfg = Conv2dConfig::default().stride(s).padding(p);
        let x = randn(&xs, 1);
        let w = randn(&ws, 2);
        group.bench_function("fwd", |b| b.iter(|| black_box(conv2d(&x, &w, None, &cfg).map(|y| y.dims().len()))));
        let xv = Var::from_tensor(&x).unwrap_or_else(|e| panic!("{e}"));
        let wv = Var::from_tensor(&w).unwrap_or_else(|e| panic!("{e}"));
        group.bench_function("fwd_bwd", |b| {
            b.iter(|| {
                let y = conv2d(xv.as_tensor(), wv.as_tensor(), None, &cfg).unwrap_or_else(|e| panic!("{e}"));
                black_box(backward_ones(&y, &wv))
            })
        });
        // What candle's backward pass adds around any op's gradients: for each of `x` and
        // `w` a zero-filled buffer (`GradStore::or_insert`) and a fresh tensor for
        // `zeros + grad`. Part of every `fwd_bwd` above; PyTorch hands a leaf's gradient over
        // without either.
        let (dx, dw) = (randn(&xs, 4), randn(&ws, 5));
        let store = |t: &Tensor, g: &Tensor| t.zeros_like().and_then(|z| z.add(g)).map(|s| s.dims().len());
        group.bench_function("candle_grad_store", |b| b.iter(|| black_box((store(&x, &dx), store(&w, &dw)))));
        group.finish();
    }
}

/// Forward + backward of `f` on `x` (upstream gradient: ones), in a group `name` (one
/// group per shape, like the conv groups, so criterion's directory is `<group>/fwd_bwd`).
fn bench_fwd_bwd(c: &mut Criterion, name: &str, x: &Var, f: impl Fn(&Tensor) -> sconce_core::Result<Tensor>) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("fwd_bwd", |b| {
        b.iter(|| {
            let y = f(x.as_tensor()).unwrap_or_else(|e| panic!("{e}"));
            black_box(backward_ones(&y, x))
        })
    });
    group.finish();
}

fn bench_pool_resize(c: &mut Criterion) {
    let var = |shape: &[usize], seed| Var::from_tensor(&randn(shape, seed)).unwrap_or_else(|e| panic!("{e}"));
    // ResNet/DenseNet stem max pool on 224×224 images; DenseNet transition average pool.
    let stem = var(&[8, 64, 112, 112], 4);
    bench_fwd_bwd(c, "pool/max_3x3_s2_c64_h112_b8", &stem, |t| max_pool2d(t, &MaxPool2d::new(3).stride(2).padding(1)));
    let trans = var(&[8, 128, 56, 56], 5);
    bench_fwd_bwd(c, "pool/avg_2x2_c128_h56_b8", &trans, |t| avg_pool2d(t, &AvgPool2d::new(2)));
    // U-Net decoder: 125 → 250 on 8×32 channels.
    let up = var(&[8, 32, 125, 125], 6);
    bench_fwd_bwd(c, "resize/bilinear_c32_h125_to_250_b8", &up, |t| {
        resize(t, (250, 250), Interpolation::Bilinear { align_corners: false })
    });
    bench_fwd_bwd(c, "resize/nearest_c32_h125_to_250_b8", &up, |t| resize(t, (250, 250), Interpolation::Nearest));
    // Batch norm in training mode after a ResNet layer1 conv.
    let bn_x = var(&[8, 64, 56, 56], 8);
    let gamma = randn(&[64], 9);
    let beta = randn(&[64], 10);
    bench_fwd_bwd(c, "batch_norm/train_c64_h56_b8", &bn_x, |t| Ok(batch_norm_train(t, &gamma, &beta, 1e-5)?.0));
}

criterion_group!(benches, bench_conv, bench_pool_resize);

fn main() {
    // Keep freed tensors' memory between iterations, as the examples do (docs/benchmarks.md).
    // (Inline in each bench: sconce-testutil depends on no sconce crate.)
    if let sconce_core::AllocatorTuning::Failed(e) = sconce_core::tune_allocator() {
        eprintln!("allocator settings not applied: {e}");
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    sconce_testutil::print_ratios(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/reference_torch.json"),
    );
}
