"""Minibatch SGD with a learning rate (fixed or a schedule) and momentum (seed 000, 001).

``nabla`` is the gradient of the batch-mean cost, so one step is
``W <- W - eta * nabla = W - (eta/m) sum_x delta^(x,l) (a^(x,l-1))^T``.

Momentum has two conventions in use; both are implemented and named:

- ``"pytorch"`` (``torch.optim.SGD``, ``optax.sgd`` with ``trace``): ``v <- mu v + g``,
  ``w <- w - eta_t v``;
- ``"classic"`` (seed 001, Polyak): ``v <- mu v - eta_t g``, ``w <- w + v``.

They give the same trajectory while ``eta`` is fixed and differ once it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .case import Case

Array = NDArray[np.floating]
Schedule = Callable[[int], float]
CONVENTIONS = ("pytorch", "classic")


def constant(eta: float) -> Schedule:
    """``eta_t = eta``."""
    return lambda t: eta


def step_decay(eta0: float, gamma: float, every: int) -> Schedule:
    """``eta_t = eta0 * gamma ** (t // every)`` (``torch.optim.lr_scheduler.StepLR``)."""
    return lambda t: eta0 * gamma ** (t // every)


def exponential(eta0: float, gamma: float) -> Schedule:
    """``eta_t = eta0 * gamma ** t`` (``ExponentialLR``, ``optax.exponential_decay``)."""
    return lambda t: eta0 * gamma ** t


def sgd_step(params: Mapping[str, Array], grads: Mapping[str, Array], eta: float
             ) -> dict[str, Array]:
    """``w <- w - eta * nabla_w`` for every parameter."""
    return {k: (w - np.asarray(eta, w.dtype) * grads[k]).astype(w.dtype)
            for k, w in params.items()}


def momentum_step(params: Mapping[str, Array], grads: Mapping[str, Array],
                  velocity: Mapping[str, Array], eta: float, mu: float,
                  convention: str = "pytorch") -> tuple[dict[str, Array], dict[str, Array]]:
    """One momentum step in the named convention; returns ``(params, velocity)``."""
    new_w: dict[str, Array] = {}
    new_v: dict[str, Array] = {}
    for k, w in params.items():
        e, m = np.asarray(eta, w.dtype), np.asarray(mu, w.dtype)
        if convention == "pytorch":
            new_v[k] = m * velocity[k] + grads[k]
            new_w[k] = w - e * new_v[k]
        elif convention == "classic":
            new_v[k] = m * velocity[k] - e * grads[k]
            new_w[k] = w + new_v[k]
        else:
            raise ValueError(f"unknown momentum convention {convention!r}; expected one of "
                             f"{', '.join(CONVENTIONS)}")
    return new_w, new_v


@dataclass
class Trajectory:
    """``params[t]`` before step ``t`` (``params[0]`` is the start), ``losses[t]`` at it,
    and the learning rate used at each step."""

    params: list[dict[str, Array]] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)  # None: backprop gave no loss
    etas: list[float] = field(default_factory=list)


def minibatch(case: Case, rows: Array) -> Case:
    """The case restricted to the samples ``rows`` (masks included)."""
    return case.with_arrays(x=case.x[rows], y=case.y[rows],
                            masks={k: m[rows] for k, m in case.masks.items()})


def train(case: Case, steps: int, eta: float | Schedule, mu: float = 0.0,
          convention: str = "pytorch", batches: Sequence[Array] | None = None,
          backprop: Callable | None = None) -> Trajectory:
    """``steps`` SGD steps from ``case.params``; step ``t`` uses the rows ``batches[t % len]``
    (all rows by default) and learning rate ``eta(t)`` (or the fixed ``eta``)."""
    if backprop is None:
        from . import backprop as reference_backprop

        backprop = reference_backprop
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown momentum convention {convention!r}; expected one of "
                         f"{', '.join(CONVENTIONS)}")
    schedule = eta if callable(eta) else constant(eta)
    params = dict(case.params)
    velocity = {k: np.zeros_like(w) for k, w in params.items()}
    out = Trajectory()
    for t in range(steps):
        batch = case.with_arrays(params=params)
        if batches is not None:
            batch = minibatch(batch, batches[t % len(batches)])
        result = backprop(batch)
        out.params.append(params)
        out.losses.append(result.loss)
        out.etas.append(float(schedule(t)))
        if mu == 0.0:
            params = sgd_step(params, result.grads, schedule(t))
        else:
            params, velocity = momentum_step(params, result.grads, velocity, schedule(t), mu,
                                             convention)
    out.params.append(params)
    return out


def dropout_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator,
                 dtype: str = "float64") -> Array:
    """An explicit 0/1 mask keeping each unit with probability ``1 - p``."""
    return (rng.random(shape) >= p).astype(dtype)
