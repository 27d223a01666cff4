"""``bo.check(workers=N | client=...)`` and ``check --workers``: the cases on a Dask cluster
give the records they give in one process, in the same order; an implementation that cannot
be sent to worker processes is a clear error; a wrong implementation is still caught there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import backprop_oracle as bo  # noqa: E402
from backprop_oracle.properties.campaign.cluster import HTTP_ADDRESS, NO_DASHBOARD  # noqa: E402
from backprop_oracle.properties.check.api import Report  # noqa: E402

from ..._processes import MARK, marked, new_mark  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"max_width": 4, "max_batch": 3, "max_layers": 2}


def correct(case: bo.Case) -> dict:
    result = bo.backprop(case)
    return {**result.grads, "loss": result.loss}


def halved_w1(case: bo.Case) -> dict:
    out = correct(case)
    out["W1"] = out["W1"] / 2
    return out


def comparable(report: Report) -> list[dict]:
    """The records without their time taken."""
    return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in report.records]


def test_two_workers_give_the_records_of_one_process() -> None:
    cases = bo.cases("mlp", 4, seed=3, **SMALL) + bo.cases("softmax", 2, seed=3, **SMALL)
    here = bo.check(correct, cases, tiebreakers=())
    there = bo.check(correct, cases, tiebreakers=(), workers=2)
    assert here.ok and there.ok
    assert [c.case_id for c in there.cases] == [c.case_id for c in cases]
    assert comparable(there) == comparable(here)
    wrong = bo.check(halved_w1, cases[:4], tiebreakers=(), workers=2)
    assert not wrong.ok and {r.name for r in wrong.failures()} >= {"W1"}


def test_an_existing_client_is_used_and_left_open() -> None:
    cases = bo.cases("mlp", 2, seed=4, **SMALL)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=HTTP_ADDRESS,
                                  scheduler_kwargs=NO_DASHBOARD) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        report = bo.check(correct, cases, tiebreakers=(), client=client)
        assert report.ok and len(report.cases) == 2
        assert client.status == "running"  # the caller's to close


def test_an_implementation_that_cannot_be_pickled_is_a_clear_error() -> None:
    lock = threading.Lock()

    def holds_a_lock(case: bo.Case) -> dict:
        with lock:
            return correct(case)

    with pytest.raises(TypeError, match="cannot be sent to worker processes.*workers=1"):
        bo.check(holds_a_lock, bo.cases("mlp", 1, seed=5, **SMALL), workers=2)
    assert bo.check(holds_a_lock, bo.cases("mlp", 1, seed=5, **SMALL), tiebreakers=()).ok


def test_cli_check_with_workers_finds_the_planted_bug(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.py"
    adapter.write_text("import backprop_oracle as bo\n\n"
                       "def wrong(case):\n"
                       "    r = bo.backprop(case)\n"
                       "    return {**r.grads, 'W1': r.grads['W1'] * 2}\n")
    done = subprocess.run(
        [sys.executable, "-m", "backprop_oracle.cli", "check", f"{adapter}:wrong", "--families",
         "mlp", "--cases", "3", "--workers", "2", "--no-tiebreak", "--out",
         str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "diverge" in done.stdout and (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_check_on_workers_keeping_its_finished_cases(tmp_path: Path,
                                                                     signum: int) -> None:
    """``check --workers 2`` stopped by the real signal once some cases are written: it stops
    within 30 s (a loaded 2-core box), exit 130, one line on stderr, the finished cases'
    records complete and each once, the report marked interrupted, and no process of the
    check left behind."""
    adapter, out = tmp_path / "adapter.py", tmp_path / "out"
    adapter.write_text("import time\nimport backprop_oracle as bo\n\n"
                       "def slow(case):\n"
                       "    time.sleep(0.3)\n"
                       "    return dict(bo.backprop(case).grads)\n")
    mark = new_mark("check-workers")
    process = subprocess.Popen(
        [sys.executable, "-m", "backprop_oracle.cli", "check", f"{adapter}:slow", "--families",
         "mlp", "--cases", "300", "--workers", "2", "--no-tiebreak", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, MARK: mark})
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            records.exists() and len(records.read_text().splitlines()) >= 6):
        time.sleep(0.2)
    process.send_signal(signum)
    start = time.monotonic()
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    took = time.monotonic() - start
    assert took < 30, f"took {took:.0f} s to stop (the rest of the cases were not cancelled)"
    assert process.returncode == 130, err
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    lines = records.read_text().splitlines()
    keys = [(r["case_id"], r["name"]) for r in map(json.loads, lines)]
    assert keys and len(keys) == len(set(keys)), "finished cases kept, each record once"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    left = marked(mark)
    assert not left, f"processes of the check left behind: {left}"

