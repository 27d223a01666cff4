"""compare(): planted bugs caught and located, kinks classified, nan, oracle errors, records."""

from __future__ import annotations

import math

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.cases import examples
from backprop_oracle.properties.comparison.compare import (
    compare,
    first_divergent_layer,
    screen_then_locate,
    where,
)
from backprop_oracle.properties.comparison.evaluate import evaluate, triangulate
from backprop_oracle.properties.comparison.records import (
    Record,
    case_verdict,
    dumps,
    error_record,
    loads,
)

from ...mutation.mutants import RESULTS as MUTANTS
from . import _cases

# mutant -> (case builder, first divergent layer)
EXPECTED = {
    "sigma_prime_of_a": (_cases.square_mlp, 2),
    "bp1_without_sigma_prime": (_cases.square_mlp, 3),
    "missing_one_over_m": (_cases.square_mlp, 3),
    "bias_wrong_axis": (_cases.square_mlp, 3),
    "conv_padding_off_by_one": (_cases.conv_maxpool, 1),
    "maxpool_wrong_cell": (_cases.conv_maxpool, 2),
    "one_element_1e-3": (_cases.square_mlp, 1),
    "scale_1e-4": (_cases.square_mlp, 3),
}


def _compare(case, expected, actual, dtype=None):
    return compare(case, expected, actual, oracle="under_test", mode="reverse", device="cpu",
                   dtype=dtype or case.dtype)


@pytest.mark.parametrize("mutant", sorted(EXPECTED))
def test_planted_bug_is_caught_and_located(mutant: str) -> None:
    build, layer = EXPECTED[mutant]
    case = build("float64")
    records = _compare(case, FiniteDifferences().run(case), MUTANTS[mutant](case))
    assert case_verdict(records) == "diverge"
    assert all(r.first_divergent_layer == layer for r in records)
    assert not any(r.verdict == "kink" for r in records)


@pytest.mark.parametrize("mutant", sorted(EXPECTED))
def test_planted_bug_is_caught_by_the_screen(mutant: str) -> None:
    build, layer = EXPECTED[mutant]
    case = build("float64")
    records, info = screen_then_locate(case, MUTANTS[mutant](case))
    assert info["failing"] and case_verdict(records) == "diverge"
    assert records[0].first_divergent_layer == layer


def test_correct_reference_passes_the_screen() -> None:
    for case in examples.every_family("float64").values():
        records, info = screen_then_locate(case, bo.backprop(case))
        assert info["failing"] == [] and case_verdict(records) == "agree"


def test_float32_single_element_error_is_caught() -> None:
    case = _cases.square_mlp("float32")
    fd = FiniteDifferences().run(case)
    assert case_verdict(_compare(case, fd, bo.backprop(case))) == "agree"
    records = _compare(case, fd, MUTANTS["one_element_1e-3"](case))
    bad = [r for r in records if r.verdict == "diverge"]
    assert [r.name for r in bad] == ["W1"] and bad[0].n_beyond == 1


@pytest.mark.parametrize("name", sorted(examples.every_family("float32")))
def test_float32_reference_agrees_with_float64_fd(name: str) -> None:
    case = examples.every_family("float32")[name]
    records = _compare(case, FiniteDifferences().run(case), bo.backprop(case))
    assert case_verdict(records) == "agree", [(r.name, r.margin) for r in records]
    assert all(r.margin < 1 for r in records)


@pytest.mark.parametrize("build", [_cases.relu_at_zero, _cases.tied_maxpool])
def test_kinks_are_classified_kink(build) -> None:
    case = build("float64")
    records = _compare(case, FiniteDifferences().run(case), bo.backprop(case))
    verdicts = {r.name: r.verdict for r in records}
    assert "kink" in verdicts.values() and "diverge" not in verdicts.values(), verdicts
    assert case_verdict(records) == "kink"


