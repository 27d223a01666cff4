"""Fixed, hand-written cases of every family: the seed 001 worked example and one small
case per family and layer kind. Used by the tests only (``tests/oracles`` and
``tests/properties/comparison``)."""

from __future__ import annotations

import numpy as np

from ...reference.case import (
    Case,
    avgpool,
    conv2d,
    dense,
    dropout,
    flatten,
    l2pool,
    maxpool,
    node,
)
from ...reference.init import init_params

__all__ = [
    "cnn", "every_family", "graph", "mlp", "mlp_cross_entropy", "mlp_dropout", "seed001", "softmax"
]


def seed001(dtype: str = "float64") -> Case:
    """Seed 001's network: inputs (1, 0, 1), sigmoid units 4, 5 and 6, target 1.

    Seed naming -> ours (``W`` is ``(out, in)``): ``W1[j, k] = w_(k+1)(j+4)``,
    ``b1 = (theta_4, theta_5)``, ``W2 = [[w_46, w_56]]``, ``b2 = [theta_6]``.
    """
    params = {
        "W1": np.array([[0.2, 0.4, -0.5], [-0.3, 0.1, 0.2]]),
        "b1": np.array([-0.4, 0.2]),
        "W2": np.array([[-0.3, -0.2]]),
        "b2": np.array([0.1]),
    }
    return Case(family="mlp", layers=(dense(2, "sigmoid"), dense(1, "sigmoid")),
                cost="quadratic", params={k: v.astype(dtype) for k, v in params.items()},
                x=np.array([[1.0, 0.0, 1.0]], dtype), y=np.array([[1.0]], dtype))


def _network(family: str, layers: tuple, cost: str, x: np.ndarray, y: np.ndarray,
             rng: np.random.Generator, dtype: str, masks: dict | None = None) -> Case:
    params = init_params(layers, x.shape[1:], rng, "xavier", dtype)
    return Case(family=family, layers=layers, cost=cost, params=params, x=x.astype(dtype),
                y=y.astype(dtype), masks={k: m.astype(dtype) for k, m in (masks or {}).items()})


def mlp(dtype: str = "float64", seed: int = 1) -> Case:
    rng = np.random.default_rng(seed)
    layers = (dense(6, "tanh"), dense(5, "sigmoid"), dense(4, "leaky_relu"), dense(3, "identity"))
    return _network("mlp", layers, "quadratic", rng.normal(size=(5, 4)),
                    rng.normal(size=(5, 3)), rng, dtype)


def mlp_cross_entropy(dtype: str = "float64", seed: int = 2) -> Case:
    rng = np.random.default_rng(seed)
    layers = (dense(5, "relu"), dense(3, "sigmoid"))
    return _network("mlp", layers, "cross_entropy", rng.normal(size=(4, 3)),
                    rng.uniform(size=(4, 3)), rng, dtype)


def mlp_dropout(dtype: str = "float64", seed: int = 3) -> Case:
    rng = np.random.default_rng(seed)
    layers = (dense(6, "sigmoid"), dropout(0.5), dense(2, "identity"))
    mask = (rng.random((4, 6)) >= 0.5).astype(float)
    return _network("mlp", layers, "quadratic", rng.normal(size=(4, 3)),
                    rng.normal(size=(4, 2)), rng, dtype, {"mask2": mask})


def softmax(dtype: str = "float64", seed: int = 4) -> Case:
    rng = np.random.default_rng(seed)
    layers = (dense(5, "tanh"), dense(4, "identity"))
    targets = rng.dirichlet(np.ones(4), size=6)
    return _network("softmax", layers, "softmax_cross_entropy", rng.normal(size=(6, 3)),
                    targets, rng, dtype)


def cnn(pool: str = "max", dtype: str = "float64", seed: int = 5) -> Case:
    """conv (stride 2, padding 1) -> pool (overlapping for max) -> conv -> avg -> dense."""
    rng = np.random.default_rng(seed)
    first = {"max": maxpool(2, 1), "avg": avgpool(2, 1), "l2": l2pool(2, 1)}[pool]
    layers = (conv2d(3, 3, 2, 1, "tanh"), first, conv2d(2, 2, 1, 0, "sigmoid"), avgpool(2),
              flatten(), dense(4, "tanh"), dense(3, "identity"))
    x = rng.normal(size=(2, 2, 9, 9))
    return _network("cnn", layers, "softmax_cross_entropy", x,
                    np.eye(3)[rng.integers(0, 3, 2)], rng, dtype)


def graph(dtype: str = "float64", seed: int = 6) -> Case:
    """Every seed 002 node, a constant and leaves broadcast over the batch."""
    rng = np.random.default_rng(seed)
    nodes = (node("mul", "x", "p1"), node("neg", 1), node("exp", 2), node("add", 3, 1.0),
             node("reciprocal", 4), node("div", 5, "p2"), node("log", 3), node("add", 6, 7),
             node("sigmoid", 8), node("mul", 9, "p1"))
    params = {"p1": rng.normal(size=3), "p2": rng.uniform(1, 2, size=3)}
    return Case(family="graph", layers=nodes, cost="quadratic",
                params={k: v.astype(dtype) for k, v in params.items()},
                x=rng.normal(size=(4, 3)).astype(dtype), y=rng.normal(size=(4, 3)).astype(dtype))


def every_family(dtype: str = "float64") -> dict[str, Case]:
    """One fixed case per family and layer kind, by name."""
    return {
        "seed001": seed001(dtype), "mlp": mlp(dtype), "mlp_cross_entropy": mlp_cross_entropy(dtype),
        "mlp_dropout": mlp_dropout(dtype), "softmax": softmax(dtype),
        "cnn_max": cnn("max", dtype), "cnn_avg": cnn("avg", dtype), "cnn_l2": cnn("l2", dtype),
        "graph": graph(dtype),
    }
