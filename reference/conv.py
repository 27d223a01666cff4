"""2-D convolution (cross-correlation, as in PyTorch, JAX and seed 004), multi-channel,
stride and symmetric zero padding, from strided windows and ``tensordot``.

Forward: ``z[n,o,i,j] = b[o] + sum_{c,u,v} W[o,c,u,v] x_pad[n,c, s i + u, s j + v]``.
Backward (seed 004): the weight gradient sums, over output positions, ``delta`` times the
input patch; each input cell's error sums ``W`` times the ``delta`` of every output unit
whose window covers it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

Array = NDArray[np.floating]


def windows(x: Array, size: int, stride: int) -> Array:
    """``(n, c, h, w)`` -> read-only view ``(n, c, h_out, w_out, size, size)``."""
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def pad(x: Array, padding: int) -> Array:
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def forward(a_prev: Array, W: Array, b: Array, stride: int, padding: int) -> Array:
    """``z^l = W^l * a^(l-1) + b^l`` (cross-correlation)."""
    patches = windows(pad(a_prev, padding), W.shape[2], stride)
    z = np.tensordot(patches, W, axes=([1, 4, 5], [1, 2, 3]))  # (n, h_out, w_out, o)
    return z.transpose(0, 3, 1, 2) + b[None, :, None, None]


def scatter_windows(per_cell: Array, shape: tuple[int, ...], stride: int) -> Array:
    """Adjoint of ``windows``: add ``per_cell (n, c, h_out, w_out, k, k)`` back into an array
    of ``shape``; a loop over the ``k * k`` window offsets, never over pixels."""
    out = np.zeros(shape, dtype=per_cell.dtype)
    h_out, w_out, k = per_cell.shape[2], per_cell.shape[3], per_cell.shape[4]
    for u in range(k):
        for v in range(k):
            out[:, :, u:u + stride * h_out:stride, v:v + stride * w_out:stride] += \
                per_cell[:, :, :, :, u, v]
    return out


def backward(delta: Array, a_prev: Array, W: Array, stride: int, padding: int
             ) -> tuple[Array, Array, Array]:
    """``(nabla_W, nabla_b, dC/da^(l-1))`` from ``delta^l`` of shape ``(n, o, h_out, w_out)``.

    ``dC/dW[o,c,u,v] = sum_{n,i,j} delta[n,o,i,j] x_pad[n,c,s i+u,s j+v]``;
    ``dC/db[o] = sum_{n,i,j} delta[n,o,i,j]``.
    """
    a_pad = pad(a_prev, padding)
    k = W.shape[2]
    patches = windows(a_pad, k, stride)
    nabla_w = np.tensordot(delta, patches, axes=([0, 2, 3], [0, 2, 3]))
    nabla_b = delta.sum(axis=(0, 2, 3))
    per_cell = np.einsum("noij,ocuv->ncijuv", delta, W, optimize=True)
    da_pad = scatter_windows(per_cell, a_pad.shape, stride)
    h, w = a_prev.shape[2], a_prev.shape[3]
    return nabla_w, nabla_b, da_pad[:, :, padding:padding + h, padding:padding + w]
