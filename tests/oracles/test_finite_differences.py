"""The finite-difference oracle: agreement with the reference, error estimates that bound the
actual error, complex step where analytic, the screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.finite_differences import FiniteDifferences, choose_method, fd_step
from backprop_oracle.properties.cases import examples
from backprop_oracle.properties.comparison.compare import compare
from backprop_oracle.properties.comparison.records import case_verdict

CASES = examples.every_family("float64")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("method", ["fd", "auto"])
def test_agrees_with_reference(name: str, method: str) -> None:
    case = CASES[name]
    fd = FiniteDifferences(method).run(case)
    ref = bo.backprop(case)
    assert fd.loss == pytest.approx(ref.loss, rel=1e-14, abs=1e-15)
    assert set(fd.grads) == set(case.params) and set(fd.deltas) == set(ref.deltas)
    for key, value in {**fd.grads, **fd.deltas}.items():
        expected = ref.grads.get(key, ref.deltas.get(key))
        assert value.shape == expected.shape
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-9, err_msg=key)
    records = compare(case, fd, ref, oracle="reference", mode="reverse", device="cpu",
                      dtype="float64")
    assert case_verdict(records) == "agree", [r for r in records if r.verdict != "agree"]


def _one_layer(activation: str, seed: int = 0) -> bo.Case:
    rng = np.random.default_rng(seed)
    return bo.Case(family="mlp", layers=(bo.dense(3, activation),), cost="quadratic",
                   params={"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=3)},
                   x=rng.normal(size=(5, 4)) * 3, y=rng.uniform(size=(5, 3)))


def _closed_form(case: bo.Case, activation: str) -> dict[str, np.ndarray]:
    """``delta = (a - y) sigma'(z) / n``; ``dW = delta^T x``; ``db = sum delta``."""
    W, b, x, y = case.params["W1"], case.params["b1"], case.x, case.y
    z = x @ W.T + b
    if activation == "identity":
        a, d = z, np.ones_like(z)
    else:
        a = 1 / (1 + np.exp(-z))
        d = a * (1 - a)
    delta = (a - y) * d / len(x)
    return {"W1": delta.T @ x, "b1": delta.sum(axis=0), "delta1": delta}


@pytest.mark.parametrize("activation", ["identity", "sigmoid"])
@pytest.mark.parametrize("method", ["fd", "complex_step"])
def test_error_estimate_bounds_actual_error(activation: str, method: str) -> None:
    for seed in range(5):
        case = _one_layer(activation, seed)
        fd = FiniteDifferences(method).run(case)
        exact = _closed_form(case, activation)
        for key, value in {**fd.grads, **fd.deltas}.items():
            actual_error = np.abs(value - exact[key])
            # the closed form itself carries a few ulps of rounding
            slack = 8 * np.finfo(float).eps * np.abs(exact[key]).max()
            assert np.all(actual_error <= fd.meta["fd_error"][key] + slack), key
            assert np.all(fd.meta["fd_error"][key] < 1e-6 * np.abs(exact[key]).max() + 1e-12)


def test_complex_step_on_smooth_paths_only() -> None:
    assert FiniteDifferences().run(CASES["softmax"]).meta["method"] == "complex_step"
    assert FiniteDifferences().run(CASES["cnn_avg"]).meta["method"] == "complex_step"
    assert FiniteDifferences().run(CASES["graph"]).meta["method"] == "complex_step"
    for name in ("mlp", "mlp_cross_entropy", "cnn_max"):  # leaky_relu / relu / maxpool
        result = FiniteDifferences("complex_step").run(CASES[name])
        assert result.meta["method"] == "fd" and result.meta["requested"] == "complex_step"
        assert set(result.meta["methods"].values()) == {"fd"}
    assert choose_method(CASES["cnn_l2"], "fd") == "fd"


def test_steps_are_powers_of_two_and_move_theta() -> None:
    theta = np.array([0.0, 1e-3, 0.7, -3.0, 1e6])
    h = fd_step(theta)
    assert np.all(np.log2(h) == np.round(np.log2(h)))
    assert np.all(theta + h != theta) and np.all(theta + h / 2 != theta)


def test_fd_float32_values_are_computed_in_float64() -> None:
    case = examples.every_family("float32")["mlp"]
    fd = FiniteDifferences().run(case)
    assert fd.meta["dtype_computed"] == "float64"
    assert all(g.dtype == np.float64 for g in fd.grads.values())


def test_kink_radius_is_recorded() -> None:
    fd = FiniteDifferences().run(CASES["cnn_max"])
    radius = fd.meta["kink_radius"]
    assert set(radius) == {"a1"}  # the max-pool's input (no relu in this case)
    assert all(r.shape == (CASES["cnn_max"].batch,) for r in radius.values())
    assert 0 < max(float(r.max()) for r in radius.values()) < 1e-3


