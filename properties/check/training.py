"""``bo.check_training``: SGD with momentum and a learning-rate schedule, checked step by step
(teacher-forced: each step starts from the reference's parameters and velocity, so errors do
not compound and the tolerance has an exact model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...reference import backprop
from ...reference import training as ref_training
from ...reference.case import Case
from ..campaign.output import Output
from ..campaign.stopping import Stop, graceful
from ..comparison.compare import where
from ..comparison.error_model import KAPPA, bounds, tolerance, unit_roundoff
from ..comparison.evaluate import BadReturn
from ..comparison.records import Record, bad_return_record, error_record
from .api import Report, call, check_array, describe_case, impl_name, resolve_cases

__all__ = [
    "check_training", "check_training_case", "TrainImpl", "Training", "update_record",
    "update_tolerance"
]


@dataclass(frozen=True)
class Training:
    """``steps`` steps of SGD with momentum ``mu`` (``convention`` ``"pytorch"``:
    ``v <- mu v + g; w <- w - eta_t v``, or ``"classic"``: ``v <- mu v - eta_t g; w <- w + v``)
    and the step-decay schedule ``eta_t = eta0 * gamma ** (t // every)``, starting at step
    ``start`` with momentum buffers ``velocity`` (zeros when ``None``)."""

    steps: int = 4
    eta0: float = 0.05
    gamma: float = 0.5
    every: int = 2
    mu: float = 0.9
    convention: str = "pytorch"
    start: int = 0
    velocity: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.convention not in ref_training.CONVENTIONS:
            raise ValueError(f"convention must be one of {ref_training.CONVENTIONS}, got "
                             f"{self.convention!r}")
        if self.steps < 1 or self.every < 1:
            raise ValueError("steps and every must be >= 1")

    def eta(self, t: int) -> float:
        """The learning rate of step ``t`` (counted from 0 at the start of training)."""
        return ref_training.step_decay(self.eta0, self.gamma, self.every)(t)


TrainImpl = Callable[[Case, Training], Sequence[Mapping[str, Any]]]


def _velocity(case: Case, training: Training) -> dict[str, np.ndarray]:
    return dict(training.velocity) if training.velocity is not None else {
        k: np.zeros_like(w) for k, w in case.params.items()}


def update_tolerance(case: Case, name: str, eta: float, mu: float, grad: np.ndarray,
                     v_prev: np.ndarray, v_new: np.ndarray, convention: str = "pytorch",
                     kappa: float = KAPPA) -> np.ndarray:
    """Per-element bound on ``|w_impl - w_ref|`` after one teacher-forced step at parameters
    ``w = case.params``: ``eta tol(grad)`` (``tol(grad)``: the comparison's error-model
    tolerance of the gradient at ``w``) plus the rounding of the update itself,
    ``kappa u (eta (mu |v| + |g|) + |w| + eta |v'|)`` for ``"pytorch"`` and
    ``kappa u (mu |v| + eta |g| + |w| + |v'|)`` for ``"classic"``."""
    u = unit_roundoff(case.dtype)
    tol_g = tolerance(bounds(case).E[name], u, u, kappa=kappa)
    w, g, v, v2 = (np.abs(x) for x in (case.params[name], grad, v_prev, v_new))
    if convention == "pytorch":
        rounding = eta * (mu * v + g) + w + eta * v2
    else:
        rounding = mu * v + eta * g + w + v2
    return eta * tol_g + kappa * u * rounding


def check_training_case(impl: TrainImpl, case: Case, training: Training, name: str,
                        replay: str = "") -> list[Record]:
    """Teacher-forced: step ``t`` of ``impl`` starts from the reference's parameters and
    velocity at ``t`` (``Training(steps=1, start=t, velocity=v_t)``); one ``update`` record
    per parameter and step."""
    at = where(case, name, "training", "cpu", case.dtype, replay=replay.format(case=case))
    params, velocity = dict(case.params), _velocity(case, training)
    rows: list[Record] = []
    for t in range(training.start, training.start + training.steps):
        at_t = case.with_arrays(params=params)
        grads = backprop(at_t).grads
        eta = training.eta(t)
        new_w, new_v = ref_training.momentum_step(params, grads, velocity, eta, training.mu,
                                                  training.convention)
        one = dataclasses.replace(training, steps=1, start=t, velocity=velocity)
        try:
            returned = call(impl, at_t, one)
            got = _step_params(at_t, returned, t)
        except BadReturn as exc:
            return rows + [bad_return_record({**at, "step": t}, "-", str(exc), None)]
        except Exception as exc:  # recorded with its traceback
            return rows + [error_record({**at, "step": t}, exc)]
        for k, w in new_w.items():
            tol = update_tolerance(at_t, k, eta, training.mu, grads[k], velocity[k], new_v[k],
                                   training.convention)
            rows.append(update_record(at, k, t, eta, w, got[k], tol))
        params, velocity = new_w, new_v
    return rows


def _step_params(case: Case, returned: Any, t: int) -> dict[str, np.ndarray]:
    if not isinstance(returned, Sequence) or len(returned) != 1:
        raise BadReturn(f"{describe_case(case)}: step {t}: expected a list with the parameters "
                        f"after the one step asked for, got {type(returned).__name__}"
                        + (f" of length {len(returned)}" if isinstance(returned, Sequence)
                           else ""))
    after = returned[0]
    if not isinstance(after, Mapping):
        raise BadReturn(f"{describe_case(case)}: step {t}: parameters are a "
                        f"{type(after).__name__}, expected a dict keyed like case.params")
    missing = [k for k in case.params if k not in after]
    extra = sorted(set(map(str, after)) - set(case.params))
    if missing or extra:
        raise BadReturn(f"{describe_case(case)}: step {t}: missing {missing or 'none'}, unexpected "
                        f"{extra or 'none'}")
    return {k: check_array(case, k, after[k], case.params[k].shape) for k in case.params}


def update_record(at: dict[str, Any], name: str, t: int, eta: float, expected: np.ndarray,
                  actual: np.ndarray, tol: np.ndarray) -> Record:
    """The ``update`` record of parameter ``name`` after step ``t``: ``actual`` against
    ``expected`` within the per-element bound ``tol`` (``update_tolerance``)."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    finite = np.isfinite(a)
    err = np.where(finite, np.abs(a - e), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
    margin = float(ratio.max(initial=0.0))
    verdict = "nan" if not finite.all() else ("agree" if margin <= 1 else "diverge")
    return Record(**at, quantity="update", name=name, step=t, shape=tuple(e.shape),
                  max_abs_err=float(err.max(initial=0.0)), margin=margin,
                  tolerance=float(tol[worst]) if ratio.size else 0.0,
                  tolerance_model=f"eta_t={eta:g} x tol(grad) + kappa x u x update terms",
                  worst_index=tuple(int(i) for i in worst), verdict=verdict,
                  n_beyond=int((ratio > 1).sum()), n_total=int(ratio.size),
                  expected_value=float(e[worst]) if ratio.size else None,
                  actual_value=float(a[worst]) if ratio.size else None)


def check_training(impl: TrainImpl, cases: Sequence[Case] | Case | str,
                   training: Training | None = None, *, n: int = 10, seed: int = 0,
                   name: str | None = None, replay: str = "", output: Output | None = None,
                   stop: Stop | None = None, **constraints: Any) -> Report:
    """Check ``impl(case, training) -> [params after each step]`` step by step against the
    reference's SGD with momentum and schedule (``Training``). Cases, ``output`` and stopping
    as in ``check`` (the implementation runs in this process)."""
    chosen = resolve_cases(cases, n, seed, constraints)
    training = training or Training()
    label = name or impl_name(impl)
    report = Report(name=label, replay=replay)
    with graceful(stop) as stop:
        for case in chosen:
            if stop.requested:
                break
            records = check_training_case(impl, case, training, label, replay)
            report.add(case, records, output)
        report.interrupted = stop.requested
    return report
