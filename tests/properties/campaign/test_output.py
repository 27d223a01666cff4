"""properties/campaign/output.py: the descriptions of an output folder are replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backprop_oracle.properties.campaign.output import Output


def test_a_write_that_fails_halfway_leaves_the_old_run_json_whole(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """The workers of ``pytest -n`` save failures into one ``.bo-failures/``: a ``run.json``
    being written must never be read, or left, half written."""
    output = Output(tmp_path, fresh=False)
    output.describe({"oracles": ["fd"]})
    real = Path.write_text

    def half_then_fail(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        output.describe({"oracles": ["torch", "jax"], "dtypes": ["float32"] * 100})
    monkeypatch.undo()
    output.close()
    assert json.loads((tmp_path / "run.json").read_text()) == {"oracles": ["fd"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl", "run.json"]
