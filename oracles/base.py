"""The oracle interface: anything that turns a ``Case`` into a ``Result`` independently of
the reference (docs/design.md "Contracts").

An oracle has a ``name`` (``"fd"``, ``"torch"``, ``"jax"``, a user's implementation), a
``mode`` (``reverse | forward | fd | complex_step | ...``), ``available(device)`` returning
``None`` or the reason it cannot run there, and ``run(case, device, dtype)``. A missing
framework or device is a reason, never a crash; an exception inside ``run`` is the caller's
to record as ``oracle_error``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..reference.case import Case
from ..reference.result import Result


class Oracle(ABC):
    """Base class of every oracle."""

    name: str = "oracle"
    mode: str = "reverse"
    precision: str = "strict"  # "strict" or "default" (frameworks' out-of-the-box settings)

    def available(self, device: str = "cpu") -> str | None:
        """``None`` when ``run`` can work on ``device``, else a one-line reason."""
        return None if device == "cpu" else f"{self.name} runs on cpu only, not {device!r}"

    def devices(self) -> list[str]:
        """Devices this oracle knows about (present or not)."""
        return ["cpu"]

    @abstractmethod
    def run(self, case: Case, device: str = "cpu", dtype: str | None = None) -> Result:
        """The oracle's ``Result`` for ``case`` computed in ``dtype`` (default ``case.dtype``)."""

    def settings(self, device: str = "cpu") -> dict:
        """The effective settings to record (library versions, precision switches)."""
        return {}

    @property
    def label(self) -> str:
        return f"{self.name}/{self.mode}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} precision={self.precision}>"


def cast(case: Case, dtype: str | None) -> Case:
    """``case`` in ``dtype`` (unchanged when ``dtype`` is ``None`` or already the case's)."""
    return case if dtype is None or dtype == case.dtype else case.astype(dtype)
