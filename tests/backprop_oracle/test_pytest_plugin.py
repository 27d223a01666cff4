"""``pytest --bo-report DIR`` under pytest-xdist: the real pytest in a subprocess, two
workers, one report. Every worker's records end up in the one ``records.jsonl``; the summary
and the HTML are built once, by the controller, from all of them; the workers' parts are gone
and no part of an earlier session is merged. And the tests that must not run beside each other
(``tests/conftest.py``'s ``SERIAL``) do share one worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = 24
TINY = f'''
import os

import pytest

import backprop_oracle as bo
from backprop_oracle.properties.comparison.records import Record


@pytest.mark.parametrize("i", range({TESTS}))
def test_record(bo_record, i):
    case = bo.cases("mlp", 1, seed=i % 4, max_layers=2, max_width=3)[0]  # cases shared
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    bo_record(case, [Record(case_id=case.case_id, family="mlp", oracle=worker, mode="reverse",
                            device="cpu", dtype="float64", quantity="grad", name=f"W{{i}}",
                            margin=0.25)])
'''


def _pytest(tmp_path: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The real pytest on the tiny file, in a clean environment (not this worker's)."""
    (tmp_path / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_tiny.py", "--bo-report", str(out), *options],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)


def test_two_workers_make_one_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / ".parts").mkdir(parents=True)
    (out / ".parts" / "gw7.jsonl").write_text('{"case_id": "stale"}\n')  # an earlier session
    done = _pytest(tmp_path, out, "-n", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == TESTS and {r["oracle"] for r in records} == {"gw0", "gw1"}
    assert sorted(r["name"] for r in records) == sorted(f"W{i}" for i in range(TESTS))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == TESTS and summary["verdicts"]["agree"] == TESTS
    assert summary["cases"] == 4 and len(list((out / "cases").glob("*.npz"))) == 4
    page = (out / "report.html").read_text()
    assert "gw0" in page and "gw1" in page and f"{TESTS} records" in page
    assert not (out / ".parts").exists() and not list((out / "cases").glob(".*"))
    assert f"backprop-oracle: {TESTS} records -> {out / 'report.html'}" in done.stdout


def test_without_workers_the_report_is_the_same(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = _pytest(tmp_path, out, "-n", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == TESTS and {r["oracle"] for r in records} == {"main"}
    assert json.loads((out / "summary.json").read_text())["records"] == TESTS
    assert f"backprop-oracle: {TESTS} records -> {out / 'report.html'}" in done.stdout


def test_the_serial_tests_run_on_one_worker() -> None:
    """``tests/conftest.py``'s ``SERIAL`` tests (here the two timed ones of test_drawing.py)
    go to one worker, one after another, while the others are spread over both."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                           "-n", "2", "tests/properties/cases/test_drawing.py", "-k",
                           "draw_ahead or huge_width or bad_seed or bad_indices"],
                          capture_output=True, text=True, cwd=root, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {re.sub(r"\[.*", "", test): worker for worker, test in re.findall(
        r"^\[(gw\d)\] .*PASSED \S+::(\S+)", done.stdout, re.M)}
    assert workers["test_iter_cases_does_not_draw_ahead"] == \
        workers["test_a_huge_width_is_refused_before_allocating"], done.stdout
    assert set(workers.values()) == {"gw0", "gw1"}, done.stdout
