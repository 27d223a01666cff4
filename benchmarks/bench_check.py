"""``bo.check`` throughput on a correct NumPy implementation (the reference itself, returning
loss, gradients and deltas): 30 cases each of mlp, cnn and softmax (float32 and float64 as
drawn by this tree, saved once and loaded by each tree, so both check the same cases), the
harness's share of the time (everything but the implementation), and the same work in
another source tree (``--old-tree``: a tree laid out as installed, e.g. a worktree of
an older commit behind a symlink tree, run with ``PYTHONSAFEPATH=1``), each tree in its own
process, alternated A/B/A/B (each process checks the cases 5 times and keeps its median),
median of the repeats.

    python -m benchmarks.bench_check [--repeats 5] [--old-tree /tmp/oldtree]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = ("mlp", "cnn", "softmax")

CHILD = """
import json, time
from pathlib import Path
import backprop_oracle as bo
from backprop_oracle.properties.cases.case_io import load_case
from backprop_oracle.reference import backprop
spent = [0.0]
def impl(case):
    start = time.perf_counter()
    r = backprop(case)
    out = {**r.grads, "loss": r.loss, **r.deltas}
    spent[0] += time.perf_counter() - start
    return out
out = {}
saved = Path(%r)
for family in %r:
    cases = [load_case(saved, line) for line in (saved / family).read_text().split()]
    bo.check(impl, cases[:2])  # warm-up
    runs = []
    for _ in range(5):  # a check of 30 small cases takes tens of ms: the median of 5
        spent[0] = 0.0
        start = time.perf_counter()
        report = bo.check(impl, cases)
        runs.append((time.perf_counter() - start, spent[0]))
        assert report.ok, family
    total, impl_time = sorted(runs)[2]
    out[family] = {"total": total, "impl": impl_time}
print(json.dumps(out))
"""


def save(n: int, directory: Path) -> None:
    """``n`` cases of each family, drawn by this tree, saved under ``directory``."""
    import backprop_oracle as bo
    from backprop_oracle.properties.cases.case_io import save_case

    for family in FAMILIES:
        cases = bo.cases(family, n, seed=2)
        for case in cases:
            save_case(case, directory)
        (directory / family).write_text("\n".join(c.case_id for c in cases))


def once(tree: str | None, directory: Path) -> dict:
    env = dict(os.environ)
    if tree:
        env.update(PYTHONSAFEPATH="1", PYTHONPATH=tree)
    done = subprocess.run([sys.executable, "-c", CHILD % (str(directory), FAMILIES)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(repeats: int = 5, n: int = 30, old_tree: str | None = None) -> list[dict]:
    """Per tree and family: cases per second (median of the alternated runs), the harness's
    share and, with ``old_tree``, the speed-up against it."""
    trees = {"now": None, **({"old": old_tree} if old_tree else {})}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        save(n, Path(tmp))
        for _ in range(repeats):
            for key, tree in trees.items():
                runs[key].append(once(tree, Path(tmp)))
    rows = []
    for family in FAMILIES:
        med = {k: statistics.median(r[family]["total"] for r in v) for k, v in runs.items()}
        for key, v in runs.items():
            rows.append({"tree": key, "family": family, "cases_per_s": n / med[key],
                         "harness_share": statistics.median(
                             1 - r[family]["impl"] / r[family]["total"] for r in v),
                         "speedup": med["old"] / med[key] if "old" in med else None})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", type=int, default=30)
    p.add_argument("--old-tree", default=None)
    args = p.parse_args()
    started = time.perf_counter()
    rows = measure(args.repeats, args.cases, args.old_tree)
    print(f"{args.cases} cases per family, median of {args.repeats} alternated runs "
          f"({time.perf_counter() - started:.0f} s)\n")
    print("| tree | family | cases/s | harness share | speed-up vs old |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"| {r['tree']} | {r['family']} | {r['cases_per_s']:.1f} "
              f"| {r['harness_share']:.0%} | {ratio} |")


if __name__ == "__main__":
    main()
