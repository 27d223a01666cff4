"""Dense layers: feedforward and BP2-BP4 against per-sample sums (W is (out, in))."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_oracle.reference import dense


def arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((5, 4))   # (n, in)
    W = rng.standard_normal((3, 4))   # (out, in)
    b = rng.standard_normal(3)
    delta = rng.standard_normal((5, 3))
    return a, W, b, delta


def test_forward_is_z_equals_w_a_plus_b_per_sample() -> None:
    a, W, b, _ = arrays()
    z = dense.forward(a, W, b)
    assert z.shape == (5, 3)
    for x in range(5):
        # z_j = sum_k w_jk a_k + b_j  (Nielsen's w^l_jk: j in layer l, k in layer l-1)
        expected = [sum(W[j, k] * a[x, k] for k in range(4)) + b[j] for j in range(3)]
        np.testing.assert_allclose(z[x], expected, rtol=1e-14)


def test_backward_bp3_bp4_are_sums_over_the_batch() -> None:
    a, W, b, delta = arrays(1)
    nabla_w, nabla_b, da = dense.backward(delta, a, W)
    outer = sum(np.outer(delta[x], a[x]) for x in range(5))  # BP4: delta (a^(l-1))^T
    np.testing.assert_allclose(nabla_w, outer, rtol=1e-13)
    np.testing.assert_allclose(nabla_b, delta.sum(axis=0), rtol=1e-14)  # BP3
    # BP2 before the activation derivative: (W^T delta) per sample
    np.testing.assert_allclose(da, np.stack([W.T @ delta[x] for x in range(5)]), rtol=1e-13)
    assert nabla_w.shape == W.shape and nabla_b.shape == b.shape and da.shape == a.shape


def test_weight_gradient_is_exact_for_the_linear_map() -> None:
    """z is linear in W: sum(delta * z(W + E)) - sum(delta * z(W)) = <nabla_w, E> exactly."""
    a, W, b, delta = arrays(2)
    E = np.random.default_rng(3).standard_normal(W.shape)
    change = np.sum(delta * (dense.forward(a, W + E, b) - dense.forward(a, W, b)))
    nabla_w, _, _ = dense.backward(delta, a, W)
    assert change == pytest.approx(np.sum(nabla_w * E), rel=1e-12)


def test_first_layer_skips_the_input_gradient() -> None:
    a, W, _, delta = arrays()
    assert dense.backward(delta, a, W, need_input_grad=False)[2] is None


def test_float32_in_float32_out() -> None:
    a, W, b, delta = (v.astype(np.float32) for v in arrays())
    assert dense.forward(a, W, b).dtype == np.float32
    assert all(g.dtype == np.float32 for g in dense.backward(delta, a, W))


def test_matmul_ignores_the_invalid_flag_but_keeps_real_nans() -> None:
    """OpenBLAS may leave FE_INVALID set on finite inputs (a flaky RuntimeWarning that broke
    a CI run here); ``matmul`` ignores the flag, and a real ``inf * 0`` is still NaN."""
    import warnings

    from backprop_oracle.reference.dense import matmul

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = matmul(np.array([[np.inf, 1.0]]), np.array([[0.0], [1.0]]))
    assert np.isnan(out).all()
