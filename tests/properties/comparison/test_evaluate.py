"""evaluate()'s kept results and cross_values(): every implementation's value at every
implementation's worst element, so that a report shows them all at the same element."""

from __future__ import annotations

import numpy as np

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.comparison.evaluate import Results, cross_values, evaluate
from backprop_oracle.properties.comparison.records import index_key


class Shifted(Oracle):
    """The reference with one element of ``W1`` moved by ``by``: its worst element is known."""

    name, mode = "shifted", "reverse"

    def __init__(self, index: tuple[int, int], by: float) -> None:
        self.index, self.by = index, by

    def run(self, case: bo.Case, device: str = "cpu", dtype: str | None = None) -> bo.Result:
        result = bo.backprop(case)
        result.grads["W1"] = np.array(result.grads["W1"], copy=True)
        result.grads["W1"][self.index] += self.by
        return result


def test_every_record_holds_its_values_at_every_worst_element() -> None:
    case = next(c for c in bo.cases("mlp", 20, seed=3, max_layers=2, max_width=4,
                                    dtypes=["float64"], activations=["tanh"])
                if c.params["W1"].shape[0] >= 2 and c.params["W1"].shape[1] >= 3)
    a, b = Shifted((0, 0), 1e-3), Shifted((1, 2), 2e-3)
    kept: Results = {}
    records = [r for oracle in (a, b, FiniteDifferences())
               for r in evaluate(case, oracle, keep=kept)]
    cross_values(records, kept)
    w1 = {r.oracle: r for r in records if r.name == "W1"}
    assert w1["shifted"].worst_index in ((0, 0), (1, 2))
    expected = bo.backprop(case).grads["W1"]
    for record in w1.values():
        values = record.detail["values"]
        assert {"0,0", "1,2"} <= set(values)  # both shifted oracles' worst elements
        assert index_key(record.worst_index) in values
        assert values[index_key(record.worst_index)] == record.actual_value
    fd = w1["fd"].detail["values"]
    assert np.isclose(fd["0,0"], expected[0, 0], rtol=1e-8)  # FD: the true value there
    loss = next(r for r in records if r.name == "loss")
    assert set(loss.detail["values"]) == {""}  # a scalar's one element


def test_a_record_whose_result_was_not_kept_gets_no_values() -> None:
    """A worker replaced between oracles keeps no result: its records stay as they were."""
    case = bo.cases("mlp", 1, seed=3, max_layers=2, dtypes=["float64"])[0]
    records = evaluate(case, Shifted((0, 0), 1e-3))
    cross_values(records, {})
    assert all("values" not in r.detail for r in records)


def test_directional_records_beside_elementwise_ones_keep_every_value() -> None:
    """Forward mode by directions has no worst element: the other records still get their
    values (a directional record's empty index broke the whole case's values once)."""
    torch_oracle = __import__("pytest").importorskip(
        "backprop_oracle.oracles.torch_oracle", exc_type=ImportError)
    case = bo.cases("mlp", 1, seed=3, max_layers=2, dtypes=["float64"])[0]
    kept: Results = {}
    records = [r for oracle in (Shifted((0, 0), 1e-3), torch_oracle.TorchOracle("forward"))
               for r in evaluate(case, oracle, keep=kept)]
    cross_values(records, kept)
    directional = [r for r in records if r.oracle == "torch" and r.name == "W1"]
    assert directional and directional[0].worst_index == () and directional[0].n_total == 4
    assert "values" not in directional[0].detail
    shifted = next(r for r in records if r.oracle == "shifted" and r.name == "W1")
    assert set(shifted.detail["values"]) == {"0,0"}
