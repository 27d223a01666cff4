"""The golden records: a fixed small campaign and two ``check`` runs through the real CLI, and
how two sets of records are compared (timing, versions and output paths aside).

Regenerate (only when a change of behaviour is intended, and say why in the commit):

    .venv/bin/python tests/golden/golden.py
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backprop_oracle.properties.campaign.threads import BLAS_ENV, THREADS_ENV, XLA_ONE_THREAD

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = {
    "run": ["run", "--cases", "3", "--seed", "5"],
    "check_example": ["check", "examples/loop_mlp.py:adapter", "--families",
                      "mlp,softmax,cnn,graph", "--cases", "4", "--seed", "5"],
    "check_buggy": ["check", "tests/golden/buggy_adapter.py:adapter", "--families",
                    "mlp,cnn,graph", "--cases", "3", "--seed", "5"],
}
IGNORED = {"seconds", "versions", "replay"}  # timing, library versions, output paths
# Error measures of framework/FD results move with the BLAS kernels of the machine: compare
# them to a quarter of the record's tolerance; everything else exactly (floats to 1e-12).
LOOSE = {"max_abs_err", "actual_value", "norm_err"}
RATIO = {"margin": 0.25}
DERIVED = {"max_rel_err", "err_ulps"}  # follow from max_abs_err


def produce(name: str, out: Path) -> list[dict[str, Any]]:
    """Run one golden command into ``out`` and return its normalised records."""
    command = [sys.executable, "-m", "backprop_oracle.cli", *RUNS[name], "--out", str(out)]
    # One thread per library, as `run` pins by default: multi-threaded float32 reductions
    # (PyTorch's, under load) sum in a varying order and move worst elements between runs.
    one = {THREADS_ENV: "1", **dict.fromkeys(BLAS_ENV, "1"), "XLA_FLAGS": XLA_ONE_THREAD}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **one})
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return [normalise(json.loads(line)) for line in
            (out / "records.jsonl").read_text().splitlines() if line.strip()]


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in IGNORED}
    detail = out.get("detail")
    if isinstance(detail, dict):
        out["detail"] = {k: v for k, v in detail.items() if k != "traceback"}
        if isinstance(detail.get("values"), dict):  # the elements, not their BLAS-moved values
            out["detail"]["values"] = sorted(detail["values"])
        for ratios in (out["detail"], out["detail"].get("directional")):
            if isinstance(ratios, dict):  # forward mode by directions: like margin, BLAS-moved
                for k in ("sound_ratio", "screen_ratio"):
                    ratios.pop(k, None)
    return out


def key(record: dict[str, Any]) -> tuple:
    return tuple(str(record.get(k)) for k in ("case_id", "oracle", "mode", "precision",
                                               "device", "dtype", "quantity", "name", "family"))


def differences(golden: list[dict], now: list[dict]) -> Iterator[str]:
    """Every difference between two record sets, one line each (empty: they match)."""
    want = {key(r): r for r in golden}
    got = {key(r): r for r in now}
    for k in sorted(set(want) - set(got)):
        yield f"missing record {k}"
    for k in sorted(set(got) - set(want)):
        yield f"new record {k}"
    for k in sorted(set(want) & set(got)):
        for field, expected in want[k].items():
            actual = got[k].get(field)
            if not _same(field, expected, actual, want[k]):
                yield f"{k}: {field} was {expected!r}, now {actual!r}"


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _same(field: str, expected: Any, actual: Any, record: dict) -> bool:
    if field in DERIVED:
        return True
    if field in LOOSE and expected is not None and actual is not None:
        tol = _float(record.get("tolerance"))
        return abs(_float(expected) - _float(actual)) <= 0.25 * tol or _float(
            expected) == _float(actual)
    if field in RATIO and expected is not None and actual is not None:
        return abs(_float(expected) - _float(actual)) <= RATIO[field]
    if isinstance(expected, float) and isinstance(actual, (float, int)):
        return math.isclose(expected, actual, rel_tol=1e-12, abs_tol=0.0)
    return expected == actual


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            records = produce(name, Path(tmp) / name)
            path = HERE / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            print(f"{path.relative_to(ROOT)}: {len(records)} records")


if __name__ == "__main__":
    main()
