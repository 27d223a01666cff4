"""The error model: no false alarms on random cases of every family in float32 and float64,
saturation and extreme logits handled, and still sharp."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.comparison.compare import compare
from backprop_oracle.properties.comparison.error_model import (
    KAPPA,
    bounds,
    describe,
    tolerance,
    unit_roundoff,
)
from backprop_oracle.properties.comparison.records import case_verdict

from . import _cases


def _check(case: bo.Case, expected: bo.Result | None = None) -> list:
    expected = expected or FiniteDifferences().run(case)
    return compare(case, expected, bo.backprop(case), oracle="reference", mode="reverse",
                   device="cpu", dtype=case.dtype)


@pytest.mark.parametrize("family", ["mlp", "cnn", "softmax", "graph"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_false_alarms_on_random_cases(family: str, dtype: str) -> None:
    """A small slice of the calibration campaign (the full one: 800 cases, see the report)."""
    for case in bo.cases(family, n=6, seed=101, dtypes=[dtype]):
        records = _check(case)
        assert case_verdict(records) == "agree", [(r.name, r.margin) for r in records
                                                     if r.verdict != "agree"]
        assert max(r.margin for r in records) < 1


def test_float32_against_float64_analytic() -> None:
    for case in bo.cases("mlp", n=5, seed=7, dtypes=["float32"]):
        truth = bo.backprop(case.astype("float64"))
        records = compare(case, truth, bo.backprop(case), oracle="reference", mode="reverse",
                          device="cpu", dtype="float32", expected_dtype="float64")
        assert case_verdict(records) == "agree"


def _saturated(dtype: str) -> bo.Case:
    rng = np.random.default_rng(5)
    layers = (bo.dense(6, "tanh"), bo.dense(3, "sigmoid"))
    W1 = rng.normal(size=(6, 4)) * 8  # |z1| up to ~40: tanh' and sigma' at float32 rounding
    return bo.Case(family="mlp", layers=layers, cost="quadratic",
                   params={"W1": W1.astype(dtype), "b1": rng.normal(size=6).astype(dtype),
                           "W2": (rng.normal(size=(3, 6)) * 6).astype(dtype),
                           "b2": rng.normal(size=3).astype(dtype)},
                   x=rng.normal(size=(5, 4)).astype(dtype),
                   y=rng.uniform(size=(5, 3)).astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_activations_do_not_false_alarm(dtype: str) -> None:
    assert case_verdict(_check(_saturated(dtype))) == "agree"


def test_saturation_term_is_needed() -> None:
    """sigma'(z) has absolute rounding ~u: the bound of a saturated unit is far above
    u |sigma'(z)| |terms| alone."""
    case = _saturated("float32")
    b = bounds(case)
    sat = np.abs(b.z["z1"]) > 9
    assert sat.any()
    assert np.all(b.E["delta1"][sat] > 10 * b.M["delta1"][sat])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_logits(dtype: str) -> None:
    rng = np.random.default_rng(9)
    W = (rng.normal(size=(4, 3)) * 3000).astype(dtype)  # logits up to ~1e4
    case = bo.Case(family="softmax", layers=(bo.dense(4, "identity"),),
                   cost="softmax_cross_entropy",
                   params={"W1": W, "b1": rng.normal(size=4).astype(dtype)},
                   x=rng.normal(size=(5, 3)).astype(dtype),
                   y=rng.dirichlet(np.ones(4), size=5).astype(dtype))
    assert np.abs(bo.backprop(case).zs["z1"]).max() > 3000
    assert case_verdict(_check(case)) == "agree"


def test_float64_scale_error_of_1e_4_is_far_beyond_tolerance() -> None:
    case = _cases.square_mlp("float64")
    records = _check(case)
    # tolerance relative to the gradient's own size, everywhere: << 1e-4
    ref = bo.backprop(case)
    for r in records:
        if r.quantity == "grad":
            g = np.abs(ref.grads[r.name]).max()
            assert r.tolerance < 1e-6 * g


def test_tolerance_formula_and_description() -> None:
    E = np.array([10.0, 20.0])
    tol = tolerance(E, unit_roundoff("float32"), unit_roundoff("float64"), 1e-12)
    np.testing.assert_allclose(tol, KAPPA * (2.0**-24 + 2.0**-53) * E + 1e-12)
    text = describe((1,), E, np.array([1.0, 4.0]), 2.0**-24, 0.0, 1e-12)
    assert text.startswith("kappa=2 x u=5.96e-08 x K=5 x |terms|=4")
    with pytest.raises(ValueError):
        unit_roundoff("int8")


def test_bounds_cover_every_tensor() -> None:
    for name, case in {"cnn": _cases.conv_maxpool(), "graph": bo.cases("graph", 1, 3)[0]
                       }.items():
        b = bounds(case)
        ref = bo.backprop(case)
        for key, value in {**ref.grads, **ref.deltas}.items():
            assert b.E[key].shape == value.shape and np.all(b.E[key] >= 0), (name, key)
        assert b.E["loss"] > 0


def test_graph_bounds_of_a_mul_with_a_zero_input_do_not_divide_by_zero() -> None:
    """Found by the mutation suite: every node rule's gain was evaluated for every node, so a
    ``mul`` with an all-zero input raised a divide-by-zero warning (an error in CI)."""
    case = bo.Case(family="graph", layers=(bo.node("mul", "x", 0.0), bo.node("mul", 1, "p1"),
                                           bo.node("sigmoid", 2)),
                   cost="quadratic", params={"p1": np.ones(3)}, x=np.ones((2, 3)),
                   y=np.zeros((2, 3)))
    assert np.isfinite(bounds(case).gain)
