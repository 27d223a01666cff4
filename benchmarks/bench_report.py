"""Report build time and size at scale: 10^5 records (default) shaped like a real run's,
with a few hundred divergences, so that the drill-down cap and the two-pass build are
exercised. Prints the build time, the HTML size and the records file size
(``bench_report_scale.py`` measures time and peak memory at 10^5 and 10^6 records).

    python benchmarks/bench_report.py [--records 100000] [--out /tmp/bo-bench-report]
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

from backprop_oracle.properties.comparison.records import Record, RecordWriter
from backprop_oracle.reports import html

FAMILIES = ("mlp", "cnn", "softmax", "graph")
ORACLES = (("fd", "fd"), ("torch", "reverse"), ("torch", "forward"), ("jax", "reverse"),
           ("jax", "forward"))
TENSORS = (("loss", "loss"), ("W1", "grad"), ("b1", "grad"), ("W2", "grad"), ("b2", "grad"),
           ("delta1", "delta"), ("delta2", "delta"))


def record(case: str, family: str, oracle: str, mode: str, dtype: str, name: str,
           quantity: str, margin: float, verdict: str) -> dict:
    return {"case_id": case, "family": family, "oracle": oracle, "mode": mode,
            "precision": "strict", "device": "cpu", "dtype": dtype, "quantity": quantity,
            "name": name, "shape": [8, 16], "max_abs_err": margin * 1e-12,
            "max_rel_err": margin * 1e-10, "err_ulps": margin * 3.0, "worst_index": [3, 7],
            "n_beyond": int(margin > 1), "n_total": 128, "tolerance": 1e-12,
            "tolerance_model": "kappa=2 x u=2.22e-16 x K=12 x |terms|=0.2 + fd_err=1e-13",
            "margin": margin, "verdict": verdict,
            "first_divergent_layer": 2 if margin > 1 else None,
            "arch": f"{family}: x(8, 16) -> dense(16, tanh) -> dense(4, identity)",
            "replay": f"backprop-oracle replay {case} --from out", "expected_value": 0.1,
            "actual_value": 0.1 + margin * 1e-12, "detail": {"expected": "reference"}}


def write(path: Path, n: int) -> None:
    rng = random.Random(0)
    per_case = len(ORACLES) * len(TENSORS)
    with RecordWriter(path) as writer:
        for i in range(n // per_case):
            family, dtype = rng.choice(FAMILIES), rng.choice(("float32", "float64"))
            bad = i % 97 == 0
            writer.write([Record.from_dict(record(
                f"c{i:06d}", family, o, m, dtype, name, q,
                1e4 if bad and name == "W2" and o == "torch" else 10 ** rng.uniform(-8, -0.5),
                "diverge" if bad and name == "W2" and o == "torch" else "agree"))
                for o, m in ORACLES for name, q in TENSORS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bo-bench-report"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    write(args.out / "records.jsonl", args.records)
    start = time.perf_counter()
    summary = html.build(args.out / "records.jsonl", args.out)
    elapsed = time.perf_counter() - start
    size = (args.out / "report.html").stat().st_size
    print(f"records {summary.n_records}, divergent {summary.verdicts['diverge']}: build "
          f"{elapsed:.2f} s (target < 10 s), report.html {size / 1e6:.2f} MB (target < 10 MB), "
          f"records.jsonl {(args.out / 'records.jsonl').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
