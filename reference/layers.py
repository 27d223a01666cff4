"""One rule per layer-spec type: its kind name, its forward and its backward.

``LAYER_RULES`` maps each layer-spec type of ``reference.case`` (``Dense``, ``Conv2d``,
``Pool``, ``Flatten``, ``Dropout``) to a ``LayerRule``; ``layer_rule(spec)`` looks one up.
Every rule has the same signatures, so a caller loops over layers without asking which
type each one is:

    z = rule.forward(spec, a_prev, arrays)                         # z^l from a^(l-1)
    g = rule.backward(spec, delta, a_prev, z, arrays, need_input_grad)

``arrays`` (``LayerArrays``) holds the case arrays the layer reads: ``W^l``, ``b^l`` for
dense and conv2d, the explicit mask for dropout. The rules look the layer functions up in
their modules (``dense.backward``, ``conv.forward``, ...) at call time, so replacing one of
those (as the planted-bug tests do) changes every caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import conv, dense, pooling
from .case import Case, Conv2d, Dense, Dropout, Flatten, Pool, parametrised

Array = NDArray[np.floating]


class LayerArrays(NamedTuple):
    """The case's arrays layer ``l`` reads: ``W = W^l``, ``b = b^l`` (dense, conv2d) and
    ``mask`` (``case.masks["mask<l>"]``, dropout); ``None`` where the layer has none."""

    W: Array | None = None
    b: Array | None = None
    mask: Array | None = None


NO_ARRAYS = LayerArrays()


class LayerGrads(NamedTuple):
    """What a layer's backward returns: ``nabla_w = dC/dW^l`` and ``nabla_b = dC/db^l``
    (``None`` without parameters), ``da_prev = dC/da^(l-1)`` (``None`` when the input needs
    no gradient: the first layer), and ``gap``: max pooling's runner-up gap per window
    (``pooling.max_route``; ``None`` for every other layer)."""

    nabla_w: Array | None
    nabla_b: Array | None
    da_prev: Array | None
    gap: Array | None = None


# The spec argument is typed Any: each rule takes its own spec type (``dense_forward`` a
# ``Dense``, ...), and ``LAYER_RULES`` pairs every rule with the type it is looked up by.
Forward = Callable[[Any, Array, LayerArrays], Array]
Backward = Callable[[Any, Array, Array, Array, LayerArrays, bool], LayerGrads]


@dataclass(frozen=True)
class LayerRule:
    """``kind``: ``"dense" | "conv2d" | "pool" | "flatten" | "dropout"``;
    ``forward(spec, a_prev, arrays) -> z^l``;
    ``backward(spec, delta, a_prev, z, arrays, need_input_grad) -> LayerGrads`` from
    ``delta^l = dC/dz^l`` (BP3, BP4 for the parameters; ``dC/da^(l-1)``, which BP2 then
    multiplies by ``sigma'(z^(l-1))``). ``has_params``: the layer owns ``W^l, b^l``."""

    kind: str
    forward: Forward
    backward: Backward
    has_params: bool = False


# ------------------------------------------------------------------------------ dense

def dense_forward(spec: Dense, a_prev: Array, arrays: LayerArrays) -> Array:
    """``z^l = W^l a^(l-1) + b^l`` (batch-first: ``a W^T + b``)."""
    assert arrays.W is not None and arrays.b is not None
    return dense.forward(a_prev, arrays.W, arrays.b)


def dense_backward(spec: Dense, delta: Array, a_prev: Array, z: Array, arrays: LayerArrays,
                   need_input_grad: bool) -> LayerGrads:
    """BP4 ``nabla_w = sum_x delta^(x,l) (a^(x,l-1))^T``; BP3 ``nabla_b = sum_x delta^(x,l)``;
    ``dC/da^(l-1) = (W^l)^T delta^l``."""
    assert arrays.W is not None
    nabla_w, nabla_b, da_prev = dense.backward(delta, a_prev, arrays.W,
                                               need_input_grad=need_input_grad)
    return LayerGrads(nabla_w, nabla_b, da_prev)


# ------------------------------------------------------------------------------ conv2d

def conv2d_forward(spec: Conv2d, a_prev: Array, arrays: LayerArrays) -> Array:
    """``z^l = W^l * a^(l-1) + b^l`` (cross-correlation, stride and zero padding)."""
    assert arrays.W is not None and arrays.b is not None
    return conv.forward(a_prev, arrays.W, arrays.b, spec.stride, spec.padding)


def conv2d_backward(spec: Conv2d, delta: Array, a_prev: Array, z: Array, arrays: LayerArrays,
                    need_input_grad: bool) -> LayerGrads:
    """``nabla_w[o,c,u,v] = sum_{n,i,j} delta[n,o,i,j] a_pad[n,c,s i+u,s j+v]``;
    ``nabla_b[o] = sum_{n,i,j} delta[n,o,i,j]``; ``dC/da^(l-1)`` sums ``W`` times the
    ``delta`` of every output unit whose window covers the cell."""
    assert arrays.W is not None
    nabla_w, nabla_b, da_prev = conv.backward(delta, a_prev, arrays.W, spec.stride,
                                              spec.padding, need_input_grad=need_input_grad)
    return LayerGrads(nabla_w, nabla_b, da_prev)


# ------------------------------------------------------------------------------ pool

def pool_forward(spec: Pool, a_prev: Array, arrays: LayerArrays) -> Array:
    """``z^l`` = max, mean or L2 norm of each ``size x size`` window of ``a^(l-1)``."""
    return pooling.forward(spec.kind, a_prev, spec.size, spec.stride)


def pool_backward(spec: Pool, delta: Array, a_prev: Array, z: Array, arrays: LayerArrays,
                  need_input_grad: bool) -> LayerGrads:
    """``dC/da^(l-1)``: a window's ``delta`` to its arg-max (max), ``1/k^2`` of it to every
    cell (avg), ``a_i / z`` of it to cell ``i`` (L2). Max pooling also returns the
    runner-up ``gap``, even for the first layer."""
    index = gap = None
    if spec.kind == "max":
        index, gap = pooling.max_route(a_prev, spec.size, spec.stride)
    da_prev = (pooling.backward(spec.kind, delta, a_prev, z, spec.size, spec.stride, index)
               if need_input_grad else None)
    return LayerGrads(None, None, da_prev, gap)


# ------------------------------------------------------------------------------ flatten

def flatten_forward(spec: Flatten, a_prev: Array, arrays: LayerArrays) -> Array:
    """``z^l = a^(l-1)`` reshaped ``(N, C, H, W) -> (N, C*H*W)``."""
    return pooling.flatten_forward(a_prev)


def flatten_backward(spec: Flatten, delta: Array, a_prev: Array, z: Array,
                     arrays: LayerArrays, need_input_grad: bool) -> LayerGrads:
    """``dC/da^(l-1) = delta^l`` reshaped back to the shape of ``a^(l-1)``."""
    return LayerGrads(None, None,
                      pooling.flatten_backward(delta, a_prev) if need_input_grad else None)


# ------------------------------------------------------------------------------ dropout

def dropout_forward(spec: Dropout, a_prev: Array, arrays: LayerArrays) -> Array:
    """Inverted dropout with the case's explicit mask: ``z^l = a^(l-1) * mask / (1 - p)``."""
    assert arrays.mask is not None
    return a_prev * arrays.mask / np.asarray(1 - spec.p, dtype=a_prev.dtype)


def dropout_backward(spec: Dropout, delta: Array, a_prev: Array, z: Array,
                     arrays: LayerArrays, need_input_grad: bool) -> LayerGrads:
    """The same mask in the backward pass: ``dC/da^(l-1) = delta^l * mask / (1 - p)``."""
    if not need_input_grad:
        return LayerGrads(None, None, None)
    assert arrays.mask is not None
    return LayerGrads(None, None,
                      delta * arrays.mask / np.asarray(1 - spec.p, dtype=delta.dtype))


# ------------------------------------------------------------------------------ the table

LAYER_RULES: Mapping[type, LayerRule] = MappingProxyType({
    Dense: LayerRule("dense", dense_forward, dense_backward, has_params=True),
    Conv2d: LayerRule("conv2d", conv2d_forward, conv2d_backward, has_params=True),
    Pool: LayerRule("pool", pool_forward, pool_backward),
    Flatten: LayerRule("flatten", flatten_forward, flatten_backward),
    Dropout: LayerRule("dropout", dropout_forward, dropout_backward),
})


def layer_rule(spec: object) -> LayerRule:
    """The ``LayerRule`` of a layer spec; ``ValueError`` naming the type for anything else
    (a graph ``Node`` included: graph nodes have their own rules, ``graph.OPS``)."""
    try:
        return LAYER_RULES[type(spec)]
    except KeyError:
        raise ValueError(
            f"{type(spec).__name__} is not a network layer: there is no layer rule for it "
            f"(layer rules exist for {', '.join(t.__name__ for t in LAYER_RULES)})") from None


def layer_arrays(case: Case, l: int, numbers: Mapping[int, int] | None = None) -> LayerArrays:
    """The ``LayerArrays`` of layer ``l`` (from 1) of ``case``; ``numbers`` (layer index ->
    parameter number, ``dict(parametrised(case.layers))``) saves recomputing it."""
    if numbers is None:
        numbers = dict(parametrised(case.layers))
    n = numbers.get(l)
    if n is not None:
        params = case.params
        return LayerArrays(params[f"W{n}"], params[f"b{n}"])
    mask = case.masks.get(f"mask{l}") if case.masks else None
    return NO_ARRAYS if mask is None else LayerArrays(None, None, mask)
