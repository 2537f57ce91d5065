"""Shared timing helper of the bench_*.py scripts."""
import time


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
