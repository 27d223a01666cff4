"""Initialisers (seed 001): "standard" uniform(-1, 1) and Xavier/Glorot normal with
``sigma = sqrt(2 / (n_in + n_out))``. For a conv weight ``(out, in, k, k)`` the fans are
``in * k * k`` and ``out * k * k``, as in ``torch.nn.init`` and ``jax.nn.initializers``."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .case import Layer, layer_shapes

Array = NDArray[np.floating]
SCHEMES = ("uniform", "xavier")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(n_in, n_out)`` of a weight of ``shape``."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of ndim >= 2, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def xavier_sigma(shape: tuple[int, ...]) -> float:
    n_in, n_out = fans(shape)
    return float(np.sqrt(2.0 / (n_in + n_out)))


def uniform(shape: tuple[int, ...], rng: np.random.Generator, dtype: str = "float64") -> Array:
    """``U(-1, 1)``."""
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def xavier_normal(shape: tuple[int, ...], rng: np.random.Generator,
                  dtype: str = "float64") -> Array:
    """``N(0, sigma^2)``, ``sigma = sqrt(2 / (n_in + n_out))``."""
    return (rng.standard_normal(size=shape) * xavier_sigma(shape)).astype(dtype)


def init_params(layers: tuple[Layer, ...], input_shape: tuple[int, ...],
                rng: np.random.Generator, scheme: str = "xavier",
                dtype: str = "float64") -> dict[str, Array]:
    """Parameters for ``layers`` on inputs of ``input_shape`` (no batch axis). Weights follow
    ``scheme``; biases are drawn too (uniform(-1, 1), or uniform(-sigma, sigma) of their
    layer for Xavier), never
    zero, so that a wrong bias gradient cannot hide behind a zero bias."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown initialiser {scheme!r}; expected one of {', '.join(SCHEMES)}")
    shapes = {k: v for k, v in layer_shapes(layers, input_shape).items() if not k.startswith("z")}
    params: dict[str, Array] = {}
    for name, shape in shapes.items():
        if name.startswith("W"):
            draw = uniform if scheme == "uniform" else xavier_normal
            params[name] = draw(shape, rng, dtype)
        else:
            weight = shapes["W" + name[1:]]
            scale = 1.0 if scheme == "uniform" else xavier_sigma(weight)
            params[name] = uniform(shape, rng, dtype) * np.asarray(scale, dtype)
    return params
