"""Builds ``report.html`` (self-contained: inline CSS and SVG, no network) and
``summary.md`` from ``records.jsonl``, with Jinja2 (autoescaping every user-provided string)
and matplotlib. Two passes over the records keep memory bounded: the first counts and picks
the worst comparisons, the second collects the records those drill-downs show. Beyond the
cap of drill-downs, comparisons are only counted."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..properties.comparison.records import index_key, number, read_records
from . import plots
from .summary import MATRIX_KEYS, VERDICTS, Summary, cell_key, severity

COMPARISON_KEYS = ("case_id",) + MATRIX_KEYS


def comparison_key(record: dict) -> tuple[str, ...]:
    return tuple(str(record.get(k, "-")) for k in COMPARISON_KEYS)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("backprop_oracle.reports", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["sci"] = lambda v: "–" if v is None or v == "" else (
        f"{number(v):.3g}" if isinstance(v, (int, float, str)) and _is_number(v) else str(v))
    env.filters["index"] = lambda v: ("(" + ", ".join(str(i) for i in v) + ")"
                                      if isinstance(v, (list, tuple)) else str(v))
    env.filters["md_code"] = md_code
    env.filters["full"] = lambda v: "–" if v is None or not _is_number(v) else repr(number(v))
    return env


def md_code(value: object) -> Markup:
    """A Markdown code span holding ``value`` verbatim (for ``summary.md`` only): Markdown
    shows a code span's text literally, so it is not HTML-escaped (that would show a literal
    ``&lt;``); the fence is longer than any run of backticks inside."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


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
        self.closest: dict[tuple, tuple] = {}  # agreeing comparisons nearest their tolerance
        self.not_compared: dict[tuple, dict] = {}  # unsupported and skipped, one per reason
        self.series: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, record: dict) -> None:
        self.summary.add(record)
        if record.get("quantity") == "update" and record.get("step") is not None:
            label = f"{record.get('case_id')} {record.get('oracle')} {record.get('dtype')}"
            if label in self.series or len(self.series) < self.series_limit:
                self.series[label].append((int(record["step"]), number(record.get("margin"))))
        if record.get("quantity") == "skip" or record.get("verdict") == "unsupported":
            self._not_compared(record)  # never "worst": nothing was compared
            return
        key, rank = comparison_key(record), severity(record)
        if record.get("verdict") == "agree":
            _keep_lowest(self.closest, key, rank, CLOSEST)
        else:
            _keep_lowest(self.worst, key, rank, self.cap)

    def _not_compared(self, record: dict) -> None:
        reason = _reason(record.get("detail"))
        key = cell_key(record) + (reason,)
        if key not in self.not_compared and len(self.not_compared) < self.cap:
            self.not_compared[key] = {
                "id": f"not-compared-{len(self.not_compared)}",
                "key": dict(zip(MATRIX_KEYS, key, strict=False)), "reason": reason,
                "what": "skipped combination" if record.get("quantity") == "skip"
                else "unsupported", "case_id": record.get("case_id")}

    def worst_keys(self) -> list[tuple]:
        """The worst comparisons (not agreeing), or, when every comparison agrees, the
        closest calls: the agreeing ones with the largest error / tolerance."""
        ranked = self.worst or self.closest
        return [k for k, _ in sorted(ranked.items(), key=lambda kv: kv[1])[:self.cap]]

    def trajectories(self) -> str | None:
        if not self.series:
            return None
        return plots.trajectories({k: _max_per_step(v) for k, v in self.series.items()})


CLOSEST = 5  # closest calls drilled into when every comparison agrees


def _keep_lowest(ranks: dict[tuple, tuple], key: tuple, rank: tuple, cap: int) -> None:
    if key not in ranks or rank < ranks[key]:
        ranks[key] = rank
    if len(ranks) > 8 * cap:
        kept = sorted(ranks.items(), key=lambda kv: kv[1])[:cap]
        ranks.clear()
        ranks.update(kept)


