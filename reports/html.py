"""Builds ``report.html`` (self-contained: inline CSS and SVG, no network) and
``summary.md`` from ``records.jsonl``, with Jinja2 (autoescaping every user-provided string)
and matplotlib. Two passes over the records keep memory bounded: the first counts and picks
the worst comparisons, the second collects the records those drill-downs show. Beyond the
cap of drill-downs, comparisons are only counted."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ..properties.comparison.records import number, read_records
from . import plots
from .summary import MATRIX_KEYS, VERDICTS, Summary, severity

COMPARISON_KEYS = ("case_id",) + MATRIX_KEYS


def comparison_key(record: dict) -> tuple[str, ...]:
    return tuple(str(record.get(k, "-")) for k in COMPARISON_KEYS)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("backprop_oracle.reports", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["sci"] = lambda v: "–" if v is None or v == "" else (
        f"{number(v):.3g}" if isinstance(v, (int, float, str)) and _is_number(v) else str(v))
    return env


def _is_number(value: Any) -> bool:  # Any: float() is tried on whatever value is
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _cell_class(counts: dict) -> str:
    if counts.get("diverge") or counts.get("nan"):
        return "bad"
    if counts.get("oracle_error"):
        return "error"
    if counts.get("kink") or counts.get("unsupported"):
        return "warn"
    return "good"


def _matrix(summary: Summary) -> dict:
    """Rows (family, oracle, mode, precision) x columns (device, dtype)."""
    cells: dict[tuple, dict] = {}
    for key, counts in summary.matrix.items():
        cells[key] = {"counts": dict(counts), "class": _cell_class(counts),
                      "worst": summary.worst_per_cell.get(key)}
    for key, reason in summary.skipped.items():
        cells.setdefault(key, {"counts": {}, "class": "skipped", "reason": reason, "worst": None})
    rows = sorted({k[:4] for k in cells})
    columns = sorted({k[4:] for k in cells})
    return {"rows": [{"label": r, "cells": [cells.get(r + c) for c in columns]} for r in rows],
            "columns": columns}


class _FirstPass:
    """Summary counts, the worst comparisons (bounded) and training series, in one pass."""

    def __init__(self, cap: int, series_limit: int = 12) -> None:
        self.summary = Summary(cap=cap)
        self.cap, self.series_limit = cap, series_limit
        self.worst: dict[tuple, tuple] = {}
        self.series: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, record: dict) -> None:
        self.summary.add(record)
        if record.get("quantity") == "update" and record.get("step") is not None:
            label = f"{record.get('case_id')} {record.get('oracle')} {record.get('dtype')}"
            if label in self.series or len(self.series) < self.series_limit:
                self.series[label].append((int(record["step"]), number(record.get("margin"))))
        if record.get("quantity") == "skip" or record.get("verdict") == "agree":
            return
        key, rank = comparison_key(record), severity(record)
        if key not in self.worst or rank < self.worst[key]:
            self.worst[key] = rank
        if len(self.worst) > 8 * self.cap:
            self.worst = dict(sorted(self.worst.items(), key=lambda kv: kv[1])[:self.cap])

    def worst_keys(self) -> list[tuple]:
        return [k for k, _ in sorted(self.worst.items(), key=lambda kv: kv[1])[:self.cap]]

    def trajectories(self) -> str | None:
        if not self.series:
            return None
        return plots.trajectories({k: _max_per_step(v) for k, v in self.series.items()})


def _drilldowns(path: Path, keys: list[tuple]) -> list[dict]:
    wanted = set(keys)
    cases = {k[0] for k in keys}
    members: dict[tuple, list[dict]] = defaultdict(list)
    by_case_tensor: dict[tuple, list[dict]] = defaultdict(list)
    for record in read_records(path):
        if record.get("case_id") not in cases or record.get("quantity") == "skip":
            continue
        by_case_tensor[(record["case_id"], record.get("name"))].append(record)
        if comparison_key(record) in wanted:
            members[comparison_key(record)].append(record)
    out = []
    for i, key in enumerate(keys):
        recs = sorted(members[key], key=_tensor_order)
        if not recs:
            continue
        first = next((r.get("first_divergent_layer") for r in recs
                      if r.get("first_divergent_layer")), None)
        failing = sorted((r for r in recs if r.get("verdict") != "agree"), key=severity)
        top = failing[0] if failing else recs[0]
        others = [{"label": f"{r.get('oracle')}/{r.get('mode')} {r.get('device')} "
                            f"{r.get('precision', '')}",
                   "value": r.get("actual_value"), "index": r.get("worst_index"),
                   "verdict": r.get("verdict")}
                  for r in by_case_tensor[(key[0], top.get("name"))] if r.get("dtype") == key[6]]
        marked, how = _entry_points(first, recs)
        out.append({
            "id": f"drill-{i}", "key": dict(zip(COMPARISON_KEYS, key, strict=True)),
            "records": recs,
            "first": first, "how": how, "top": top, "others": others[:12],
            "detail": _detail(top.get("detail")),
            "bars": plots.layer_bars([str(r.get("name")) for r in recs],
                                     [number(r.get("margin")) for r in recs], marked),
        })
    return out


def _entry_points(first: object, recs: list[dict]) -> tuple[list[str], str]:
    """The tensors to mark where the divergence enters, and how it was located: the delta of
    layer ``first`` when it diverges, else that layer's diverging parameter gradients."""
    if first is None:
        return [], ""
    failing = [r for r in recs if r.get("verdict") in ("diverge", "nan")]
    delta = [str(r["name"]) for r in failing if r.get("name") == f"delta{first}"]
    if delta:
        return delta, "its delta diverges while every layer above it agrees"
    params = [str(r["name"]) for r in failing if r.get("quantity") == "grad"]
    return params, ("no delta diverges: a parameter gradient of this layer does, "
                    "so the error is in its BP3/BP4 step")


