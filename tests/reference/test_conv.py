"""Convolution (cross-correlation, seed 004): forward and all three backward quantities against
naive loops over output positions, with channels, stride and padding."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_oracle.reference import conv

GEOMETRIES = [  # (kernel, stride, padding, height, width)
    (1, 1, 0, 4, 5), (2, 1, 0, 5, 5), (3, 1, 1, 5, 4), (3, 2, 1, 7, 6), (2, 3, 2, 6, 7),
    (3, 2, 0, 7, 7), (4, 1, 2, 3, 3),
]


def naive_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, padding: int
                  ) -> np.ndarray:
    """z[n,o,i,j] = b[o] + sum_{c,u,v} W[o,c,u,v] x_pad[n,c,s i+u,s j+v] (no kernel flip)."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, o, k = x.shape[0], W.shape[0], W.shape[2]
    h_out = (xp.shape[2] - k) // stride + 1
    w_out = (xp.shape[3] - k) // stride + 1
    z = np.zeros((n, o, h_out, w_out))
    for b_, o_, i, j in np.ndindex(z.shape):
        patch = xp[b_, :, i * stride:i * stride + k, j * stride:j * stride + k]
        z[b_, o_, i, j] = b[o_] + np.sum(W[o_] * patch)
    return z


def naive_backward(delta: np.ndarray, x: np.ndarray, W: np.ndarray, stride: int, padding: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed 004: dW = sum over positions of delta x input patch; db = sum of delta; each input
    cell's error sums W times the delta of every output unit whose window covers it."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = W.shape[2]
    dW, db, dxp = np.zeros_like(W), np.zeros(W.shape[0]), np.zeros_like(xp)
    for b_, o_, i, j in np.ndindex(delta.shape):
        rows = slice(i * stride, i * stride + k)
        cols = slice(j * stride, j * stride + k)
        dW[o_] += delta[b_, o_, i, j] * xp[b_, :, rows, cols]
        db[o_] += delta[b_, o_, i, j]
        dxp[b_, :, rows, cols] += delta[b_, o_, i, j] * W[o_]
    h, w = x.shape[2], x.shape[3]
    return dW, db, dxp[:, :, padding:padding + h, padding:padding + w]


def arrays(kernel: int, height: int, width: int, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 3, height, width)), rng.standard_normal((4, 3, kernel, kernel)),
            rng.standard_normal(4))


@pytest.mark.parametrize(("kernel", "stride", "padding", "height", "width"), GEOMETRIES)
def test_forward_matches_naive_cross_correlation(kernel: int, stride: int, padding: int,
                                                 height: int, width: int) -> None:
    x, W, b = arrays(kernel, height, width)
    np.testing.assert_allclose(conv.forward(x, W, b, stride, padding),
                               naive_forward(x, W, b, stride, padding), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("kernel", "stride", "padding", "height", "width"), GEOMETRIES)
def test_backward_matches_naive_loops(kernel: int, stride: int, padding: int, height: int,
                                      width: int) -> None:
    x, W, b = arrays(kernel, height, width, seed=1)
    z = conv.forward(x, W, b, stride, padding)
    delta = np.random.default_rng(2).standard_normal(z.shape)
    dW, db, dx = conv.backward(delta, x, W, stride, padding)
    ndW, ndb, ndx = naive_backward(delta, x, W, stride, padding)
    np.testing.assert_allclose(dW, ndW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, ndb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)


def test_input_gradient_is_the_adjoint_of_the_forward_map() -> None:
    """<conv(x) - b, d> = <x, conv^T(d)>: the input gradient is the transpose of the linear map."""
    x, W, b = arrays(3, 7, 6, seed=3)
    z = conv.forward(x, W, b, 2, 1)
    d = np.random.default_rng(4).standard_normal(z.shape)
    _, _, dx = conv.backward(d, x, W, 2, 1)
    lhs = np.sum((z - b[None, :, None, None]) * d)
    assert lhs == pytest.approx(np.sum(x * dx), rel=1e-12)


def test_cross_correlation_does_not_flip_the_kernel() -> None:
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    W = np.zeros((1, 1, 2, 2))
    W[0, 0, 0, 0] = 1.0  # picks the top-left cell of each window
    z = conv.forward(x, W, np.zeros(1), 1, 0)
    np.testing.assert_array_equal(z[0, 0], [[0.0, 1.0], [3.0, 4.0]])


def test_padding_is_zero_and_symmetric() -> None:
    x = np.ones((1, 1, 2, 2))
    z = conv.forward(x, np.ones((1, 1, 3, 3)), np.zeros(1), 1, 1)
    np.testing.assert_array_equal(z[0, 0], [[4.0, 4.0], [4.0, 4.0]])
    np.testing.assert_array_equal(conv.pad(x, 0), x)
    assert conv.pad(x, 2).shape == (1, 1, 6, 6)


def test_first_layer_skips_the_input_gradient() -> None:
    x, W, b = arrays(2, 4, 4)
    z = conv.forward(x, W, b, 1, 0)
    dW, db, dx = conv.backward(np.ones_like(z), x, W, 1, 0, need_input_grad=False)
    assert dx is None and dW.shape == W.shape and db.shape == b.shape


def test_im2col_rows_are_ordered_channel_then_offset() -> None:
    x = np.arange(2 * 3 * 3, dtype=float).reshape(1, 2, 3, 3)
    cols = conv.im2col(x, 2, 1)
    assert cols.shape == (1, 2 * 2 * 2, 4)
    # row (c=1, u=0, v=1) = index 1*4 + 0*2 + 1 = 5 holds x[1, i, j+1] for (i, j) row-major
    np.testing.assert_array_equal(cols[0, 5], [10.0, 11.0, 13.0, 14.0])


def test_float32_in_float32_out() -> None:
    x, W, b = (a.astype(np.float32) for a in arrays(3, 5, 5))
    z = conv.forward(x, W, b, 1, 1)
    grads = conv.backward(np.ones_like(z), x, W, 1, 1)
    assert z.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
