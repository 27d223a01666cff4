"""Costs as the mean over the batch of a per-sample cost, ``C = (1/n) sum_x C_x`` (seed 000).

Each cost gives the loss and ``delta^L = dC/dz^L`` (BP1), which already carries the ``1/n``
of the batch mean, so that BP3/BP4 become plain sums over the batch.

- quadratic: ``C_x = 1/2 ||y - a^L||^2``; ``delta^L = (a^L - y) ⊙ sigma'(z^L) / n`` (BP1a).
- cross_entropy (binary, on a sigmoid output): ``C_x = -sum_j [y log a + (1-y) log(1-a)]``,
  computed from the logits as ``sum_j softplus(z) - y z``; ``sigma'`` cancels in BP1:
  ``delta^L = (a^L - y) / n``.
- softmax_cross_entropy (softmax-with-loss, seed 002): ``C_x = -sum_k t_k log softmax(z)_k``
  with log-sum-exp; ``delta^L = (softmax(z) sum_k t_k - t) / n``, which is seed 002's
  ``(y - t) / n`` for rows of ``t`` summing to 1, and stays the exact gradient of the loss
  for rows that sum to 1 only up to rounding (float32 targets cast to float64).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .activations import activation

Array = NDArray[np.floating]


def softplus(z: Array) -> Array:
    """``log(1 + exp(z))`` without overflow."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def logsumexp(z: Array) -> Array:
    """Row-wise ``log sum_k exp(z_k)``, shifted by the row maximum."""
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _per_sample_sum(c: Array) -> Array:
    return c.reshape(c.shape[0], -1).sum(axis=1)


def quadratic(z: Array, a: Array, y: Array, act: str) -> tuple[np.floating, Array]:
    n = a.shape[0]
    loss = np.mean(0.5 * _per_sample_sum((y - a) ** 2))
    delta = (a - y) * activation(act)[1](z) / n  # BP1
    return loss, delta


def cross_entropy(z: Array, a: Array, y: Array, act: str) -> tuple[np.floating, Array]:
    n = a.shape[0]
    loss = np.mean(_per_sample_sum(softplus(z) - y * z))
    delta = (a - y) / n  # BP1 with sigma'(z) cancelled against d C / d a
    return loss, delta


def softmax_cross_entropy(z: Array, a: Array, y: Array, act: str) -> tuple[np.floating, Array]:
    n = z.shape[0]
    loss = np.mean(logsumexp(z) * y.sum(axis=-1) - (y * z).sum(axis=-1))
    delta = (softmax(z) * y.sum(axis=-1, keepdims=True) - y) / n  # y - t (seed 002)
    return loss, delta


COSTS: dict[str, Callable[[Array, Array, Array, str], tuple[np.floating, Array]]] = {
    "quadratic": quadratic,
    "cross_entropy": cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


def cost(name: str) -> Callable[[Array, Array, Array, str], tuple[np.floating, Array]]:
    """``(z^L, a^L, y, activation name) -> (loss, delta^L)`` for a cost name."""
    try:
        return COSTS[name]
    except KeyError:
        raise ValueError(f"unknown cost {name!r}; expected one of {', '.join(COSTS)}") from None
