"""The summary as it was computed before it streamed: every record and every margin held in
lists, then counted, sorted and maxed at the end. Kept as the slow, obvious reference that the
streaming ``Summary`` must equal on the same records (``test_streaming.py``)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from backprop_oracle.properties.comparison.records import FAILING, VERDICTS, number
from backprop_oracle.reports.summary import EXACT, MATRIX_KEYS, cell_key, severity


def in_memory_summary(records: list[dict[str, Any]], cap: int = 50) -> dict[str, Any]:
    """``Summary.to_json()`` (plus ``worst`` and ``histogram``) from all records at once."""
    compared = [r for r in records if r.get("quantity") != "skip"]
    verdicts = Counter(str(r.get("verdict")) for r in compared)
    matrix: dict[tuple, Counter] = defaultdict(Counter)
    margins: dict[tuple, list[float]] = defaultdict(list)
    worst_per_cell: dict[tuple, list[float]] = defaultdict(list)
    for r in compared:
        matrix[cell_key(r)][str(r.get("verdict"))] += 1
        m = number(r.get("margin"))
        if math.isfinite(m):
            margins[(str(r.get("family")), str(r.get("dtype")))].append(m)
            worst_per_cell[cell_key(r)].append(m)
    skipped = {cell_key(r): _reason(r) for r in records if r.get("quantity") == "skip"}
    failing = sum(verdicts[v] for v in FAILING)
    n_compared = sum(n for v, n in verdicts.items() if v != "unsupported")
    return {
        "records": len(records),
        "cases": len({str(r.get("case_id")) for r in compared}),
        "verdicts": {v: verdicts.get(v, 0) for v in VERDICTS},
        "exit_code": 1 if failing else 2 if not n_compared else 0,
        "interrupted": False,
        "matrix": [{**dict(zip(MATRIX_KEYS, key, strict=True)), "counts": dict(counts),
                    "worst_margin": max([0.0, *worst_per_cell[key]])
                    if key in worst_per_cell else None}
                   for key, counts in sorted(matrix.items())],
        "skipped": [{**dict(zip(MATRIX_KEYS, key, strict=True)), "reason": reason}
                    for key, reason in sorted(skipped.items())],
        "largest_margin": {f"{fam}/{dt}": max(m) for (fam, dt), m in margins.items()},
        "worst": sorted((r for r in compared if r.get("verdict") != "agree"),
                        key=severity)[:cap],
        "histogram": {key: _histogram(values) for key, values in margins.items()},
    }


def _reason(record: dict[str, Any]) -> str:
    detail = record.get("detail")
    return str(detail.get("reason", "skipped") if isinstance(detail, dict)
               else detail or "skipped")


def _histogram(values: list[float]) -> dict[int, int]:
    """The old plot's binning: numpy.histogram of log10(max(margin, EXACT)) over quarter
    decades from an integer ``low``; keyed by the bin's quarter-decade number."""
    logs = [math.log10(max(v, EXACT)) for v in values]
    low = math.floor(min(logs)) - 1
    high = max(1, math.ceil(max(logs)) + 1)
    edges = [low + i / 4 for i in range(4 * (high - low) + 1)]
    counts, _ = np.histogram(logs, bins=edges)
    return {4 * low + i: int(n) for i, n in enumerate(counts) if n}
