"""The per-layer-kind table: one rule for every layer-spec type, a clear error for anything
else, and the same signatures for every kind."""

from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference import case as case_module
from backprop_oracle.reference import network
from backprop_oracle.reference.init import init_params
from backprop_oracle.reference.layers import (
    LAYER_RULES,
    NO_ARRAYS,
    LayerArrays,
    LayerGrads,
    layer_arrays,
    layer_rule,
)

SPECS = {"dense": bo.dense(3, "tanh"), "conv2d": bo.conv2d(2, 2, padding=1),
         "pool": bo.maxpool(2), "flatten": bo.flatten(), "dropout": bo.dropout(0.5)}


def test_every_layer_spec_type_has_a_rule() -> None:
    layer_types = set(typing.get_args(case_module.Layer))
    assert set(LAYER_RULES) == layer_types
    assert {type(s) for s in SPECS.values()} == layer_types
    assert {r.kind for r in LAYER_RULES.values()} == set(SPECS)
    for kind, spec in SPECS.items():
        rule = layer_rule(spec)
        assert rule.kind == kind
        assert rule.has_params == (kind in ("dense", "conv2d"))
        with pytest.raises(dataclasses.FrozenInstanceError):
            rule.kind = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        LAYER_RULES[object] = LAYER_RULES[type(SPECS["dense"])]  # type: ignore[index]


@pytest.mark.parametrize("spec", [bo.node("exp", "x"), object(), "dense"],
                         ids=["Node", "object", "str"])
def test_an_unknown_spec_type_is_named_in_the_error(spec: object) -> None:
    with pytest.raises(ValueError, match=rf"^{type(spec).__name__} is not a network layer.*"
                                         r"Dense, Conv2d, Pool, Flatten, Dropout"):
        layer_rule(spec)


def test_the_network_names_the_layer_of_an_unknown_spec() -> None:
    case = bo.cases("mlp", 1, seed=0, dropout=False)[0]
    # a validated Case cannot hold a node in a network: a stand-in with what feedforward reads
    broken = types.SimpleNamespace(layers=(case.layers[0], bo.node("exp", "x")), x=case.x,
                                   params=case.params, masks={})
    with pytest.raises(ValueError, match=r"^layer 2: Node is not a network layer"):
        network.feedforward(broken)  # type: ignore[arg-type]


CONV = bo.conv2d(2, 2, padding=1)
NETWORKS = {  # a small cnn around each kind; the layer under test is SPECS[kind]
    "dense": (bo.conv2d(2, 2), bo.flatten(), SPECS["dense"], bo.dense(2, "identity")),
    "conv2d": (SPECS["conv2d"], bo.flatten(), bo.dense(2, "identity")),
    "pool": (CONV, SPECS["pool"], bo.flatten(), bo.dense(2, "identity")),
    "flatten": (CONV, SPECS["flatten"], bo.dense(2, "identity")),
    "dropout": (CONV, SPECS["dropout"], bo.flatten(), bo.dense(2, "identity")),
}


def _case(layers: tuple) -> bo.Case:
    rng = np.random.default_rng(0)
    shapes = case_module.layer_shapes(layers, (1, 4, 4))
    masks = {f"mask{l}": rng.integers(0, 2, size=(3, *shapes[f"z{l}"])).astype(float)
             for l, s in enumerate(layers, 1) if layer_rule(s).kind == "dropout"}
    return bo.Case(family="cnn", layers=layers, cost="quadratic",
                   params=init_params(layers, (1, 4, 4), rng), x=rng.normal(size=(3, 1, 4, 4)),
                   y=rng.normal(size=(3, 2)), masks=masks)


@pytest.mark.parametrize("kind", list(SPECS))
def test_rules_share_one_signature(kind: str) -> None:
    case = _case(NETWORKS[kind])
    l = case.layers.index(SPECS[kind]) + 1
    spec, rule = case.layers[l - 1], layer_rule(SPECS[kind])
    zs, acts = network.feedforward(case)
    arrays = layer_arrays(case, l)
    assert isinstance(arrays, LayerArrays)
    assert (arrays.W is not None) == (arrays.b is not None) == rule.has_params
    assert (arrays.mask is not None) == (kind == "dropout")
    if kind in ("pool", "flatten"):
        assert arrays is NO_ARRAYS
    z = rule.forward(spec, acts[l - 1], arrays)
    assert np.array_equal(z, zs[l - 1])
    delta = np.ones_like(z)
    g = rule.backward(spec, delta, acts[l - 1], z, arrays, True)
    assert isinstance(g, LayerGrads)
    assert g.da_prev.shape == acts[l - 1].shape
    assert (g.nabla_w is not None) == (g.nabla_b is not None) == rule.has_params
    if rule.has_params:
        assert g.nabla_w.shape == arrays.W.shape and g.nabla_b.shape == arrays.b.shape
    assert (g.gap is not None) == (kind == "pool")  # SPECS["pool"] is a max pool
    assert rule.backward(spec, delta, acts[l - 1], z, arrays, False).da_prev is None
