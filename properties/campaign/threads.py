"""Threads per process. The oracles' libraries each start a thread pool the size of the machine
(OpenBLAS/MKL under NumPy and PyTorch's CPU kernels, PyTorch's intra-op pool, XLA's CPU
runtime); a campaign that already keeps every core busy with processes then runs N x cores
threads, and the small matrices of a case pay for the contention. ``pin(n)`` limits this
process and the processes it starts to ``n`` threads each (``benchmarks/bench_threads.py``
measures the choice); ``limit(n)`` does the same for a block, for benchmarks.

* BLAS / OpenMP: ``threadpoolctl`` now, and ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
  ``MKL_NUM_THREADS`` for the processes started later;
* PyTorch: ``torch.set_num_threads(n)`` now if it is imported, else when the PyTorch oracle
  imports it (``$BO_THREADS``);
* XLA (JAX, CPU): ``XLA_FLAGS`` ``--xla_cpu_multi_thread_eigen=false
  intra_op_parallelism_threads=1`` for ``n = 1``, read when JAX starts its backend: it holds
  for processes that start JAX afterwards (the worker processes), not for one that already
  has.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["child_environment", "limit", "pin", "settings", "THREADS_ENV"]

THREADS_ENV = "BO_THREADS"
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def pin(n: int) -> dict[str, str]:
    """Limit this process and the processes it starts to ``n`` threads each (module
    docstring); returns ``settings()``."""
    os.environ.update(child_environment(n))
    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return settings()


def child_environment(n: int) -> dict[str, str]:
    """The environment variables that hold a process started with them (and one that has not
    imported the libraries yet) to ``n`` threads each: ``$BO_THREADS``, the BLAS / OpenMP
    variables and, for ``n = 1``, ``XLA_FLAGS`` (this process's flags, plus one thread)."""
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    env = {THREADS_ENV: str(n), **dict.fromkeys(BLAS_ENV, str(n))}
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1:
        env["XLA_FLAGS"] = flags if XLA_ONE_THREAD in flags else f"{flags} {XLA_ONE_THREAD}".strip()
    return env


def settings() -> dict[str, str]:
    """What this process runs with, for ``environment.json``."""
    pools = {f"{p['user_api']} threads ({p['internal_api']}, {p['prefix']})":
             str(p["num_threads"]) for p in threadpool_info()}
    out = {"threads per process": os.environ.get(THREADS_ENV, "library defaults"),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), **pools}
    if "torch" in sys.modules:
        out["torch threads"] = str(sys.modules["torch"].get_num_threads())
    return out


@contextlib.contextmanager
def limit(n: int) -> Iterator[None]:
    """BLAS and PyTorch limited to ``n`` threads inside the block (XLA's pool is fixed when
    JAX starts: not changed)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)
