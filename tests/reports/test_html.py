"""The HTML report: self-contained, escapes every user-provided string, shows the matrix,
the worst comparison with its drill-down, skipped cells with their reason; size bounded."""

from __future__ import annotations

import re
from dataclasses import replace

from backprop_oracle.properties.comparison.records import Record, RecordWriter
from backprop_oracle.reports import html

from ._records import planted_divergence, record, skip

EVIL = "<script>alert('x')</script>"


def build(tmp_path, records: list[Record], **kwargs: object):
    with RecordWriter(tmp_path / "records.jsonl") as writer:
        writer.write(records)
    summary = html.build(tmp_path / "records.jsonl", tmp_path, **kwargs)
    return summary, (tmp_path / "report.html").read_text(), (tmp_path / "summary.md").read_text()


def test_report_shows_matrix_divergence_and_drilldown(tmp_path) -> None:
    records = [record(f"ok{i}") for i in range(20)] + planted_divergence() + [skip()]
    summary, page, md = build(tmp_path, records, environment={"seed": "0"})
    assert summary.exit_code == 1
    assert 'id="agreement-matrix"' in page and "FAIL" in page
    assert 'href="#drill-0"' in page and 'id="drill-0"' in page
    assert "Divergence enters at layer 2" in page
    assert "skipped: no CUDA device present" in page
    assert "backprop-oracle replay bad --from out" in page
    assert "**FAIL**" in md and "enters at layer 2" in md


def test_report_is_self_contained(tmp_path) -> None:
    _, page, _ = build(tmp_path, planted_divergence())
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    assert "<svg" in page  # plots are inline


def test_user_strings_are_escaped(tmp_path) -> None:
    evil = [replace(r, oracle=EVIL, arch=f"mlp: {EVIL}", detail={"message": EVIL}, name=EVIL)
            for r in planted_divergence()]
    _, page, md = build(tmp_path, evil + [skip(reason=EVIL)], environment={"who": EVIL})
    assert EVIL not in page and "<script" not in page
    assert "&lt;script&gt;" in page
    assert EVIL not in md


def test_passing_report(tmp_path) -> None:
    summary, page, md = build(tmp_path, [record("a"), record("b", verdict="kink", margin=4.0)])
    assert summary.exit_code == 0
    assert "PASS" in page and "1 at non-differentiable points" in page
    assert "**PASS**" in md


def test_drilldowns_are_capped_and_size_bounded(tmp_path) -> None:
    records = []
    for i in range(400):
        records += planted_divergence(f"bad{i}")
    records += [record(f"ok{i}") for i in range(2000)]
    summary, page, _ = build(tmp_path, records, cap=20)
    assert page.count('class="drill"') == 20
    assert summary.verdicts["diverge"] == 1200
    assert len(page.encode()) < 3_000_000


def test_training_trajectories_are_plotted(tmp_path) -> None:
    steps = [record("t", quantity="update", name="W1", step=k, margin=10.0 ** (k - 9))
             for k in range(5)]
    _, page, _ = build(tmp_path, steps)
    assert 'id="training"' in page


def test_parameter_only_divergence_is_located_at_its_parameter(tmp_path) -> None:
    """A BP3/BP4 bug: every delta agrees, b2 diverges; the drill-down says so and marks b2."""
    records = [record("p", name="delta2", quantity="delta", margin=1e-3, first=2),
               record("p", name="b2", margin=1e6, verdict="diverge", first=2)]
    _, page, _ = build(tmp_path, records)
    assert "a parameter gradient of this layer does" in page
    assert "b2  ◀ enters here" in page and "delta2  ◀ enters here" not in page


def test_records_without_a_replay_command_show_no_empty_one(tmp_path) -> None:
    """``bo.check`` from Python has no command line to replay a case with."""
    records = [replace(r, replay="") for r in planted_divergence()]
    _, page, md = build(tmp_path, records)
    assert "Replay:" not in page and "— ``" not in md
    assert "enters at layer 2" in md
