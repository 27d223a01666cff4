"""Threads per process: each oracle's time on the same cases with the libraries' default thread
counts against one thread (``properties.campaign.threads.limit``), interleaved A/B/A/B after a
warm-up, median of the repeats, float32 and float64. Run it quiet and under load (a campaign
in the background): oversubscription shows under load.

    python -m benchmarks.bench_threads [--repeats 7] [--cases 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import backprop_oracle as bo
from backprop_oracle.oracles.registry import make
from backprop_oracle.properties.campaign.threads import limit


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _work(name: str, cases: list[bo.Case], dtype: str) -> Callable[[], None]:
    """One pass of ``name`` (``reference`` or an oracle, reverse mode) over ``cases``."""
    oracle = None if name == "reference" else make(name, "reverse")

    def run() -> None:
        for case in cases:
            if oracle is None:
                bo.backprop(case)
            else:
                oracle.run(case, "cpu", dtype)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--oracles", default="reference,torch,jax,fd")
    args = p.parse_args()
    print(f"cores: {os.cpu_count()}; median of {args.repeats} interleaved repeats per case "
          "set (seconds)\n")
    print("| oracle | family | dtype | default threads | 1 thread | default / 1 |")
    print("|---|---|---|---|---|---|")
    for name in args.oracles.split(","):
        for family in ("mlp", "cnn"):
            for dtype in ("float32", "float64"):
                cases = [c.astype(dtype) for c in bo.cases(family, args.cases, seed=11,
                                                           max_width=64, max_batch=32)]
                work = _work(name, cases, dtype)
                work()  # warm-up: imports, compilation
                both: dict[str, list[float]] = {"default": [], "one": []}
                for _ in range(args.repeats):
                    both["default"].append(_timed(work))
                    with limit(1):
                        both["one"].append(_timed(work))
                d, o = (statistics.median(both[k]) for k in ("default", "one"))
                print(f"| {name} | {family} | {dtype} | {d:.3f} | {o:.3f} | {d / o:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
