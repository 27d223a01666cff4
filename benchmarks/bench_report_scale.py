"""Reports at campaign scale: time and peak memory of building ``summary.json``, ``summary.md``
and ``report.html`` (``output.finish``, as ``run`` does) from 10^5 and 10^6 synthetic records.

The records are shaped like a real run's (every field of a ``Record``; tolerances with their
derivation, worst indices, ``detail.values``) with a mix of verdicts: mostly ``agree``, some
``kink``, ``diverge`` (with ``first_divergent_layer`` and a tie-break vote), ``nan``,
``oracle_error`` events with a traceback, ``unsupported`` events, skipped combinations and
SGD ``update`` records over several steps. Each build runs in a fresh process, twice: once
for the time and the peak resident memory (``ru_maxrss``, and its growth over the process
after its imports), once under ``tracemalloc`` for the peak of Python allocations made by the
build (slower, so not timed).

    python benchmarks/bench_report_scale.py [--records 100000 1000000] [--out /tmp/bo-scale]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FAMILIES = ("mlp", "cnn", "softmax", "graph")
ORACLES = (("fd", "fd"), ("torch", "reverse"), ("torch", "forward"), ("jax", "reverse"),
           ("jax", "forward"))
TENSORS = (("loss", "loss", ()), ("W1", "grad", (16, 8)), ("b1", "grad", (16,)),
           ("W2", "grad", (4, 16)), ("b2", "grad", (4,)), ("delta1", "delta", (32, 16)),
           ("delta2", "delta", (32, 4)))
VERSIONS = {"python": "3.11.2", "backprop-oracle": "0.1.0", "numpy": "2.1.0",
            "torch": "2.13.0", "jax": "0.4.35", "jaxlib": "0.4.35", "hypothesis": "6.170.17"}
TRACEBACK = "".join(f'  File "oracles/torch_oracle.py", line {100 + i}, in run\n    grads = ...\n'
                    for i in range(12)) + "RuntimeError: CUDA error: out of memory\n"


def _base(case: str, family: str, dtype: str, oracle: str, mode: str) -> dict[str, Any]:
    """The fields every record of one (case, oracle) shares."""
    return {"case_id": case, "family": family, "oracle": oracle, "mode": mode,
            "precision": "strict", "device": "cpu", "dtype": dtype,
            "arch": f"{family}: x(32, 8) -> dense(16, tanh) -> dense(4, identity)",
            "versions": VERSIONS, "replay": f"backprop-oracle replay {case} --from bo-out",
            "seconds": 0.0123, "step": None, "detail": {}}


def _tensor(base: dict, name: str, quantity: str, shape: tuple, margin: float, verdict: str,
            rng: random.Random) -> dict[str, Any]:
    """A tensor comparison with every field of ``Record.to_dict``."""
    index = [rng.randrange(n) for n in shape]
    bad = verdict in ("diverge", "nan")
    detail: dict[str, Any] = {"values": {"3,7": 0.1 + margin * 1e-12, "0,1": -0.25}}
    if verdict == "diverge":
        detail.update(blame=base["oracle"], votes={"reference-torch": "diverge",
                                                   "reference-jax": "agree"})
    return {**base, "quantity": quantity, "name": name, "shape": list(shape),
            "max_abs_err": margin * 1e-12, "max_rel_err": margin * 1e-10,
            "err_ulps": margin * 3.0, "worst_index": index, "n_beyond": 5 if bad else 0,
            "n_total": max(1, _size(shape)), "tolerance": 1e-12,
            "tolerance_model": "kappa=2 x u=2.22e-16 x K=12 x |terms|=0.2 + fd_err=1e-13",
            "margin": "nan" if verdict == "nan" else margin, "verdict": verdict,
            "first_divergent_layer": 2 if bad else None, "expected_value": 0.1,
            "actual_value": "nan" if verdict == "nan" else 0.1 + margin * 1e-12,
            "norm_err": margin * 2e-12, "norm_tol": 4e-12,
            "divergence": "wrong" if verdict == "diverge" else "", "detail": detail}


def _size(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _event(base: dict, verdict: str) -> dict[str, Any]:
    """An oracle that raised (``oracle_error``) or cannot run the case (``unsupported``)."""
    detail = ({"type": "RuntimeError", "message": "CUDA error: out of memory",
               "traceback": TRACEBACK} if verdict == "oracle_error"
              else {"reason": f"{base['oracle']} has no {base['family']} layer of this kind"})
    return {**_tensor(base, "-", "run", (), 0.0, verdict, random.Random(0)), "detail": detail,
            "margin": 0.0, "first_divergent_layer": None}


def _verdict(rng: random.Random) -> str:
    """Per (case, oracle): mostly agree, a few of every other outcome."""
    roll = rng.random()
    for verdict, share in (("diverge", 0.005), ("nan", 0.001), ("oracle_error", 0.001),
                           ("unsupported", 0.005), ("kink", 0.02)):
        if roll < share:
            return verdict
        roll -= share
    return "agree"


def _case(i: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    case, family = f"{i:016x}", rng.choice(FAMILIES)
    dtype = rng.choice(("float32", "float64"))
    for oracle, mode in ORACLES:
        base, outcome = _base(case, family, dtype, oracle, mode), _verdict(rng)
        if outcome in ("oracle_error", "unsupported"):
            yield _event(base, outcome)
            continue
        for name, quantity, shape in TENSORS:
            hit = outcome != "agree" and name in ("W2", "delta2")
            margin = 10 ** rng.uniform(1, 4) if hit else 10 ** rng.uniform(-9, -0.3)
            yield _tensor(base, name, quantity, shape, margin, outcome if hit else "agree", rng)
        if i % 50 == 0:  # a training check: the parameters after each of 8 SGD steps
            for step in range(8):
                yield {**_tensor(base, "W1", "update", (16, 8), 10 ** rng.uniform(-6, -1),
                                 "agree", rng), "step": step}


def _skips() -> Iterator[dict[str, Any]]:
    """Combinations that could not run at all: one per family, dtype and CUDA oracle."""
    for family in FAMILIES:
        for dtype in ("float32", "float64"):
            for oracle, mode in ORACLES[1:]:
                yield {**_base("-", family, dtype, oracle, mode), "device": "cuda",
                       "quantity": "skip", "name": "-", "verdict": "unsupported",
                       "detail": {"reason": "no CUDA device present"}}


def write(path: Path, n: int, seed: int = 0) -> int:
    """``n`` records (about) into ``path``, as ``RecordWriter`` writes them; returns how
    many."""
    rng, count = random.Random(seed), 0
    with open(path, "w", encoding="utf-8") as f:
        for record in _skips():
            f.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
            count += 1
        i = 0
        while count < n:
            lines = [json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in _case(i, rng)]
            f.writelines(lines)
            count, i = count + len(lines), i + 1
    return count


def measure(directory: Path, trace: bool) -> dict[str, float]:
    """Build the summary and report of ``directory`` in this process: seconds and peak
    memory (``trace``: tracemalloc's peak instead of the time)."""
    import resource
    import tracemalloc

    from backprop_oracle.properties.campaign.output import finish
    from backprop_oracle.reports import html, plots  # noqa: F401  (imports before measuring)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    summary = finish(directory)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"records": summary.n_records, "seconds": seconds, "maxrss_mb": after,
            "maxrss_growth_mb": after - before, "traced_peak_mb": peak,
            "report_mb": (directory / "report.html").stat().st_size / 1e6,
            "summary_md_kb": (directory / "summary.md").stat().st_size / 1e3}


def _child(directory: Path, trace: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", str(directory)] + ["--trace"] * trace
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bo-scale"))
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.trace)))
        return
    for n in args.records:
        directory = args.out / str(n)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        started = time.perf_counter()
        written = write(directory / "records.jsonl", n)
        size = (directory / "records.jsonl").stat().st_size / 1e6
        print(f"{written} records written in {time.perf_counter() - started:.1f} s "
              f"(records.jsonl {size:.0f} MB)", flush=True)
        timed = _child(directory, trace=False)
        traced = {} if args.no_trace else _child(directory, trace=True)
        print(f"  build {timed['seconds']:.1f} s; peak RSS {timed['maxrss_mb']:.0f} MB "
              f"(+{timed['maxrss_growth_mb']:.0f} MB over the imports)"
              + (f"; tracemalloc peak {traced['traced_peak_mb']:.1f} MB" if traced else "")
              + f"; report.html {timed['report_mb']:.2f} MB, summary.md "
              f"{timed['summary_md_kb']:.1f} kB", flush=True)


if __name__ == "__main__":
    main()
