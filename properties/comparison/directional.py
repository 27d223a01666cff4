"""Forward mode checked along directions: the loss tangent ``D_u`` an oracle computed along a
random sign tensor ``u`` of one tensor, against the reference's ``<u, g>`` (the adjoint
identity ``<J u, 1> = <u, J^T 1>`` of the loss, ``g = J^T 1`` being the reference's
back-propagated derivative).

Error model. Every element of a correct ``g`` is within ``tol_i`` of the truth
(``error_model``); the tangent along ``u`` is the same sums over the same paths weighted by
``u_i``, so its rounding is bounded by ``sum_i |u_i| tol_i = ||tol||_1`` (``|u_i| = 1``), and
the float64 projection ``<u, g>`` adds at most ``n 2^-53 sum_i |g_i|``. Beyond that *sound*
bound the tensor is ``diverge``, whatever else is found.

Screen. A bug usually shows long before the sound bound. A tensor whose tangents all stay
within ``||tol||_2`` (the root-sum-square of the elementwise tolerances; never more than
``||tol||_1``) agrees. Rounding errors of a correct framework are far smaller than their
bounds and of both signs, so ``<u, e>`` is far below that: Hoeffding gives
``P(|<u, e>| >= ||tol||_2) <= 2 exp(-1 / (2 r^2))`` when every ``|e_i| <= r tol_i``, and on
320 default draws (both frameworks, four families) the largest tangent error was 0.07 x 5.4
``||tol||_2`` = 0.38 ``||tol||_2`` (``benchmarks/bench_directions.py``). A tensor past the
threshold is *localised*: the oracle computes it (and every ``delta<l>``, for the layer where
it enters) along its whole basis, and the ordinary elementwise comparison (kinks, replay)
gives its verdict. The screen only decides what is localised, so it cannot raise a false
alarm; set too low, it would only cost time.

Detection. A single wrong element (error ``d``) moves every tangent by exactly ``|d|``
(``|u_i| = 1``): it is localised when ``|d|`` exceeds ``||tol||_2`` (about ``sqrt(n)``
elementwise tolerances), whichever direction; the elementwise check needs ``|d| > tol_i``.
A tensor off by a factor ``(1 + s)`` moves tangent ``j`` by ``s <u_j, g>``, and ``<u, g>``
is rarely small: ``P(|<u, g>| <= t) <= sqrt(2/pi) t / ||g||_2`` roughly (for
spread-out ``g``), so ``k`` directions all miss with probability about that to the ``k``
(``benchmarks/bench_directions.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...reference.case import Case
from ...reference.result import Result
from .compare import Comparison, tensor_of
from .error_model import KAPPA, Bounds, tolerance, underflow_floor, unit_roundoff
from .records import Record, delta_layer

__all__ = ["directional_records", "localise_names", "reconcile", "Screen", "screen"]

Array = NDArray[np.float64]


@dataclass
class Screen:
    """One tensor's directional check: the oracle's tangents ``values``, the reference's
    projections ``expected``, and per direction the sound bound and the screen threshold."""

    name: str
    quantity: str
    shape: tuple[int, ...]
    values: Array
    expected: Array
    sound: Array
    threshold: Array

    @property
    def err(self) -> Array:
        return np.abs(self.values - self.expected)

    @property
    def passed(self) -> bool:
        """Every tangent finite and within the screen threshold."""
        return bool(np.all(np.isfinite(self.values)) and np.all(self.err <= self.threshold))

    @property
    def ratio(self) -> float:
        """Largest error over the sound bound (``> 1``: beyond any rounding)."""
        return _ratio(self.err, self.sound, self.values)

    @property
    def screen_ratio(self) -> float:
        """Largest error over the screen threshold (``> 1``: localised)."""
        return _ratio(self.err, self.threshold, self.values)

    def summary(self) -> dict[str, Any]:
        return {"directions": len(self.values), "sound_ratio": self.ratio,
                "screen_ratio": self.screen_ratio, "localised": not self.passed}


def _ratio(err: Array, bound: Array, values: Array) -> float:
    """``max err / bound`` (``inf`` where a value is not finite or a zero bound is exceeded)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0))
    return float(np.max(np.where(np.isfinite(values), r, np.inf), initial=0.0))