def test_only_and_memory_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    import backprop_oracle.oracles.finite_differences as fdmod

    case = CASES["cnn_l2"]
    full = FiniteDifferences("fd").run(case)
    monkeypatch.setattr(fdmod, "MEMORY_BUDGET", 1)  # one coordinate per chunk
    part = FiniteDifferences("fd").run(case, only=["W1", "delta2"])
    assert set(part.grads) == {"W1"} and set(part.deltas) == {"delta2"}
    np.testing.assert_allclose(part.grads["W1"], full.grads["W1"], rtol=0, atol=0)


def test_pooled_error_estimate_covers_a_chance_cancellation() -> None:
    """Regression from the false-alarm campaign (seed 101, mlp case 82692c0956a07572, saved
    in tests/oracles/data/ since draws are now per index): one float64 delta element was 1.6x
    beyond its own Richardson estimate; with the tensor-wide noise floor the comparison
    agrees."""
    import backprop_oracle as bo
    from backprop_oracle.properties.cases.case_io import load_case
    from backprop_oracle.properties.comparison.compare import compare

    case = load_case(Path(__file__).parent / "data", "82692c0956a07572")
    records = compare(case, bo.backprop(case), FiniteDifferences().run(case), oracle="fd",
                      mode="fd", device="cpu", dtype="float64")
    assert {r.verdict for r in records} == {"agree"}


def _log_sigmoid_graph(x: np.ndarray) -> bo.Case:
    """log(sigmoid(2x)) with a dead branch (node 3 -> 4, leaf p1 unused): the campaign's
    case 3b2ba9f8fde091a3, seed 101, shortened."""
    n = x.shape[0]
    layers = (bo.node("add", "x", "x"), bo.node("sigmoid", 1), bo.node("add", "x", "x"),
              bo.node("add", 3, "p2"), bo.node("neg", 1), bo.node("log", 2))
    return bo.Case(family="graph", layers=layers, cost="quadratic",
                   params={"p1": np.ones(x.shape[1]), "p2": np.ones(x.shape[1])},
                   x=x, y=np.zeros((n, x.shape[1])))


def test_complex_step_through_log_of_a_small_sigmoid() -> None:
    """The FD forward's sigmoid was ``(1 + tanh(z/2)) / 2``: eps-accurate only in absolute
    terms, so the complex step of ``log(sigmoid(-6.16))`` was 2.3e-14 relative off (1.24x the
    tolerance) while the reference, PyTorch and JAX agreed to the last bit."""
    case = _log_sigmoid_graph(np.array([[-3.07975674, -0.83362508, 1.53038478, 0.02001349],
                                        [-12.0, -8.0, 20.0, 0.5]]))
    cs = FiniteDifferences("complex_step").run(case)
    records = compare(case, bo.backprop(case), cs, oracle="fd", mode="complex_step",
                      device="cpu", dtype="float64")
    assert case_verdict(records) == "agree", [r for r in records if r.verdict != "agree"]
    assert max(r.margin for r in records) < 0.5


def test_finite_differences_of_leaves_and_nodes_that_do_not_reach_the_output() -> None:
    case = _log_sigmoid_graph(np.random.default_rng(0).normal(size=(3, 4)))
    for method in ("fd", "complex_step"):
        result = FiniteDifferences(method).run(case)
        assert not result.grads["p1"].any() and not result.grads["p2"].any()
        for l in (3, 4, 5):
            assert result.deltas[f"delta{l}"].shape == (3, 4)
            assert not result.deltas[f"delta{l}"].any()


def test_fast_relu_and_max_pool_of_the_fd_forward_are_the_plain_definitions() -> None:
    """The FD forward's relu (fmax + 0) and max pooling (offset by offset) give the same
    values as ``np.where(z > 0, z, 0)`` and a reduction over the window view: NaN, -0 and
    infinities included, on arrays long enough for NumPy's SIMD loops."""
    from backprop_oracle.oracles import _forward64 as f64

    rng = np.random.default_rng(5)
    z = rng.normal(size=(7, 3, 4, 9, 11))
    flat = z.reshape(-1)
    flat[::7], flat[3::11], flat[5::13], flat[6::17] = -0.0, np.nan, -np.inf, np.inf
    plain = np.where(z > 0, z, 0)
    fast = f64.relu(z)
    np.testing.assert_array_equal(fast, plain)
    assert np.array_equal(np.signbit(fast), np.signbit(plain))
    for size, stride in ((2, 2), (3, 1), (2, 3)):
        np.testing.assert_array_equal(f64.pool_z("max", z, size, stride),
                                      f64.windows(z, size, stride).max(axis=(-2, -1)))