def _detail(value: object) -> str:
    if isinstance(value, dict):
        return " · ".join(f"{k}: {v}" for k, v in value.items())
    return "" if value is None else str(value)


def _tensor_order(record: dict) -> tuple:
    name = str(record.get("name"))
    digits = "".join(ch for ch in name if ch.isdigit())
    kind = {"loss": 0, "delta": 1, "grad": 2, "update": 3}.get(str(record.get("quantity")), 4)
    return kind, int(digits) if digits else 0, name


def _max_per_step(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for step, value in points:
        if math.isfinite(value):
            best[step] = max(best.get(step, 0.0), value)
    return sorted(best.items())


def build(records_path: Path, out_dir: Path, environment: dict | None = None,
          conventions: list[dict] | None = None, cap: int = 50,
          title: str = "backprop-oracle agreement report", interrupted: bool = False) -> Summary:
    """Write ``report.html`` and ``summary.md`` into ``out_dir``; return the summary
    (``interrupted``: the job was stopped, the report covers what finished)."""
    records_path, out_dir = Path(records_path), Path(out_dir)
    first = _FirstPass(cap)
    for record in read_records(records_path):
        first.add(record)
    summary = first.summary
    summary.interrupted = interrupted
    context = {
        "title": title,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summary, "verdicts": VERDICTS,
        "counts": {v: summary.verdicts.get(v, 0) for v in VERDICTS},
        "matrix": _matrix(summary), "matrix_keys": MATRIX_KEYS,
        "drilldowns": _drilldowns(records_path, first.worst_keys()),
        "histogram": plots.margin_histograms(summary.margins) if summary.margins else None,
        "largest": sorted(summary.to_json()["largest_margin"].items()),
        "trajectories": first.trajectories(),
        "conventions": conventions or [], "environment": environment or {},
    }
    env = _environment()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(env.get_template("report.html.j2").render(**context),
                                         encoding="utf-8")
    (out_dir / "summary.md").write_text(env.get_template("summary.md.j2").render(**context),
                                        encoding="utf-8")
    return summary
