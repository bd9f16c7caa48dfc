"""CPU-time measurement for linear-time tests: ratios of CPU seconds, not wall-clock limits."""
from __future__ import annotations

import time
from typing import Any, Callable


def cpu_per_call(fn: Callable[[Any], Any], arg: Any, min_total_s: float = 0.03, trials: int = 3) -> float:
    """Least, over ``trials``, of the mean process CPU time of ``fn(arg)`` (calls repeated until
    ``min_total_s`` of CPU time has passed, so that sub-millisecond calls are measured too)."""
    best = float("inf")
    for _ in range(trials):
        reps, t0 = 0, time.process_time()
        while True:
            fn(arg)
            reps += 1
            spent = time.process_time() - t0
            if spent >= min_total_s:
                break
        best = min(best, spent / reps)
    return best


def doubling_ratio(fn: Callable[[Any], Any], make: Callable[[int], Any], n: int) -> float:
    """CPU time of ``fn(make(2n))`` over that of ``fn(make(n))``: ~2 when linear, ~4 when quadratic."""
    small, large = make(n), make(2 * n)
    fn(small)  # warm caches (compiled patterns, imports)
    return cpu_per_call(fn, large) / cpu_per_call(fn, small)
