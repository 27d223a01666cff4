"""Pooling (seed 004): forward against naive loops, max routing to the first arg-max with ties
reported, average 1/k^2, L2 x_i/p (0 on an all-zero window), overlapping windows, flatten."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_oracle.reference import pooling

REDUCE = {"max": np.max, "avg": np.mean, "l2": lambda w: np.sqrt(np.sum(w * w))}


def windows(shape: tuple[int, ...], size: int, stride: int):
    """Yield ``(n, c, i, j, rows, cols)`` for every pooling window of an input of ``shape``."""
    n, c, h, w = shape
    for b in range(n):
        for ch in range(c):
            for i in range((h - size) // stride + 1):
                for j in range((w - size) // stride + 1):
                    rows = slice(i * stride, i * stride + size)
                    cols = slice(j * stride, j * stride + size)
                    yield b, ch, i, j, rows, cols


def naive_forward(kind: str, x: np.ndarray, size: int, stride: int) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((n, c, (h - size) // stride + 1, (w - size) // stride + 1))
    for b, ch, i, j, rows, cols in windows(x.shape, size, stride):
        out[b, ch, i, j] = REDUCE[kind](x[b, ch, rows, cols])
    return out


def naive_backward(kind: str, delta: np.ndarray, x: np.ndarray, size: int, stride: int
                   ) -> np.ndarray:
    """Seed 004 written per window: max -> first arg-max, avg -> 1/k^2, l2 -> x_i / p."""
    grad = np.zeros_like(x)
    for b, ch, i, j, rows, cols in windows(x.shape, size, stride):
        window = x[b, ch, rows, cols]
        if kind == "max":
            u, v = np.unravel_index(np.argmax(window), window.shape)  # first maximum
            local = np.zeros_like(window)
            local[u, v] = 1.0
        elif kind == "avg":
            local = np.full_like(window, 1.0 / size ** 2)
        else:
            p = np.sqrt(np.sum(window * window))
            local = window / p if p > 0 else np.zeros_like(window)
        grad[b, ch, rows, cols] += delta[b, ch, i, j] * local
    return grad


GEOMETRIES = [(2, 2), (3, 2), (2, 1), (3, 1), (1, 1), (2, 3)]


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
@pytest.mark.parametrize(("size", "stride"), GEOMETRIES)
def test_forward_and_backward_match_naive_loops(kind: str, size: int, stride: int) -> None:
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((2, 3, 7, 6))
    z = pooling.forward(kind, x, size, stride)
    np.testing.assert_allclose(z, naive_forward(kind, x, size, stride), rtol=1e-14)
    delta = rng.standard_normal(z.shape)
    np.testing.assert_allclose(pooling.backward(kind, delta, x, z, size, stride),
                               naive_backward(kind, delta, x, size, stride), rtol=1e-13,
                               atol=1e-15)


def test_max_pool_ties_are_reported_and_routed_to_the_first_arg_max() -> None:
    # two 2x2 windows (stride 2): the left one is tied (5 at (0,1) and (1,0)), the right not
    x = np.array([[[[1.0, 5.0, 2.0, 3.0],
                    [5.0, 0.0, 4.0, 1.0]]]])
    index, gap = pooling.max_route(x, 2, 2)
    np.testing.assert_array_equal(gap[0, 0], [[0.0, 1.0]])  # tie -> 0; 4 - 3 = 1 otherwise
    np.testing.assert_array_equal(pooling.runner_up_gap(x, 2, 2), gap)
    np.testing.assert_array_equal(index[0, 0], [[1, 2]])  # row-major offsets u * 2 + v
    z = pooling.forward("max", x, 2, 2)
    grad = pooling.backward("max", np.array([[[[10.0, 20.0]]]]), x, z, 2, 2)
    # first arg-max in row-major order is (0, 1), not (1, 0); the right window's max is (1, 2)
    np.testing.assert_array_equal(grad[0, 0], [[0.0, 10.0, 0.0, 0.0],
                                               [0.0, 0.0, 20.0, 0.0]])


def test_max_pool_gap_is_max_minus_runner_up() -> None:
    x = np.array([[[[3.0, -1.0, 2.5],
                    [0.5, 2.0, 7.0],
                    [1.0, 1.0, 1.0]]]])
    _, gap = pooling.max_route(x, 2, 1)
    # windows: {3,-1,0.5,2} -> 3-2; {-1,2.5,2,7} -> 7-2.5; {0.5,2,1,1} -> 2-1; {2,7,1,1} -> 7-2
    np.testing.assert_allclose(gap[0, 0], [[1.0, 4.5], [1.0, 5.0]])
    _, gap1 = pooling.max_route(x, 1, 1)
    assert np.all(np.isinf(gap1))  # a 1x1 window has no runner-up


def test_max_pool_all_equal_window_sends_everything_to_its_first_cell() -> None:
    x = np.full((1, 1, 2, 2), 0.5)
    z = pooling.forward("max", x, 2, 2)
    grad = pooling.backward("max", np.ones((1, 1, 1, 1)), x, z, 2, 2)
    np.testing.assert_array_equal(grad[0, 0], [[1.0, 0.0], [0.0, 0.0]])
    assert pooling.runner_up_gap(x, 2, 2)[0, 0, 0, 0] == 0.0


def test_avg_pool_gradient_is_one_over_k_squared() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 6, 6))
    z = pooling.forward("avg", x, 3, 3)
    grad = pooling.backward("avg", np.ones_like(z), x, z, 3, 3)
    np.testing.assert_allclose(grad, np.full_like(x, 1 / 9), rtol=1e-15)


def test_avg_pool_overlapping_windows_add() -> None:
    x = np.zeros((1, 1, 3, 3))
    z = pooling.forward("avg", x, 2, 1)
    grad = pooling.backward("avg", np.ones_like(z), x, z, 2, 1)
    # each cell gets 1/4 per window covering it: corners 1, edges 2, centre 4 windows
    np.testing.assert_allclose(grad[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


def test_l2_pool_gradient_is_x_over_p_and_zero_for_an_all_zero_window() -> None:
    x = np.array([[[[3.0, 0.0, 0.0, 0.0],
                    [0.0, 4.0, 0.0, 0.0]]]])
    z = pooling.forward("l2", x, 2, 2)
    np.testing.assert_array_equal(z[0, 0], [[5.0, 0.0]])
    grad = pooling.backward("l2", np.array([[[[2.0, 7.0]]]]), x, z, 2, 2)
    # left window: 2 * x_i / 5; right window: p = 0, a kink, gradient 0 by convention
    np.testing.assert_allclose(grad[0, 0], [[1.2, 0.0, 0.0, 0.0], [0.0, 1.6, 0.0, 0.0]],
                               rtol=1e-15)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
def test_pooling_keeps_float32(kind: str) -> None:
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    z = pooling.forward(kind, x, 2, 2)
    grad = pooling.backward(kind, np.ones_like(z), x, z, 2, 2)
    assert z.dtype == np.float32 and grad.dtype == np.float32


def test_unknown_pool_kind() -> None:
    x = np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match="unknown pool kind 'min'"):
        pooling.forward("min", x, 2, 2)
    with pytest.raises(ValueError, match="unknown pool kind 'min'"):
        pooling.backward("min", np.zeros((1, 1, 1, 1)), x, x, 2, 2)


def test_flatten_round_trip() -> None:
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    flat = pooling.flatten_forward(x)
    assert flat.shape == (2, 12)
    np.testing.assert_array_equal(flat[1], np.arange(12.0, 24.0))  # (C, H, W) order
    np.testing.assert_array_equal(pooling.flatten_backward(flat, x), x)
