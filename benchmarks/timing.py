"""The benchmarks' one timer: the median wall time of a call, its results waited for."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones;
    each call waits for its JAX results (other results pass through)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
