"""Processes a test started, found by a mark in their environment: every process a CLI run
starts inherits it (its Dask workers and the processes they start), so after the run none
should be alive. Import as ``tests._processes``; needs psutil (a dev dependency)."""

from __future__ import annotations

import os
import time

import psutil

MARK = "BO_TEST_CLUSTER_MARK"


def new_mark(what: str) -> str:
    """A mark no other test (or earlier run of this one) uses."""
    return f"{what}-{os.getpid()}-{time.time_ns()}"


def marked(mark: str) -> list[psutil.Process]:
    """The live processes (zombies aside) whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == mark and \
                    process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found
