"""A campaign's chunks on a Dask cluster (``run --workers N``, ``--scheduler``,
``--scheduler-file``): the one module that uses Dask.

``Campaign`` starts a ``distributed.LocalCluster`` of N worker processes with one thread each
(``threads_per_worker=1``, ``processes=True``; BLAS, PyTorch and XLA pinned in them through
their environment, ``threads.child_environment``), or connects to an existing scheduler.
``Campaign.results`` submits one task per ``engine.Chunk`` (``Client.submit``; the task draws
its cases itself, ``engine.run_chunk``), a bounded number ahead, collects them with
``as_completed`` and hands them back in the chunks' order, holding those that finish early; a
stop cancels the rest (``Client.cancel``) and hands back what has finished. A worker process
that dies mid-chunk is Dask's to handle: the scheduler runs the chunk again on another worker
(the nanny restarts the process), so no record is lost or written twice; a chunk whose workers
keep dying (``distributed.scheduler.allowed-failures``) becomes ``engine.chunk_failed``'s
records.

With a per-case time limit (``--case-timeout``) a worker process runs its chunks through one
``worker.Worker`` (a killable process of its own, kept from chunk to chunk so that the
frameworks' caches live on, closed by the worker plugin's ``teardown``); so the worker
processes must not be daemonic (``distributed.worker.daemon`` is off while a campaign runs).
The plugin also makes a local cluster's processes ignore SIGINT (Ctrl-C reaches the whole
process group; the client decides). Closing a local cluster ends its processes and, after
``CLOSE_GRACE`` seconds, kills whatever of theirs is still alive, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import dask
import psutil
from distributed import Client, Future, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from ...reference.case import Case
from ..comparison.compare import where
from ..comparison.records import Record, error_record
from .engine import Chunk, Execution, Job, Unit, chunk_failed, compile_cache_stats, run_chunk
from .stopping import Interrupted, Stop
from .threads import BLAS_ENV, pin
from .worker import POLL, Worker

__all__ = ["Campaign", "CampaignPlugin", "ChunkDone", "HELD_PER_WORKER", "HTTP_ADDRESS",
           "IN_FLIGHT_PER_WORKER", "NO_DASHBOARD", "SchedulerUnreachable"]

IN_FLIGHT_PER_WORKER = 4  # chunks submitted at once per worker thread
HELD_PER_WORKER = 32  # chunks submitted or finished and waiting for their turn, per thread
PLUGIN = "backprop-oracle"
CLOSE_GRACE = 10.0  # seconds a local cluster's processes get to end before they are killed
HTTP_ADDRESS = "127.0.0.1:0"  # the scheduler's HTTP server: a free port, this machine only
NO_DASHBOARD = {"dashboard": False}
LOG_LEVEL = logging.ERROR  # Dask's own log lines: errors only (stderr is for errors)
DAEMONIC = ("--case-timeout runs each case in a process of its own, which a daemonic Dask "
            "worker may not start: start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False "
            "(or run with --case-timeout 0)")


@dataclass
class ChunkDone:
    """A chunk's units, and the JAX compile-cache hits and misses its worker counted."""

    units: list[Unit]
    cache: dict[str, Any] = field(default_factory=dict)


# In a Dask worker process: its per-case time-limit Worker (the ``Worker`` of worker.py), and
# the stop flag of each campaign that has run there, by the campaign's name.
_CASE_WORKER: dict[str, Worker] = {}
_STOPS: dict[str, Stop] = {}


def _stop_chunks(name: str) -> None:
    """Run by ``Client.run`` in every worker process: the campaign's chunks running there
    stop at their next look at the flag (between oracles; within a case, every ``POLL``
    seconds with a case worker), so that the processes are free at once."""
    _STOPS.setdefault(name, Stop()).request()


def _case_worker(timeout: float | None) -> Worker | None:
    """This process's ``Worker`` for ``timeout`` (made once, kept), or ``None``: no limit."""
    if not timeout:
        return None
    current = _CASE_WORKER.get("worker")
    if current is not None and current.timeout != timeout:
        current.close()
        current = None
    if current is None:
        if multiprocessing.current_process().daemon:
            raise RuntimeError(DAEMONIC)
        current = _CASE_WORKER["worker"] = Worker(timeout)
    return current


def _close_case_worker() -> None:
    current = _CASE_WORKER.pop("worker", None)
    if current is not None:
        current.close()


def _run_chunk(job: Job, chunk: Chunk, name: str) -> ChunkDone:
    """The task: in a Dask worker process, ``engine.run_chunk`` with the job's environment
    and threads, through this process's case worker; with the cache hits and misses counted
    meanwhile. ``name``: the campaign's, whose stop flag the chunk looks at (stopped, it
    returns no units: the campaign has cancelled it and looks at it no more)."""
    os.environ.update(job.environ)
    if job.config.threads:
        pin(job.config.threads)
    worker = _case_worker(job.timeout)
    before = compile_cache_stats(worker) if "jax" in job.config.oracles else None
    try:
        units = run_chunk(job, chunk, worker, _STOPS.setdefault(name, Stop()))
    except Interrupted:
        return ChunkDone([])
    if before is None:
        return ChunkDone(units)
    after = compile_cache_stats(worker)
    return ChunkDone(units, {"dir": after["dir"], **{
        k: max(0, int(after[k]) - int(before[k])) for k in ("hits", "misses")}})


