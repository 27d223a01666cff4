"""Stopping a long job cleanly on Ctrl-C or SIGTERM.

Raising ``KeyboardInterrupt`` from a signal handler is not reliable: it lands wherever the
main thread happens to be, and a callback that swallows exceptions (XLA's garbage-collection
hook, an import in progress) can lose it, so the job runs on. Instead the first SIGINT or
SIGTERM only sets ``Stop.requested``; the job looks at it between cases (and between oracles)
and ends there, writing its report from what is finished. A second signal ends the process at
once (exit 130): records already written are complete lines, since they are flushed case by
case.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "EXIT_INTERRUPTED", "graceful", "Interrupted", "Stop"
]

EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """A stop was requested while a case ran: the case is left unfinished (its records are
    not written)."""


class Stop:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signal = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            sys.stderr.write("interrupted again: stopping at once\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        self.request(signum)


@contextlib.contextmanager
def graceful(stop: Stop | None = None) -> Iterator[Stop]:
    """SIGINT and SIGTERM request ``stop`` while the block runs (main thread only; elsewhere
    the handlers cannot be installed and the block runs as it is)."""
    stop = stop or Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
