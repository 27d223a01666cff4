"""The computational-graph engine (seed 002): node rules, the composed sigmoid, softmax-with-
loss, fan-out merging, broadcasting leaves and constants, and central differences."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference import graph
from backprop_oracle.reference.activations import sigmoid
from backprop_oracle.reference.costs import softmax

from ._fd import assert_matches_fd


def backward(op: str, upstream: float, *inputs: float) -> tuple[float, ...]:
    ins = tuple(np.float64(v) for v in inputs)
    out = graph.OPS[op].forward(*ins)
    return tuple(float(g) for g in graph.OPS[op].backward(np.float64(upstream), ins, out))


def test_seed002_mul_node_multiplies_by_the_other_input() -> None:
    # inputs 10 and 5, upstream 1.3: 1.3 * 5 = 6.5 to the first, 1.3 * 10 = 13 to the second
    assert backward("mul", 1.3, 10.0, 5.0) == pytest.approx((6.5, 13.0), abs=1e-12)


def test_seed002_add_node_passes_upstream_through() -> None:
    assert backward("add", 1.3, 10.0, 5.0) == (1.3, 1.3)


@pytest.mark.parametrize(("op", "inputs", "local"), [
    ("div", (3.0, 4.0), (1 / 4, -3 / 16)),
    ("neg", (3.0,), (-1.0,)),
    ("exp", (0.5,), (np.exp(0.5),)),
    ("reciprocal", (4.0,), (-1 / 16,)),
    ("log", (4.0,), (1 / 4,)),
    ("sigmoid", (0.3,), (sigmoid(0.3) * (1 - sigmoid(0.3)),)),
])
def test_node_local_derivatives(op: str, inputs: tuple[float, ...],
                                local: tuple[float, ...]) -> None:
    upstream = 1.7
    expected = tuple(upstream * d for d in local)
    assert backward(op, upstream, *inputs) == pytest.approx(expected, rel=1e-14)


def test_seed002_composed_sigmoid_chain_backward_is_sigma_one_minus_sigma() -> None:
    """x -> mul(-1) -> exp -> add(1) -> reciprocal, differentiated node by node (steps 1-4)."""
    x = np.linspace(-3, 3, 7)
    a = graph.OPS["mul"].forward(x, -1.0)
    b = graph.OPS["exp"].forward(a)
    c = graph.OPS["add"].forward(b, 1.0)
    y = graph.OPS["reciprocal"].forward(c)
    (dc,) = graph.OPS["reciprocal"].backward(np.ones_like(x), (c,), y)  # step 1: -y^2
    db, _ = graph.OPS["add"].backward(dc, (b, 1.0), c)  # step 2: pass through
    (da,) = graph.OPS["exp"].backward(db, (a,), b)  # step 3: times exp(a)
    dx, _ = graph.OPS["mul"].backward(da, (x, -1.0), a)  # step 4: times -1
    np.testing.assert_allclose(y, sigmoid(x), rtol=1e-15)
    np.testing.assert_allclose(dx, y * (1 - y), rtol=1e-14)


def sigmoid_graph_cases() -> tuple[bo.Case, bo.Case]:
    """z = x + p1 fed to the composed sigmoid chain, and to a single sigmoid node."""
    rng = np.random.default_rng(0)
    x, y, p1 = rng.standard_normal((4, 3)), rng.random((4, 3)), rng.standard_normal(3)
    composed = (bo.node("add", "x", "p1"), bo.node("mul", 1, -1.0), bo.node("exp", 2),
                bo.node("add", 3, 1.0), bo.node("reciprocal", 4))
    single = (bo.node("add", "x", "p1"), bo.node("sigmoid", 1))
    make = lambda layers: bo.Case(family="graph", layers=layers, cost="quadratic",  # noqa: E731
                                  params={"p1": p1}, x=x, y=y)
    return make(composed), make(single)


def test_seed002_composed_sigmoid_graph_equals_sigmoid_node() -> None:
    composed, single = (bo.backprop(c) for c in sigmoid_graph_cases())
    assert composed.loss == pytest.approx(single.loss, rel=1e-14)
    np.testing.assert_allclose(composed.activations["a5"], single.activations["a2"], rtol=1e-14)
    np.testing.assert_allclose(composed.deltas["delta1"], single.deltas["delta1"], rtol=1e-12)
    np.testing.assert_allclose(composed.grads["p1"], single.grads["p1"], rtol=1e-12)


def test_sigmoid_graph_delta_is_upstream_times_sigma_one_minus_sigma() -> None:
    case, _ = sigmoid_graph_cases()
    result = bo.backprop(case)
    s = result.activations["a5"]
    upstream = (s - case.y) / case.batch  # quadratic, batch mean
    np.testing.assert_allclose(result.deltas["delta5"], upstream, rtol=1e-14)
    np.testing.assert_allclose(result.deltas["delta1"], upstream * s * (1 - s), rtol=1e-12)
    # the leaf p1 is broadcast over the batch, so its gradient is the batch sum
    np.testing.assert_allclose(result.grads["p1"], result.deltas["delta1"].sum(axis=0),
                               rtol=1e-14)


def test_seed002_softmax_with_loss_delta_is_y_minus_t_over_n() -> None:
    rng = np.random.default_rng(1)
    x, p1 = rng.standard_normal((5, 4)), rng.standard_normal(4)
    t = np.eye(4)[[0, 3, 1, 1, 2]]
    case = bo.Case(family="graph", layers=(bo.node("add", "x", "p1"),),
                   cost="softmax_cross_entropy", params={"p1": p1}, x=x, y=t)
    result = bo.backprop(case)
    y = softmax(x + p1)
    np.testing.assert_allclose(result.deltas["delta1"], (y - t) / 5, rtol=1e-13, atol=1e-16)
    expected_loss = -np.mean(np.log(y[np.arange(5), t.argmax(axis=1)]))
    assert result.loss == pytest.approx(expected_loss, rel=1e-13)


def test_fan_out_merges_by_addition() -> None:
    """y = x * x: node 1 feeds mul twice, so its gradient is 2x times upstream (split/merge)."""
    x = np.array([[1.5, -2.0]])
    case = bo.Case(family="graph", layers=(bo.node("add", "x", "p1"), bo.node("mul", 1, 1)),
                   cost="quadratic", params={"p1": np.zeros(2)}, x=x, y=np.zeros((1, 2)))
    result = bo.backprop(case)
    upstream = x * x  # (a - y) / n with a = x^2, y = 0, n = 1
    np.testing.assert_allclose(result.deltas["delta1"], 2 * x * upstream, rtol=1e-15)


ALL_OPS_GRAPH = (
    bo.node("mul", "p1", "p2"),        # 1: leaves only, shape (k,), broadcast later
    bo.node("mul", "x", 1),            # 2
    bo.node("add", 2, "p3"),           # 3
    bo.node("sigmoid", 3),             # 4
    bo.node("exp", 4),                 # 5  > 0
    bo.node("log", 5),                 # 6
    bo.node("div", 6, "p4"),           # 7  p4 in [1, 2]
    bo.node("neg", 7),                 # 8
    bo.node("add", 8, 2.0),            # 9  constant; in (1, 2)
    bo.node("reciprocal", 9),          # 10
    bo.node("mul", 10, 4),             # 11 node 4 used twice (fan-out)
    bo.node("log", "p4"),              # 12 log of a positive leaf
    bo.node("div", 3.0, 9),            # 13 constant numerator
    bo.node("mul", 13, 12),            # 14
    bo.node("add", 11, 14),            # 15 output
)


@pytest.mark.parametrize("cost", ["quadratic", "softmax_cross_entropy"])
def test_graph_with_every_op_matches_central_differences(cost: str) -> None:
    rng = np.random.default_rng(2)
    k = 3
    params = {"p1": rng.standard_normal(k), "p2": rng.standard_normal(k),
              "p3": rng.standard_normal(k), "p4": rng.uniform(1.0, 2.0, k)}
    y = rng.random((4, k))
    if cost == "softmax_cross_entropy":
        y = y / y.sum(axis=1, keepdims=True)
    case = bo.Case(family="graph", layers=ALL_OPS_GRAPH, cost=cost, params=params,
                   x=rng.standard_normal((4, k)), y=y)
    assert_matches_fd(case)


def test_graph_output_that_is_a_leaf_expression_broadcasts_over_the_batch() -> None:
    """An output built from leaves only has shape (k,); each sample sees the same value."""
    rng = np.random.default_rng(3)
    p1, y = rng.standard_normal(2), rng.standard_normal((3, 2))
    case = bo.Case(family="graph", layers=(bo.node("mul", "p1", 2.0),), cost="quadratic",
                   params={"p1": p1}, x=np.zeros((3, 2)), y=y)
    result = bo.backprop(case)
    # C = mean_x 1/2 ||2 p1 - y_x||^2  ->  dC/dp1 = 2 * mean_x (2 p1 - y_x)
    np.testing.assert_allclose(result.grads["p1"], 2 * np.mean(2 * p1 - y, axis=0), rtol=1e-13)
    assert_matches_fd(case)
