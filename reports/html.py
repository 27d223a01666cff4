"""Builds ``report.html`` (self-contained: inline CSS and SVG, no network) and
``summary.md`` from ``records.jsonl``, with Jinja2 (autoescaping every user-provided string)
and matplotlib. Two streaming passes over the records keep memory bounded whatever their
number: the first counts (``Summary``), bins the margins and picks the worst comparisons, the
second reads only the lines of the cases those drill-downs show (other lines are skipped
unparsed). The page is bounded too: at most ``cap`` drill-downs and ``cap`` not-compared
entries, ``SERIES`` training trajectories; each list states how many records it leaves out."""

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


CLOSEST = 5  # closest calls drilled into when every comparison agrees
SERIES = 12  # training trajectories plotted


class _FirstPass:
    """Summary counts, the worst comparisons (bounded) and training series, in one pass."""

    def __init__(self, cap: int, series_limit: int = SERIES) -> None:
        self.summary = Summary(cap=cap)
        self.cap, self.series_limit = cap, series_limit
        self.worst: dict[tuple, tuple] = {}
        self.closest: dict[tuple, tuple] = {}  # agreeing comparisons nearest their tolerance
        self.not_compared: dict[tuple, dict] = {}  # unsupported and skipped, one per reason
        self.not_compared_records = 0  # all of them, listed or not
        self.series: dict[str, dict[int, float]] = defaultdict(dict)  # step -> worst margin
        self.series_left_out = 0  # update records of trajectories beyond ``series_limit``

    def add(self, record: dict) -> None:
        self.summary.add(record)
        if record.get("quantity") == "update" and record.get("step") is not None:
            self._step(record)
        if record.get("quantity") == "skip" or record.get("verdict") == "unsupported":
            self._not_compared(record)  # never "worst": nothing was compared
            return
        key, rank = comparison_key(record), severity(record)
        if record.get("verdict") == "agree":
            _keep_lowest(self.closest, key, rank, CLOSEST)
        else:
            _keep_lowest(self.worst, key, rank, self.cap)

    def _step(self, record: dict) -> None:
        """Keep the worst finite margin per step of the first ``series_limit`` trajectories
        (case, oracle, dtype); count the update records of the others."""
        label = f"{record.get('case_id')} {record.get('oracle')} {record.get('dtype')}"
        if label not in self.series and len(self.series) >= self.series_limit:
            self.series_left_out += 1
            return
        best, step, margin = self.series[label], int(record["step"]), number(record.get("margin"))
        if math.isfinite(margin):
            best[step] = max(best.get(step, 0.0), margin)

    def _not_compared(self, record: dict) -> None:
        self.not_compared_records += 1
        reason = _reason(record.get("detail"))
        key = cell_key(record) + (reason,)
        if key in self.not_compared:
            self.not_compared[key]["records"] += 1
        elif len(self.not_compared) < self.cap:
            self.not_compared[key] = {
                "id": f"not-compared-{len(self.not_compared)}",
                "key": dict(zip(MATRIX_KEYS, key, strict=False)), "reason": reason,
                "what": "skipped combination" if record.get("quantity") == "skip"
                else "unsupported", "case_id": record.get("case_id"), "records": 1}

    @property
    def not_compared_left_out(self) -> int:
        """Records that compared nothing and are not listed (their reason was not among the
        first ``cap`` distinct ones)."""
        return self.not_compared_records - sum(n["records"] for n in self.not_compared.values())

    def worst_keys(self) -> list[tuple]:
        """The worst comparisons (not agreeing), or, when every comparison agrees, the
        closest calls: the agreeing ones with the largest error / tolerance."""
        ranked, shown = (self.worst, self.cap) if self.worst else (self.closest, CLOSEST)
        # only the first ``shown`` are sure: the bounded set also holds later, lesser ones
        return [k for k, _ in sorted(ranked.items(), key=lambda kv: kv[1])[:shown]]

    def trajectories(self) -> str | None:
        series = {k: sorted(v.items()) for k, v in self.series.items() if v}
        return plots.trajectories(series) if series else None


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
    """The drill-downs of the comparisons ``keys``, from a second pass that parses only the
    lines of their cases."""
    wanted = set(keys)
    cases = {k[0] for k in keys}
    members: dict[tuple, list[dict]] = defaultdict(list)
    by_case_tensor: dict[tuple, list[dict]] = defaultdict(list)
    for record in read_records(path, case_ids=cases) if cases else ():
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
            "records": tensors, "shown": sum(r.get("verdict") in NOT_AGREEING for r in recs),
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
NOT_AGREEING = ("diverge", "nan", "oracle_error", "kink")  # what the worst comparisons show


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
    context = _context(first, drilldowns, title, conventions or [], environment or {})
    env = _environment()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("report.html", "summary.md"):
        with open(out_dir / name, "w", encoding="utf-8") as f:  # streamed, not one string
            for chunk in env.get_template(f"{name}.j2").generate(**context):
                f.write(chunk)
    return summary


def _context(first: _FirstPass, drilldowns: list[dict], title: str, conventions: list[dict],
             environment: dict) -> dict:
    """What the templates show, with the counts of what each bounded list leaves out."""
    summary = first.summary
    counts = {v: summary.verdicts.get(v, 0) for v in VERDICTS}
    closest = bool(drilldowns) and not first.worst
    listed = counts["agree"] if closest else sum(counts[v] for v in NOT_AGREEING)
    return {
        "title": title,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summary, "verdicts": VERDICTS, "counts": counts,
        "matrix": _matrix(summary), "matrix_keys": MATRIX_KEYS,
        "drilldowns": drilldowns, "closest": closest,
        "worst_left_out": 0 if closest else listed - sum(d["shown"] for d in drilldowns),
        "worst_total": listed,
        "not_compared": list(first.not_compared.values()),
        "not_compared_left_out": first.not_compared_left_out,
        "histogram": plots.margin_histograms({k: h.bins for k, h in summary.headroom.items()})
        if summary.headroom else None,
        "largest": sorted(summary.to_json()["largest_margin"].items()),
        "trajectories": first.trajectories(), "series_left_out": first.series_left_out,
        "trajectories_shown": len(first.series),
        "conventions": conventions, "environment": environment,
    }
