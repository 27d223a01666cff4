"""Every oracle this package knows: the one place where oracles are built by name, the
devices each could use, and why any is skipped.

``make(name, mode, precision)`` builds one oracle and ``build(names, modes, precisions)`` the
set a campaign asks for; ``all_oracles()`` lists every oracle object (PyTorch and JAX in both
modes and both precision settings, and finite differences when its module imports);
``inventory()`` crosses them with their devices and gives the reason for every combination
that cannot run here; ``runnable()`` keeps the rest. Nothing here imports torch or jax: a
missing framework is a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._common import MODES, PRECISIONS, check_choice
from .base import Oracle
from .jax_oracle import JaxOracle
from .torch_oracle import TorchOracle

NAMES = ("fd", "torch", "jax")
FRAMEWORKS = {"torch": TorchOracle, "jax": JaxOracle}


def make(name: str, mode: str = "reverse", precision: str = "strict") -> Oracle:
    """The oracle called ``name`` (``fd``, ``torch`` or ``jax``); ``mode`` and ``precision``
    apply to the frameworks (finite differences choose their own method per case)."""
    check_choice(name, NAMES, "oracle")
    if name == "fd":
        from .finite_differences import FiniteDifferences

        return FiniteDifferences()
    return FRAMEWORKS[name](mode=mode, precision=precision)


def build(names: Sequence[str], modes: Sequence[str] = MODES,
          precisions: Sequence[str] = ("strict",)) -> list[Oracle]:
    """One oracle per name, mode and precision asked for (finite differences once)."""
    made: list[Oracle] = []
    for name in names:
        made += [make(name)] if name == "fd" else [make(name, m, p) for m in modes
                                                   for p in precisions]
    return made


@dataclass(frozen=True)
class Entry:
    """One oracle on one device: ``reason`` is ``None`` when it can run."""

    oracle: Oracle
    device: str
    reason: str | None

    @property
    def runnable(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict:
        o = self.oracle
        return {"oracle": o.name, "mode": o.mode, "precision": o.precision, "label": o.label,
                "device": self.device, "available": self.runnable, "reason": self.reason}


def framework_oracles() -> list[Oracle]:
    """PyTorch and JAX oracles for every mode and precision setting."""
    return build(("torch", "jax"), MODES, PRECISIONS)


def fd_oracles() -> tuple[list[Oracle], str | None]:
    """The finite-difference oracle, or the reason it could not be loaded."""
    try:
        from .finite_differences import FiniteDifferences
    except Exception as error:  # an unfinished or broken module is a reason, not a crash
        return [], f"finite differences unavailable ({type(error).__name__}: {error})"
    return [FiniteDifferences()], None


def all_oracles() -> list[Oracle]:
    """Every oracle object this package provides (present frameworks or not)."""
    return fd_oracles()[0] + framework_oracles()


def inventory(oracles: list[Oracle] | None = None) -> list[Entry]:
    """Each oracle on each device it knows, with the reason it cannot run there (or None)."""
    entries = [Entry(o, d, _reason(o, d)) for o in (oracles or all_oracles()) for d in o.devices()]
    if oracles is None:
        reason = fd_oracles()[1]
        if reason:
            entries.insert(0, Entry(_Missing(), "cpu", reason))
    return entries


def _reason(oracle: Oracle, device: str) -> str | None:
    try:
        return oracle.available(device)
    except Exception as error:  # available() must never crash the harness
        return f"{oracle.label}.available({device!r}) raised {type(error).__name__}: {error}"


def runnable(oracles: list[Oracle] | None = None) -> list[tuple[Oracle, str]]:
    """``(oracle, device)`` pairs that can run here."""
    return [(e.oracle, e.device) for e in inventory(oracles) if e.runnable]


class _Missing(Oracle):
    """Stands for an oracle whose module could not be imported."""

    name, mode = "fd", "fd"

    def available(self, device: str = "cpu") -> str | None:
        return fd_oracles()[1]

    def run(self, case, device="cpu", dtype=None):  # pragma: no cover - never runnable
        raise RuntimeError(self.available(device))
