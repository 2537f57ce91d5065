//! Running a whole step of work on the kernels' thread pool, so that its many parallel kernels
//! do not each wake the pool and put the calling thread to sleep.

/// Runs `f` on a worker of the current rayon pool — the global pool, which every kernel of this
/// crate splits its work over, unless called inside another pool's `install` (then that pool,
/// which the kernels use too) — and returns its result; inline when already on a worker.
///
/// A training step calls hundreds of parallel kernels, interleaved with candle's own ops. From
/// a thread outside the pool (a program's main thread), each kernel is injected into the pool:
/// the caller sleeps until a worker has run it and then has to be woken again — about 6000
/// context switches per ResNet50 training step on 2 cores, with one core idle ~18 % of the
/// time. On a worker, a kernel's pieces go onto that worker's own queue and the other workers
/// steal them: a quarter of the context switches, ~1.8 cores busy, a ResNet50 training step
/// ~10 % faster. `sconce_train::Trainer` runs each step through this and the backbones'
/// `forward_t` runs on it; do the same around a hand-written loop (forward, loss, backward,
/// optimizer step), whose backward pass would otherwise run from the calling thread.
///
/// The caller's gradient mode (`sconce_core::no_grad`) goes along to the worker; rayon jobs
/// spawned otherwise do not inherit it.
///
/// A panic in `f` propagates to the caller. Two things change with the thread: `f` runs on a
/// worker's stack (rayon's default size; set `RUST_MIN_STACK` or build the global pool with a
/// larger `stack_size` for extremely deep autograd graphs), and a worker waiting inside one
/// such step may pick up another thread's whole step and finish it first — give concurrent
/// trainers or inference threads pools of their own (`ThreadPool::install`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::arange(0f32, 6.0, &Device::Cpu)?;
/// let sum = sconce_tensor::on_pool(|| x.sqr()?.sum_all()?.to_scalar::<f32>())?;
/// assert_eq!(sum, 55.0);
/// # Ok(()) }
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // `scope` runs its body on a worker (injected and waited for once from outside the pool,
    // inline on a worker) and returns the body's value.
    // The caller's gradient mode (`sconce_core::no_grad`) goes along to the worker.
    let grad = sconce_core::grad_enabled();
    rayon::scope(|_| sconce_core::set_grad_enabled(grad, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_worker_and_returns_the_value() {
        assert_eq!(rayon::current_thread_index(), None);
        let (idx, v) = on_pool(|| (rayon::current_thread_index(), 41 + 1));
        assert!(idx.is_some(), "the closure ran outside the pool");
        assert_eq!(v, 42);
        // Nested: inline on the same worker.
        let (outer, inner) = on_pool(|| (rayon::current_thread_index(), on_pool(rayon::current_thread_index)));
        assert_eq!(outer, inner);
    }

    #[test]
    fn inside_another_pool_it_stays_on_that_pool() -> Result<(), rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build()?;
        let (threads, on_worker) =
            pool.install(|| on_pool(|| (rayon::current_num_threads(), rayon::current_thread_index().is_some())));
        assert_eq!(threads, 3);
        assert!(on_worker);
        Ok(())
    }

    #[test]
    fn the_gradient_mode_goes_along() {
        // From outside the pool (injected) and from a worker (inline).
        assert!(!sconce_core::no_grad(|| on_pool(sconce_core::grad_enabled)));
        assert!(on_pool(sconce_core::grad_enabled));
        assert!(!on_pool(|| sconce_core::no_grad(|| on_pool(sconce_core::grad_enabled))));
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| on_pool(|| panic!("inside")));
        assert!(r.is_err());
    }
}
