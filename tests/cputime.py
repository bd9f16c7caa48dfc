"""CPU-time measurement for linear-time tests: ratios of CPU seconds, not wall-clock limits."""
from __future__ import annotations

import gc
import time
from typing import Any, Callable


def cpu_per_call(fn: Callable[[Any], Any], arg: Any, min_total_s: float = 0.03, trials: int = 3) -> float:
    """Least, over ``trials``, of the mean process CPU time of ``fn(arg)`` (calls repeated until
    ``min_total_s`` of CPU time has passed, so that sub-millisecond calls are measured too)."""
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()  # a collection of the whole heap inside one measurement is noise
    try:
        for _ in range(trials):
            reps, t0 = 0, time.process_time()
            while True:
                fn(arg)
                reps += 1
                spent = time.process_time() - t0
                if spent >= min_total_s:
                    break
            best = min(best, spent / reps)
    finally:
        if enabled:
            gc.enable()
    return best


def doubling_times(fn: Callable[[Any], Any], make: Callable[[int], Any], n: int, trials: int = 3,
                   limit: float = 3.0, min_total_s: float = 0.03, rounds: int = 10) -> tuple[float, float]:
    """CPU seconds per call of ``fn(make(n))`` and of ``fn(make(2n))``.

    The two sizes are measured alternately, the least of ``trials`` each (noise only adds time);
    while their ratio is above ``limit`` both are measured again (up to ``rounds`` times), keeping
    the least, so that a disturbed measurement on a busy machine does not fail a linear function
    (a quadratic one stays near 4 however often it is measured)."""
    small, large = make(n), make(2 * n)
    fn(small)  # warm caches (compiled patterns, imports)
    t_small = t_large = float("inf")
    for _ in range(rounds):
        for _ in range(trials):
            t_small = min(t_small, cpu_per_call(fn, small, min_total_s, trials=1))
            t_large = min(t_large, cpu_per_call(fn, large, min_total_s, trials=1))
        if t_large <= limit * t_small:
            break
    return t_small, t_large


def doubling_ratio(fn: Callable[[Any], Any], make: Callable[[int], Any], n: int, trials: int = 3,
                   limit: float = 3.0, min_total_s: float = 0.03) -> float:
    """CPU time of ``fn(make(2n))`` over that of ``fn(make(n))``: ~2 when linear, ~4 when quadratic."""
    t_small, t_large = doubling_times(fn, make, n, trials, limit, min_total_s)
    return t_large / t_small
