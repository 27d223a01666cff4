"""Behaviour pinned: the records of a fixed campaign and of two ``check`` runs are those of
the golden files (``golden.py`` says how they were made and what is compared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import golden


@pytest.mark.parametrize("name", sorted(golden.RUNS))
def test_records_match_the_golden_files(name: str, tmp_path: Path) -> None:
    stored = [json.loads(line) for line in
              (golden.HERE / f"{name}.jsonl").read_text().splitlines()]
    now = golden.produce(name, tmp_path / name)
    found = list(golden.differences(stored, now))
    assert not found, f"{len(found)} difference(s) from tests/golden/{name}.jsonl:\n" + \
        "\n".join(found[:40])


def test_the_comparison_finds_a_changed_verdict_and_a_lost_record() -> None:
    stored = [json.loads(line) for line in
              (golden.HERE / "check_buggy.jsonl").read_text().splitlines()]
    changed = [dict(r) for r in stored]
    changed[0]["verdict"] = "agree" if changed[0]["verdict"] != "agree" else "diverge"
    assert any("verdict" in d for d in golden.differences(stored, changed))
    assert any("missing record" in d for d in golden.differences(stored, stored[1:]))
    drifted = [dict(r) for r in stored]
    i = next(i for i, r in enumerate(stored) if r.get("tolerance"))
    drifted[i]["max_abs_err"] = stored[i]["max_abs_err"] + stored[i]["tolerance"]
    assert any("max_abs_err" in d for d in golden.differences(stored, drifted))
