"""Summary counts per matrix cell, skipped cells with reasons, worst-first ordering and the
exit code (0: agreement, kinks allowed; 1: a divergence or a one-sided NaN)."""

from __future__ import annotations

import pytest

from backprop_oracle.reports.summary import severity, summarise

from ._records import planted_divergence, record, skip


def test_counts_per_cell_and_verdict() -> None:
    records = [record("a"), record("a", name="b1"), record("b", dtype="float32"),
               record("c", verdict="kink", margin=3.0), skip()]
    s = summarise(r.to_dict() for r in records)
    assert s.verdicts == {"agree": 3, "kink": 1}
    assert s.matrix[("mlp", "torch", "reverse", "strict", "cpu", "float64")]["agree"] == 2
    assert s.matrix[("mlp", "torch", "reverse", "strict", "cpu", "float32")]["agree"] == 1
    assert s.skipped[("mlp", "torch", "reverse", "strict", "cuda", "float64")] == \
        "no CUDA device present"
    assert len(s.cases) == 3 and s.n_records == 5


@pytest.mark.parametrize("verdicts, code", [
    (["agree", "agree"], 0), (["agree", "kink"], 0), (["agree", "unsupported"], 0),
    (["agree", "diverge"], 1), (["nan"], 1), (["oracle_error", "agree"], 1),
])
def test_exit_code(verdicts: list[str], code: int) -> None:
    records = [record(f"c{i}", verdict=v).to_dict() for i, v in enumerate(verdicts)]
    assert summarise(records).exit_code == code


def test_worst_first_and_capped() -> None:
    records = [record(f"k{i}", verdict="kink", margin=float(i)) for i in range(300)]
    records += planted_divergence()
    s = summarise((r.to_dict() for r in records), cap=10)
    worst = s.worst_records
    assert len(worst) == 10
    assert [r["verdict"] for r in worst[:3]] == ["diverge"] * 3
    assert worst[0]["margin"] == 5e3
    assert worst[3]["margin"] == 299.0  # then kinks, largest margin first
    assert severity(worst[0]) < severity(worst[-1])


def test_largest_margin_per_family_and_dtype() -> None:
    data = summarise([r.to_dict() for r in (record("a", margin=0.1), record("b", margin=0.4),
                                            record("c", family="cnn", margin=0.2))]).to_json()
    assert data["largest_margin"] == {"mlp/float64": 0.4, "cnn/float64": 0.2}
