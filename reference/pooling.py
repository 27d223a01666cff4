"""Max, average and L2 pooling over ``size x size`` windows with a stride (no padding), and
flatten. Windows may overlap (``stride < size``): gradients from each window are added.

Backward (seed 004): max pooling sends a window's error to its arg-max (first in row-major
order on ties, reported separately), 0 elsewhere; average pooling sends ``1/k^2`` of it to
every cell; L2 pooling ``p = sqrt(sum x_i^2)`` sends ``x_i / p`` of it (0 where ``p = 0``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .conv import scatter_windows, windows

Array = NDArray[np.floating]


def forward(kind: str, a_prev: Array, size: int, stride: int) -> Array:
    cells = windows(a_prev, size, stride)
    if kind == "max":
        return cells.max(axis=(4, 5))
    if kind == "avg":
        return cells.mean(axis=(4, 5))
    if kind == "l2":
        return np.sqrt((cells ** 2).sum(axis=(4, 5)))
    raise ValueError(f"unknown pool kind {kind!r}; expected max, avg or l2")


def backward(kind: str, delta: Array, a_prev: Array, z: Array, size: int, stride: int) -> Array:
    """``dC/da^(l-1)`` from ``delta^l = dC/dz^l`` of the pooled output ``z``."""
    cells = windows(a_prev, size, stride)
    if kind == "max":
        local = argmax_mask(cells)
    elif kind == "avg":
        local = np.full(cells.shape, 1.0 / size ** 2, dtype=a_prev.dtype)
    elif kind == "l2":
        safe = np.where(z > 0, z, 1)[..., None, None]
        local = np.where(z[..., None, None] > 0, cells / safe, 0)
    else:
        raise ValueError(f"unknown pool kind {kind!r}; expected max, avg or l2")
    return scatter_windows(local * delta[..., None, None], a_prev.shape, stride)


def argmax_mask(cells: Array) -> Array:
    """One-hot over each window's last two axes at the first maximum in row-major order."""
    flat = cells.reshape(*cells.shape[:4], -1)
    mask = np.zeros(flat.shape, dtype=cells.dtype)
    np.put_along_axis(mask, flat.argmax(axis=-1)[..., None], 1, axis=-1)
    return mask.reshape(cells.shape)


def runner_up_gap(a_prev: Array, size: int, stride: int) -> Array:
    """Per window, the maximum minus the second largest value: 0 marks a tie, and a gap
    smaller than a perturbation marks a window whose arg-max that perturbation can move."""
    cells = windows(a_prev, size, stride)
    flat = cells.reshape(*cells.shape[:4], -1)
    if flat.shape[-1] == 1:
        return np.full(flat.shape[:4], np.inf, dtype=a_prev.dtype)
    top2 = -np.partition(-flat, 1, axis=-1)[..., :2]
    return top2[..., 0] - top2[..., 1]


def flatten_forward(a_prev: Array) -> Array:
    return a_prev.reshape(a_prev.shape[0], -1)


def flatten_backward(delta: Array, a_prev: Array) -> Array:
    return delta.reshape(a_prev.shape)
