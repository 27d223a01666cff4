"""Fixed cases and explicit tolerances shared by the framework-oracle tests.

Tolerances (until the error-model comparison replaces them): each tensor (gradient, delta)
must satisfy ``max |actual - reference| <= rtol * max |reference|``, and the loss
``|actual - reference| <= rtol * max(|reference|, term scale)``, with

- float64: ``rtol = 1e-10`` (about 4.5e5 ulps: both sides round at 1.1e-16 per operation,
  and these small networks accumulate at most a few hundred ulps);
- float32: ``rtol = 256 * eps32 = 3.05e-5`` (eps32 = 1.19e-7; 256 covers the depth x fan-in
  of these networks; observed errors are below 20 eps32);

times ``1 + max |z^L|`` for the extreme-logit softmax case, whose loss and softmax are
conditioned by the logits' magnitude (a logit of 1e3 carries absolute rounding ~1e3 * eps).
"""

from __future__ import annotations

import numpy as np

import backprop_oracle as bo
from backprop_oracle.properties.cases import examples
from backprop_oracle.reference.init import init_params
from backprop_oracle.reference.result import Result

EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}
RTOL = {"float64": 1e-10, "float32": 256 * EPS["float32"]}
DTYPES = ("float64", "float32")
MODES = ("reverse", "forward")
DIRECTIONS = {"reverse": 0, "forward": 0, "directional": 4}  # forward: the whole basis


def cnn_pools(dtype: str = "float64", seed: int = 11) -> bo.Case:
    """conv (stride 2, padding 1) -> overlapping max pool -> conv (padding 1) -> overlapping
    L2 pool (after a sigmoid: no all-zero window) -> average pool -> dense, soft targets."""
    rng = np.random.default_rng(seed)
    layers = (bo.conv2d(3, 3, 2, 1, "tanh"), bo.maxpool(2, 1), bo.conv2d(2, 2, 1, 1, "sigmoid"),
              bo.l2pool(2, 1), bo.avgpool(2, 2), bo.flatten(), bo.dense(3, "identity"))
    x = rng.normal(size=(2, 2, 10, 10))
    y = rng.dirichlet(np.ones(3), size=2)
    return bo.Case(family="cnn", layers=layers, cost="softmax_cross_entropy",
                   params=init_params(layers, x.shape[1:], rng, "xavier", dtype),
                   x=x.astype(dtype), y=y.astype(dtype))


def softmax_extreme(dtype: str = "float64", seed: int = 12) -> bo.Case:
    """Logits near +-1e3 (naive exp would overflow) with O(1) differences, soft targets."""
    rng = np.random.default_rng(seed)
    layers = (bo.dense(4, "sigmoid"), bo.dense(4, "identity"))
    params = init_params(layers, (3,), rng, "xavier", "float64")
    params["b2"] = np.array([1000.0, 1000.5, 999.0, -1000.0])
    return bo.Case(family="softmax", layers=layers, cost="softmax_cross_entropy",
                   params={k: v.astype(dtype) for k, v in params.items()},
                   x=rng.normal(size=(5, 3)).astype(dtype),
                   y=rng.dirichlet(np.ones(4), size=5).astype(dtype))


def graph_softmax(dtype: str = "float64", seed: int = 13) -> bo.Case:
    """A graph with a constant-only node, a leaf-only node, and a softmax-with-loss output."""
    rng = np.random.default_rng(seed)
    nodes = (bo.node("exp", 0.5), bo.node("add", "p1", 1), bo.node("mul", "x", 2),
             bo.node("sigmoid", 3), bo.node("div", 4, "p2"), bo.node("neg", 5))
    params = {"p1": rng.normal(size=4), "p2": rng.uniform(1, 2, size=4)}
    return bo.Case(family="graph", layers=nodes, cost="softmax_cross_entropy",
                   params={k: v.astype(dtype) for k, v in params.items()},
                   x=rng.normal(size=(3, 4)).astype(dtype),
                   y=rng.dirichlet(np.ones(4), size=3).astype(dtype))


