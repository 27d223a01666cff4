"""Shared test settings: hypothesis profiles are chosen with BO_PROFILE (default ``ci``); an
unknown name is a one-line usage error naming the known ones.

Under pytest-xdist (``-n auto --dist loadgroup``, pyproject.toml) every worker loads this file
and the same profile (the environment is inherited). Hypothesis's example database
(``.hypothesis/``) is shared by the workers: it writes each entry under a temporary name and
renames it into place, and each test's keys are used by the one worker that runs it. The
tests in ``SERIAL`` make one work unit (``pytest_xdist_make_scheduler``), so they run on one
worker, one after another, never two at once; the other worker runs the rest meanwhile."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILES = {"ci": 25, "thorough": 2000, "gpu": 100}  # name -> max_examples
for _name, _examples in PROFILES.items():
    settings.register_profile(_name, max_examples=_examples, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])


SERIAL = {  # node id prefix: why it must not run beside another of these
    "tests/backprop_oracle/test_cli_interrupts.py": "four CLI runs at once, timed stops",
    "tests/backprop_oracle/test_cli_cluster.py": "Dask clusters of worker processes, signals",
    "tests/properties/campaign/test_cluster.py": "Dask clusters of worker processes, kills",
    "tests/properties/check/test_check_workers.py": "Dask clusters of worker processes",
    "tests/backprop_oracle/test_pytest_plugin.py": "a pytest with two workers of its own",
    "tests/golden/": "whole CLI campaigns",
    "tests/reports/test_browser.py": "a real browser",
    "tests/properties/cases/test_drawing.py::test_iter_cases_does_not_draw_ahead": "timed",
    "tests/properties/cases/test_drawing.py::test_a_huge_width_is_refused_before_allocating":
        "timed",
    "tests/properties/check/test_vectors.py::"
    "test_huge_declared_npy_shape_is_refused_before_reading": "timed",
}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook; without xdist it is never called
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` with the tests of ``SERIAL`` in one group, ``serial``. The group
    is decided here, on the controller, from the node id: pytest-xdist 3.8 marks a group by
    appending ``@name`` to the node ids of ``xdist_group`` tests, which pytest 9.2's
    structured node ids silently drop (pytest-xdist issue 1386), so the marker alone would
    group nothing."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SerialGroup(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "serial" if nodeid.startswith(tuple(SERIAL)) else super()._split_scope(nodeid)

    return SerialGroup(config, log)


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get("BO_PROFILE", "ci")
    if name not in PROFILES:
        raise pytest.UsageError(f"BO_PROFILE={name!r} is not a known hypothesis profile; "
                                f"expected one of {', '.join(PROFILES)}")
    settings.load_profile(name)
