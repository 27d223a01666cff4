"""README "Conventions for adapters": the table's numbers and formulas agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from backprop_oracle.reference.activations import activation
from backprop_oracle.reference.case import COST_NAMES, DTYPES, LEAKY_SLOPE, layer_kind
from backprop_oracle.reference.costs import cost, softmax

README = Path(__file__).resolve().parents[2] / "README.md"
# the constructors' names, i.e. every layer_kind(); "node" for graph nodes
KINDS = {"dense", "conv2d", "maxpool", "avgpool", "l2pool", "flatten", "dropout", "node"}


def _table() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Conventions for adapters", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    cells = [tuple(c.strip() for c in row.strip("|").split(" | ")) for row in rows]
    assert cells[0] == ("convention", "value") and set(cells[1][0]) == {"-"}
    return [(c[0], c[1]) for c in cells[2:]]


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _row(starts: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in _table() if k.startswith(starts)]


def test_cost_rows_name_every_cost_and_their_formulas_are_the_reference() -> None:
    rows = _row("cost ")
    assert [_code(k)[0] for k, _ in rows] == list(COST_NAMES)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    y_soft = rng.dirichlet(np.ones(3), size=5)
    for key, value in rows:
        name = _code(key)[0]
        act = {"cross_entropy": "sigmoid", "softmax_cross_entropy": "identity"}.get(name, "tanh")
        a = activation(act)[0](z)
        y = y_soft if name != "quadratic" else rng.normal(size=z.shape)
        (formula,) = _code(value)
        scope = {"mean": np.mean, "sum": np.sum, "log": np.log, "softmax": softmax,
                 "a": a, "y": y, "z": z}
        written = eval(formula, {"__builtins__": {}}, scope)
        loss = cost(name)(z, a, y, act)[0]
        assert float(written) == pytest.approx(float(loss), rel=1e-12), name
    quadratic = _code(rows[0][1])[0]  # y = 1, a = 0: one half
    assert eval(quadratic, {"__builtins__": {}}, {"mean": np.mean, "sum": np.sum,
                                                 "y": np.ones((1, 1)), "a": np.zeros((1, 1))}
                ) == 0.5 == cost("quadratic")(np.zeros((1, 1)), np.zeros((1, 1)),
                                              np.ones((1, 1)), "identity")[0]


def test_leaky_slope() -> None:
    ((key, value),) = _row("`LEAKY_SLOPE`")
    assert float(_code(value)[0]) == LEAKY_SLOPE
    leaky, leaky_prime = activation("leaky_relu")
    z = np.array([-2.0, 0.0, 3.0])
    assert leaky(z).tolist() == [-2 * LEAKY_SLOPE, 0.0, 3.0]
    assert leaky_prime(z).tolist() == [LEAKY_SLOPE, LEAKY_SLOPE, 1.0]
    assert activation("relu")[1](np.zeros(1)).tolist() == [0.0]


def test_delta_rows_cover_every_layer_kind() -> None:
    rows = _row("`delta<l>` of")
    named = [name for key, _ in rows for name in _code(key)[1:]]
    assert sorted(named) == sorted(KINDS)
    import backprop_oracle as bo

    drawn = {layer_kind(s) for f in ("mlp", "cnn", "graph")
             for c in bo.cases(f, 6, seed=0, max_batch=2, max_image=6, max_width=4)
             for s in c.layers}
    assert drawn <= KINDS


def test_dtypes() -> None:
    ((_, value),) = _row("dtypes")
    assert tuple(_code(value)[:2]) == DTYPES
