"""Small fixed cases for the comparison tests (planted bugs, kinks)."""

from __future__ import annotations

import numpy as np

import backprop_oracle as bo
from backprop_oracle.reference.init import init_params


def _case(family, layers, cost, x, y, rng, dtype, **changes):
    params = init_params(layers, x.shape[1:], rng)
    params.update(changes)
    return bo.Case(family=family, layers=layers, cost=cost,
                   params={k: np.asarray(v).astype(dtype) for k, v in params.items()},
                   x=x.astype(dtype), y=y.astype(dtype))


def square_mlp(dtype: str = "float64", seed: int = 0) -> bo.Case:
    """3 dense layers of 4 units on a batch of 4 (so a bias summed over the wrong axis keeps
    its shape)."""
    rng = np.random.default_rng(seed)
    layers = (bo.dense(4, "sigmoid"), bo.dense(4, "tanh"), bo.dense(4, "sigmoid"))
    return _case("mlp", layers, "quadratic", rng.normal(size=(4, 3)), rng.uniform(size=(4, 4)),
                 rng, dtype)


def conv_maxpool(dtype: str = "float64", seed: int = 1) -> bo.Case:
    """conv -> conv (padding 1) -> maxpool(2, 1) -> flatten -> dense: no ties."""
    rng = np.random.default_rng(seed)
    layers = (bo.conv2d(2, 3, 1, 0, "tanh"), bo.conv2d(3, 3, 1, 1, "tanh"), bo.maxpool(2, 1),
              bo.flatten(), bo.dense(3, "identity"))
    return _case("cnn", layers, "softmax_cross_entropy", rng.normal(size=(2, 1, 7, 7)),
                 np.eye(3)[[0, 2]], rng, dtype)


def relu_at_zero(dtype: str = "float64") -> bo.Case:
    """Sample 0 has x = 0 and b1[0] = 0: relu input z1[0, 0] is exactly 0."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 3))
    x[0] = 0
    layers = (bo.dense(4, "relu"), bo.dense(2, "identity"))
    b1 = rng.uniform(0.2, 1, size=4)
    b1[0] = 0
    return _case("mlp", layers, "quadratic", x, rng.normal(size=(3, 2)), rng, dtype, b1=b1)


def tied_maxpool(dtype: str = "float64") -> bo.Case:
    """A 1x1 identity conv feeds maxpool(2, 2); sample 0's first window holds a tie."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 1, 4, 4))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 3.0
    layers = (bo.conv2d(1, 1, 1, 0, "identity"), bo.maxpool(2), bo.flatten(),
              bo.dense(2, "identity"))
    return _case("cnn", layers, "quadratic", x, rng.normal(size=(2, 2)), rng, dtype,
                 W1=np.ones((1, 1, 1, 1)), b1=np.zeros(1))
