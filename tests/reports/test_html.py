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


def test_closest_calls_are_the_largest_margins_of_a_long_run(tmp_path) -> None:
    """Many agreeing comparisons, the nearest their tolerance first and small ones after:
    the closest calls are exactly the ``CLOSEST`` largest margins (the bounded set kept while
    streaming holds later, smaller ones too, which must not be listed)."""
    margins = [0.9 - 0.01 * i for i in range(html.CLOSEST)] + [1e-3 * (i + 1) for i in range(60)]
    records = [record(f"case{i}", margin=m) for i, m in enumerate(margins)]
    _, page, _ = build(tmp_path, records)
    rows = re.findall(r'<tr class="worst-row">.*?</tr>', page, re.S)
    assert [re.search(r">(case\d+)<", r).group(1) for r in rows] == [
        f"case{i}" for i in range(html.CLOSEST)]


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
    # Markdown shows a code span's text literally (escaping it would show "&lt;"); outside
    # code spans every user string is escaped
    assert f"`{EVIL}`" in md and "&lt;" not in "".join(re.findall(r"`[^`]*`", md))
    assert "<script" not in re.sub(r"`[^`]*`", "", md)


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


def test_all_agree_report_shows_the_closest_calls(tmp_path) -> None:
    """No divergence: the largest error / tolerance is drilled into, never unsupported or
    skipped records, which get a plain panel with their reason (no agreement bar)."""
    unsupported = record("u", oracle="jax", verdict="unsupported", quantity="run", name="-",
                         margin=0.0, detail={"reason": "jax has no l2pool"})
    records = [record("a", margin=1e-3), record("b", margin=0.4), record("b", name="b1"),
               record("c", margin=1e-6), unsupported, skip()]
    summary, page, md = build(tmp_path, records)
    assert summary.exit_code == 0
    assert 'id="closest-calls"' in page and "Nothing but agreement" not in page
    rows = re.findall(r'<tr class="worst-row">.*?</tr>', page, re.S)
    assert len(rows) == 3 and ">b<" in rows[0] and ">c<" in rows[-1]  # closest first
    assert 'id="drill-0"' in page and "case <code>b</code>" in page
    assert "case <code>u</code>" not in page.split('id="not-compared"')[0]  # never "worst"
    panels = page.split('id="not-compared"')[1].split("<h2")[0]
    assert "jax has no l2pool" in panels and "no CUDA device present" in panels
    assert "<svg" not in panels and "tolerance 0" not in panels
    assert "### Closest calls" in md and "jax has no l2pool" in md


def test_every_oracle_is_shown_at_the_same_element(tmp_path) -> None:
    """Records hold each oracle's values at the others' worst elements (``cross_values``): the
    drill-down's table shows every oracle's value at the top record's element, and where an
    oracle's own worst element is another one, that too."""
    values = {"1,2": -0.7511, "0,1": -0.7533}
    records = [record("x", margin=0.5, worst_index=(1, 2), actual_value=0.2511),
               record("x", oracle="jax", margin=0.1, worst_index=(1, 2), actual_value=0.2522),
               record("x", oracle="fd", mode="fd", margin=0.2, worst_index=(0, 1),
                      expected_value=-0.75, actual_value=-0.7533, detail={"values": values})]
    _, page, _ = build(tmp_path, records)
    table = re.search(r'<table class="same-element">.*?</table>', page, re.S).group(0)
    assert table.count('class="same"') == 3 and "not recorded" not in table
    fd = next(row for row in re.findall(r"<tr.*?</tr>", table, re.S) if "fd/fd" in row)
    assert "-0.7511" in fd and "values:" not in page  # its value at (1, 2), no raw dict ...
    assert "(0, 1)" in fd and "-0.753" in fd  # ... and its own worst element


def test_old_records_without_values_are_labelled(tmp_path) -> None:
    """Records without ``detail["values"]`` (before 0.3, or a replaced worker): a value "at
    (i, j)" only for oracles whose record is at that element; the others are labelled with
    their own worst element, never shown as if it were the same element."""
    records = [record("x", margin=0.5, worst_index=(1, 2), actual_value=0.2511),
               record("x", oracle="jax", margin=0.1, worst_index=(1, 2), actual_value=0.2522),
               record("x", oracle="fd", mode="fd", margin=0.2, worst_index=(0, 1),
                      expected_value=-0.75, actual_value=-0.7533)]
    _, page, _ = build(tmp_path, records)
    table = re.search(r'<table class="same-element">.*?</table>', page, re.S).group(0)
    assert "value at (1, 2)" in table
    assert table.count('class="same"') == 2 and "0.252" in table and "0.251" in table
    fd = next(row for row in re.findall(r"<tr.*?</tr>", table, re.S) if "fd/fd" in row)
    assert "not recorded" in fd and "(0, 1)" in fd and "-0.753" in fd


def test_blame_vote_is_a_sentence_and_a_table(tmp_path) -> None:
    vote = {"blame": "torch", "votes": {"reference vs torch": "diverge",
                                         "reference vs fd": "agree", "fd vs torch": "diverge"}}
    records = [replace(r, detail=vote) for r in planted_divergence()]
    _, page, _ = build(tmp_path, records)
    assert "torch is the odd one out" in page
    assert '<table class="votes">' in page and "<td>fd vs torch</td>" in page
    assert "{&#39;" not in page and "votes:" not in page  # no raw dict


def test_summary_md_lists_one_comparison_per_line(tmp_path) -> None:
    records = [record(f"k{i}", verdict="kink", margin=2.0 + i, name="a<b") for i in range(3)]
    _, _, md = build(tmp_path, records)
    items = [line for line in md.splitlines() if re.match(r"\d+\. ", line)]
    assert len(items) == 3 and all("`a<b`" in line for line in items)
