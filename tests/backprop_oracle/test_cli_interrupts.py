"""Interrupts and hangs, the way a user meets them: the real CLI in a subprocess, the real
signal, a real adapter that hangs or exits. Every stop ends with exit 130, complete JSONL
lines and a summary marked interrupted; a hanging case is killed and recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "backprop_oracle.cli"]
# offsets (s) after start: Python and torch/JAX imports, the JAX compile of the first case,
# and the middle of later cases
OFFSETS = [0.3, 0.6, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0,
           16.0, 18.0, 20.0, 24.0]
GRACE = 30.0  # seconds to stop after the signal, four runs at once on a loaded 2-core box


def _stop_a_run(offset: float, signum: int, out: Path) -> tuple[int, float, str]:
    # --workers 1: four runs at once on Dask workers would be 12 framework processes on the
    # two cores these figures are for; test_cli_cluster stops runs on Dask workers
    process = subprocess.Popen([*CLI, "run", "--families", "cnn,mlp", "--cases", "200",
                                "--workers", "1", "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(offset)
    process.send_signal(signum)
    start = time.monotonic()
    _, err = process.communicate(timeout=120)
    return process.returncode, time.monotonic() - start, err


def _assert_interrupted_output(out: Path) -> None:
    text = (out / "records.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "a truncated last line"
    for line in text.splitlines():
        json.loads(line)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    assert "INTERRUPTED" in (out / "summary.md").read_text()
    assert (out / "report.html").is_file()


def test_run_stops_cleanly_on_sigint_and_sigterm_at_many_offsets(tmp_path) -> None:
    trials = [(offset, signal.SIGINT if i % 2 else signal.SIGTERM, tmp_path / f"t{i}")
              for i, offset in enumerate(OFFSETS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: _stop_a_run(*t), trials))
    for (offset, signum, out), (code, took, err) in zip(trials, results, strict=True):
        where = f"{signal.Signals(signum).name} at {offset} s"
        assert code == 130, f"{where}: exit {code}\n{err}"
        assert took < GRACE, f"{where}: took {took:.1f} s to stop"
        assert err.strip().splitlines() == [err.strip()], f"{where}: stderr is not one line:\n{err}"
        assert err.startswith("interrupted:"), f"{where}: {err}"
        _assert_interrupted_output(out)


def test_a_second_signal_stops_at_once(tmp_path) -> None:
    process = subprocess.Popen([*CLI, "run", "--families", "cnn", "--cases", "200",
                                "--out", str(tmp_path)], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL)
    time.sleep(3.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - start < 5, err
    assert "stopping at once" in err


ADAPTERS = '''
import os, time
from pathlib import Path
import backprop_oracle as bo

def calls():
    """How many times an adapter was called, across processes (a counter file)."""
    counter = Path(os.environ["BO_TEST_COUNTER"])
    n = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n

def slow(case):
    time.sleep(0.5)
    return dict(bo.backprop(case).grads)

def hangs_on_the_second(case):
    if calls() == 2:
        time.sleep(10_000)
    return dict(bo.backprop(case).grads)

def exits(case):
    n = calls()
    if n == 1:
        raise SystemExit(3)
    if n == 2:
        raise KeyboardInterrupt
    return dict(bo.backprop(case).grads)
'''
MARK = "BO_TEST_MARK"


def _env(tmp_path: Path, mark: str = "") -> dict[str, str]:
    return {**os.environ, "BO_TEST_COUNTER": str(tmp_path / "calls"), MARK: mark}


def _marked(mark: str) -> list[int]:
    """Processes still alive whose environment carries ``mark`` (children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{MARK}={mark}".encode() in \
                    (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def adapters(tmp_path) -> Path:
    path = tmp_path / "adapters.py"
    path.write_text(ADAPTERS)
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_check_keeps_its_finished_cases(adapters, tmp_path, signum) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen([*CLI, "check", f"{adapters}:slow", "--families", "mlp",
                                "--cases", "200", "--no-tiebreak", "--case-timeout", "0",
                                "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until some cases are written
        records = out / "records.jsonl"
        if records.exists() and len(records.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    _assert_interrupted_output(out)
    assert {json.loads(line)["case_id"] for line in
            (out / "records.jsonl").read_text().splitlines()}, "finished cases are kept"


@pytest.mark.parametrize("timeout", ["0", "60"], ids=["in-process", "worker"])
def test_an_adapter_that_exits_is_an_oracle_error_and_the_check_goes_on(adapters, tmp_path,
                                                                        timeout) -> None:
    out = tmp_path / "out"
    done = subprocess.run([*CLI, "check", f"{adapters}:exits", "--families", "mlp", "--cases",
                           "3", "--no-tiebreak", "--case-timeout", timeout, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    errors = [r for r in records if r["verdict"] == "oracle_error"]
    assert [r["detail"]["message"] for r in errors] == [
        "the implementation raised SystemExit(3)",
        "the implementation raised KeyboardInterrupt()"]
    assert len({r["case_id"] for r in records}) == 3, "every case was checked"
    assert {r["verdict"] for r in records} - {"oracle_error"} == {"agree"}


def test_a_hanging_adapter_is_stopped_and_recorded(adapters, tmp_path) -> None:
    out, mark = tmp_path / "out", f"hang-{os.getpid()}-{time.time_ns()}"
    start = time.monotonic()
    process = subprocess.Popen([*CLI, "check", f"{adapters}:hangs_on_the_second", "--families",
                                "mlp", "--cases", "3", "--no-tiebreak", "--case-timeout", "5",
                                "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_env(tmp_path, mark))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert time.monotonic() - start < 120
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    timed_out = [r for r in records if r["verdict"] == "oracle_error"]
    assert len(timed_out) == 1 and "ran past the time limit of 5 s" in \
        timed_out[0]["detail"]["message"]
    assert len({r["case_id"] for r in records}) == 3, "the cases after it still ran"
    time.sleep(1.0)  # the forkserver notices its parent is gone
    assert not _marked(mark), "no process of the check is left behind"
