"""Threads per process (``properties/campaign/threads.py``): the environment that pins a
process started with it, which ``pin`` applies here and the Dask workers of ``run --workers``
are started with."""

from __future__ import annotations

import pytest

from backprop_oracle.properties.campaign.threads import (
    BLAS_ENV,
    THREADS_ENV,
    XLA_ONE_THREAD,
    child_environment,
)


def test_one_thread_pins_blas_torch_and_xla(monkeypatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    env = child_environment(1)
    assert env[THREADS_ENV] == "1" and all(env[v] == "1" for v in BLAS_ENV)
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {XLA_ONE_THREAD}", "flags kept"
    monkeypatch.setenv("XLA_FLAGS", env["XLA_FLAGS"])
    assert child_environment(1)["XLA_FLAGS"] == env["XLA_FLAGS"], "not added twice"


def test_more_threads_leave_xla_alone_and_zero_is_refused() -> None:
    env = child_environment(3)
    assert env[THREADS_ENV] == "3" and "XLA_FLAGS" not in env
    with pytest.raises(ValueError, match="at least 1"):
        child_environment(0)
