//! Criterion bench of updating IoU/Dice with a batch of segmentation outputs, paired with
//! torchmetrics on the same shapes and 2 threads (`scripts/bench_metrics.py`); prints
//! `ours / torchmetrics` at the end (target ≤ 1.0).
//!
//! Run: `cargo bench -p sconce-metrics --bench segmentation`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group};
use sconce_core::SeededRng;
use sconce_metrics::{MetricSet, Task};

fn bench(c: &mut Criterion) {
    let mut rng = SeededRng::new(0);
    let dev = Device::Cpu;
    let n = 8 * 250 * 250;
    let binary_logits =
        Tensor::from_vec((0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>(), (8, 1, 250, 250), &dev)
            .unwrap_or_else(|e| panic!("{e}"));
    let masks = Tensor::from_vec((0..n).map(|_| rng.below(2) as u32).collect::<Vec<_>>(), (8, 250, 250), &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("iou_dice/b8_c1_h250");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("update", |b| {
        b.iter(|| {
            let mut m = MetricSet::new(Task::Segmentation { classes: 2 }).unwrap_or_else(|e| panic!("{e}"));
            m.update(&binary_logits, &masks).unwrap_or_else(|e| panic!("{e}"));
            black_box(m.values())
        })
    });
    group.finish();
    let scores =
        Tensor::from_vec((0..n * 21).map(|_| rng.normal() as f32).collect::<Vec<_>>(), (8, 21, 250, 250), &dev)
            .unwrap_or_else(|e| panic!("{e}"));
    let labels = Tensor::from_vec((0..n).map(|_| rng.below(21) as u32).collect::<Vec<_>>(), (8, 250, 250), &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("iou_dice/b8_c21_h250");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.bench_function("update", |b| {
        b.iter(|| {
            let mut m = MetricSet::new(Task::Segmentation { classes: 21 }).unwrap_or_else(|e| panic!("{e}"));
            m.update(&scores, &labels).unwrap_or_else(|e| panic!("{e}"));
            black_box(m.values())
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
