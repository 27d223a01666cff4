"""Shared test settings: hypothesis profiles are chosen with BO_PROFILE (default ``ci``); an
unknown name is a one-line usage error naming the known ones."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILES = {"ci": 25, "thorough": 2000, "gpu": 100}  # name -> max_examples
for _name, _examples in PROFILES.items():
    settings.register_profile(_name, max_examples=_examples, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])


def pytest_configure(config: pytest.Config) -> None:
    name = os.environ.get("BO_PROFILE", "ci")
    if name not in PROFILES:
        raise pytest.UsageError(f"BO_PROFILE={name!r} is not a known hypothesis profile; "
                                f"expected one of {', '.join(PROFILES)}")
    settings.load_profile(name)
