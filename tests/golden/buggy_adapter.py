"""A deliberately wrong adapter for the golden records: the reference's gradients with
``W2`` scaled by 1.001 (a divergence the tie-breakers blame on this adapter), ``b1`` returned
with a wrong shape (a bad return, recorded by name) and, for the graph family, a missing key."""

from __future__ import annotations

import numpy as np

import backprop_oracle as bo


def adapter(case: bo.Case) -> dict[str, np.ndarray]:
    grads = dict(bo.backprop(case).grads)
    if "W2" in grads:
        grads["W2"] = grads["W2"] * grads["W2"].dtype.type(1.001)
    if "b1" in grads:
        grads["b1"] = grads["b1"][:-1] if grads["b1"].size > 1 else grads["b1"].reshape(1, -1)
    if case.family == "graph":
        grads.pop(sorted(grads)[0])
    return grads
