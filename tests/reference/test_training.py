"""Minibatch SGD, learning-rate schedules and the two momentum conventions (seed 000, 001)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference import training


def scalar_case() -> bo.Case:
    """One identity unit, x = 1, y = 0: C = 1/2 (w + b)^2, so dC/dw = dC/db = w + b."""
    return bo.Case(family="mlp", layers=(bo.dense(1, "identity"),), cost="quadratic",
                   params={"W1": np.array([[0.5]]), "b1": np.array([0.25])},
                   x=np.array([[1.0]]), y=np.array([[0.0]]))


def mlp_case(n: int = 6, seed: int = 0) -> bo.Case:
    rng = np.random.default_rng(seed)
    return bo.Case(family="mlp", layers=(bo.dense(3, "tanh"), bo.dense(2, "sigmoid")),
                   cost="quadratic",
                   params={"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(3),
                           "W2": rng.standard_normal((2, 3)), "b2": rng.standard_normal(2)},
                   x=rng.standard_normal((n, 4)), y=rng.random((n, 2)))


def assert_params_close(a: dict, b: dict, rtol: float = 1e-12) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-15, err_msg=name)


def test_sgd_step_is_w_minus_eta_grad() -> None:
    params = {"W1": np.array([[1.0, -2.0]]), "b1": np.array([0.5])}
    grads = {"W1": np.array([[0.25, 4.0]]), "b1": np.array([-1.0])}
    new = training.sgd_step(params, grads, 0.1)
    np.testing.assert_allclose(new["W1"], [[0.975, -2.4]], rtol=1e-15)
    np.testing.assert_allclose(new["b1"], [0.6], rtol=1e-15)
    assert params["W1"][0, 0] == 1.0  # inputs untouched


def test_sgd_step_keeps_float32() -> None:
    params = {"W1": np.ones((2, 2), dtype=np.float32)}
    new = training.sgd_step(params, {"W1": np.ones((2, 2), dtype=np.float32)}, 0.1)
    assert new["W1"].dtype == np.float32


def test_train_one_step_equals_sgd_step_on_the_backprop_gradient() -> None:
    case = mlp_case()
    grads = bo.backprop(case).grads
    trajectory = training.train(case, 1, 0.3)
    expected = {k: case.params[k] - 0.3 * grads[k] for k in case.params}
    assert_params_close(trajectory.params[1], expected, rtol=1e-15)
    assert_params_close(trajectory.params[0], dict(case.params), rtol=0)
    assert trajectory.losses == [bo.backprop(case).loss]
    assert trajectory.etas == [0.3]


def test_losses_are_recorded_before_each_step() -> None:
    case = mlp_case()
    trajectory = training.train(case, 3, 0.5)
    assert len(trajectory.params) == 4 and len(trajectory.losses) == 3
    for t in range(3):
        at = bo.backprop(case.with_arrays(params=trajectory.params[t])).loss
        assert trajectory.losses[t] == at
    assert trajectory.losses[2] < trajectory.losses[0]  # descent on a small step


def test_two_momentum_steps_by_hand() -> None:
    """eta = 0.1, mu = 0.9 on C = 1/2 (w + b)^2 from w = 0.5, b = 0.25:
    step 0: g = 0.75, v = 0.75, w = 0.425, b = 0.175;
    step 1: g = 0.6, v = 0.9 * 0.75 + 0.6 = 1.275, w = 0.2975, b = 0.0475."""
    for convention in training.CONVENTIONS:
        trajectory = training.train(scalar_case(), 2, 0.1, mu=0.9, convention=convention)
        (w1, b1), (w2, b2) = ((p["W1"][0, 0], p["b1"][0]) for p in trajectory.params[1:])
        assert (w1, b1) == pytest.approx((0.425, 0.175), abs=1e-15), convention
        assert (w2, b2) == pytest.approx((0.2975, 0.0475), abs=1e-15), convention
        assert trajectory.losses == pytest.approx([0.28125, 0.18], abs=1e-15)


def test_momentum_conventions_differ_by_hand_once_eta_changes() -> None:
    """step_decay(0.1, 0.5, every=1): eta_0 = 0.1, eta_1 = 0.05. Step 0 as above.
    pytorch: v = 1.275, w = 0.425 - 0.05 * 1.275 = 0.36125, b = 0.11125;
    classic: v = 0.9 * (-0.075) - 0.05 * 0.6 = -0.0975, w = 0.3275, b = 0.0775."""
    schedule = training.step_decay(0.1, 0.5, 1)
    torch_like = training.train(scalar_case(), 2, schedule, mu=0.9, convention="pytorch")
    classic = training.train(scalar_case(), 2, schedule, mu=0.9, convention="classic")
    assert torch_like.etas == classic.etas == [0.1, 0.05]
    last = lambda tr: (tr.params[2]["W1"][0, 0], tr.params[2]["b1"][0])  # noqa: E731
    assert last(torch_like) == pytest.approx((0.36125, 0.11125), abs=1e-15)
    assert last(classic) == pytest.approx((0.3275, 0.0775), abs=1e-15)


def test_momentum_step_conventions_directly() -> None:
    w, g1, g2 = {"w": np.array([1.0])}, {"w": np.array([0.5])}, {"w": np.array([0.25])}
    v0 = {"w": np.zeros(1)}
    w1, v1 = training.momentum_step(w, g1, v0, 0.1, 0.9, "pytorch")
    w2, v2 = training.momentum_step(w1, g2, v1, 0.1, 0.9, "pytorch")
    assert (v1["w"][0], w1["w"][0], v2["w"][0], w2["w"][0]) == pytest.approx(
        (0.5, 0.95, 0.7, 0.88), abs=1e-15)
    w1, v1 = training.momentum_step(w, g1, v0, 0.1, 0.9, "classic")
    w2, v2 = training.momentum_step(w1, g2, v1, 0.1, 0.9, "classic")
    assert (v1["w"][0], w1["w"][0], v2["w"][0], w2["w"][0]) == pytest.approx(
        (-0.05, 0.95, -0.07, 0.88), abs=1e-15)
    with pytest.raises(ValueError, match="unknown momentum convention 'nesterov'"):
        training.momentum_step(w, g1, v0, 0.1, 0.9, "nesterov")


def test_conventions_agree_for_fixed_eta_and_differ_with_step_decay() -> None:
    case = mlp_case()
    same = [training.train(case, 5, 0.4, mu=0.8, convention=c) for c in training.CONVENTIONS]
    for a, b in zip(same[0].params, same[1].params, strict=True):
        assert_params_close(a, b, rtol=1e-12)
    schedule = training.step_decay(0.4, 0.5, every=2)
    decayed = [training.train(case, 5, schedule, mu=0.8, convention=c)
               for c in training.CONVENTIONS]
    for t in range(3):  # eta is 0.4 for steps 0, 1: params[0..2] agree
        assert_params_close(decayed[0].params[t], decayed[1].params[t], rtol=1e-12)
    gap = np.max(np.abs(decayed[0].params[4]["W1"] - decayed[1].params[4]["W1"]))
    assert gap > 1e-3  # after the decay at step 2 they part


def test_without_momentum_the_conventions_are_plain_sgd() -> None:
    case = mlp_case()
    plain = training.train(case, 3, training.exponential(0.5, 0.9))
    manual = dict(case.params)
    for t in range(3):
        grads = bo.backprop(case.with_arrays(params=manual)).grads
        manual = training.sgd_step(manual, grads, 0.5 * 0.9 ** t)
    assert_params_close(plain.params[3], manual, rtol=1e-14)


def test_minibatch_rows_via_batches() -> None:
    case = mlp_case(n=6)
    batches = [np.array([0, 2, 4]), np.array([1, 5])]
    trajectory = training.train(case, 3, 0.2, batches=batches)
    params = dict(case.params)
    for t in range(3):  # step t uses batches[t % 2]; the gradient is the minibatch mean
        rows = batches[t % 2]
        sub = case.with_arrays(params=params, x=case.x[rows], y=case.y[rows])
        result = bo.backprop(sub)
        assert trajectory.losses[t] == pytest.approx(result.loss, rel=1e-15)
        params = {k: params[k] - 0.2 * result.grads[k] for k in params}
        assert_params_close(trajectory.params[t + 1], params, rtol=1e-13)
    full = training.train(case, 1, 0.2)
    assert not np.allclose(full.params[1]["W1"], trajectory.params[1]["W1"])


def test_minibatch_restricts_masks_too() -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random((4, 3)) > 0.5).astype(float)
    case = bo.Case(family="mlp", layers=(bo.dense(3, "tanh"), bo.dropout(0.5), bo.dense(1)),
                   cost="quadratic",
                   params={"W1": np.ones((3, 2)), "b1": np.ones(3), "W2": np.ones((1, 3)),
                           "b2": np.ones(1)},
                   x=rng.standard_normal((4, 2)), y=rng.random((4, 1)), masks={"mask2": mask})
    sub = training.minibatch(case, np.array([3, 1]))
    np.testing.assert_array_equal(sub.masks["mask2"], mask[[3, 1]])
    np.testing.assert_array_equal(sub.x, case.x[[3, 1]])


def test_schedules() -> None:
    assert [training.constant(0.3)(t) for t in range(3)] == [0.3, 0.3, 0.3]
    assert [training.step_decay(1.0, 0.5, 2)(t) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert [training.exponential(2.0, 0.5)(t) for t in range(3)] == [2.0, 1.0, 0.5]


def test_train_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        training.train(scalar_case(), 0, 0.1)
    with pytest.raises(ValueError, match="unknown momentum convention 'adam'; expected one of "
                                         "pytorch, classic"):
        training.train(scalar_case(), 1, 0.1, mu=0.9, convention="adam")


def test_train_accepts_another_backprop() -> None:
    """A user implementation plugged in: a zero gradient leaves the parameters alone."""
    zero = lambda case: bo.Result(loss=0.0, grads={k: np.zeros_like(v)  # noqa: E731
                                                    for k, v in case.params.items()})
    trajectory = training.train(mlp_case(), 2, 0.5, backprop=zero)
    assert_params_close(trajectory.params[2], dict(mlp_case().params), rtol=0)


def test_dropout_mask_is_explicit_zero_one_with_keep_probability() -> None:
    mask = training.dropout_mask((200, 50), 0.3, np.random.default_rng(0))
    assert mask.dtype == np.float64 and set(np.unique(mask)) == {0.0, 1.0}
    assert mask.mean() == pytest.approx(0.7, abs=0.01)  # 10000 draws: sd 0.0046
    again = training.dropout_mask((200, 50), 0.3, np.random.default_rng(0))
    np.testing.assert_array_equal(mask, again)
    assert training.dropout_mask((3,), 0.5, np.random.default_rng(0), "float32").dtype == \
        np.float32
