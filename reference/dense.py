"""Dense layers: feedforward and BP2–BP4, vectorised over the minibatch (seed 000, 003).

Batch-first: ``a`` is ``(n, in)``, ``W`` is ``(out, in)`` (``w^l_jk``: j in layer l, k in
layer l-1), so the seeds' column form ``z = W a + b`` reads ``z = a W^T + b`` here.
``delta`` is ``dC/dz`` of the batch cost, so BP3/BP4's batch mean is a plain sum.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def matmul(a: Array, b: Array) -> Array:
    """``a @ b``. Some OpenBLAS kernels leave the floating-point "invalid" flag set for
    finite inputs (numpy#24067, OpenBLAS#1924), which NumPy reports as a spurious, flaky
    ``RuntimeWarning: invalid value encountered in matmul``; that flag is ignored here. A
    real invalid product (``inf * 0``) still shows as NaN in the result, which every
    comparison reports as ``nan``."""
    with np.errstate(invalid="ignore"):
        return a @ b


def forward(a_prev: Array, W: Array, b: Array) -> Array:
    """``z^l = W^l a^(l-1) + b^l``."""
    return matmul(a_prev, W.T) + b


def backward(delta: Array, a_prev: Array, W: Array, need_input_grad: bool = True
             ) -> tuple[Array, Array, Array | None]:
    """``(nabla_W, nabla_b, dC/da^(l-1))`` from ``delta^l`` (the last ``None`` when
    ``need_input_grad`` is false: the first layer).

    BP4: ``dC/dW^l = sum_x delta^(x,l) (a^(x,l-1))^T``; BP3: ``dC/db^l = sum_x delta^(x,l)``;
    and ``(W^l)^T delta^l``, which BP2 multiplies by ``sigma'(z^(l-1))``.
    """
    nabla_w = matmul(delta.T, a_prev)  # BP4
    nabla_b = delta.sum(axis=0)  # BP3
    da_prev = matmul(delta, W) if need_input_grad else None  # BP2, before ⊙ sigma'(z^(l-1))
    return nabla_w, nabla_b, da_prev
