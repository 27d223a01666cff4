"""Costs: values against the direct formulas, BP1 deltas against central differences in z,
stability at |z| up to 1e4, and the batch-mean convention (seed 000, assumption 1)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference import costs as C
from backprop_oracle.reference.activations import activation, sigmoid
from backprop_oracle.reference.training import minibatch

RNG_SEED = 0


def logits_and_targets(n: int = 5, k: int = 4, seed: int = RNG_SEED
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * 2
    unit = rng.random((n, k))
    one_hot = np.eye(k)[rng.integers(0, k, n)]
    return z, unit, one_hot


def test_quadratic_value_and_delta_match_formulas() -> None:
    z, y, _ = logits_and_targets()
    f, df = activation("tanh")
    a = f(z)
    loss, delta = C.quadratic(z, a, y, "tanh")
    per_sample = [0.5 * sum((y[i, j] - a[i, j]) ** 2 for j in range(4)) for i in range(5)]
    assert loss == pytest.approx(np.mean(per_sample), rel=1e-14)
    np.testing.assert_allclose(delta, (a - y) * df(z) / 5, rtol=1e-14)


def test_cross_entropy_value_and_delta_match_formulas() -> None:
    z, y, _ = logits_and_targets()
    a = sigmoid(z)
    loss, delta = C.cross_entropy(z, a, y, "sigmoid")
    per_sample = -(y * np.log(a) + (1 - y) * np.log(1 - a)).sum(axis=1)
    assert loss == pytest.approx(per_sample.mean(), rel=1e-13)
    np.testing.assert_allclose(delta, (a - y) / 5, rtol=1e-14)
    # sigma' cancels: dC/da * sigma'(z) = (a - y) / (a (1 - a)) * a (1 - a) / n
    np.testing.assert_allclose(delta, (a - y) / (a * (1 - a)) * a * (1 - a) / 5, rtol=1e-12)


def test_softmax_cross_entropy_value_and_delta_match_formulas() -> None:
    z, _, t = logits_and_targets()
    loss, delta = C.softmax_cross_entropy(z, z, t, "identity")
    y = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(np.mean(-(t * np.log(y)).sum(axis=1)), rel=1e-13)
    np.testing.assert_allclose(delta, (y - t) / 5, rtol=1e-13, atol=1e-17)  # seed 002
    np.testing.assert_allclose(C.softmax(z), y, rtol=1e-14)


COSTS_WITH_OUTPUT = [("quadratic", "sigmoid"), ("quadratic", "tanh"),
                     ("quadratic", "identity"), ("cross_entropy", "sigmoid"),
                     ("softmax_cross_entropy", "identity")]


@pytest.mark.parametrize(("name", "act"), COSTS_WITH_OUTPUT)
def test_delta_is_the_gradient_of_the_loss_in_z(name: str, act: str) -> None:
    """Central differences in z: h = 1e-6, tolerance 1e-7 * max(1, |delta|)."""
    z, unit, _ = logits_and_targets(n=3, k=3)
    y = unit / unit.sum(axis=1, keepdims=True) if name == "softmax_cross_entropy" else unit
    f = activation(act)[0]
    loss_of = lambda zz: C.cost(name)(zz, f(zz), y, act)[0]  # noqa: E731
    _, delta = C.cost(name)(z, f(z), y, act)
    h = 1e-6
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        fd = (loss_of(up) - loss_of(down)) / (2 * h)
        assert abs(delta[index] - fd) <= 1e-7 * max(1.0, abs(fd)), index


def test_softmax_delta_is_exact_for_targets_summing_to_one_only_up_to_rounding() -> None:
    """delta = softmax(z) sum_k t_k - t stays the exact gradient when rows sum to 1 +- 1e-7."""
    z, unit, _ = logits_and_targets(n=2, k=3)
    t = (unit / unit.sum(axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    t[0] *= 1 + 3e-7
    _, delta = C.softmax_cross_entropy(z, z, t, "identity")
    h = 1e-6
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        fd = (C.softmax_cross_entropy(up, up, t, "identity")[0]
              - C.softmax_cross_entropy(down, down, t, "identity")[0]) / (2 * h)
        assert abs(delta[index] - fd) <= 1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_costs_are_stable_at_large_logits(dtype: type) -> None:
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    t = np.eye(3, dtype=dtype)[[1, 0, 2]]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sm_loss, sm_delta = C.softmax_cross_entropy(z, z, t, "identity")
        ce_loss, ce_delta = C.cross_entropy(z, sigmoid(z), t, "sigmoid")
        q_loss, q_delta = C.quadratic(z, sigmoid(z), t, "sigmoid")
    for value in (sm_loss, ce_loss, q_loss):
        assert np.isfinite(value)
    for delta in (sm_delta, ce_delta, q_delta):
        assert delta.dtype == dtype and np.all(np.isfinite(delta))
    # row 0: target at -1e4, max 1e4 -> 2e4; row 1: target -1e4, max 1e4 -> 2e4; row 2: log 3
    expected = (2e4 + 2e4 + np.log(3.0)) / 3
    rel = 10 * float(np.finfo(dtype).eps)
    assert sm_loss == pytest.approx(expected, rel=rel)
    # binary CE, sum_j softplus(z) - t z per row: row 0: 1e4 + (0 + 1e4) + log 2;
    # row 1: (0 + 1e4) + 0 + 1e4; row 2: 1e4 + 1e4 + (1e4 - 1e4)
    assert ce_loss == pytest.approx((6e4 + np.log(2)) / 3, rel=rel)
    np.testing.assert_allclose(sm_delta.sum(axis=1), 0.0, atol=4 * np.finfo(dtype).eps)


def test_softmax_rows_sum_to_zero_and_loss_is_shift_invariant() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 5)) * 50
    t = rng.random((6, 5))
    t /= t.sum(axis=1, keepdims=True)
    loss, delta = C.softmax_cross_entropy(z, z, t, "identity")
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=1e-15)
    shift = rng.standard_normal((6, 1)) * 1e3
    loss2, delta2 = C.softmax_cross_entropy(z + shift, z + shift, t, "identity")
    assert loss2 == pytest.approx(loss, abs=1e-10)
    np.testing.assert_allclose(delta2, delta, atol=1e-15)


def test_softplus_and_logsumexp_are_stable() -> None:
    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp = C.softplus(z)
        lse = C.logsumexp(np.array([[1e4, 1e4], [-1e4, 0.0]]))
    np.testing.assert_allclose(sp, [0.0, np.log1p(np.exp(-50.0)), np.log(2), 50.0, 1e4],
                               rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(lse, [1e4 + np.log(2), 0.0], rtol=1e-15)


@pytest.mark.parametrize(("name", "act"), COSTS_WITH_OUTPUT)
def test_loss_is_the_batch_mean_of_per_sample_losses(name: str, act: str) -> None:
    z, unit, _ = logits_and_targets(n=4, k=3, seed=2)
    y = unit / unit.sum(axis=1, keepdims=True) if name == "softmax_cross_entropy" else unit
    f = activation(act)[0]
    loss, delta = C.cost(name)(z, f(z), y, act)
    singles = [C.cost(name)(z[i:i + 1], f(z[i:i + 1]), y[i:i + 1], act) for i in range(4)]
    assert loss == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-14)
    # each row of the batch delta is that sample's own delta divided by n
    np.testing.assert_allclose(delta, np.concatenate([s[1] for s in singles]) / 4, rtol=1e-14)


def mlp_case(cost: str, seed: int = 3) -> bo.Case:
    rng = np.random.default_rng(seed)
    out_act = "identity" if cost == "softmax_cross_entropy" else "sigmoid"
    y = rng.random((4, 2))
    if cost == "softmax_cross_entropy":
        y /= y.sum(axis=1, keepdims=True)
    return bo.Case(family="softmax" if cost == "softmax_cross_entropy" else "mlp",
                   layers=(bo.dense(3, "tanh"), bo.dense(2, out_act)), cost=cost,
                   params={"W1": rng.standard_normal((3, 5)), "b1": rng.standard_normal(3),
                           "W2": rng.standard_normal((2, 3)), "b2": rng.standard_normal(2)},
                   x=rng.standard_normal((4, 5)), y=y)


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "softmax_cross_entropy"])
def test_gradient_is_the_batch_mean_of_per_sample_gradients(cost: str) -> None:
    case = mlp_case(cost)
    batch = bo.backprop(case)
    singles = [bo.backprop(minibatch(case, np.array([i]))) for i in range(case.batch)]
    assert batch.loss == pytest.approx(np.mean([s.loss for s in singles]), rel=1e-14)
    for name in case.params:
        mean = np.mean([s.grads[name] for s in singles], axis=0)
        np.testing.assert_allclose(batch.grads[name], mean, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "softmax_cross_entropy"])
def test_bias_gradient_is_batch_sum_of_delta_and_mean_of_per_sample_deltas(cost: str) -> None:
    case = mlp_case(cost)
    result = bo.backprop(case)
    singles = [bo.backprop(minibatch(case, np.array([i]))) for i in range(case.batch)]
    for layer in (1, 2):
        delta = result.deltas[f"delta{layer}"]
        np.testing.assert_allclose(result.grads[f"b{layer}"], delta.sum(axis=0), rtol=1e-15)
        per_sample = np.concatenate([s.deltas[f"delta{layer}"] for s in singles])
        np.testing.assert_allclose(delta, per_sample / case.batch, rtol=1e-13)
        np.testing.assert_allclose(result.grads[f"b{layer}"], per_sample.mean(axis=0),
                                   rtol=1e-13)


def test_cost_lookup() -> None:
    assert C.cost("quadratic") is C.quadratic
    with pytest.raises(ValueError, match="unknown cost 'hinge'; expected one of quadratic"):
        C.cost("hinge")
