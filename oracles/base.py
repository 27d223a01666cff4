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
from collections.abc import Sequence

from ..reference.case import Case
from ..reference.result import Result

ACCELERATOR = ("cuda", "gpu")  # one accelerator choice, spelled as PyTorch or as JAX does


def is_accelerator(device: str) -> bool:
    """Whether ``device`` names the accelerator (``cuda``, ``gpu``, ``cuda:1``, ...)."""
    return device.partition(":")[0] in ACCELERATOR


def device_choices(devices: Sequence[str]) -> list[str]:
    """``devices`` in order without repeats, ``cuda`` and ``gpu`` counted as one choice (the
    first spelling given stands for it; each oracle maps it with ``device_for``)."""
    seen: set[str] = set()
    chosen = []
    for device in devices:
        key = "accelerator" if is_accelerator(device) else device
        if key not in seen:
            seen.add(key)
            chosen.append(device)
    return chosen


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

    def device_for(self, choice: str) -> str:
        """This oracle's own name for the device ``choice`` (``cuda`` and ``gpu`` are one
        accelerator choice: PyTorch calls it ``cuda``, JAX ``gpu``); records use this name."""
        return choice

    @abstractmethod
    def run(self, case: Case, device: str = "cpu", dtype: str | None = None) -> Result:
        """The oracle's ``Result`` for ``case`` computed in ``dtype`` (default ``case.dtype``)."""

    def localise(self, case: Case, device: str = "cpu", dtype: str | None = None,
                 names: Sequence[str] = ()) -> Result:
        """The full derivatives of the tensors ``names`` only, where ``run`` returned them along
        directions (``meta["directional"]``) and a check failed; an oracle that never does
        need not implement it."""
        raise NotImplementedError(f"{self.label} cannot localise {', '.join(names)}")

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


class FrameworkOracle(Oracle):
    """An autodiff framework as an oracle (PyTorch, JAX): ``run`` and ``localise`` are one
    computation, ``_run(case, device, dtype, names)``, with ``names`` ``None`` for ``run``."""

    def run(self, case: Case, device: str = "cpu", dtype: str | None = None) -> Result:
        """Reverse mode: every derivative. Forward mode: the loss tangent along
        ``directions`` random sign tensors per tensor (``meta["directional"]``), or with
        ``directions=0`` every derivative along the whole basis."""
        return self._run(case, device, dtype, None)

    def localise(self, case: Case, device: str = "cpu", dtype: str | None = None,
                 names: Sequence[str] = ()) -> Result:
        """Forward mode along every basis direction of the tensors ``names`` only (parameters,
        ``delta<l>``): their full derivatives, where a directional check failed."""
        return self._run(case, device, dtype, list(names))

    @abstractmethod
    def _run(self, case: Case, device: str, dtype: str | None, names: list[str] | None
             ) -> Result:
        """``run`` (``names`` ``None``) or ``localise`` (the tensors ``names``)."""
