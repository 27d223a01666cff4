"""Aggregates records into a summary: the agreement matrix (family x oracle x mode x
precision x device x dtype, with counts of each verdict), skipped combinations with their
reasons, the worst comparisons, margins (error / tolerance) per family and dtype, and the
exit code of a run: 0 everything agrees (kinks allowed), 1 a divergence, a one-sided NaN
or an oracle that raised (``records.FAILING``), 2 nothing was compared (no records, or only
skipped and unsupported ones: no vacuous pass).

The summary is built in one streaming pass (``Summary.add`` per record) and never holds the
records: the margins are kept as counts per quarter decade of log10(error / tolerance)
(``Headroom``), the worst comparisons as a bounded list; its memory grows with the number of
distinct cases (their ids are counted exactly) and matrix cells, not with the records.

A record's ``quantity`` is ``loss | grad | delta | update``, or ``skip`` for a combination
that could not run (its ``detail`` says why); ``verdict`` is one of ``VERDICTS``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..properties.comparison.records import FAILING, VERDICTS, number, rank

MATRIX_KEYS = ("family", "oracle", "mode", "precision", "device", "dtype")
EXACT = 1e-12  # where an exact agreement (error 0) is drawn on log axes
BINS_PER_DECADE = 4  # the headroom histogram's bins: quarter decades of log10(error / tol)


def cell_key(record: dict) -> tuple[str, ...]:
    return tuple(str(record.get(k, "-")) for k in MATRIX_KEYS)


def margin_bin(margin: float) -> int:
    """The headroom bin of a finite margin: ``floor(4 log10(max(margin, EXACT)))``, so bin
    ``k`` holds log10 margins in ``[k / 4, (k + 1) / 4)``."""
    return math.floor(math.log10(max(margin, EXACT)) * BINS_PER_DECADE)


@dataclass
class Headroom:
    """The margins (error / tolerance) of one family and dtype, streamed: how many fell in
    each quarter decade (``bins``, at most a few thousand over the range of doubles) and the
    largest."""

    bins: Counter = field(default_factory=Counter)
    count: int = 0
    largest: float = -math.inf

    def add(self, margin: float) -> None:
        self.bins[margin_bin(margin)] += 1
        self.count += 1
        self.largest = max(self.largest, margin)


@dataclass
class Summary:
    """Counts and pointers a report needs; built in one pass over the records."""

    n_records: int = 0
    cases: set[str] = field(default_factory=set)
    verdicts: Counter = field(default_factory=Counter)
    matrix: dict[tuple, Counter] = field(default_factory=lambda: defaultdict(Counter))
    skipped: dict[tuple, str] = field(default_factory=dict)
    worst: list[dict] = field(default_factory=list)
    headroom: dict[tuple[str, str], Headroom] = field(
        default_factory=lambda: defaultdict(Headroom))
    worst_per_cell: dict[tuple, float] = field(default_factory=dict)
    cap: int = 50
    interrupted: bool = False

    def add(self, record: dict) -> None:
        self.n_records += 1
        key = cell_key(record)
        if record.get("quantity") == "skip":
            detail = record.get("detail")
            self.skipped[key] = str(detail.get("reason", "skipped") if isinstance(detail, dict)
                                    else detail or "skipped")
            return
        self.cases.add(str(record.get("case_id")))
        verdict = str(record.get("verdict"))
        self.verdicts[verdict] += 1
        self.matrix[key][verdict] += 1
        margin = number(record.get("margin"))
        if math.isfinite(margin):
            self.headroom[(str(record.get("family")), str(record.get("dtype")))].add(margin)
            self.worst_per_cell[key] = max(self.worst_per_cell.get(key, 0.0), margin)
        if verdict != "agree":
            self._keep_worst(record)

    def _keep_worst(self, record: dict) -> None:
        self.worst.append(record)
        if len(self.worst) > 4 * self.cap:
            self.worst = sorted(self.worst, key=severity)[: self.cap]

    @property
    def worst_records(self) -> list[dict]:
        return sorted(self.worst, key=severity)[: self.cap]

    @property
    def exit_code(self) -> int:
        """The process's exit code: 130 interrupted, 1 a failing verdict, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failing else 2 if not self.compared else 0

    @property
    def compared(self) -> int:
        """How many records are comparisons: not a skipped combination, not ``unsupported``."""
        return sum(n for v, n in self.verdicts.items() if v != "unsupported")

    @property
    def nothing_compared(self) -> str:
        """Why the records pass only vacuously (nothing compared: none, or only skipped and
        unsupported ones), in one line; ``""`` when something was compared."""
        if self.compared:
            return ""
        if not self.n_records:
            return "nothing was compared: no records (no case was run)"
        reasons = [*self.skipped.values(),
                   *(str(d.get("reason") or d.get("message") or "") for r in self.worst
                     if isinstance(d := r.get("detail"), dict))]
        reason = next((r for r in reasons if r), "no reason given")
        return (f"nothing was compared: all {self.n_records} records are skipped or "
                f"unsupported (e.g. {reason.splitlines()[0]})")

    @property
    def failing(self) -> int:
        """How many comparisons have a failing verdict (``records.FAILING``)."""
        return sum(self.verdicts[v] for v in FAILING)

    def to_json(self) -> dict:
        return {
            "records": self.n_records,
            "cases": len(self.cases),
            "verdicts": {v: self.verdicts.get(v, 0) for v in VERDICTS},
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "matrix": [
                {**dict(zip(MATRIX_KEYS, key, strict=True)), "counts": dict(counts),
                 "worst_margin": self.worst_per_cell.get(key)}
                for key, counts in sorted(self.matrix.items())
            ],
            "skipped": [{**dict(zip(MATRIX_KEYS, key, strict=True)), "reason": reason}
                        for key, reason in sorted(self.skipped.items())],
            "largest_margin": {f"{fam}/{dt}": h.largest for (fam, dt), h in self.headroom.items()},
        }


def severity(record: dict) -> tuple[int, float]:
    """Sort key: failing verdicts first (``records.SEVERITY``), then larger error / tolerance
    first."""
    margin = number(record.get("margin"))
    return rank(str(record.get("verdict"))), -(margin if math.isfinite(margin) else 0.0)


def summarise(records: Iterable[dict], cap: int = 50) -> Summary:
    """The summary of ``records``, consumed one at a time (pass ``read_records(path)`` to
    stream a ``records.jsonl`` of any length)."""
    summary = Summary(cap=cap)
    for record in records:
        summary.add(record)
    return summary
