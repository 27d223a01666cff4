"""Conformance vectors end to end: export, load, and verify result files written by the correct
reference and by each gradient mutant of ``tests/mutation/mutants.py``, as an outside
implementation would hand them over (``<case_id>.npz`` per case).

The vectors hold ``--cases`` cases per family plus, per mutant, the first ``--per-mutant`` cases
it can affect (its own case source, as in the mutation suite). Per mutant: how many of its
cases the mutant's return differs at all from the reference's (``changed``: a bug can be
invisible on a case, e.g. a stride ignored where the output is 1x1), how many ``verify`` reports
failing, and whether every failing record names the layer where the bug enters. Prints times,
sizes and the table; exit 1 when the correct results do not all agree, or a changed case is not
reported, or a wrong layer is named.

Run from the repository root, as a module (it imports ``tests.mutation.mutants``):

    python -m benchmarks.bench_vectors [--cases 25] [--per-mutant 5] [--seed 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import backprop_oracle as bo
from backprop_oracle.properties.check import vectors
from tests.mutation.mutants import MUTANTS, correct

FAMILIES = ("mlp", "cnn", "softmax", "graph")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def changed(impl, case: bo.Case) -> bool:
    mine, right = impl(case), correct(case)
    return any(np.shape(mine[k]) != np.shape(v) or not np.array_equal(mine[k], v)
               for k, v in right.items())


def results_of(impl, cases: list[bo.Case], directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    vectors.write_results(directory, {c.case_id: impl(c) for c in cases})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=25, help="cases per family")
    parser.add_argument("--per-mutant", type=int, default=5, help="cases per mutant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep DIR/vectors and DIR/results (default: a temporary directory)")
    args = parser.parse_args()
    if args.dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return measure(args, Path(tmp))
    return measure(args, args.dir)


def measure(args: argparse.Namespace, directory: Path) -> int:
    vec_dir, res_dir = directory / "vectors", directory / "results"
    shutil.rmtree(vec_dir, ignore_errors=True)

    gradient_mutants = [m for m in MUTANTS if not m.training]
    own = {m.name: m.cases(args.per_mutant, args.seed) for m in gradient_mutants}
    cases = [c for f in FAMILIES for c in bo.cases(f, args.cases, args.seed)]
    cases += [c for m in gradient_mutants for c in own[m.name]]
    paths, t_export = timed(vectors.export, vec_dir, cases, seed=args.seed)
    size = sum(p.stat().st_size for p in paths)
    loaded, t_load = timed(vectors.load_cases, vec_dir)
    print(f"export: {len(loaded)} cases, {len(paths)} files, {size / 1e6:.2f} MB, "
          f"{t_export:.2f} s; load + validate {t_load:.2f} s")

    results_of(correct, loaded, res_dir)
    report, t_verify = timed(vectors.verify, vec_dir, res_dir, tiebreakers=())
    print(f"verify correct results: {report.summary().splitlines()[0]} ({t_verify:.2f} s)")
    failed = not report.ok

    print(f"\n{'mutant':40s} {'cases':>5s} {'changed':>7s} {'failing':>7s} {'layer named':>11s} "
          f"{'verify s':>8s}")
    by_id = {c.case_id: c for c in loaded}
    for m in gradient_mutants:
        affected = [by_id[c.case_id] for c in own[m.name]]
        results_of(m.impl, affected, res_dir)
        report, t = timed(vectors.verify, vec_dir, res_dir, tiebreakers=())
        bad = report.failures()
        ids = {r.case_id for r in bad}
        named = "-" if m.family == "graph" or not bad else (
            "yes" if all(r.first_divergent_layer == m.layer(by_id[r.case_id])
                         for r in bad) else "NO")
        differ = sum(changed(m.impl, c) for c in affected)
        print(f"{m.name:40s} {len(affected):5d} {differ:7d} {len(ids):7d} {named:>11s} {t:8.2f}")
        failed |= len(ids) < differ or named == "NO"
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
