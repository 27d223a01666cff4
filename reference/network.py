"""A layered network's forward pass and backpropagation, returning a ``Result``.

Feedforward: ``a^0 = x``; for each layer ``l``: ``z^l = layer(a^(l-1))``, ``a^l = sigma(z^l)``
(pooling, flatten and dropout have no activation: ``a^l = z^l``). Backward: BP1 from the
cost, then for ``l = L..1``: the layer's parameter gradients (BP3, BP4) and
``dC/da^(l-1)``, and BP2 ``delta^(l-1) = dC/da^(l-1) ⊙ sigma'(z^(l-1))``. Each layer's
forward and backward come from its rule in ``layers.LAYER_RULES``.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import NDArray

from .activations import activation, identity_prime
from .case import Case, Dense, parametrised
from .costs import cost
from .layers import LayerRule, layer_arrays, layer_rule
from .result import Result

Array = NDArray[np.floating]


def _param_numbers(case: Case) -> dict[int, int]:
    return dict(parametrised(case.layers))


def _rule(case: Case, l: int) -> LayerRule:
    try:
        return layer_rule(case.layers[l - 1])
    except ValueError as e:
        raise ValueError(f"layer {l}: {e}") from None


def feedforward(case: Case) -> tuple[list[Array], list[Array]]:
    """``(zs, activations)`` with ``activations[0] = x`` and ``zs[l-1] = z^l``."""
    numbers = _param_numbers(case)
    a, zs, acts = case.x, [], [case.x]
    for l, spec in enumerate(case.layers, 1):
        z = _rule(case, l).forward(spec, a, layer_arrays(case, l, numbers))
        a = activation(spec.activation)[0](z) if hasattr(spec, "activation") else z
        zs.append(z)
        acts.append(a)
    return zs, acts


def _sigma_prime(spec: object, z: Array) -> Array:
    return activation(spec.activation)[1](z) if hasattr(spec, "activation") else identity_prime(z)


def _layer_backward(case: Case, l: int, delta: Array, a_prev: Array, z: Array,
                    numbers: dict[int, int], grads: dict[str, Array],
                    gaps: dict[str, Array]) -> Array | None:
    """Fill ``grads`` (and ``gaps`` for max pooling) for layer ``l``; return ``dC/da^(l-1)``
    (``None`` for the first layer, whose input needs no gradient). The one backward step
    ``backprop`` takes per layer (tests/mutation replaces it to plant bugs)."""
    spec = case.layers[l - 1]
    g = _rule(case, l).backward(spec, delta, a_prev, z, layer_arrays(case, l, numbers), l > 1)
    if g.nabla_w is not None and g.nabla_b is not None:  # dense, conv2d: both or neither
        n = numbers[l]
        grads[f"W{n}"], grads[f"b{n}"] = g.nabla_w, g.nabla_b
    if g.gap is not None:
        gaps[f"gap{l}"] = g.gap
    return g.da_prev


def backprop(case: Case) -> Result:
    """Loss, gradients for every parameter, and per-layer ``delta`` for a layered case."""
    zs, acts = feedforward(case)
    L = len(case.layers)
    last = cast(Dense, case.layers[-1])  # validated: a network ends with a dense layer
    loss, delta = cost(case.cost)(zs[-1], acts[-1], case.y, last.activation)  # BP1
    numbers = _param_numbers(case)
    grads: dict[str, Array] = {}
    gaps: dict[str, Array] = {}
    deltas: dict[str, Array] = {f"delta{L}": delta}
    input_grads: dict[str, Array] = {}
    for l in range(L, 0, -1):
        da = _layer_backward(case, l, delta, acts[l - 1], zs[l - 1], numbers, grads, gaps)
        if l > 1:
            input_grads[f"da{l - 1}"] = cast(Array, da)
            delta = cast(Array, da) * _sigma_prime(case.layers[l - 2], zs[l - 2])  # BP2
            deltas[f"delta{l - 1}"] = delta
    return Result(
        loss=float(loss),
        grads={k: grads[k] for k in case.params},
        deltas=dict(sorted(deltas.items(), key=lambda kv: int(kv[0][5:]))),
        activations={f"a{l}": a for l, a in enumerate(acts)},
        zs={f"z{l}": z for l, z in enumerate(zs, 1)},
        gaps=dict(sorted(gaps.items(), key=lambda kv: int(kv[0][3:]))),
        meta={"method": "reference"},
        input_grads=dict(sorted(input_grads.items(), key=lambda kv: int(kv[0][2:]))),
    )
