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

from .conv import offset_slices

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
    cells = np.stack([part for _, _, part in offset_slices(a_prev, size, stride)])
    best = cells[0].copy()
    index = np.zeros(best.shape, dtype=np.intp)
    second = np.full(best.shape, -np.inf, dtype=a_prev.dtype)
    lower = np.empty_like(best)
    for i in range(1, len(cells)):
        np.maximum(index, (cells[i] > best) * i, out=index)  # i grows: the last strict rise
        # the runner-up is the largest of the values each step does not keep as the maximum
        np.minimum(best, cells[i], out=lower)
        np.maximum(second, lower, out=second)
        np.maximum(best, cells[i], out=best)
    return index, best - second


def arg_max_cells(index: NDArray[np.intp], shape: tuple[int, ...], size: int, stride: int
                  ) -> NDArray[np.intp]:
    """The flat position in ``a^(l-1)`` (of ``shape``) of each window's arg-max: window
    ``(n, c, i, j)`` with offset number ``index = u * size + v`` reads cell
    ``(n, c, s i + u, s j + v)``."""
    n, c, h_out, w_out = index.shape
    height, width = shape[2], shape[3]
    offsets = (np.arange(size)[:, None] * width + np.arange(size)).reshape(-1)  # u W + v
    cells = offsets[index]
    cells += (np.arange(n * c) * (height * width)).reshape(n, c, 1, 1)
    cells += (np.arange(h_out) * (stride * width))[:, None]
    cells += np.arange(w_out) * stride
    return cells


def backward(kind: str, delta: Array, a_prev: Array, z: Array, size: int, stride: int,
             index: NDArray[np.intp] | None = None) -> Array:
    """``dC/da^(l-1)`` from ``delta^l = dC/dz^l`` of the pooled output ``z``; max pooling
    takes the arg-max ``index`` from ``max_route`` when the caller already has it."""
    da_prev = np.zeros(a_prev.shape, dtype=np.result_type(delta.dtype, a_prev.dtype))
    # each window offset's view of da_prev: adding into them is the adjoint of the slicing
    targets = [view for _, _, view in offset_slices(da_prev, size, stride)]
    if kind == "max":
        if index is None:
            index = max_route(a_prev, size, stride)[0]
        if stride >= size:  # windows apart: each cell is at most one window's arg-max
            da_prev.reshape(-1)[arg_max_cells(index, a_prev.shape, size, stride)] = delta
        else:
            for i, target in enumerate(targets):
                target += np.where(index == i, delta, 0)
    elif kind == "avg":
        share = delta / np.asarray(size * size, dtype=delta.dtype)
        for target in targets:
            target += share
    elif kind == "l2":
        per_unit = np.where(z > 0, delta / np.where(z > 0, z, 1), 0)
        cells = offset_slices(a_prev, size, stride)
        for target, (_, _, cell) in zip(targets, cells, strict=True):
            target += per_unit * cell
    else:
        raise ValueError(f"unknown pool kind {kind!r}; expected max, avg or l2")
    return da_prev


def runner_up_gap(a_prev: Array, size: int, stride: int) -> Array:
    """Per window, the maximum minus the second largest value (0 marks a tie)."""
    return max_route(a_prev, size, stride)[1]


def flatten_forward(a_prev: Array) -> Array:
    return a_prev.reshape(a_prev.shape[0], -1)


def flatten_backward(delta: Array, a_prev: Array) -> Array:
    return delta.reshape(a_prev.shape)