def screen(case: Case, expected: Result, actual: Result, model: Bounds, *, dtype: str,
           expected_dtype: str | None = None, kappa: float = KAPPA) -> dict[str, Screen]:
    """Each tensor of ``actual.meta["directional"]`` checked against ``expected``."""
    found: Mapping[str, Mapping[str, Any]] = actual.meta.get("directional") or {}
    dtype_e = expected_dtype or str(expected.meta.get("dtype_computed") or case.dtype)
    u_a, u_e = unit_roundoff(dtype), unit_roundoff(dtype_e)
    floor = underflow_floor(model, dtype, dtype_e, kappa)
    out = {}
    for name, tangents in found.items():
        g = tensor_of(expected, name)
        if g is None:
            continue
        g = np.asarray(g, np.float64).reshape(-1)
        u = np.asarray(tangents["u"], np.float64).reshape(len(tangents["u"]), -1)
        tol = tolerance(model.E[name], u_a, u_e, 0.0, kappa, floor).reshape(-1)
        rounding = g.size * 2.0 ** -53 * float(np.abs(g).sum())
        l1 = float(tol.sum())
        sound = np.full(len(u), l1 + rounding)
        threshold = np.full(len(u), min(float(np.linalg.norm(tol)), l1) + rounding)
        out[name] = Screen(name, "delta" if delta_layer(name) else "grad",
                           tuple(np.shape(tensor_of(expected, name))),
                           np.asarray(tangents["values"], np.float64), u @ g, sound, threshold)
    return out


def localise_names(case: Case, screens: Mapping[str, Screen]) -> list[str]:
    """What to compute along the whole basis: the tensors that failed the screen, and then
    every ``delta<l>`` too (where the divergence enters, and the kink replay, need them)."""
    failed = [n for n, s in screens.items() if not s.passed]
    if not failed:
        return []
    deltas = [n for n in screens if delta_layer(n) is not None]
    return list(dict.fromkeys([*failed, *deltas]))


def reconcile(comparison: Comparison, screens: Mapping[str, Screen]) -> Comparison:
    """A localised tensor that the elementwise comparison found in agreement while its
    tangents are beyond the sound bound is ``diverge`` (the tangents themselves are wrong);
    every localised tensor's record says how the screen saw it."""
    for name, s in screens.items():
        if name not in comparison.verdicts:
            continue
        note: dict[str, Any] = {"directional": s.summary()}
        if comparison.verdicts[name] == "agree" and s.ratio > 1:
            comparison.verdicts[name] = "diverge"
            note["message"] = (f"{name}: every element agrees along the basis, but the "
                               f"tangents along random directions are {s.ratio:.3g}x beyond "
                               "the sound bound")
        comparison.notes[name] = {**comparison.notes.get(name, {}), **note}
    comparison.first = comparison.divergent_layer()
    return comparison


def directional_records(screens: Mapping[str, Screen], where: dict[str, Any],
                        methods: dict[str, str], first: int | None) -> list[Record]:
    """One record per tensor that passed the screen (``agree``): its errors are those of the
    directional products (``n_total`` directions; ``detail["worst_direction"]``)."""
    out = []
    for s in screens.values():
        if not s.passed:
            continue
        err = s.err
        j = int(np.argmax(err / np.where(s.sound > 0, s.sound, 1)))
        e_j, a_j = float(s.expected[j]), float(s.values[j])
        ulp = float(np.spacing(np.asarray(max(abs(e_j), abs(a_j),
                                              float(np.finfo(where["dtype"]).tiny)),
                                          dtype=where["dtype"])))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(s.expected) > 0, err / np.abs(s.expected), 0.0)
        out.append(Record(
            **where, quantity=s.quantity, name=s.name, shape=s.shape,
            max_abs_err=float(err.max()), max_rel_err=float(rel.max()),
            err_ulps=float(err[j] / ulp), n_beyond=0, n_total=len(err),
            tolerance=float(s.sound[j]), margin=s.ratio, verdict="agree",
            tolerance_model=f"directional: {len(err)} random sign directions u, "
                            f"|D_u - <u, g>| <= sum_i tol_i + rounding; screened at "
                            f"min(||tol||_2, sum_i tol_i)",
            expected_value=e_j, actual_value=a_j, norm_err=float(np.linalg.norm(err)),
            norm_tol=float(np.linalg.norm(s.sound)), first_divergent_layer=first,
            detail={**methods, **s.summary(), "worst_direction": j}))
    return out
