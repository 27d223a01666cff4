"""2-D convolution (cross-correlation, as in PyTorch, JAX and seed 004), multi-channel,
stride and symmetric zero padding, as im2col + matmul over strided windows.

Forward: ``z[n,o,i,j] = b[o] + sum_{c,u,v} W[o,c,u,v] x_pad[n,c, s i + u, s j + v]``.
Backward (seed 004): the weight gradient sums, over output positions, ``delta`` times the
input patch; each input cell's error sums ``W`` times the ``delta`` of every output unit
whose window covers it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from .dense import matmul

Array = NDArray[np.floating]


def pad(x: Array, padding: int) -> Array:
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def offset_slices(x: Array, size: int, stride: int) -> list[tuple[int, int, Array]]:
    """For each window offset ``(u, v)``, the view ``x[:, :, s i + u, s j + v]`` over all
    output positions ``(i, j)``: a loop over the ``size * size`` offsets, never over pixels."""
    h_out = (x.shape[2] - size) // stride + 1
    w_out = (x.shape[3] - size) // stride + 1
    return [(u, v, x[:, :, u:u + stride * h_out:stride, v:v + stride * w_out:stride])
            for u in range(size) for v in range(size)]


def scatter_offsets(parts: list[tuple[int, int, Array]], shape: tuple[int, ...],
                    stride: int) -> Array:
    """Adjoint of ``offset_slices``: add each ``(u, v, part)`` back at its window offset."""
    out = np.zeros(shape, dtype=parts[0][2].dtype)
    for u, v, part in parts:
        h_out, w_out = part.shape[2], part.shape[3]
        out[:, :, u:u + stride * h_out:stride, v:v + stride * w_out:stride] += part
    return out


def im2col(x: Array, size: int, stride: int) -> Array:
    """``(n, c, h, w)`` -> ``(n, c*size*size, h_out*w_out)``, rows ordered ``(c, u, v)``."""
    cells = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, h_out, w_out = cells.shape[:4]
    return np.ascontiguousarray(cells.transpose(0, 1, 4, 5, 2, 3)).reshape(
        n, c * size * size, h_out * w_out)


def forward(a_prev: Array, W: Array, b: Array, stride: int, padding: int) -> Array:
    """``z^l = W^l * a^(l-1) + b^l`` (cross-correlation)."""
    a_pad = pad(a_prev, padding)
    out_channels, k = W.shape[0], W.shape[2]
    h_out = (a_pad.shape[2] - k) // stride + 1
    w_out = (a_pad.shape[3] - k) // stride + 1
    z = matmul(W.reshape(out_channels, -1), im2col(a_pad, k, stride))  # (n, o, h_out*w_out)
    return z.reshape(a_prev.shape[0], out_channels, h_out, w_out) + b[None, :, None, None]


def backward(delta: Array, a_prev: Array, W: Array, stride: int, padding: int,
             need_input_grad: bool = True) -> tuple[Array, Array, Array | None]:
    """``(nabla_W, nabla_b, dC/da^(l-1))`` from ``delta^l`` of shape ``(n, o, h_out, w_out)``;
    the last is ``None`` when ``need_input_grad`` is false (the first layer).

    ``dC/dW[o,c,u,v] = sum_{n,i,j} delta[n,o,i,j] x_pad[n,c,s i+u,s j+v]``;
    ``dC/db[o] = sum_{n,i,j} delta[n,o,i,j]``;
    ``dC/dx_pad[n,c,s i+u,s j+v] += sum_o W[o,c,u,v] delta[n,o,i,j]``.
    """
    a_pad = pad(a_prev, padding)
    n, out_channels, h_out, w_out = delta.shape
    c, k = W.shape[1], W.shape[2]
    delta_flat = delta.reshape(n, out_channels, h_out * w_out)
    nabla_w = matmul(delta_flat, im2col(a_pad, k, stride).transpose(0, 2, 1)).sum(axis=0)
    nabla_b = delta.sum(axis=(0, 2, 3))
    if not need_input_grad:
        return nabla_w.reshape(W.shape), nabla_b, None
    d_cols = matmul(W.reshape(out_channels, -1).T, delta_flat).reshape(n, c, k, k, h_out,
                                                                     w_out)
    parts = [(u, v, d_cols[:, :, u, v]) for u in range(k) for v in range(k)]
    da_pad = scatter_offsets(parts, a_pad.shape, stride)
    h, w = a_prev.shape[2], a_prev.shape[3]
    return nabla_w.reshape(W.shape), nabla_b, da_pad[:, :, padding:padding + h,
                                                     padding:padding + w]
