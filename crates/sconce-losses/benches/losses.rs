//! Criterion benches of the fused losses on segmentation shapes, paired with PyTorch on the same
//! shapes and 2 threads (`scripts/bench_losses.py`); prints `ours / PyTorch` at the end
//! (target ≤ 1.0: these are memory-bound, so fused kernels must win).
//!
//! Run: `cargo bench -p sconce-losses --bench losses`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, criterion_group};
use sconce_core::{Loss, SeededRng};
use sconce_losses::{BinaryCrossEntropy, CrossEntropy};

fn bench(c: &mut Criterion) {
    let mut rng = SeededRng::new(0);
    let dev = Device::Cpu;
    // BCE from logits: 8 binary 250×250 masks.
    let n = 8 * 250 * 250;
    let logits =
        Tensor::from_vec((0..n).map(|_| rng.normal() as f32 * 3.0).collect::<Vec<_>>(), (8, 1, 250, 250), &dev)
            .unwrap_or_else(|e| panic!("{e}"));
    let mask = Tensor::from_vec((0..n).map(|_| rng.below(2) as f32).collect::<Vec<_>>(), (8, 1, 250, 250), &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    let x = Var::from_tensor(&logits).unwrap_or_else(|e| panic!("{e}"));
    let bce = BinaryCrossEntropy::new();
    let mut group = c.benchmark_group("bce_logits/b8_c1_h250");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("fwd_bwd", |b| {
        b.iter(|| {
            let l = bce.loss(x.as_tensor(), &mask).unwrap_or_else(|e| panic!("{e}"));
            black_box(l.backward().map(|g| g.get(x.as_tensor()).is_some()))
        })
    });
    group.finish();
    // Sparse CE: 21 classes (Pascal VOC) on 8 × 250×250 label maps.
    let m = 8 * 21 * 250 * 250;
    let logits =
        Tensor::from_vec((0..m).map(|_| rng.normal() as f32 * 3.0).collect::<Vec<_>>(), (8, 21, 250, 250), &dev)
            .unwrap_or_else(|e| panic!("{e}"));
    let labels = Tensor::from_vec((0..n).map(|_| rng.below(21) as u32).collect::<Vec<_>>(), (8, 250, 250), &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    let x = Var::from_tensor(&logits).unwrap_or_else(|e| panic!("{e}"));
    let ce = CrossEntropy::new();
    let mut group = c.benchmark_group("sparse_ce/b8_c21_h250");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.bench_function("fwd_bwd", |b| {
        b.iter(|| {
            let l = ce.loss(x.as_tensor(), &labels).unwrap_or_else(|e| panic!("{e}"));
            black_box(l.backward().map(|g| g.get(x.as_tensor()).is_some()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    // Keep freed tensors' memory between iterations, as the examples do (docs/benchmarks.md).
    // (Inline in each bench: sconce-testutil depends on no sconce crate.)
    if let sconce_core::AllocatorTuning::Failed(e) = sconce_core::tune_allocator() {
        eprintln!("allocator settings not applied: {e}");
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    sconce_testutil::print_ratios(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/reference_torch.json"));
}
