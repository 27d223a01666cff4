"""Benchmark (issue item 6): peak RSS against the number of cases asked for, drawn lazily.

Each point runs in a fresh subprocess, stopped with SIGINT after ``--limit`` seconds if it
has not finished; its peak RSS is the kernel's ``ru_maxrss`` for that process and the
children it waited for (``os.wait4``). Two paths:

- ``draw+ref``: ``iter_cases("mlp", 0, 0, N)`` and the reference ``backprop`` on each case;
- ``eager`` (a control, not run by default): the same with every case drawn into a list
  first, as ``run`` did before; its memory grows with N;
- ``run fd``: ``backprop-oracle run --oracles fd --families mlp --dtypes float64 --cases N``
  (the whole campaign: drawing, FD oracle, records, and the report built at the end).

Memory should stay flat in N: N = 10^6 only differs from 10^2 in how long it would run.

    python -m benchmarks.bench_memory [--counts 100 10000 1000000] [--limit 20]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child_draw(n: int, eager: bool = False) -> None:
    """The ``draw+ref`` point (``eager``: the control, all cases drawn into a list first, as
    ``run`` did before), in this (fresh) process; prints ``done``, the RSS peak after the
    imports (KiB) and whether it finished."""
    import backprop_oracle as bo
    from backprop_oracle.properties.cases.strategies import iter_cases

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done, finished = 0, False
    try:
        drawn = iter_cases("mlp", 0, 0, n)
        for case in list(drawn) if eager else drawn:
            bo.backprop(case)
            done += 1
        finished = True
    except KeyboardInterrupt:
        pass
    print(f"done={done} imported_kib={imported} finished={finished}", flush=True)


def measure(command: list[str], limit: float) -> tuple[str, int, float, bool]:
    """Run ``command``, SIGINT it after ``limit`` s; (stdout, peak RSS KiB, s, stopped)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not stopped and time.perf_counter() - start > limit:
                proc.send_signal(signal.SIGINT)
                stopped = True
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return out.read(), usage.ru_maxrss, time.perf_counter() - start, stopped


def point_draw(n: int, limit: float, eager: bool = False) -> dict[str, object]:
    text, peak, seconds, stopped = measure(
        [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(n)]
        + (["--eager"] if eager else []), limit)
    match = re.search(r"done=(\d+) imported_kib=(\d+) finished=(\w+)", text)
    done = int(match.group(1)) if match else -1
    imported = int(match.group(2)) / 1024 if match else float("nan")
    return {"path": "eager" if eager else "draw+ref", "n": n, "done": done, "seconds": seconds,
            "stopped": stopped and not (match and match.group(3) == "True"),
            "imported_mib": imported, "peak_mib": peak / 1024}


def point_run(n: int, limit: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        text, peak, seconds, stopped = measure(
            [sys.executable, "-m", "backprop_oracle.cli", "run", "--oracles", "fd",
             "--families", "mlp", "--dtypes", "float64", "--cases", str(n),
             "--out", str(Path(tmp) / "out")], limit)
    match = re.search(r"(\d+) records, (\d+) cases", text)
    return {"path": "run fd", "n": n, "done": int(match.group(2)) if match else -1,
            "seconds": seconds, "stopped": stopped, "imported_mib": float("nan"),
            "peak_mib": peak / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 10_000, 1_000_000])
    parser.add_argument("--limit", type=float, default=20.0,
                        help="seconds before a point is stopped (SIGINT)")
    parser.add_argument("--paths", nargs="+", default=["draw+ref", "run fd"],
                        choices=["draw+ref", "run fd", "eager"],
                        help="eager: the control, every case drawn before any runs")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child_draw(args.child, args.eager)
        return
    print(f"{'path':<10}{'--cases':>10}{'done':>9}{'seconds':>9}  {'stopped':<8}"
          f"{'RSS after imports':>18}{'peak RSS':>11}")
    for path in args.paths:
        for n in args.counts:
            if path == "run fd":
                row = point_run(n, args.limit)
            else:
                row = point_draw(n, args.limit, eager=path == "eager")
            imported = row["imported_mib"]
            shown = "-" if imported != imported else f"{imported:.1f} MiB"  # nan: not measured
            print(f"{row['path']:<10}{row['n']:>10}{row['done']:>9}{row['seconds']:>9.1f}  "
                  f"{'yes' if row['stopped'] else 'no':<8}{shown:>18}"
                  f"{row['peak_mib']:>7.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
