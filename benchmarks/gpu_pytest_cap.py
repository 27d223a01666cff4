"""A pytest plugin for ``benchmarks/gpu_measure.sh``: the property suite under a time budget.

Loaded with ``-p gpu_pytest_cap`` (``benchmarks/`` on ``PYTHONPATH``); it changes nothing in
the project's tests or profiles, it only

* caps the hypothesis profile the suite loaded (``BO_PROFILE``, e.g. ``gpu``) at
  ``BO_GPU_MAX_EXAMPLES`` examples per property (tests with their own ``@settings`` keep
  them), by registering ``<profile>-capped`` with that profile as parent;
* skips, with a reason, every test that would start after ``BO_GPU_DEADLINE`` (seconds since
  the epoch), so a run cut short still writes its ``--bo-report`` summary and junit XML;
* turns SIGTERM (what ``timeout`` sends) into ``KeyboardInterrupt``, which pytest handles
  like Ctrl-C: the session finishes and the report of the tests run so far is written.
"""

from __future__ import annotations

import os
import signal
import time

import pytest


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """After the conftests have registered and loaded their profile."""
    cap = os.environ.get("BO_GPU_MAX_EXAMPLES")
    if not cap:
        return
    from hypothesis import settings

    name = os.environ.get("BO_PROFILE", "ci")
    try:
        parent = settings.get_profile(name)
    except Exception:
        parent = settings.default
    capped = min(int(cap), parent.max_examples)
    settings.register_profile(f"{name}-capped", parent=parent, max_examples=capped)
    settings.load_profile(f"{name}-capped")
    print(f"gpu_pytest_cap: hypothesis profile {name!r} capped at max_examples={capped}")


def pytest_report_header(config: pytest.Config) -> str:
    deadline = os.environ.get("BO_GPU_DEADLINE")
    left = f"{float(deadline) - time.time():.0f} s left" if deadline else "no deadline"
    return (f"gpu_pytest_cap: BO_PROFILE={os.environ.get('BO_PROFILE', 'ci')}, "
            f"BO_GPU_MAX_EXAMPLES={os.environ.get('BO_GPU_MAX_EXAMPLES', '-')}, {left}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    deadline = os.environ.get("BO_GPU_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip("gpu_measure.sh: time budget of the property-suite step spent")
