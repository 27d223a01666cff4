"""Strategies draw valid cases, shrink small, honour constraints, keep away from kinks by
default and hit them exactly in kink mode; ``bo.cases`` is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import backprop_oracle as bo
from backprop_oracle.properties.cases import hypothesis_strategies as HS
from backprop_oracle.properties.cases import strategies as S
from backprop_oracle.reference import pooling
from backprop_oracle.reference.activations import KINKED
from backprop_oracle.reference.case import Conv2d, Dense, Dropout, Pool
from backprop_oracle.reference.network import feedforward

STRICT = settings(max_examples=30, deadline=None)  # health checks stay on


def kink_distances(case: bo.Case) -> tuple[float, float]:
    """Smallest |z| over ReLU/leaky layers and smallest max-pool runner-up gap."""
    zs, acts = feedforward(case)
    relu = [np.min(np.abs(z)) for z, s in zip(zs, case.layers, strict=True)
            if isinstance(s, (Dense, Conv2d)) and s.activation in KINKED]
    gaps = [np.min(pooling.max_route(acts[l - 1], s.size, s.stride)[1])
            for l, s in enumerate(case.layers, 1) if isinstance(s, Pool) and s.kind == "max"]
    return float(min(relu, default=np.inf)), float(min(gaps, default=np.inf))


@STRICT
@given(HS.any_cases())
def test_drawn_cases_are_valid_and_backprop_runs(case: bo.Case) -> None:
    result = bo.backprop(case)
    assert np.isfinite(result.loss)
    assert set(result.grads) == set(case.params)
    for name, g in result.grads.items():
        assert g.shape == case.params[name].shape and g.dtype == np.dtype(case.dtype)


@STRICT
@given(HS.mlp_cases())
def test_mlp_architecture_bounds(case: bo.Case) -> None:
    dense = [s for s in case.layers if isinstance(s, Dense)]
    assert 1 <= len(dense) <= 5 and 1 <= case.batch <= 32
    assert all(1 <= s.units <= 64 for s in dense)
    assert all(isinstance(s, (Dense, Dropout)) for s in case.layers)
    assert not isinstance(case.layers[-1], Dropout)


@STRICT
@given(HS.cnn_cases())
def test_cnn_geometry_fits(case: bo.Case) -> None:
    convs = [s for s in case.layers if isinstance(s, Conv2d)]
    assert 1 <= len(convs) <= 2 and any(isinstance(s, Pool) for s in case.layers)
    assert all(1 <= s.out_channels <= 8 and 1 <= s.kernel <= 5 and 1 <= s.stride <= 3
               and 0 <= s.padding <= 2 for s in convs)
    assert case.x.shape[2] <= 16


@STRICT
@given(HS.any_cases(families=("mlp", "cnn", "softmax")))
def test_default_draws_keep_away_from_kinks(case: bo.Case) -> None:
    relu_z, gap = kink_distances(case.astype("float64"))
    assert relu_z >= S.MARGIN * 0.99, f"ReLU input within {relu_z:.3g} of 0"
    assert gap >= S.MARGIN * 0.99, f"max-pool runner-up gap {gap:.3g}"


def test_kink_mode_hits_exact_kinks() -> None:
    found_zero = found_tie = False
    for case in bo.cases("cnn", 40, seed=3, kinks=True, activations=["relu"], pools=["max"]):
        relu_z, gap = kink_distances(case)
        found_zero |= relu_z == 0.0
        found_tie |= gap == 0.0
    assert found_zero and found_tie


def test_dropout_layers_come_with_explicit_masks() -> None:
    drawn = [c for c in bo.cases("mlp", 40, seed=2) if c.masks]
    assert drawn, "no dropout drawn in 40 MLPs"
    for case in drawn:
        for mask in case.masks.values():
            assert set(np.unique(mask)) <= {0.0, 1.0} and mask.shape[0] == case.batch
    assert not any(c.masks for c in bo.cases("mlp", 20, seed=2, dropout=False))


def test_softmax_logits_reach_extremes() -> None:
    largest = max(float(np.max(np.abs(feedforward(c)[0][-1])))
                  for c in bo.cases("softmax", 60, seed=0))
    assert largest > 1e3


def test_cases_are_deterministic_and_seeded() -> None:
    first = [c.case_id for c in bo.cases("mlp", 5, seed=7)]
    assert first == [c.case_id for c in bo.cases("mlp", 5, seed=7)]
    assert first != [c.case_id for c in bo.cases("mlp", 5, seed=8)]


def test_constraints_restrict_draws() -> None:
    drawn = bo.cases("mlp", 30, seed=1, activations=["tanh"], costs=["quadratic"],
                     max_layers=2, max_width=4, dtypes=["float32"])
    for case in drawn:
        assert case.cost == "quadratic" and case.dtype == "float32"
        dense = [s for s in case.layers if isinstance(s, Dense)]
        assert len(dense) <= 2
        assert all(s.activation == "tanh" and s.units <= 4 for s in dense)


@pytest.mark.parametrize("kwargs, message", [
    ({"activations": ["swish"]}, "activations: unknown"),
    ({"costs": "quadratic"}, "costs must be a non-empty list"),
    ({"max_width": 0}, "max_width must be an integer >= 1"),
    ({"depth": 3}, "unknown constraint"),
])
def test_bad_constraints_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bo.cases("mlp", 1, **kwargs)


def test_unknown_family_is_named() -> None:
    with pytest.raises(ValueError, match="unknown family 'rnn'"):
        bo.cases("rnn", 1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HS.graph_cases())
def test_graph_draws_respect_domains(case: bo.Case) -> None:
    for spec in case.layers:
        assert spec.op in ("add", "mul", "div", "neg", "exp", "reciprocal", "log", "sigmoid")
    assert np.isfinite(bo.backprop(case).loss)


def test_graph_draws_that_overflow_are_rejected_not_raised() -> None:
    """Seed 101 once drew exp(exp(...)) overflowing; such draws are rejected and redrawn."""
    assert len(bo.cases("graph", 625, seed=101)) == 625
