"""Campaigns on a Dask cluster (``properties/campaign/cluster.py``): the same records as in
one process whatever the number of workers, a worker killed mid-chunk costing no record, the
per-case time limit holding on the workers, and the workers sharing JAX's compile cache."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import dask  # noqa: E402  (after the skip: both come with backprop-oracle[cluster])

from backprop_oracle.oracles.finite_differences import FiniteDifferences  # noqa: E402
from backprop_oracle.properties.campaign import engine as campaign  # noqa: E402
from backprop_oracle.properties.campaign.cluster import HTTP_ADDRESS, NO_DASHBOARD  # noqa: E402
from backprop_oracle.properties.comparison.records import read_records  # noqa: E402

SMALL = {"max_width": 4, "max_batch": 3, "max_layers": 2, "max_image": 5}
TWO = campaign.Execution(workers=2)


def tiny(**kw) -> campaign.RunConfig:
    base = dict(families=("mlp", "softmax"), oracles=("fd",), cases=3, dtypes=("float64",),
                constraints=SMALL)
    return campaign.RunConfig(**{**base, **kw})


def records(out: Path) -> list[dict]:
    """The records of a run in their order, without what may differ between two runs of the
    same cases: the time taken and the output folder in the replay command."""
    return [{**{k: v for k, v in r.items() if k != "seconds"},
             "replay": r["replay"].replace(str(out), "OUT")}
            for r in read_records(out / "records.jsonl")]


def test_chunks_cover_every_case_once_in_the_order_of_units() -> None:
    config = tiny(cases=21)
    chunks = list(campaign.chunks(config, workers=2))
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == campaign.chunk_count(config, workers=2)
    covered = [(c.family, i) for c in chunks for i in range(c.start, c.stop)]
    assert covered == [(f, i) for f in config.families for i in range(21)]
    assert {c.stop - c.start for c in chunks} <= set(range(1, campaign.MAX_CHUNK + 1))


def test_two_workers_write_the_records_and_cases_of_one(tmp_path) -> None:
    """Same seed, same records in the same order (timing aside), and the same cases saved,
    on two Dask worker processes (each case through the per-case time limit's worker) as in
    this process; environment.json says where they ran."""
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert campaign.run(tiny(), serial) == 6
    assert campaign.run(tiny(), parallel, timeout=60, execution=TWO) == 6
    assert records(parallel) == records(serial)
    assert sorted(os.listdir(parallel / "cases")) == sorted(os.listdir(serial / "cases"))
    env = json.loads((parallel / "environment.json").read_text())
    assert (env["workers"], env["scheduler"]) == ("2", "local cluster")
    assert json.loads((serial / "environment.json").read_text())["scheduler"] == "in process"


def test_no_more_workers_than_chunks(tmp_path) -> None:
    """One chunk of work runs in this process, whatever ``workers`` says."""
    campaign.run(tiny(families=("mlp",), cases=1), tmp_path, execution=TWO)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert (env["workers"], env["scheduler"]) == ("1", "in process")


@pytest.fixture
def own_cluster():
    """A local Dask cluster of two non-daemonic worker processes (so that the per-case time
    limit's worker can start in them), and a client of the test's own to watch it."""
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=HTTP_ADDRESS,
                                           scheduler_kwargs=NO_DASHBOARD)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


def test_a_worker_killed_mid_chunk_loses_and_repeats_no_record(tmp_path, own_cluster) -> None:
    """SIGKILL to a worker process while it runs a chunk: the scheduler runs its chunks
    again on another worker and the records are those of a run in one process."""
    cluster, client = own_cluster
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_the_first_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [address for address, keys in client.processing().items()
                    if any(str(key).startswith("bo-campaign") for key in keys)]
            if busy:
                killed.append(pids[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)
                return
            time.sleep(0.02)

    config = tiny(families=("mlp", "softmax", "graph"), cases=4)
    campaign.run(config, tmp_path / "serial")
    on_cluster = campaign.Execution(scheduler=cluster.scheduler_address)
    killer = threading.Thread(target=kill_the_first_busy_worker)
    killer.start()
    try:
        campaign.run(config, tmp_path / "killed", timeout=60, execution=on_cluster)
    finally:
        killer.join()
    assert killed, "no worker ever ran a chunk"
    assert killed[0] not in client.run(os.getpid).values(), "the nanny started a new one"
    assert records(tmp_path / "killed") == records(tmp_path / "serial")
    env = json.loads((tmp_path / "killed" / "environment.json").read_text())
    assert env["scheduler"] == "address"


FAULTY = '''
import os
import time

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle


class Once(Oracle):
    """The first call, across processes, hangs (or ends its process); every other one is the
    reference."""

    name = "once"

    def __init__(self, marker, exits=False):
        self.marker, self.exits = marker, exits

    def run(self, case, device="cpu", dtype=None):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return bo.backprop(case)
        if self.exits:
            os._exit(3)
        time.sleep(10_000)
'''


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """``bo_faulty.Once``, importable here and in the worker processes started after."""
    (tmp_path / "bo_faulty.py").write_text(textwrap.dedent(FAULTY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, (str(tmp_path), os.environ.get("PYTHONPATH")))))
    import bo_faulty

    return bo_faulty.Once


def test_the_case_timeout_holds_on_dask_workers(tmp_path, monkeypatch, faulty) -> None:
    """An oracle that hangs on a Dask worker is stopped after ``timeout`` seconds and recorded;
    the other cases and oracles are not held up."""
    hangs = faulty(str(tmp_path / "hung"))
    monkeypatch.setattr(campaign, "make_oracles", lambda config: [hangs, FiniteDifferences()])
    out = tmp_path / "out"
    assert campaign.run(tiny(families=("mlp",), cases=2), out, timeout=3, execution=TWO) == 2
    found = list(read_records(out / "records.jsonl"))
    errors = [r for r in found if r["verdict"] == "oracle_error"]
    assert len(errors) == 1 and errors[0]["oracle"] == "once"
    assert "ran past the time limit of 3 s" in errors[0]["detail"]["message"]
    assert {r["verdict"] for r in found if r is not errors[0]} == {"agree"}
    assert len({(r["case_id"], r["oracle"]) for r in found}) == 4, "both cases, both oracles"


def test_a_chunk_whose_worker_always_dies_is_recorded_and_the_run_goes_on(
        tmp_path, monkeypatch, faulty) -> None:
    """Without a time limit an oracle that ends its process takes the Dask worker with it;
    past ``allowed-failures`` (0 here) the chunks it held (the one running, and any queued
    there) are ``oracle_error`` records naming ``KilledWorker`` for each of their cases and
    oracles, and every other chunk is recorded as usual."""
    exits = faulty(str(tmp_path / "exited"), exits=True)
    monkeypatch.setattr(campaign, "make_oracles", lambda config: [exits, FiniteDifferences()])
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=HTTP_ADDRESS,
                                           scheduler_kwargs=NO_DASHBOARD)
    with cluster:
        on_cluster = campaign.Execution(scheduler=cluster.scheduler_address)
        out = tmp_path / "out"
        assert campaign.run(tiny(families=("mlp",), cases=3), out, execution=on_cluster) == 3
    found = list(read_records(out / "records.jsonl"))
    errors = [r for r in found if r["verdict"] == "oracle_error"]
    failed = {r["case_id"] for r in errors}
    assert failed and len(errors) == 2 * len(failed), "each failed case: both oracles"
    assert all(r["detail"]["type"] == "KilledWorker" for r in errors)
    assert {r["verdict"] for r in found if r["case_id"] not in failed} == {"agree"}
    assert len({r["case_id"] for r in found}) == 3


def test_workers_share_the_jax_compile_cache_and_count_it(tmp_path, monkeypatch) -> None:
    """The workers compile into one persistent cache (``BO_COMPILE_CACHE``), and
    environment.json sums their hits and misses: the workers of a second run find every
    program there; the total adds this process's counts during the run."""
    pytest.importorskip("jax")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BO_COMPILE_CACHE", str(cache))
    config = tiny(oracles=("jax",), modes=("reverse",), families=("mlp",), cases=2)

    def counts(out: Path) -> dict:
        campaign.run(config, out, execution=TWO)
        env = json.loads((out / "environment.json").read_text())
        assert env["workers"] == "2"
        workers, total = (json.loads(env[k]) for k in ("jax compile cache (workers)",
                                                        "jax compile cache"))
        assert total["dir"] == workers["dir"] == str(cache)
        assert all(total[k] >= workers[k] for k in ("hits", "misses"))
        return workers

    first, second = counts(tmp_path / "a"), counts(tmp_path / "b")
    assert first["misses"] > 0
    assert second["misses"] == 0 and second["hits"] > 0
