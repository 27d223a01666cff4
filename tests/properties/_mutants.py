"""Planted-bug copies of the reference backprop: each takes a Case and returns a wrong
Result. ``variant`` is a copy of ``reference.network.backprop`` with switches for the bugs;
the others post-process the correct Result."""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from backprop_oracle.reference import backprop, conv, dense, pooling
from backprop_oracle.reference.activations import activation
from backprop_oracle.reference.case import Case, Conv2d, Dense, Flatten, Pool, parametrised
from backprop_oracle.reference.costs import cost
from backprop_oracle.reference.network import feedforward
from backprop_oracle.reference.result import Result


def _sigma_prime(spec: object, z: np.ndarray, a: np.ndarray, of_a: bool) -> np.ndarray:
    if not hasattr(spec, "activation"):
        return np.ones_like(z)
    return activation(spec.activation)[1](a if of_a else z)


def _conv_input_grad(delta, a_prev, W, stride, padding, shift):
    """conv.backward's input gradient, cropped ``shift`` cells off (padding off by one)."""
    a_pad = conv.pad(a_prev, padding)
    n, o, ho, wo = delta.shape
    c, k = W.shape[1], W.shape[2]
    d_cols = (W.reshape(o, -1).T @ delta.reshape(n, o, -1)).reshape(n, c, k, k, ho, wo)
    parts = [(u, v, d_cols[:, :, u, v]) for u in range(k) for v in range(k)]
    big = conv.pad(conv.scatter_offsets(parts, a_pad.shape, stride), 1)
    h, w = a_prev.shape[2], a_prev.shape[3]
    p = padding + 1 + shift
    return big[:, :, p:p + h, p:p + w]


def variant(case: Case, *, sigma_of_a: bool = False, bp1_sigma: bool = True,
            mean: bool = True, bias_axis: int = 0, conv_pad_shift: int = 0,
            maxpool_shift: int = 0) -> Result:
    """The reference's layered backprop with planted bugs switched on."""
    zs, acts = feedforward(case)
    L = len(case.layers)
    last = case.layers[-1]
    loss, delta = cost(case.cost)(zs[-1], acts[-1], case.y, last.activation)
    if not bp1_sigma:
        delta = (acts[-1] - case.y) / case.batch  # BP1 with sigma' dropped
    if not mean:
        delta = delta * case.batch
    numbers = dict(parametrised(case.layers))
    grads, deltas = {}, {f"delta{L}": delta}
    for l in range(L, 0, -1):
        spec, a_prev, z = case.layers[l - 1], acts[l - 1], zs[l - 1]
        if isinstance(spec, Dense):
            n = numbers[l]
            grads[f"W{n}"], _, da = dense.backward(delta, a_prev, case.params[f"W{n}"])
            grads[f"b{n}"] = delta.sum(axis=bias_axis)
        elif isinstance(spec, Conv2d):
            n = numbers[l]
            W = case.params[f"W{n}"]
            grads[f"W{n}"], grads[f"b{n}"], da = conv.backward(delta, a_prev, W, spec.stride,
                                                               spec.padding)
            if conv_pad_shift:
                da = _conv_input_grad(delta, a_prev, W, spec.stride, spec.padding,
                                      conv_pad_shift)
        elif isinstance(spec, Pool):
            index = None
            if spec.kind == "max":
                index = (pooling.max_route(a_prev, spec.size, spec.stride)[0]
                         + maxpool_shift) % spec.size ** 2
            da = pooling.backward(spec.kind, delta, a_prev, z, spec.size, spec.stride, index)
        elif isinstance(spec, Flatten):
            da = pooling.flatten_backward(delta, a_prev)
        else:
            da = delta * case.masks[f"mask{l}"] / (1 - spec.p)
        if l > 1:
            prev = case.layers[l - 2]
            delta = da * _sigma_prime(prev, zs[l - 2], acts[l - 1], sigma_of_a)  # BP2
            deltas[f"delta{l - 1}"] = delta
    return Result(loss=float(loss), grads={k: grads[k] for k in case.params},
                  deltas=deltas, meta={"method": "mutant"})


def one_element(case: Case, name: str = "W1", rel: float = 1e-3) -> Result:
    """The largest-magnitude element of ``grads[name]`` off by ``rel`` relative."""
    r = backprop(case)
    g = r.grads[name].copy()
    i = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    g[i] = g[i] * (1 + np.asarray(rel, g.dtype))
    r.grads[name] = g
    return r


def scaled(case: Case, factor: float = 1 + 1e-4) -> Result:
    """Every parameter gradient scaled by ``factor``."""
    r = backprop(case)
    r.grads = {k: v * np.asarray(factor, v.dtype) for k, v in r.grads.items()}
    return r


MUTANTS: dict[str, Callable[[Case], Result]] = {
    "sigma_prime_of_a": partial(variant, sigma_of_a=True),
    "bp1_without_sigma_prime": partial(variant, bp1_sigma=False),
    "missing_one_over_m": partial(variant, mean=False),
    "bias_wrong_axis": partial(variant, bias_axis=1),
    "conv_padding_off_by_one": partial(variant, conv_pad_shift=1),
    "maxpool_wrong_cell": partial(variant, maxpool_shift=1),
    "one_element_1e-3": one_element,
    "scale_1e-4": scaled,
}
