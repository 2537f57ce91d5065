//! Gradient mode (PyTorch's `torch.no_grad` / `torch.set_grad_enabled`): whether the forward
//! pass must stay differentiable, per thread.

use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether gradients are enabled on this thread (the default; see [`no_grad`]).
pub fn grad_enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Runs `f` with gradients enabled or not on this thread, then restores the previous mode
/// (also when `f` panics).
///
/// ```
/// assert!(sconce_core::grad_enabled());
/// let inside = sconce_core::set_grad_enabled(false, sconce_core::grad_enabled);
/// assert!(!inside);
/// assert!(sconce_core::grad_enabled());
/// ```
pub fn set_grad_enabled<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ENABLED.with(|c| c.replace(enabled)));
    f()
}

/// Runs `f` without gradients, as inference under `torch.no_grad()`: sconce's fused kernels
/// may then skip what only a backward pass needs (DenseNet's eval-mode layers read their
/// concatenated inputs in place instead of copying them into one tensor) and return tensors
/// with no autograd history. Do not call `backward` on anything computed inside. candle's own
/// ops still record their graph, so unlike PyTorch nothing fails: a model whose forward pass
/// took such a path detaches its outputs (DenseNet does), so that its parameters get no
/// gradient rather than a partial one.
///
/// The mode is per thread, as PyTorch's. `sconce_tensor::on_pool` carries it to the pool
/// worker it runs on, but other rayon jobs do not inherit it: a job that a worker steals while
/// it waits inside another thread's `no_grad` step sees that step's mode. Give concurrent
/// training and inference threads pools of their own (`ThreadPool::install`).
///
/// ```
/// let y = sconce_core::no_grad(|| 2 + 2);
/// assert_eq!(y, 4);
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    set_grad_enabled(false, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_nests_and_is_restored_after_a_panic() {
        assert!(grad_enabled());
        no_grad(|| {
            assert!(!grad_enabled());
            set_grad_enabled(true, || assert!(grad_enabled()));
            assert!(!grad_enabled());
        });
        assert!(grad_enabled());
        let r = std::panic::catch_unwind(|| no_grad(|| panic!("inside")));
        assert!(r.is_err());
        assert!(grad_enabled(), "a panic left gradients off");
    }

    #[test]
    fn the_mode_is_per_thread() {
        no_grad(|| {
            let other = std::thread::spawn(grad_enabled).join().unwrap_or(false);
            assert!(other, "another thread saw this thread's mode");
        });
    }
}