def _reason(detail: object) -> str:
    """Why a record compared nothing (or why the oracle failed), in words."""
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("message") or detail.get("type")
                   or "no reason given")
    return str(detail) if detail else "no reason given"


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
        top = min(recs, key=severity)  # failing first, then the largest error / tolerance
        tensors = [r for r in recs if r.get("quantity") not in EVENTS]
        event = top.get("quantity") in EVENTS  # the oracle raised: nothing to plot for it
        marked, how = _entry_points(first, recs)
        out.append({
            "id": f"drill-{i}", "key": dict(zip(COMPARISON_KEYS, key, strict=True)),
            "records": tensors,
            "first": first, "how": how, "top": top,
            "enters": str((top.get("detail") or {}).get("enters") or ""),
            "oracles": None if event else _same_element(
                top, by_case_tensor[(key[0], top.get("name"))], key[6]),
            "detail": _detail(top.get("detail")),
            "reason": _reason(top.get("detail")) if event else "",
            "bars": plots.layer_bars([str(r.get("name")) for r in tensors],
                                     [number(r.get("margin")) for r in tensors], marked)
            if tensors else None,
        })
    return out


EVENTS = ("run", "skip")  # records that compared no tensor


def _same_element(top: dict, records: list[dict], dtype: str) -> dict:
    """Every oracle's record of ``top``'s tensor (same case and dtype), for the table "at
    ``top``'s worst element": each oracle's value there (``detail["values"]``, kept for every
    oracle's worst element by ``cross_values``). Where a record has no value there (written
    before 0.3, or its worker process was replaced), the table shows the oracle's own worst
    element, labelled as such, never as if it were the same element."""
    index = top.get("worst_index")
    key = index_key(index or ())
    rows = []
    for r in records:
        if r.get("dtype") != dtype or r.get("quantity") in EVENTS:
            continue
        values = (r.get("detail") or {}).get("values") or {}
        same = r.get("worst_index") == index or key in values
        value = values.get(key, r.get("actual_value")) if same else None
        rows.append({"label": f"{r.get('oracle')}/{r.get('mode')} {r.get('device')} "
                              f"{r.get('precision', '')}",
                     "verdict": r.get("verdict"), "margin": r.get("margin"), "same": same,
                     "value": value, "own_index": r.get("worst_index"),
                     "own_expected": r.get("expected_value"),
                     "own_value": r.get("actual_value"), "is_top": r is top})
    rows.sort(key=lambda row: (not row["is_top"], not row["same"]))
    return {"index": index, "reference": top.get("expected_value"), "rows": rows[:12],
            "n_same": sum(row["same"] for row in rows)}


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


def _detail(value: object) -> dict:
    """A record's detail for display: the tie-break vote (``blame``, ``votes``) as a sentence
    and a table of pairwise verdicts; any other fields as ``key: value`` text."""
    if not isinstance(value, dict):
        return {"text": "" if value is None else str(value), "vote": "", "votes": []}
    text = " · ".join(f"{k}: {v}" for k, v in value.items()
                      if k not in ("blame", "votes", "values", "enters"))
    blame, votes = value.get("blame"), value.get("votes")
    if blame is None:
        vote = ""
    elif blame == "undetermined":
        vote = ("Tie-break vote: undetermined — no single implementation disagrees with all "
                "the others while they agree with each other.")
    else:
        vote = (f"Tie-break vote: {blame} is the odd one out — it disagrees with every other "
                "implementation, and those agree with each other.")
    pairs = [(str(k), str(v)) for k, v in votes.items()] if isinstance(votes, dict) else []
    return {"text": text, "vote": vote, "votes": pairs}


def _tensor_order(record: dict) -> tuple:
    name = str(record.get("name"))
    digits = "".join(ch for ch in name if ch.isdigit())
    kind = {"loss": 0, "delta": 1, "input": 2, "grad": 3, "update": 4}.get(
        str(record.get("quantity")), 5)
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
    drilldowns = _drilldowns(records_path, first.worst_keys())
    context = {
        "title": title,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summary, "verdicts": VERDICTS,
        "counts": {v: summary.verdicts.get(v, 0) for v in VERDICTS},
        "matrix": _matrix(summary), "matrix_keys": MATRIX_KEYS,
        "drilldowns": drilldowns,
        "closest": bool(drilldowns) and not first.worst,
        "not_compared": list(first.not_compared.values()),
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
