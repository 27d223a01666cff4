"""Layered networks end to end: seed 001's worked example (golden), a CNN derived by hand from
seed 004's recurrences, and central differences for every layered family."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference import network, pooling, training
from backprop_oracle.reference.case import layer_shapes
from backprop_oracle.reference.init import init_params

from ._fd import assert_matches_fd

# ---------------------------------------------------------------------------------------------
# Seed 001: inputs 1, 0, 1 -> hidden sigmoid neurons 4, 5 -> output sigmoid neuron 6.
# The seed names weights w_pq (from neuron p to neuron q); our W is (out, in), so
#   W1 = [[w14, w24, w34],      (row 0: into neuron 4)
#         [w15, w25, w35]]      (row 1: into neuron 5)
#   b1 = [b4, b5]
#   W2 = [[w46, w56]]           (row 0: into neuron 6)
#   b2 = [b6]
# ---------------------------------------------------------------------------------------------


def seed001_case() -> bo.Case:
    return bo.Case(
        family="mlp",
        layers=(bo.dense(2, "sigmoid"), bo.dense(1, "sigmoid")),
        cost="quadratic",
        params={
            "W1": np.array([[0.2, 0.4, -0.5], [-0.3, 0.1, 0.2]]),
            "b1": np.array([-0.4, 0.2]),
            "W2": np.array([[-0.3, -0.2]]),
            "b2": np.array([0.1]),
        },
        x=np.array([[1.0, 0.0, 1.0]]),
        y=np.array([[1.0]]),
    )


def test_seed001_forward_pass() -> None:
    result = bo.backprop(seed001_case())
    z4, z5 = result.zs["z1"][0]
    (z6,) = result.zs["z2"][0]
    o4, o5 = result.activations["a1"][0]
    (o6,) = result.activations["a2"][0]
    assert z4 == pytest.approx(-0.7, abs=1e-12)
    assert z5 == pytest.approx(0.1, abs=1e-12)
    # the seed rounds o4, o5 to 3 decimals before forming z6, hence ~1e-3
    assert z6 == pytest.approx(-0.1046, abs=1e-3)
    # o's are printed to 3 decimals
    assert o4 == pytest.approx(0.332, abs=5e-4)
    assert o5 == pytest.approx(0.525, abs=5e-4)
    assert o6 == pytest.approx(0.474, abs=5e-4)
    assert result.loss == pytest.approx(0.5 * (1 - o6) ** 2, rel=1e-12)


def test_seed001_errors_in_both_sign_conventions() -> None:
    result = bo.backprop(seed001_case())
    (delta6,) = result.deltas["delta2"][0]
    delta4, delta5 = result.deltas["delta1"][0]
    # The seed writes delta = (t - o) f'(z) = +0.1311; ours is dC/dz = -(t - o) f'(z).
    # "To 4 decimals" is numpy's decimal=4 criterion |diff| < 1.5e-4 (exact: 0.131168;
    # the seed rounds o6 to 0.474 first, giving 0.1311).
    assert delta6 == pytest.approx(-0.1311, abs=1.5e-4)
    assert delta6 < 0
    # Hidden errors, seed sign: Err4 = -0.0087, Err5 = -0.0065; ours are their negatives.
    assert -delta4 == pytest.approx(-0.0087, abs=1e-4)
    assert -delta5 == pytest.approx(-0.0065, abs=1e-4)


def test_seed001_one_sgd_step_gives_textbook_weights() -> None:
    trajectory = training.train(seed001_case(), 1, 0.9)
    new = trajectory.params[1]
    (w14, w24, w34), (w15, w25, w35) = new["W1"]
    b4, b5 = new["b1"]
    ((w46, w56),) = new["W2"]
    (b6,) = new["b2"]
    textbook = {
        "w46": (w46, -0.261), "w56": (w56, -0.138), "b6": (b6, 0.218),
        "w14": (w14, 0.192), "w15": (w15, -0.306), "w24": (w24, 0.4), "w25": (w25, 0.1),
        "w34": (w34, -0.508), "w35": (w35, 0.194), "b4": (b4, -0.408), "b5": (b5, 0.194),
    }
    for name, (ours, printed) in textbook.items():
        assert ours == pytest.approx(printed, abs=5e-4), name  # printed to 3 decimals


def test_seed001_sgd_step_is_seed_rule_w_plus_eta_delta_o() -> None:
    """The seed's update w_pq += eta * delta_q(seed sign) * o_p, with our delta = -delta_q."""
    case = seed001_case()
    result = bo.backprop(case)
    new = training.sgd_step(case.params, result.grads, 0.9)
    seed_delta6 = -result.deltas["delta2"][0, 0]
    o4, o5 = result.activations["a1"][0]
    assert new["W2"][0, 0] == pytest.approx(-0.3 + 0.9 * seed_delta6 * o4, abs=1e-15)
    assert new["W2"][0, 1] == pytest.approx(-0.2 + 0.9 * seed_delta6 * o5, abs=1e-15)
    assert new["b2"][0] == pytest.approx(0.1 + 0.9 * seed_delta6, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# A CNN by hand (seed 004): 1x1x4x4 image -> conv 1 filter 2x2, stride 1, identity -> 3x3 map
# -> max pool 2x2, stride 1 (overlapping) -> 2x2 -> flatten -> dense 1, identity -> quadratic.
# ---------------------------------------------------------------------------------------------

HAND_X = np.array([[[[1.0, 2.0, 0.0, 1.0],
                     [0.0, 1.0, 3.0, 1.0],
                     [2.0, 1.0, 0.0, 0.0],
                     [1.0, 0.0, 1.0, 2.0]]]])


def hand_cnn_case() -> bo.Case:
    return bo.Case(
        family="cnn",
        layers=(bo.conv2d(1, 2, stride=1, padding=0, activation="identity"), bo.maxpool(2, 1),
                bo.flatten(), bo.dense(1, "identity")),
        cost="quadratic",
        params={"W1": np.array([[[[1.0, 0.0], [0.0, -1.0]]]]), "b1": np.array([0.5]),
                "W2": np.array([[1.0, -1.0, 2.0, 0.5]]), "b2": np.array([-1.0])},
        x=HAND_X,
        y=np.array([[3.25]]),
    )


def test_hand_cnn_forward() -> None:
    # z1[i,j] = x[i,j] - x[i+1,j+1] + 0.5 (the filter is [[1, 0], [0, -1]], cross-correlation)
    conv_map = [[0.5, -0.5, -0.5],
                [-0.5, 1.5, 3.5],
                [2.5, 0.5, -1.5]]
    # max over 2x2 windows at stride 1: {0.5,-0.5,-0.5,1.5}=1.5, {-0.5,-0.5,1.5,3.5}=3.5,
    # {-0.5,1.5,2.5,0.5}=2.5, {1.5,3.5,0.5,-1.5}=3.5
    pooled = [[1.5, 3.5], [2.5, 3.5]]
    result = bo.backprop(hand_cnn_case())
    np.testing.assert_allclose(result.zs["z1"][0, 0], conv_map, atol=1e-15)
    np.testing.assert_allclose(result.zs["z2"][0, 0], pooled, atol=1e-15)
    # z4 = 1*1.5 - 1*3.5 + 2*2.5 + 0.5*3.5 - 1 = 3.75; loss = 1/2 (3.75 - 3.25)^2
    assert result.zs["z4"][0, 0] == pytest.approx(3.75, abs=1e-15)
    assert result.loss == pytest.approx(0.125, abs=1e-15)


def test_hand_cnn_gradients_from_seed004_recurrences() -> None:
    result = bo.backprop(hand_cnn_case())
    # Output error (identity, quadratic, n = 1): delta4 = a - y = 3.75 - 3.25 = 0.5
    assert result.deltas["delta4"][0, 0] == pytest.approx(0.5, abs=1e-15)
    # Output layer: dC/dW2 = delta4 * pooled = 0.5 * [1.5, 3.5, 2.5, 3.5]; dC/db2 = delta4
    np.testing.assert_allclose(result.grads["W2"], [[0.75, 1.75, 1.25, 1.75]], atol=1e-15)
    np.testing.assert_allclose(result.grads["b2"], [0.5], atol=1e-15)
    # Pooled units: delta = W2^T delta4 = 0.5 * [1, -1, 2, 0.5] = [[0.5, -0.5], [1, 0.25]]
    np.testing.assert_allclose(result.deltas["delta2"][0, 0], [[0.5, -0.5], [1.0, 0.25]],
                               atol=1e-15)
    # Max pool routes each window's delta to its arg-max cell of the conv map:
    #   window (0,0) -> cell (1,1): 0.5;  window (0,1) -> cell (1,2): -0.5
    #   window (1,0) -> cell (2,0): 1.0;  window (1,1) -> cell (1,2): +0.25 (overlap adds)
    # identity activation, so the conv unit errors are
    delta1 = [[0.0, 0.0, 0.0],
              [0.0, 0.5, -0.25],
              [1.0, 0.0, 0.0]]
    np.testing.assert_allclose(result.deltas["delta1"][0, 0], delta1, atol=1e-15)
    # dC/dW1[u,v] = sum_{i,j} delta1[i,j] x[i+u, j+v]  (only (1,1), (1,2), (2,0) are nonzero)
    #   [0,0] = 0.5*x11 - 0.25*x12 + 1*x20 = 0.5 - 0.75 + 2 = 1.75
    #   [0,1] = 0.5*x12 - 0.25*x13 + 1*x21 = 1.5 - 0.25 + 1 = 2.25
    #   [1,0] = 0.5*x21 - 0.25*x22 + 1*x30 = 0.5 - 0    + 1 = 1.5
    #   [1,1] = 0.5*x22 - 0.25*x23 + 1*x31 = 0   - 0    + 0 = 0
    np.testing.assert_allclose(result.grads["W1"], [[[[1.75, 2.25], [1.5, 0.0]]]], atol=1e-15)
    # dC/db1 = sum of delta1 = 0.5 - 0.25 + 1 = 1.25
    np.testing.assert_allclose(result.grads["b1"], [1.25], atol=1e-15)
    # no tied window, so the routing above is unambiguous
    assert np.all(result.gaps["gap2"] > 0)


# ---------------------------------------------------------------------------------------------
# Central differences (float64, h = 1e-6, tolerance 1e-7 * max(1, |g|), see _fd.py).
# ---------------------------------------------------------------------------------------------


def random_case(family: str, layers: tuple, x_shape: tuple[int, ...], cost: str = "quadratic",
                seed: int = 0, masks: dict | None = None) -> bo.Case:
    """Gaussian inputs, Xavier parameters, targets in [0, 1] (rows summing to 1 for softmax)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    params = init_params(layers, x_shape[1:], rng, scheme="xavier")
    out = layer_shapes(layers, x_shape[1:])[f"z{len(layers)}"]
    y = rng.random((x_shape[0], *out))
    if cost == "softmax_cross_entropy":
        y = y / y.sum(axis=1, keepdims=True)
    return bo.Case(family=family, layers=layers, cost=cost, params=params, x=x, y=y,
                   masks=masks or {})


def assert_away_from_kinks(case: bo.Case, margin: float = 1e-4) -> None:
    """No ReLU input and no max-pool runner-up gap within ``margin`` (h = 1e-6 cannot cross)."""
    result = bo.backprop(case)
    for l, spec in enumerate(case.layers, 1):
        if getattr(spec, "activation", None) in ("relu", "leaky_relu"):
            assert np.min(np.abs(result.zs[f"z{l}"])) > margin
    for gap in result.gaps.values():
        assert np.min(gap) > margin


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "identity"])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_mlp_matches_central_differences(activation: str, cost: str) -> None:
    layers = (bo.dense(4, activation), bo.dense(3, activation), bo.dense(2, "sigmoid"))
    case = random_case("mlp", layers, (5, 3), cost=cost, seed=1)
    assert_away_from_kinks(case)
    assert_matches_fd(case)


def test_softmax_matches_central_differences() -> None:
    layers = (bo.dense(5, "tanh"), bo.dense(4, "identity"))
    case = random_case("softmax", layers, (6, 3), cost="softmax_cross_entropy", seed=2)
    assert_matches_fd(case)


CNN_ARCHITECTURES = {
    "max-overlapping": (bo.conv2d(2, 3, stride=1, padding=1, activation="tanh"),
                        bo.maxpool(3, 2), bo.flatten(), bo.dense(2, "sigmoid")),
    "avg-strided-conv": (bo.conv2d(3, 2, stride=2, padding=1, activation="sigmoid"),
                         bo.avgpool(2, 1), bo.flatten(), bo.dense(2, "identity")),
    "l2-two-convs": (bo.conv2d(2, 3, stride=1, padding=0, activation="tanh"),
                     bo.conv2d(2, 2, stride=1, padding=1, activation="leaky_relu"),
                     bo.l2pool(2, 2), bo.flatten(), bo.dense(2, "tanh")),
    "max-relu-stride3": (bo.conv2d(2, 2, stride=3, padding=1, activation="relu"),
                         bo.maxpool(2, 1), bo.flatten(), bo.dense(1, "sigmoid")),
}


@pytest.mark.parametrize("name", sorted(CNN_ARCHITECTURES))
def test_cnn_matches_central_differences(name: str) -> None:
    case = random_case("cnn", CNN_ARCHITECTURES[name], (2, 2, 6, 6), seed=3)
    assert_away_from_kinks(case)
    assert_matches_fd(case)


def test_dropout_with_explicit_mask_matches_central_differences() -> None:
    layers = (bo.dense(6, "tanh"), bo.dropout(0.5), bo.dense(2, "sigmoid"))
    mask = np.array([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 1], [1, 1, 0, 1, 0, 0]], dtype=float)
    case = random_case("mlp", layers, (3, 4), seed=4, masks={"mask2": mask})
    assert_matches_fd(case)
    # dropped units pass no error back: their hidden deltas are exactly zero
    result = bo.backprop(case)
    assert np.all(result.deltas["delta1"][mask == 0] == 0)
    assert np.all(result.deltas["delta1"][mask == 1] != 0)
    np.testing.assert_allclose(result.activations["a2"], result.activations["a1"] * mask / 0.5)


def test_result_keys_and_shapes_follow_the_layers() -> None:
    case = hand_cnn_case()
    result = bo.backprop(case)
    zs, acts = network.feedforward(case)
    assert list(result.deltas) == ["delta1", "delta2", "delta3", "delta4"]
    assert list(result.activations) == ["a0", "a1", "a2", "a3", "a4"]
    assert [z.shape for z in zs] == [(1, 1, 3, 3), (1, 1, 2, 2), (1, 4), (1, 1)]
    assert list(result.gaps) == ["gap2"]
    np.testing.assert_array_equal(result.gaps["gap2"],
                                  pooling.runner_up_gap(acts[1], 2, 1))
    for name, g in result.grads.items():
        assert g.shape == case.params[name].shape


def test_float32_case_keeps_float32_and_agrees_with_float64() -> None:
    case64 = random_case("cnn", CNN_ARCHITECTURES["avg-strided-conv"], (2, 2, 6, 6), seed=5)
    case32 = case64.astype("float32")
    r32, r64 = bo.backprop(case32), bo.backprop(case64)
    for name in case64.params:
        assert r32.grads[name].dtype == np.float32
        np.testing.assert_allclose(r32.grads[name], r64.grads[name], rtol=1e-4, atol=1e-5)
