"""``backprop-oracle run`` and ``replay``: exit codes 0 / 1 / 2 / 130, one-line usage errors,
the report path printed, and an interrupted run still writing its report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from backprop_oracle import cli
from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.comparison.records import read_records

QUICK = ["--families", "graph,softmax", "--oracles", "fd", "--cases", "1", "--dtypes",
         "float64"]


def test_run_then_replay(tmp_path, capsys) -> None:
    assert cli.main(["run", *QUICK, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 cases" in out and str(tmp_path / "report.html") in out
    case_id = next(read_records(tmp_path / "records.jsonl"))["case_id"]
    assert cli.main(["replay", case_id, "--from", str(tmp_path)]) == 0
    assert "agree" in capsys.readouterr().out


def test_run_exit_one_on_a_divergence(tmp_path, monkeypatch, capsys) -> None:
    real = campaign.evaluate

    def planted(*args, **kwargs):
        return [replace(r, verdict="diverge") for r in real(*args, **kwargs)]

    monkeypatch.setattr(campaign, "evaluate", planted)
    assert cli.main(["run", *QUICK, "--case-timeout", "0", "--out", str(tmp_path)]) == 1
    assert "diverge" in capsys.readouterr().out


def test_interrupted_run_exits_130_with_a_report(tmp_path, monkeypatch, capsys) -> None:
    real = campaign.run

    def interrupted(config, out_dir, progress=None, stop=None, **kwargs):
        def after_the_first_case(done, total):
            stop.request()  # as the SIGINT handler does
        return real(config, out_dir, progress=after_the_first_case, stop=stop, **kwargs)

    monkeypatch.setattr(campaign, "run", interrupted)
    assert cli.main(["run", *QUICK, "--case-timeout", "0", "--out", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True
    assert len({r["case_id"] for r in read_records(tmp_path / "records.jsonl")}) == 1


@pytest.mark.parametrize("args, words", [
    (["run", "--families", "rnn"], "--families: unknown ['rnn']"),
    (["run", "--devices", "tpu"], "--devices: unknown ['tpu']"),
    (["run", "--cases", "-3"], "argument --cases: must be >= 1, got -3"),
    (["replay", "0123456789abcdef", "--from", "/nonexistent"], "holds no run.json"),
])
def test_bad_usage_is_one_line_and_exit_two(args, words, capsys) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