def _check_case(impl: bytes, case: Case, judges: Any, replay: str,
                timeout: float | None) -> list[Record]:
    """The task of a distributed ``bo.check``: one case, through this process's case worker
    when there is a time limit."""
    from ..check.api import check_case

    wrapped = cloudpickle.loads(impl)
    worker = _case_worker(timeout)
    if worker is None:
        return check_case(wrapped, case, judges, replay)
    return worker.cross_values(case, worker.evaluate(case, wrapped, judges=judges,
                                                     replay=replay.format(case=case)))


def _check_outcome(case: Case, future: Future, replay: str) -> list[Record]:
    """A case's records; a failed task (its workers kept dying) is one ``oracle_error``."""
    if future.status == "error":
        return [error_record(where(case, "impl", "implementation", "cpu", case.dtype,
                                   replay=replay.format(case=case)), future.exception())]
    return list(future.result())


class CampaignPlugin(WorkerPlugin):
    """Set up on every worker of the campaign (those that start later included):
    ``ignore_interrupts`` (a local cluster) ignores SIGINT; ``teardown`` (the cluster closing,
    or the plugin unregistered from a cluster that lives on) closes the case worker."""

    def __init__(self, ignore_interrupts: bool) -> None:
        self.ignore_interrupts = ignore_interrupts

    def setup(self, worker: Any) -> None:
        if self.ignore_interrupts and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def teardown(self, worker: Any) -> None:
        _close_case_worker()
        _STOPS.clear()


