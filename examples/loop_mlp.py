"""A small loop-based MLP in the style of the seeds (one sample at a time, BP1-BP4 written
out), and the adapter that lets backprop-oracle check it.

    backprop-oracle check examples/loop_mlp.py:adapter --families mlp,softmax --cases 20

``adapter(case)`` turns a ``Case`` into this implementation's inputs and returns its gradients
keyed like ``case.params``. Anything the implementation does not do (convolutions, pooling,
the graph family) raises ``NotImplementedError``, which the report counts as ``unsupported``.
"""

from __future__ import annotations

import math

import numpy as np

LEAKY_SLOPE = 0.01


def sigma(name: str, z: float) -> float:
    if name == "sigmoid":
        return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
    if name == "tanh":
        return math.tanh(z)
    if name == "relu":
        return max(z, 0.0)
    if name == "leaky_relu":
        return z if z > 0 else LEAKY_SLOPE * z
    return z  # identity


def sigma_prime(name: str, z: float) -> float:
    if name == "sigmoid":
        s = sigma("sigmoid", z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - math.tanh(z) ** 2
    if name == "relu":
        return 1.0 if z > 0 else 0.0
    if name == "leaky_relu":
        return 1.0 if z > 0 else LEAKY_SLOPE
    return 1.0


def backprop_one(weights, biases, activations, cost, x, y, masks):
    """Gradients of one sample's cost: lists ``nabla_w[l][j][k]`` and ``nabla_b[l][j]``."""
    a, zs, acts = list(x), [], [list(x)]
    for l, (W, b) in enumerate(zip(weights, biases, strict=True)):
        z = [sum(W[j][k] * a[k] for k in range(len(a))) + b[j] for j in range(len(b))]
        a = [sigma(activations[l], zj) for zj in z]
        if masks[l] is not None:  # inverted dropout after this layer
            keep, p = masks[l]
            a = [aj * keep[j] / (1 - p) for j, aj in enumerate(a)]
        zs.append(z)
        acts.append(a)
    L = len(weights)
    if cost == "quadratic":  # BP1: (a - y) * sigma'(z)
        delta = [(acts[-1][j] - y[j]) * sigma_prime(activations[-1], zs[-1][j])
                 for j in range(len(y))]
    elif cost == "cross_entropy":  # sigma' cancels against the cost's derivative
        delta = [acts[-1][j] - y[j] for j in range(len(y))]
    else:  # softmax with loss on the output z
        m = max(zs[-1])
        e = [math.exp(zj - m) for zj in zs[-1]]
        total = sum(e)
        delta = [e[j] / total * sum(y) - y[j] for j in range(len(y))]
    nabla_w, nabla_b = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        nabla_b[l] = delta  # BP3
        nabla_w[l] = [[delta[j] * acts[l][k] for k in range(len(acts[l]))]
                      for j in range(len(delta))]  # BP4
        if l > 0:
            W = weights[l]
            back = [sum(W[j][k] * delta[j] for j in range(len(delta)))
                    for k in range(len(acts[l]))]
            if masks[l - 1] is not None:
                keep, p = masks[l - 1]
                back = [bk * keep[k] / (1 - p) for k, bk in enumerate(back)]
            delta = [back[k] * sigma_prime(activations[l - 1], zs[l - 1][k])
                     for k in range(len(back))]  # BP2
    return nabla_w, nabla_b


def adapter(case):
    """backprop-oracle's ``impl(case) -> {"W1": ..., "b1": ...}`` for this implementation."""
    weights, biases, activations, masks = [], [], [], []
    for number, spec in enumerate(case.layers, 1):
        kind = type(spec).__name__
        if kind == "Dense":
            n = len(weights) + 1
            weights.append(case.params[f"W{n}"].tolist())
            biases.append(case.params[f"b{n}"].tolist())
            activations.append(spec.activation)
            masks.append(None)
        elif kind == "Dropout" and weights:
            masks[-1] = (case.masks[f"mask{number}"], spec.p)  # one 0/1 row per sample
        else:
            raise NotImplementedError(f"loop_mlp has no {kind} layer")
    return mean_gradients(weights, biases, activations, masks, case.cost, case.x, case.y,
                          case.dtype)


def mean_gradients(weights, biases, activations, masks, cost, x, y, dtype):
    """The batch gradients ``{"W1": ..., "b1": ...}``: the batch cost is the mean of the
    per-sample costs, so its gradient is the mean of ``backprop_one`` over the samples."""
    totals = {f"{p}{l + 1}": 0.0 for l in range(len(weights)) for p in "Wb"}
    for i in range(len(x)):
        sample_masks = [None if m is None else (m[0][i].tolist(), m[1]) for m in masks]
        nabla_w, nabla_b = backprop_one(weights, biases, activations, cost, x[i].tolist(),
                                        y[i].tolist(), sample_masks)
        for l in range(len(weights)):
            totals[f"W{l + 1}"] = totals[f"W{l + 1}"] + np.array(nabla_w[l])
            totals[f"b{l + 1}"] = totals[f"b{l + 1}"] + np.array(nabla_b[l])
    return {k: (v / len(x)).astype(dtype) for k, v in totals.items()}