def _relu_one_at_zero(case: bo.Case, factor: float) -> bo.Result:
    """The reference with ``factor`` as relu'(0) at the kink ``z1[0, 0] = 0``."""
    other = bo.backprop(case)
    da = (other.deltas["delta2"] @ case.params["W2"])[0, 0]  # dC/da1[0, 0]
    other.deltas["delta1"] = other.deltas["delta1"].copy()
    other.deltas["delta1"][0, 0] = factor * da
    return other


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_a_valid_one_sided_choice_at_relu_zero_is_a_kink(factor: float) -> None:
    """relu'(0) = 1 (or anything between the one-sided derivatives 0 and 1) is a kink."""
    case = _cases.relu_at_zero("float64")
    records = _compare(case, bo.backprop(case), _relu_one_at_zero(case, factor))
    delta1 = next(r for r in records if r.name == "delta1")
    assert delta1.verdict == "kink" and "valid one-sided" in delta1.detail["kink_check"]


@pytest.mark.parametrize("factor", [1.5, -0.5])
def test_a_factor_outside_the_one_sided_derivatives_is_a_divergence(factor: float) -> None:
    """At the same kink, relu'(0) = 1.5 or -0.5 is no one-sided choice: diverge, saying
    which rule it broke (before issue 16 any value at a kink was excused)."""
    case = _cases.relu_at_zero("float64")
    records = _compare(case, bo.backprop(case), _relu_one_at_zero(case, factor))
    delta1 = next(r for r in records if r.name == "delta1")
    assert delta1.verdict == "diverge"
    assert "at a kink" in delta1.detail["kink_rule"] and "relu" in delta1.detail["kink_rule"]


def test_nan_on_one_side_and_both_sides() -> None:
    case = examples.mlp()
    ref = bo.backprop(case)
    bad = bo.backprop(case)
    bad.grads["W2"] = bad.grads["W2"].copy()
    bad.grads["W2"][0, 0] = np.nan
    records = {r.name: r for r in _compare(case, ref, bad)}
    assert records["W2"].verdict == "nan" and case_verdict(list(records.values())) == "nan"
    ref.grads["W2"] = bad.grads["W2"]
    assert {r.name: r for r in _compare(case, ref, bad)}["W2"].verdict == "agree"


class _Raises(Oracle):
    name, mode = "broken", "reverse"

    def run(self, case, device="cpu", dtype=None):
        raise RuntimeError("boom")


class _Unsupported(Oracle):
    name, mode = "partial", "forward"

    def run(self, case, device="cpu", dtype=None):
        raise NotImplementedError("no conv")


def test_oracle_error_is_recorded_and_the_run_goes_on() -> None:
    case = examples.softmax()
    expected = bo.backprop(case)
    records = []
    for oracle in (_Raises(), FiniteDifferences(), _Unsupported()):
        records += evaluate(case, oracle, reference=expected)
    by_oracle = {}
    for r in records:
        by_oracle.setdefault(r.oracle, []).append(r.verdict)
    assert by_oracle["broken"] == ["oracle_error"]
    assert by_oracle["partial"] == ["unsupported"]
    assert set(by_oracle["fd"]) == {"agree"}
    rec = next(r for r in records if r.oracle == "broken")
    assert "boom" in rec.detail["message"] and "RuntimeError" in rec.detail["traceback"]
    assert error_record(where(case, "x", "m", "cpu", "float64"), ValueError("v")).verdict == \
        "oracle_error"


def test_records_round_trip_as_json_lines() -> None:
    case = examples.cnn("max")
    records = _compare(case, FiniteDifferences().run(case), bo.backprop(case))
    records[0].margin = math.inf
    records[0].expected_value = math.nan
    text = dumps(records)
    assert text.count("\n") == len(records)
    back = loads(text)
    assert back[1] == records[1]
    assert math.isinf(back[0].margin) and math.isnan(back[0].expected_value)
    r = records[2]
    for field in ("case_id", "family", "oracle", "mode", "device", "dtype", "quantity", "name",
                  "shape", "max_abs_err", "max_rel_err", "err_ulps", "worst_index", "n_beyond",
                  "n_total", "tolerance", "tolerance_model", "margin", "verdict",
                  "first_divergent_layer", "versions", "replay", "detail"):
        assert hasattr(r, field)
    assert r.replay == f"backprop-oracle replay {case.case_id} --from DIR"
    assert "kappa=" in r.tolerance_model and "fd_err=" in r.tolerance_model
    assert "numpy" in r.versions
    with pytest.raises(ValueError):
        Record(case_id="c", family="mlp", oracle="o", mode="m", device="cpu", dtype="float64",
               quantity="grad", name="W1", verdict="maybe")