BUILDERS = {
    "seed001": examples.seed001,                  # sigmoid, quadratic
    "mlp": examples.mlp,                          # tanh, sigmoid, leaky_relu, identity
    "mlp_cross_entropy": examples.mlp_cross_entropy,  # relu, sigmoid + binary CE
    "mlp_dropout": examples.mlp_dropout,          # explicit dropout mask
    "softmax": examples.softmax,                  # soft targets
    "softmax_extreme": softmax_extreme,           # logits ~1e3
    "cnn_pools": cnn_pools,                       # stride, padding, max/l2/avg, overlapping
    "graph": examples.graph,                      # every op, a constant, broadcast leaves
    "graph_softmax": graph_softmax,               # constant-only node, softmax output
}
SCALED = {"softmax_extreme"}


def case(name: str, dtype: str) -> bo.Case:
    return BUILDERS[name](dtype)


def scale_for(name: str, expected: Result) -> float:
    """The tolerance multiplier of a case (see the module docstring)."""
    if name not in SCALED:
        return 1.0
    return 1.0 + float(np.max(np.abs(expected.zs[f"z{len(expected.zs)}"])))


def max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|`` (absolute when ``expected`` is all 0)."""
    diff = float(np.max(np.abs(np.asarray(actual, np.float64) - expected), initial=0.0))
    return diff / max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float64).tiny)


def assert_close(actual: Result, expected: Result, dtype: str, scale: float = 1.0) -> None:
    """Loss, every gradient and every delta within ``RTOL[dtype] * scale`` (see above), with
    the reference's keys and shapes and exactly the requested dtype."""
    rtol = RTOL[dtype] * scale
    assert set(actual.grads) == set(expected.grads)
    assert set(actual.deltas) == set(expected.deltas)
    loss_err = abs(actual.loss - expected.loss)
    assert loss_err <= rtol * max(abs(expected.loss), scale), \
        f"loss {actual.loss!r} vs {expected.loss!r} (tol {rtol:.2e} x max(|loss|, {scale:g}))"
    for group in ("grads", "deltas"):
        for key, want in getattr(expected, group).items():
            got = getattr(actual, group)[key]
            assert got.shape == want.shape, f"{key}: shape {got.shape} vs {want.shape}"
            assert got.dtype == np.dtype(dtype), f"{key}: dtype {got.dtype}, wanted {dtype}"
            err = max_rel(got, want)
            assert err <= rtol, f"{key}: max rel err {err:.3e} > tol {rtol:.3e}"


def assert_directional(actual: Result, expected: Result, dtype: str, k: int,
                       scale: float = 1.0) -> None:
    """Forward mode by directions: ``k`` sign tensors ``u`` (+-1, ``int8``) per parameter and
    delta of more than ``k`` elements, every tangent ``D_u`` within ``RTOL[dtype] * scale *
    sum_i |g_i|`` of the reference's ``<u, g>`` (``|<u, e>| <= max|e_i| * n`` bounds it); the
    smaller tensors along their basis, in full, each element within ``RTOL[dtype] * scale``."""
    tangents = actual.meta["directional"]
    full = {**actual.grads, **actual.deltas}
    assert not set(full) & set(tangents)
    assert {*full, *tangents} == {*expected.grads, *expected.deltas}
    for name, got in full.items():
        want = expected.grads.get(name, expected.deltas.get(name))
        assert got.size <= k and got.shape == want.shape and got.dtype == np.dtype(dtype)
        assert max_rel(got, want) <= RTOL[dtype] * scale, name
    for name, found in tangents.items():
        g = np.asarray(expected.grads.get(name, expected.deltas.get(name)), np.float64)
        u = found["u"]
        assert u.dtype == np.int8 and u.shape == (k, *g.shape) and set(np.unique(u)) <= {-1, 1}
        assert found["values"].dtype == np.dtype(dtype) and found["values"].shape == (k,)
        projected = u.reshape(k, -1).astype(np.float64) @ g.reshape(-1)
        tol = RTOL[dtype] * scale * max(float(np.abs(g).sum()), 1.0)
        err = float(np.max(np.abs(found["values"] - projected)))
        assert err <= tol, f"{name}: tangent error {err:.3e} > tol {tol:.3e}"
