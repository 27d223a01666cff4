"""Activation functions ``a = sigma(z)`` and their derivatives ``sigma'(z)``.

Derivatives take ``z`` (not ``a``): BP1/BP2 use ``sigma'(z^l)``. At the kink ``z = 0`` the
reference uses ``relu'(0) = 0`` and ``leaky_relu'(0) = slope``; other conventions are
measured by the oracles, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .case import LEAKY_SLOPE

Array = NDArray[np.floating]


def sigmoid(z: Array) -> Array:
    """``1 / (1 + exp(-z))`` without overflow: only ``exp(-|z|)`` is ever formed."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_prime(z: Array) -> Array:
    """``sigma(z) (1 - sigma(z))`` (seed 001, seed 002's sigmoid node)."""
    s = sigmoid(z)
    return s * (1 - s)


def tanh(z: Array) -> Array:
    return np.tanh(z)


def tanh_prime(z: Array) -> Array:
    """``1 - tanh(z)^2``."""
    return 1 - np.tanh(z) ** 2


def relu(z: Array) -> Array:
    return np.maximum(z, 0)


def relu_prime(z: Array) -> Array:
    """``1`` where ``z > 0``, else ``0`` (including ``z = 0``)."""
    return (z > 0).astype(z.dtype)


def leaky_relu(z: Array) -> Array:
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def leaky_relu_prime(z: Array) -> Array:
    """``1`` where ``z > 0``, else ``LEAKY_SLOPE`` (including ``z = 0``)."""
    return np.where(z > 0, 1, LEAKY_SLOPE).astype(z.dtype)


def identity(z: Array) -> Array:
    return z


def identity_prime(z: Array) -> Array:
    return np.ones_like(z)


ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
    "identity": (identity, identity_prime),
}
KINKED = frozenset({"relu", "leaky_relu"})


def activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """``(sigma, sigma')`` for an activation name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)}") from None
