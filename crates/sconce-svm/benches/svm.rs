//! Criterion bench of C-SVC training and prediction (RBF, C=1, γ='scale', 200 MB cache) on a
//! `make_classification`-like problem generated here (n=4000, 50 features, 2 informative
//! directions plus noise), in the exact (LIBSVM-identical) and single-precision modes. The
//! comparison with scikit-learn and OpenCV on scikit-learn's own `make_classification` is
//! `scripts/bench_svm.py` (it runs the `svm-train`/`svm-predict` examples).
//!
//! Run: `cargo bench -p sconce-svm --bench svm`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sconce_core::SeededRng;
use sconce_svm::{Features, SvmParams};

fn problem(n: usize, d: usize) -> (Features, Vec<f64>) {
    let mut rng = SeededRng::new(0);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let label = if rng.below(2) == 0 { -1.0 } else { 1.0 };
        for k in 0..d {
            let shift = if k < 2 { label * 1.0 } else { 0.0 };
            x.push(rng.normal() + shift);
        }
        y.push(if rng.below(20) == 0 { -label } else { label });
    }
    (Features::dense(n, d, x).unwrap_or_else(|e| panic!("{e}")), y)
}

fn bench(c: &mut Criterion) {
    let (x, y) = problem(4000, 50);
    let mut group = c.benchmark_group("c_svc_rbf/n4000_d50");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    let exact = SvmParams::c_svc().cache_mb(200.0);
    let single = exact.clone().single_precision(true);
    group.bench_function("fit_exact", |b| b.iter(|| black_box(exact.train(&x, &y).unwrap_or_else(|e| panic!("{e}")))));
    group.bench_function("fit_single_precision", |b| {
        b.iter(|| black_box(single.train(&x, &y).unwrap_or_else(|e| panic!("{e}"))))
    });
    let model = exact.train(&x, &y).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("decision_values", |b| {
        b.iter(|| black_box(model.decision_values(&x).unwrap_or_else(|e| panic!("{e}"))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
