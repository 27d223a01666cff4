"""Reports at campaign scale: the summary streams (the same as the in-memory computation on
the same records, memory flat in the number of records) and the HTML stays bounded (its
lists capped, with the count of what they leave out)."""

from __future__ import annotations

import math
import random
import re
import tracemalloc
from pathlib import Path

from backprop_oracle.properties.comparison.records import Record, RecordWriter, read_records
from backprop_oracle.reports import html
from backprop_oracle.reports.summary import summarise

from ._in_memory import in_memory_summary
from ._records import planted_divergence, record, skip

VERDICT_MIX = (("agree", 0.9), ("kink", 0.05), ("diverge", 0.03), ("nan", 0.01),
               ("oracle_error", 0.005), ("unsupported", 0.005))


def _mixed(n: int, seed: int = 0, cases: int | None = None) -> list[Record]:
    """``n`` records over families, oracles, dtypes and verdicts, margins over 20 decades
    (some exactly 0, some NaN), skipped combinations among them; ``cases``: that many case
    ids, reused (default: one per 7 records)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        verdict = rng.choices([v for v, _ in VERDICT_MIX], [w for _, w in VERDICT_MIX])[0]
        margin = (math.nan if verdict == "nan" else 0.0 if rng.random() < 0.02
                  else 10 ** rng.uniform(-14, 6))
        case = f"c{(i // 7) if cases is None else i % cases}"
        out.append(skip(family=rng.choice(("mlp", "cnn"))) if i % 997 == 0 else record(
            case, family=rng.choice(("mlp", "cnn", "softmax", "graph")),
            oracle=rng.choice(("fd", "torch", "jax")), dtype=rng.choice(("float32", "float64")),
            name=rng.choice(("W1", "b1", "delta1", "loss")), margin=margin, verdict=verdict,
            quantity="run" if verdict == "unsupported" else "grad"))
    return out


def _write(path: Path, records: list[Record]) -> Path:
    with RecordWriter(path) as writer:
        for start in range(0, len(records), 1000):
            writer.write(records[start:start + 1000])
    return path


def test_streamed_summary_equals_the_in_memory_one(tmp_path) -> None:
    """The same ``summary.json`` fields, the same worst records in the same order, and the
    headroom counted per quarter decade as numpy.histogram bins the full list of margins."""
    path = _write(tmp_path / "records.jsonl", _mixed(5000) + planted_divergence())
    expected = in_memory_summary(list(read_records(path)), cap=30)
    streamed = summarise(read_records(path), cap=30)
    data = streamed.to_json()
    assert data == {k: v for k, v in expected.items() if k not in ("worst", "histogram")}
    assert streamed.worst_records == expected["worst"]
    assert {k: dict(h.bins) for k, h in streamed.headroom.items()} == expected["histogram"]
    built = html.build(path, tmp_path, cap=30)  # the report's summary is the same one
    assert built.to_json() == data and built.worst_records == expected["worst"]


def _peak_kib(path: Path, tries: int = 3) -> float:
    """The smallest of ``tries`` peaks: tracemalloc counts every thread's allocations, and
    under pytest-xdist the worker's message thread allocates while a pass runs (one CI run
    saw 210 KiB more in one pass)."""
    peaks = []
    for _ in range(tries):
        tracemalloc.start()
        try:
            summarise(read_records(path))
            peaks.append(tracemalloc.get_traced_memory()[1] / 1024)
        finally:
            tracemalloc.stop()
    return min(peaks)


def test_summary_memory_does_not_grow_with_the_records(tmp_path) -> None:
    """Ten times the records over the same cases: the peak of the streamed summary grows by
    far less than the records' margins alone would take in a list (32 bytes each)."""
    small = _peak_kib(_write(tmp_path / "small.jsonl", _mixed(2_000, cases=40)))
    large = _peak_kib(_write(tmp_path / "large.jsonl", _mixed(20_000, seed=1, cases=40)))
    assert large - small < 18_000 * 32 / 1024 / 4, (small, large)


def _many(n_cases: int) -> list[Record]:
    """Per case a planted divergence, an unsupported oracle with its own reason and a
    training trajectory, plus agreeing tensors: every list of the report overflows."""
    out: list[Record] = []
    for i in range(n_cases):
        out += planted_divergence(f"bad{i}")
        out.append(record(f"bad{i}", oracle="jax", verdict="unsupported", quantity="run",
                          name="-", margin=0.0, detail={"reason": f"no kernel #{i}"}))
        out += [record(f"t{i}", quantity="update", name="W1", step=k, margin=1e-3)
                for k in range(3)]
        out += [record(f"ok{i}", name=f"W{k}") for k in range(1, 6)]
    return out


def test_html_size_is_bounded_as_records_grow(tmp_path) -> None:
    """10x the records (and 10x the divergences, reasons and trajectories): report.html and
    summary.md stay within a few percent in size, and say how much each list leaves out."""
    sizes = {}
    for n in (60, 600):
        out = tmp_path / str(n)
        _write(out / "records.jsonl", _many(n))
        summary = html.build(out / "records.jsonl", out, cap=10)
        page = (out / "report.html").read_text()
        md = (out / "summary.md").read_text()
        sizes[n] = len(page.encode()), len(md.encode())
        assert summary.verdicts["diverge"] == 3 * n
        assert page.count('class="drill"') == 10 and page.count('class="drill plain"') == 10
        left = re.search(r'id="worst-left-out">10 comparisons shown, the worst first; (\d+) of '
                         r"the (\d+) records", page)
        assert left and (int(left[1]), int(left[2])) == (3 * n - 30, 3 * n)
        assert f"{n - 10} more records compared nothing" in page
        assert f"{3 * (n - 12)} update records of others are not" in page
        assert f"{3 * n - 30} of the {3 * n} records that do not agree" in md
    assert sizes[600][0] < 1.05 * sizes[60][0] and sizes[600][1] < 1.05 * sizes[60][1], sizes
