"""Every oracle this package knows, the devices each could use, and why any is skipped.

``all_oracles()`` lists oracle objects (PyTorch and JAX in both modes and both precision
settings, and finite differences when its module imports); ``inventory()`` crosses them with
their devices and gives the reason for every combination that cannot run here; ``runnable()``
keeps the rest. Nothing here imports torch or jax: a missing framework is a reason.

``odd_one_out(results)`` names the implementation that disagrees with all the others while
those agree among themselves (a coarse, magnitude-relative check for triage; the error-model
comparison in ``properties.compare`` is the verdict).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..reference.result import Result
from ._common import MODES, PRECISIONS
from .base import Oracle
from .jax_oracle import JaxOracle
from .torch_oracle import TorchOracle

ODD_RTOL = {"float64": 1e-8, "float32": 1e-4}  # triage only: relative to max |value|


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
    return [cls(mode=m, precision=p) for cls in (TorchOracle, JaxOracle)
            for m in MODES for p in PRECISIONS]


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


# --- triage: which implementation is the odd one out ----------------------------------------


def _tensors(r: Result) -> dict[str, np.ndarray]:
    return {"loss": np.asarray(r.loss), **{f"grad {k}": v for k, v in r.grads.items()},
            **{k: v for k, v in r.deltas.items()}}


def _dtype(r: Result) -> str:
    values = list(r.grads.values())
    return np.asarray(values[0]).dtype.name if values else "float64"


def agree(a: Result, b: Result, rtol: float | None = None) -> bool:
    """Loss, common gradients and common deltas of ``a`` and ``b`` each within
    ``rtol * max |value|`` (default ``ODD_RTOL`` by dtype, the coarser of the two)."""
    if rtol is None:
        rtol = max(ODD_RTOL.get(_dtype(a), 1e-4), ODD_RTOL.get(_dtype(b), 1e-4))
    ta, tb = _tensors(a), _tensors(b)
    for name in ta.keys() & tb.keys():
        x, y = np.asarray(ta[name], np.float64), np.asarray(tb[name], np.float64)
        if x.shape != y.shape:
            return False
        scale = max(np.max(np.abs(x), initial=0.0), np.max(np.abs(y), initial=0.0))
        if np.any(~np.isfinite(x) | ~np.isfinite(y)) or np.max(np.abs(x - y), initial=0.0) > \
                rtol * scale:
            return False
    return True


def odd_one_out(results: dict[str, Result], rtol: float | None = None) -> str | None:
    """The name of the one result that disagrees with every other while all the others
    agree pairwise; ``None`` when there is no such single culprit (fewer than 3 results,
    all agree, or the disagreement is not isolated)."""
    if len(results) < 3:
        return None
    names = list(results)
    ok = {frozenset(p): agree(results[p[0]], results[p[1]], rtol)
          for p in itertools.combinations(names, 2)}
    odd = [n for n in names
           if not any(ok[frozenset((n, m))] for m in names if m != n)
           and all(ok[frozenset(p)] for p in itertools.combinations(
               [m for m in names if m != n], 2))]
    return odd[0] if len(odd) == 1 else None
