"""A per-case time limit that really stops the work: each evaluation runs in a worker process
(``pebble.ProcessPool`` with one worker, started by a fresh ``forkserver`` interpreter, so no
framework threads are forked) that is killed and replaced when the case runs past the limit,
or when the user stops the job.

The task is ``evaluate`` itself, sent with ``cloudpickle`` (an adapter may be a lambda or a
function from a file that is not importable by name). The worker keeps the last case's
reference result and error-model bounds, so the oracles of one case share them, and the
frameworks' compiled-function caches live on in it from case to case.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout  # builtin TimeoutError from 3.11
from typing import Any

import cloudpickle
from pebble import ProcessExpired, ProcessPool

from ...oracles.base import Oracle
from ...reference import backprop
from ...reference.case import Case
from ..comparison.compare import where
from ..comparison.error_model import bounds
from ..comparison.evaluate import cross_values, evaluate
from ..comparison.records import Record, error_record
from .stopping import Interrupted, Stop

__all__ = [
    "CaseTimeout", "POLL", "Worker", "worker_for", "WorkerDied"
]

POLL = 0.1  # seconds between looks at the stop flag while a case runs


class CaseTimeout(RuntimeError):
    """The case ran past the time limit; its worker was killed."""


class WorkerDied(RuntimeError):
    """The worker process ended while running the case (a crash, ``os._exit``)."""


def _ignore_interrupts() -> None:
    """Worker start-up: Ctrl-C reaches the whole process group; the parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


_LAST: dict[str, Any] = {}  # in the worker: the last case's id, reference, bounds, results


def _evaluate(payload: bytes) -> list[Record]:
    case, oracle, device, judges, replay = cloudpickle.loads(payload)
    if _LAST.get("case_id") != case.case_id:
        _LAST.clear()
        reference = backprop(case)
        _LAST.update(case_id=case.case_id, reference=reference,
                     model=bounds(case, reference), results={})
    return evaluate(case, oracle, device, reference=_LAST["reference"], model=_LAST["model"],
                    judges=judges, replay=replay, keep=_LAST["results"])


def _compile_cache_stats() -> dict[str, Any] | None:
    import sys

    module = sys.modules.get("backprop_oracle.oracles.jax_oracle")
    return None if module is None else module.compile_cache_stats()


def _cross_values(case_id: str, records: list[Record]) -> list[Record]:
    results = _LAST.get("results", {}) if _LAST.get("case_id") == case_id else {}
    return cross_values(records, results)


class Worker:
    """Runs ``evaluate`` for one (case, oracle) at a time in a killable worker process."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pool = ProcessPool(max_workers=1, initializer=_ignore_interrupts,
                                context=multiprocessing.get_context("forkserver"))

    def evaluate(self, case: Case, oracle: Oracle, device: str = "cpu", *,
                 judges: Sequence[Oracle] = (), replay: str | None = None,
                 stop: Stop | None = None) -> list[Record]:
        """``evaluate``'s records; a case past the limit or a worker that died is one
        ``oracle_error`` record saying so. Raises ``Interrupted`` when ``stop`` is requested
        while the case runs."""
        # lazy judges (check's ``Judges``) travel unmade: iterating them would import frameworks
        judges = tuple(judges) if isinstance(judges, (list, tuple)) else judges
        payload = cloudpickle.dumps((case, oracle, device, judges, replay))
        future = self.pool.schedule(_evaluate, args=(payload,), timeout=self.timeout)
        while True:
            try:
                return list(future.result(timeout=POLL))
            except FutureTimeout as exc:
                if future.done():  # the task's own limit: pebble killed the worker
                    return self._failed(case, oracle, device, replay, CaseTimeout(
                        f"the case ran past the time limit of {self.timeout:g} s "
                        "(--case-timeout); its worker process was stopped"), exc)
                if stop is not None and stop.requested:
                    future.cancel()
                    raise Interrupted from None
            except ProcessExpired as exc:
                return self._failed(case, oracle, device, replay, WorkerDied(
                    f"the worker process ended with exit code {exc.exitcode} while running "
                    "the case"), exc)
            except CancelledError:
                raise Interrupted from None
            except Exception as exc:  # the reference itself failed in the worker
                return self._failed(case, oracle, device, replay, exc, None)

    def cross_values(self, case: Case, records: list[Record]) -> list[Record]:
        """``cross_values`` of the case's records, from the results the worker kept (none
        where its process was replaced meanwhile); ``records`` unchanged if that fails."""
        future = self.pool.schedule(_cross_values, args=(case.case_id, records),
                                    timeout=self.timeout)
        try:
            return list(future.result())
        except Exception:  # the values are an addition; the records stand without them
            return records

    def compile_cache_stats(self) -> dict[str, Any] | None:
        """The worker's JAX compilation-cache counts (``None``: JAX never ran there)."""
        try:
            return self.pool.schedule(_compile_cache_stats, timeout=self.timeout).result()
        except Exception:  # the counts are an addition to the report
            return None

    @staticmethod
    def _failed(case: Case, oracle: Oracle, device: str, replay: str | None,
                error: Exception, cause: BaseException | None) -> list[Record]:
        if cause is not None:
            error.__cause__ = cause
        return [error_record(where(case, oracle.name, oracle.mode, device, case.dtype,
                                   precision=oracle.precision, replay=replay), error)]

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_for(timeout: float | None) -> contextlib.AbstractContextManager[Worker | None]:
    """A ``Worker`` with this limit, or ``None`` (evaluate in this process) for no limit."""
    return Worker(timeout) if timeout else contextlib.nullcontext()
