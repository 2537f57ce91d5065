"""Shared helpers of the bench_*.py scripts: the allocator settings and the timing."""
import os
import sys
import time

# sconce_core::ALLOCATOR_ENV, which the Rust benches and examples run with: both sides of a
# comparison get the same glibc malloc settings.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4000000000",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "536870912",
    "MALLOC_ARENA_MAX": "1",
}


def same_allocator():
    """Re-executes the script with ALLOCATOR_ENV unless it is set (glibc reads it at start-up).
    Call it before importing torch: the re-executed interpreter imports everything again."""
    if "MALLOC_TOP_PAD_" in os.environ or "SCONCE_MALLOC_DEFAULTS" in os.environ:
        return
    # sys.orig_argv keeps the interpreter's own flags (-u, -X ...).
    os.execve(sys.executable, sys.orig_argv, {**os.environ, **ALLOCATOR_ENV})


def median_time(fn, warmup=3, min_time=3.0, min_iters=10):
    """Median seconds per call (robust to the other core's hiccups), after a warm-up."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
