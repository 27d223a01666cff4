"""Scaling a campaign out with Dask (issue 18): what ``run --workers`` buys on this machine and
what the scheduler costs, the inputs of ``docs/scaling.md``'s projection.

1. ``backprop-oracle run`` on its defaults with ``--workers 1`` and ``--workers 2``, alternated
   in this one benchmark (warm JAX compile cache: a warm-up run first), median of the repeats.
2. The scheduler's cost per task: ``--tasks`` no-op tasks submitted to a ``LocalCluster`` and
   collected with ``as_completed`` (as ``cluster.Campaign`` does), with 2 worker processes and
   with ``--many`` (more workers than cores, to see the scheduler side).
3. A chunk-size sweep: an fd-only mlp campaign of ``--sweep-cases`` default-size cases (float64)
   in this process, then on 2 workers with 1, 2, 4 and 8 cases per chunk (``engine.MAX_CHUNK``;
   the wall time includes starting the cluster).

    python -m benchmarks.bench_scale [--repeats 2] [--tasks 2000] [--many 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backprop_oracle.properties.campaign import engine
from backprop_oracle.properties.campaign.cluster import HTTP_ADDRESS, NO_DASHBOARD


def _timed_run(workers: int, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "backprop_oracle.cli", "run", "--workers", str(workers),
                    "--out", str(out)], check=True, capture_output=True)
    return time.perf_counter() - start


def run_speedup(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _timed_run(2, Path(tmp) / "warm")  # fills the compile cache
        times: dict[int, list[float]] = {1: [], 2: []}
        for i in range(repeats):
            for workers in (1, 2):
                times[workers].append(_timed_run(workers, Path(tmp) / f"w{workers}-{i}"))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print("| run defaults, warm cache | --workers 1 | --workers 2 | speed-up |")
    print("|---|---|---|---|")
    print(f"| median of {repeats} | {one:.1f} s | {two:.1f} s | {one / two:.2f}x |")
    print(f"(each: {', '.join(f'{t:.1f}' for t in times[1])} s and "
          f"{', '.join(f'{t:.1f}' for t in times[2])} s)\n")


def _noop(i: int) -> int:
    return i


def task_overhead(tasks: int, workers: int) -> float:
    """Seconds per task, wall clock, of ``tasks`` no-op tasks through ``workers`` processes."""
    from distributed import Client, LocalCluster, as_completed

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=HTTP_ADDRESS, scheduler_kwargs=NO_DASHBOARD,
                      silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.gather(client.map(_noop, range(workers * 4), pure=False))  # warm-up
        start = time.perf_counter()
        futures = [client.submit(_noop, i, pure=False) for i in range(tasks)]
        for _ in as_completed(futures, loop=client.loop):
            pass
        return (time.perf_counter() - start) / tasks


def overheads(tasks: int, many: int) -> None:
    print("| workers (processes) | tasks | per task |")
    print("|---|---|---|")
    for workers in (2, many):
        per = task_overhead(tasks, workers)
        print(f"| {workers} | {tasks} | {per * 1e3:.2f} ms |")
    print()


def _campaign(config: engine.RunConfig, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine.run(config, Path(tmp), execution=engine.Execution(workers=workers))
        return time.perf_counter() - start


def chunk_sweep(cases: int) -> None:
    print("| workers | cases per chunk | chunks | wall | per case |")
    print("|---|---|---|---|---|")
    config = engine.RunConfig(families=("mlp",), oracles=("fd",), modes=("reverse",),
                              dtypes=("float64",), cases=cases)
    wall = _campaign(config, 1)
    print(f"| 1 (in process) | - | - | {wall:.1f} s | {wall / cases * 1e3:.0f} ms |")
    before = engine.MAX_CHUNK, engine.CHUNKS_PER_WORKER
    try:
        for size in (1, 2, 4, 8):
            engine.MAX_CHUNK, engine.CHUNKS_PER_WORKER = size, 1
            wall = _campaign(config, 2)
            print(f"| 2 | {size} | {-(-cases // size)} | {wall:.1f} s "
                  f"| {wall / cases * 1e3:.0f} ms |")
    finally:
        engine.MAX_CHUNK, engine.CHUNKS_PER_WORKER = before
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--many", type=int, default=8)
    p.add_argument("--sweep-cases", type=int, default=48)
    p.add_argument("--skip-run", action="store_true", help="leave out part 1 (minutes)")
    args = p.parse_args()
    print(f"cores: {engine.cores()}; load average {os.getloadavg()[0]:.1f}\n")
    if not args.skip_run:
        run_speedup(args.repeats)
    overheads(args.tasks, args.many)
    chunk_sweep(args.sweep_cases)


if __name__ == "__main__":
    main()
