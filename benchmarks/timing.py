"""Timing for the benchmarks: contenders interleaved, warmed up, medians of repeats.

``interleaved({"ours": f, "anchor": g}, repeats=5)`` calls every contender once to warm it up
(imports, caches, compiled programs, allocator), then ``repeats`` rounds in which each runs
once, the order reversed every other round, so that a drift of the machine (another job, a
frequency change) falls on both alike. Returns each contender's median in seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(contenders: Mapping[str, Callable[[], object]], repeats: int = 5,
                warmup: int = 1) -> dict[str, float]:
    """Median seconds per contender over ``repeats`` interleaved rounds after ``warmup``."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(seconds(contenders[name]))
    return {name: statistics.median(t) for name, t in times.items()}