class Campaign:
    """A Dask client for one campaign: on a ``LocalCluster`` it starts (``Execution.workers``
    processes) or on an existing scheduler. ``environ``: set in the local worker processes
    when they start (and by every task, on any cluster)."""

    def __init__(self, execution: Execution, environ: dict[str, str],
                 client: Client | None = None) -> None:
        self.cluster: LocalCluster | None = None
        self.owned = client is None  # a client handed in is the caller's to close
        self.compile_cache: dict[str, Any] = {"hits": 0, "misses": 0}  # the workers', summed
        self.name = f"bo-campaign-{uuid.uuid4().hex}"  # and its chunks' keys
        # for the campaign's length: the nanny reads it again when it restarts a worker
        self.config = dask.config.set({"distributed.worker.daemon": False})
        try:
            if client is not None:
                self.client = client
            elif execution.scheduler or execution.scheduler_file:
                self.client = _connect(execution)
            else:
                self.cluster = _local_cluster(execution.workers, environ)
                self.client = Client(self.cluster, set_as_default=False)
            self.client.register_plugin(CampaignPlugin(self.cluster is not None), name=PLUGIN)
        except BaseException:
            self.close()
            raise
        threads = self.client.nthreads()
        self.workers = len(threads)  # processes
        self.slots = max(1, sum(threads.values()))  # tasks at once

    def results(self, job: Job, chunks: Iterable[Chunk], stop: Stop
                ) -> Generator[list[Unit], None, None]:
        """Each chunk's units, in the chunks' order, as soon as it and every chunk before it
        have finished. On ``stop`` the chunks not finished are cancelled and those finished
        are handed back (in order, past the gaps); then the iteration ends."""
        queue = iter(chunks)
        submitted: dict[Future, Chunk] = {}
        finished: dict[int, list[Unit]] = {}
        position = 0  # the next chunk to hand back
        running = as_completed(loop=self.client.loop)
        self._submit(job, queue, submitted, running, self._room(submitted, finished))
        try:
            for future in self._completed(running, stop):
                chunk = submitted.pop(future)
                finished[chunk.position] = self._outcome(job, chunk, future)
                self._submit(job, queue, submitted, running, self._room(submitted, finished))
                while position in finished:
                    yield finished.pop(position)
                    position += 1
                self._submit(job, queue, submitted, running, self._room(submitted, finished))
        finally:
            self._cancel(list(submitted))
        for at in sorted(finished):  # stopped: the finished chunks past the first gap
            yield finished.pop(at)

    def checked(self, impl: bytes, cases: Sequence[Case], judges: Any, replay: str,
                timeout: float | None, stop: Stop) -> Iterator[tuple[Case, list[Record]]]:
        """``bo.check``'s records of each case (``impl``: the implementation, cloudpickled),
        in the cases' order as they finish, ``IN_FLIGHT_PER_WORKER`` per worker thread at
        once; on ``stop`` the rest are cancelled and the iteration ends at the first gap."""
        pending = iter(enumerate(cases))
        submitted: dict[Future, int] = {}
        finished: dict[int, list[Record]] = {}
        position, running = 0, as_completed(loop=self.client.loop)

        def submit() -> None:
            for i, case in itertools.islice(pending, IN_FLIGHT_PER_WORKER * self.slots
                                            - len(submitted)):
                future = self.client.submit(_check_case, impl, case, judges, replay, timeout,
                                            key=f"{self.name}-{i}")
                submitted[future] = i
                running.add(future)

        submit()
        try:
            for future in self._completed(running, stop):
                i = submitted.pop(future)
                finished[i] = _check_outcome(cases[i], future, replay)
                submit()
                while position in finished:
                    yield cases[position], finished.pop(position)
                    position += 1
        finally:
            self._cancel(list(submitted))

    def _room(self, submitted: dict[Future, Chunk], finished: dict[int, list[Unit]]) -> int:
        """How many more chunks to submit now: ``IN_FLIGHT_PER_WORKER`` per worker thread at
        once, ``HELD_PER_WORKER`` submitted or held for their turn (the memory bound while an
        early chunk is slow). The next chunk to hand back is always submitted or held, so the
        room is never 0 with nothing running."""
        return max(0, min(IN_FLIGHT_PER_WORKER * self.slots - len(submitted),
                          HELD_PER_WORKER * self.slots - len(submitted) - len(finished)))

    def _submit(self, job: Job, queue: Iterator[Chunk], submitted: dict[Future, Chunk],
                running: as_completed, n: int) -> None:
        for chunk in itertools.islice(queue, n):
            future = self.client.submit(_run_chunk, job, chunk, self.name,
                                        key=f"{self.name}-{chunk.position}")
            submitted[future] = chunk
            running.add(future)

    def _cancel(self, futures: list[Future]) -> None:
        """Cancel the chunks not handed back, and stop those running."""
        if futures:
            self.client.cancel(futures)
            with contextlib.suppress(Exception):  # a worker that is gone has nothing to stop
                self.client.run(_stop_chunks, self.name)

    @staticmethod
    def _completed(running: as_completed, stop: Stop) -> Iterator[Future]:
        """``running``'s futures as they finish, until none is left or ``stop`` is asked."""
        while not running.is_empty() and not stop.requested:
            if running.has_ready():
                yield from running.next_batch(block=False)
            else:
                time.sleep(POLL)

    def _outcome(self, job: Job, chunk: Chunk, future: Future) -> list[Unit]:
        """The chunk's units; a failed task's from ``engine.chunk_failed``."""
        if future.status == "error":
            return chunk_failed(job, chunk, future.exception())
        done: ChunkDone = future.result()
        for k in ("hits", "misses"):
            self.compile_cache[k] += int(done.cache.get(k, 0))
        if done.cache.get("dir"):
            self.compile_cache["dir"] = done.cache["dir"]
        return done.units

    def close(self) -> None:
        """Close the client; a local cluster's processes end, and any that have not after
        ``CLOSE_GRACE`` seconds (with whatever they started) are killed."""
        processes = self._local_processes()
        client = getattr(self, "client", None)
        if client is not None:
            if self.cluster is None:  # a cluster that lives on: its case workers closed
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(PLUGIN)
            if self.owned:
                client.close()
        if self.cluster is not None:
            self.cluster.close()
            _, alive = psutil.wait_procs(processes, timeout=CLOSE_GRACE)
            for process in alive:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        self.config.__exit__(None, None, None)

    def _local_processes(self) -> list[psutil.Process]:
        """The local cluster's worker processes and every process they started."""
        if self.cluster is None:
            return []
        processes = []
        for nanny in self.cluster.workers.values():
            pid = getattr(getattr(nanny, "process", None), "pid", None)
            with contextlib.suppress(psutil.Error):
                worker = psutil.Process(pid) if pid else None
                if worker is not None:
                    processes += [worker, *worker.children(recursive=True)]
        return processes

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SchedulerUnreachable(ConnectionError):
    """``--scheduler`` / ``--scheduler-file`` names a scheduler that does not answer."""


def _connect(execution: Execution) -> Client:
    """A client of the existing scheduler (``distributed.comm.timeouts.connect`` to answer)."""
    where = execution.scheduler or f"named in {execution.scheduler_file}"
    try:
        return Client(execution.scheduler, scheduler_file=execution.scheduler_file,
                      set_as_default=False)
    except OSError as exc:  # refused, timed out, no such host
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler {where}: "
                                   f"{str(exc).splitlines()[0]}") from None


def _local_cluster(workers: int, environ: dict[str, str]) -> LocalCluster:
    """N worker processes, one thread each, Dask's logs errors only. No dashboard; the
    scheduler's HTTP server (which it always starts) on a free port of localhost, since its
    default port 8787 is taken by any other cluster running (and then warned about). The
    nanny sets ``environ`` in the processes, and its own BLAS defaults (one thread) only where
    ``environ`` says nothing of them (``--threads 0``: the libraries' defaults)."""
    pre_spawn = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                 if k not in BLAS_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {**pre_spawn, **environ}}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=HTTP_ADDRESS, scheduler_kwargs=NO_DASHBOARD,
                            silence_logs=LOG_LEVEL, env=environ)