def test_first_divergent_layer_direction() -> None:
    case = _cases.square_mlp()
    v = {"delta3": "agree", "delta2": "diverge", "delta1": "diverge", "W3": "agree"}
    assert first_divergent_layer(case, v) == 2
    assert first_divergent_layer(case, {"delta3": "agree", "W2": "diverge"}) == 2
    assert first_divergent_layer(case, {"delta3": "kink", "W3": "agree"}) is None


def test_triangulate_names_the_odd_one_out() -> None:
    s = {("reference", "torch"): "agree", ("reference", "jax"): "diverge",
         ("torch", "jax"): "diverge"}
    assert triangulate(s) == "jax"
    assert triangulate({("a", "b"): "diverge", ("a", "c"): "diverge",
                        ("b", "c"): "diverge"}) is None


def _absolutely_accurate_sigmoid(case: bo.Case) -> bo.Result:
    """The reference with sigmoid computed as ``tanh(z/2)/2 + 1/2``: accurate to ``u`` in
    absolute terms only, so tiny tail values (large ``|z|``) lose all relative accuracy."""
    from unittest import mock

    from backprop_oracle.reference import activations

    def sigmoid(z):
        return (np.tanh(z / 2) / 2 + np.asarray(0.5, z.dtype)).astype(z.dtype)

    def sigmoid_prime(z):
        s = sigmoid(z)
        return s * (1 - s)

    with mock.patch.dict(activations.ACTIVATIONS, {"sigmoid": (sigmoid, sigmoid_prime)}):
        return bo.backprop(case)


def _saturated_sigmoid_mlp() -> bo.Case:
    """float32, sigmoid hidden layer with ``|z|`` up to ~24: tails near 1e-10."""
    rng = np.random.default_rng(4)
    layers = (bo.dense(8, "sigmoid"), bo.dense(3, "identity"))
    return _cases._case("mlp", layers, "quadratic", rng.normal(size=(16, 4)) * 6,
                        rng.normal(size=(16, 3)), rng, "float32",
                        W1=rng.normal(size=(8, 4)))


def test_tail_inaccuracy_is_told_apart_from_a_wrong_gradient() -> None:
    """Both stay ``diverge``; the class says which: a relatively inaccurate sigmoid in the
    tails is ``tail-accuracy`` (normwise within tolerance), a 1 % error in one tensor is
    ``wrong`` (normwise beyond)."""
    case = _saturated_sigmoid_mlp()
    reference = bo.backprop(case)
    tails = _compare(case, reference, _absolutely_accurate_sigmoid(case))
    diverged = [r for r in tails if r.verdict == "diverge"]
    assert diverged and {r.divergence for r in diverged} == {"tail-accuracy"}
    assert all(r.norm_err <= r.norm_tol and r.margin > 1 for r in diverged)
    wrong = bo.backprop(case)
    wrong.grads["W2"] = wrong.grads["W2"] * np.float32(1.01)
    w2 = next(r for r in _compare(case, reference, wrong) if r.name == "W2")
    assert w2.verdict == "diverge" and w2.divergence == "wrong" and w2.norm_err > w2.norm_tol
    agreeing = [r for r in _compare(case, reference, bo.backprop(case))]
    assert all(r.divergence == "" and r.norm_err <= r.norm_tol for r in agreeing)


def test_a_wrongly_shaped_delta_stops_the_replay_not_the_comparison() -> None:
    """A diverging gradient with a malformed output delta: the replay stops there (the
    location is as precise as the well-formed tensors allow); nothing raises."""
    case = _cases.square_mlp()
    other = bo.backprop(case)
    other.grads["W1"] = other.grads["W1"] * 1.01
    other.deltas["delta3"] = np.zeros((1, 1))
    records = _compare(case, bo.backprop(case), other)
    assert next(r for r in records if r.name == "W1").verdict == "diverge"
    assert next(r for r in records if r.name == "delta3").verdict == "diverge"  # its shape
