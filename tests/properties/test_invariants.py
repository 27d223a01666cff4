"""Invariants from the seeds, as properties over drawn cases (float64 copies).

Tolerance for all of them: the two sides are the same sums taken in another order, so they
agree to ``TOL = 1e-9`` relative to the largest magnitude involved (float64 unit roundoff
1.1e-16 times accumulation lengths far below 1e6)."""

from __future__ import annotations

import numpy as np
from hypothesis import given

import backprop_oracle as bo
from backprop_oracle.properties.cases import hypothesis_strategies as S
from backprop_oracle.reference.case import Conv2d, Dense, node
from backprop_oracle.reference.costs import softmax_cross_entropy
from backprop_oracle.reference.training import minibatch

TOL = 1e-9


def close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(1.0, float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(b), initial=0)))
    return float(np.max(np.abs(a - b), initial=0)) <= TOL * scale


@given(S.any_cases(families=("mlp", "cnn", "softmax")))
def test_batch_gradient_is_the_mean_of_per_sample_gradients(case: bo.Case) -> None:
    """Seed 000, assumption 1: C = (1/n) sum_x C_x, so nabla C = (1/n) sum_x nabla C_x."""
    case = case.astype("float64")
    whole = bo.backprop(case).grads
    singles = [bo.backprop(minibatch(case, np.array([i]))).grads for i in range(case.batch)]
    for name in whole:
        mean = np.mean([g[name] for g in singles], axis=0)
        assert close(whole[name], mean), name


@given(S.any_cases(families=("mlp", "cnn", "softmax")))
def test_bias_gradient_is_the_batch_sum_of_delta(case: bo.Case) -> None:
    """BP3: dC/db^l = sum_x delta^(x,l) (= the batch mean of per-sample deltas, since our
    delta carries the 1/n of the batch cost); for conv, summed over positions too."""
    case = case.astype("float64")
    result = bo.backprop(case)
    number = 0
    for l, spec in enumerate(case.layers, 1):
        if isinstance(spec, (Dense, Conv2d)):
            number += 1
            delta = result.deltas[f"delta{l}"]
            axes = (0,) if isinstance(spec, Dense) else (0, 2, 3)
            assert close(result.grads[f"b{number}"], delta.sum(axis=axes)), f"b{number}"


@given(S.softmax_cases())
def test_softmax_gradient_rows_sum_to_zero_and_are_shift_invariant(case: bo.Case) -> None:
    """Softmax-with-loss: dC/dz = (y - t)/n, rows sum to 0; adding c to a row of logits
    changes neither the gradient nor (for rows of t summing to 1) the loss."""
    case = case.astype("float64")
    z = bo.backprop(case).zs[f"z{len(case.layers)}"]
    loss, delta = softmax_cross_entropy(z, z, case.y, "identity")
    scale = float(np.max(np.abs(case.y.sum(axis=1) - 1))) + 1e-12
    assert np.all(np.abs(delta.sum(axis=1)) <= 1e-12 + scale)
    shift = np.linspace(-50, 50, z.shape[0])[:, None]
    loss2, delta2 = softmax_cross_entropy(z + shift, z + shift, case.y, "identity")
    assert close(delta, delta2)
    assert abs(loss - loss2) <= TOL * max(1.0, abs(loss)) + float(np.max(np.abs(shift))) * scale


@given(S.graph_cases(dtypes=["float64"]))
def test_composed_sigmoid_graph_equals_the_sigmoid_node(case: bo.Case) -> None:
    """Seed 002: 1 / (1 + exp(-u)) built from /, +, exp and x(-1) has the same value and
    backward as the sigmoid node, wherever it is used as the last node of a graph."""
    n = len(case.layers)
    composed = case.layers + (node("mul", n, -1.0), node("exp", n + 1), node("add", n + 2, 1.0),
                              node("reciprocal", n + 3))
    direct = case.layers + (node("sigmoid", n),)
    a = bo.backprop(case.with_arrays(layers=composed))  # type: ignore[arg-type]
    b = bo.backprop(case.with_arrays(layers=direct))  # type: ignore[arg-type]
    assert abs(a.loss - b.loss) <= TOL * max(1.0, abs(b.loss))
    for name in b.grads:
        assert close(a.grads[name], b.grads[name]), name
