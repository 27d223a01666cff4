"""Max, average and L2 pooling over ``size x size`` windows with a stride (no padding), and
flatten. Windows may overlap (``stride < size``): gradients from each window are added.

Backward (seed 004): max pooling sends a window's error to its arg-max (the first maximum in
row-major window order; ties are reported by ``runner_up_gap``), 0 elsewhere; average
pooling sends ``1/k^2`` of it to every cell; L2 pooling ``p = sqrt(sum x_i^2)`` sends
``x_i / p`` of it (0 where ``p = 0``, a kink).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .conv import offset_slices, scatter_offsets

Array = NDArray[np.floating]


def forward(kind: str, a_prev: Array, size: int, stride: int) -> Array:
    cells = [part for _, _, part in offset_slices(a_prev, size, stride)]
    if kind == "max":
        return np.maximum.reduce(cells)
    if kind == "avg":
        return np.add.reduce(cells) / np.asarray(size * size, dtype=a_prev.dtype)
    if kind == "l2":
        return np.sqrt(np.add.reduce([c * c for c in cells]))
    raise ValueError(f"unknown pool kind {kind!r}; expected max, avg or l2")


def max_route(a_prev: Array, size: int, stride: int) -> tuple[NDArray[np.intp], Array]:
    """Per window, the row-major offset number ``u * size + v`` of its first maximum, and
    the gap between the maximum and the runner-up (0 marks a tie; ``inf`` for 1x1 windows).
    A gap smaller than a perturbation marks a window whose arg-max that perturbation moves."""
    slices = offset_slices(a_prev, size, stride)
    best = slices[0][2]
    index = np.zeros(best.shape, dtype=np.intp)
    second = np.full(best.shape, -np.inf, dtype=a_prev.dtype)
    for i, (_, _, part) in enumerate(slices[1:], 1):
        better = part > best
        second = np.where(better, best, np.maximum(second, part))
        best = np.where(better, part, best)
        index = np.where(better, i, index)
    return index, best - second


def backward(kind: str, delta: Array, a_prev: Array, z: Array, size: int, stride: int,
             index: NDArray[np.intp] | None = None) -> Array:
    """``dC/da^(l-1)`` from ``delta^l = dC/dz^l`` of the pooled output ``z``; max pooling
    takes the arg-max ``index`` from ``max_route`` when the caller already has it."""
    slices = offset_slices(a_prev, size, stride)
    if kind == "max":
        if index is None:
            index = max_route(a_prev, size, stride)[0]
        parts = [(u, v, np.where(index == i, delta, 0)) for i, (u, v, _) in enumerate(slices)]
    elif kind == "avg":
        share = delta / np.asarray(size * size, dtype=delta.dtype)
        parts = [(u, v, share) for u, v, _ in slices]
    elif kind == "l2":
        per_unit = np.where(z > 0, delta / np.where(z > 0, z, 1), 0)
        parts = [(u, v, per_unit * cell) for u, v, cell in slices]
    else:
        raise ValueError(f"unknown pool kind {kind!r}; expected max, avg or l2")
    return scatter_offsets(parts, a_prev.shape, stride)


def runner_up_gap(a_prev: Array, size: int, stride: int) -> Array:
    """Per window, the maximum minus the second largest value (0 marks a tie)."""
    return max_route(a_prev, size, stride)[1]


def flatten_forward(a_prev: Array) -> Array:
    return a_prev.reshape(a_prev.shape[0], -1)


def flatten_backward(delta: Array, a_prev: Array) -> Array:
    return delta.reshape(a_prev.shape)
