"""``run --workers N`` / ``--scheduler-file`` met the way a user meets them: the real CLI in a
subprocess. A signal stops a run on a Dask cluster with exit 130, its finished records and
report, and no process of it left behind; without ``distributed`` installed ``--workers 2``
says in one line how to install it and the default falls back to one process with a note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backprop_oracle import cli

from .._processes import MARK, marked, new_mark

psutil = pytest.importorskip("psutil")
distributed = pytest.importorskip("distributed")

CLI = [sys.executable, "-m", "backprop_oracle.cli"]
FAST = ["--oracles", "fd", "--dtypes", "float64"]
INSTALL = 'pip install "backprop-oracle[cluster]"'


def _records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(process: subprocess.Popen, out: Path, when: str) -> None:
    """Until the run is starting its Dask workers, or has written some chunks."""
    assert process.stdout is not None
    if when == "starting":
        for line in process.stdout:
            if "starting the Dask workers" in line:
                return
        return
    deadline = time.monotonic() + 120
    while len(_records(out)) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(psutil.Process(process.pid).children(recursive=True)) >= 2, "no workers"


@pytest.mark.parametrize("signum, to_group, when", [
    (signal.SIGINT, True, "running"), (signal.SIGTERM, False, "running"),
    (signal.SIGTERM, False, "starting")],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-cli", "sigterm-as-workers-start"])
def test_a_signal_stops_a_cluster_run_and_leaves_no_process(tmp_path, signum, to_group,
                                                            when) -> None:
    out, mark = tmp_path / "out", new_mark("cluster")
    process = subprocess.Popen([*CLI, "run", "--workers", "2", "--families", "mlp,graph",
                                "--cases", "500", *FAST, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, MARK: mark}, start_new_session=True)
    _wait_for(process, out, when)
    if to_group:
        os.killpg(process.pid, signum)  # what Ctrl-C at a terminal does
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    records = _records(out)  # complete lines, each tensor of each case once
    keys = [(r["case_id"], r["oracle"], r["mode"], r["quantity"], r["name"]) for r in records]
    assert len(keys) == len(set(keys)) and (records or when == "starting")
    env = json.loads((out / "environment.json").read_text())
    assert (env["workers"], env["scheduler"]) == ("2", "local cluster")
    assert not marked(mark), "a process of the run is left behind"


def test_a_run_on_an_existing_cluster_by_scheduler_file(tmp_path) -> None:
    """``--scheduler-file``: the cases run on that cluster's workers, which live on."""
    from backprop_oracle.properties.campaign.cluster import HTTP_ADDRESS, NO_DASHBOARD

    file, out = tmp_path / "scheduler.json", tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=HTTP_ADDRESS,
                                  scheduler_kwargs={**NO_DASHBOARD,
                                                    "scheduler_file": str(file)}) as cluster:
        done = subprocess.run([*CLI, "run", "--scheduler-file", str(file), "--families",
                               "mlp,graph", "--cases", "2", *FAST, "--case-timeout", "0",
                               "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert len(cluster.workers) == 2
    env = json.loads((out / "environment.json").read_text())
    assert (env["workers"], env["scheduler"]) == ("2", "scheduler file")
    assert len({r["case_id"] for r in _records(out)}) == 4


WITHOUT_DISTRIBUTED = """
import sys
sys.modules["distributed"] = None  # as if backprop-oracle[cluster] were not installed
from backprop_oracle import cli
from backprop_oracle.properties.campaign import engine
engine.cores = lambda: 4
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("workers, code", [([], 0), (["--workers", "2"], 2)],
                         ids=["default", "workers-2"])
def test_without_distributed(tmp_path, workers, code) -> None:
    """The default quietly runs in one process, with a note; ``--workers 2`` is refused in
    one line saying how to install what it needs."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_DISTRIBUTED, "run", "--families",
                           "mlp,graph", "--cases", "1", *FAST, *workers, "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr
    if code:
        assert done.stderr.strip().splitlines() == [
            f"backprop-oracle run: error: --workers 2 needs dask.distributed, which is not "
            f"installed: {INSTALL}"]
    else:
        assert "note: running in this process (--workers 1)" in done.stdout
        assert INSTALL in done.stdout and not done.stderr
        env = json.loads((tmp_path / "environment.json").read_text())
        assert (env["workers"], env["scheduler"]) == ("1", "in process")


@pytest.mark.parametrize("args, words", [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers is for a local"),
    (["--scheduler-file", "/nonexistent/scheduler.json"], "no such file"),
    (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
    (["--scheduler", "a", "--scheduler-file", "b"], "not allowed with argument"),
])
def test_bad_cluster_options_are_one_line_and_exit_two(tmp_path, args, words, capsys) -> None:
    assert cli.main(["run", *FAST, *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_a_scheduler_that_does_not_answer_is_one_line_and_exit_two(tmp_path) -> None:
    done = subprocess.run([*CLI, "run", "--scheduler", "tcp://127.0.0.1:9", "--families",
                           "mlp,graph", "--cases", "2", *FAST, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler tcp://127.0.0.1:9" in lines[0]
