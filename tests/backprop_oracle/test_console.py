"""What the console shows a user: plain progress lines off a terminal, check's summary (one
line per failing case, counts labelled), the replay table, device aliases, tie-breakers
imported only when needed, and no warnings while drawing cases."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.cli import Progress, main
from backprop_oracle.oracles import registry
from backprop_oracle.properties.campaign.engine import RunConfig, placements

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"max_width": 5, "max_batch": 4, "max_layers": 3}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def test_plain_progress_lines_at_an_interval() -> None:
    stream = io.StringIO()
    with Progress(stream=stream, tty=False, interval=0.05) as progress:
        progress.status("importing PyTorch and JAX")
        time.sleep(0.3)
        progress.update(3, 8)
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert "importing PyTorch and JAX" in lines[0]
    assert sum("no cases finished yet" in line for line in lines) >= 2, lines
    assert sum("3/8 cases finished (37%)" in line for line in lines) >= 2, lines


def test_run_off_a_terminal_prints_progress_lines(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "backprop_oracle.cli", "run", "--cases", "1", "--families", "mlp",
         "--oracles", "fd", "--dtypes", "float64", "--case-timeout", "0",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=_env(BO_PROGRESS_SECONDS="0.05"), timeout=300,
        cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "running 1 cases" in proc.stdout
    assert re.search(r"^\[\d+s\] 1/1 cases finished \(100%\)$", proc.stdout, re.M), proc.stdout
    assert "\r" not in proc.stdout + proc.stderr  # no tqdm bar in a log
    assert proc.stderr == "", "stderr is for errors only"
    assert re.search(r"^\d+ records \(1 cases\): \d+ agree$", proc.stdout, re.M), proc.stdout


def _two_bad_cases(case: bo.Case) -> dict:
    grads = dict(bo.backprop(case).grads)
    if case.case_id == BAD["nan"]:
        grads["W1"] = np.full_like(grads["W1"], np.nan)
        grads["b1"] = np.full_like(grads["b1"], np.nan)
    elif case.case_id == BAD["wrong"]:
        grads["W2"] = grads["W2"] * 2 + 1
    return grads


BAD: dict[str, str] = {}


def test_check_summary_lists_each_failing_case_once(monkeypatch) -> None:
    cases = bo.cases("mlp", 5, seed=3, max_layers=3, max_width=5, max_batch=4)
    cases = [c for c in cases if len(c.layers) >= 2][:3]
    BAD.update(nan=cases[0].case_id, wrong=cases[1].case_id)
    report = bo.check(_two_bad_cases, cases, tiebreakers=())
    text = report.summary()
    lines = text.splitlines()
    assert lines[0].endswith("3 cases: 1 agree, 1 nan, 1 diverge"), text
    assert re.match(r"  \d+ records \(one per compared tensor, as summary.md counts them\): "
                    r"\d+ agree, 2 nan, \d+ diverge$", lines[1]), text
    assert lines[2].startswith("failing cases (2):"), text
    failing = lines[3:]
    assert len(failing) == 2, text
    nan_line, wrong_line = failing
    assert nan_line.split()[:5] == [BAD["nan"], "nan", "W1", "layer", "1"], nan_line
    assert "+1 more failing tensors" in nan_line
    assert wrong_line.split()[:6] == [BAD["wrong"], "diverge", "(wrong)", "W2", "layer", "2"], (
        wrong_line)
    assert re.search(r"margin \d", wrong_line), wrong_line
    for line, case in zip(failing, cases, strict=False):
        arch = case.describe()
        assert arch not in line or len(arch) <= 60
        assert line.count(arch[:30]) == 1, line


def test_summary_shortens_the_architecture() -> None:
    from backprop_oracle.properties.check.api import shorten

    assert shorten("x" * 100, 60) == "x" * 59 + "…"
    assert shorten("short") == "short"


def test_replay_table_columns_line_up(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["run", "--cases", "1", "--families", "mlp", "--oracles", "fd,torch",
                 "--modes", "reverse", "--dtypes", "float64", "--case-timeout", "0",
                 "--out", str(out)]) == 0
    case_id = next((out / "cases").glob("*.json")).stem
    capsys.readouterr()
    assert main(["replay", case_id, "--from", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:]
    firsts = {r.split()[0] for r in rows}
    assert "torch/reverse" in firsts and any(f.startswith("fd/") for f in firsts), rows
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", header)]
    for row in rows:  # every left-aligned column starts where its header does
        for start in starts[:3]:
            assert row[start - 1] == " " and row[start] != " ", (header, row)
        assert len(row) == len(header), (header, row)  # right-aligned numbers end together


def test_cuda_and_gpu_are_one_accelerator_choice() -> None:
    torch, jax = registry.make("torch"), registry.make("jax")
    config = RunConfig(devices=("cpu", "cuda"))
    assert placements(config, torch) == ["cpu", "cuda"]
    assert placements(config, jax) == ["cpu", "gpu"]
    assert placements(RunConfig(devices=("cpu", "gpu", "cuda")), torch) == ["cpu", "cuda"]
    for oracle in (torch, jax):
        reason = oracle.available("cuda")
        assert reason is None or "not 'cuda'" not in reason
        assert oracle.available("gpu") == reason


def test_run_with_devices_cuda_skips_each_framework_under_its_own_name(tmp_path: Path) -> None:
    import json

    out = tmp_path / "out"
    main(["run", "--cases", "1", "--families", "mlp", "--oracles", "torch,jax", "--modes",
          "reverse", "--dtypes", "float64", "--devices", "cpu,cuda", "--case-timeout", "0",
          "--out", str(out)])
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    devices = {(r["oracle"], r["device"]) for r in records}
    assert {("torch", "cuda"), ("jax", "gpu")} <= devices, devices
    assert not {("jax", "cuda"), ("torch", "gpu")} & devices
    for r in records:
        if r["quantity"] == "skip":
            reason = r["detail"]["reason"]
            assert "knows devices" not in reason, reason
            if r["oracle"] == "jax":
                assert "gpu" in reason, reason


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter from the repository root."""
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True,
                          text=True, env=_env(), timeout=300, cwd=ROOT)


def test_a_check_that_agrees_never_imports_torch_or_jax() -> None:
    code = ("import sys, backprop_oracle as bo\n"
            "r = bo.check(lambda c: dict(bo.backprop(c).grads), 'mlp', n=3, seed=1,"
            " max_width=5, max_batch=4, max_layers=3)\n"
            "assert r.ok, r.summary()\n"
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert "break a tie" not in proc.stderr


def test_a_disagreeing_check_says_it_imports_the_tie_breakers() -> None:
    code = ("import backprop_oracle as bo\n"
            "def bad(c):\n"
            "    g = dict(bo.backprop(c).grads); g['W1'] = g['W1'] * 3 + 1; return g\n"
            "bo.check(bad, 'mlp', n=2, seed=1, max_width=5, max_batch=4, max_layers=3)\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("importing PyTorch and JAX to break a tie") == 1, proc.stderr


@pytest.mark.parametrize("family,n", [("mlp", 300), ("cnn", 150), ("softmax", 300),
                                      ("graph", 300)])
def test_drawing_raises_no_warning(family: str, n: int) -> None:
    code = (f"import backprop_oracle as bo\n"
            f"for seed in (0, 1):\n"
            f"    bo.cases({family!r}, {n}, seed=seed)\n"
            f"    bo.cases({family!r}, {n // 3}, seed=seed, kinks=True)\n")
    proc = _python(code, "-W", "error")
    assert proc.returncode == 0, proc.stderr
    assert not proc.stderr, proc.stderr
