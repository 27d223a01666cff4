"""Activations and their derivatives: values, stability at |z| up to 1e4 (warnings are errors),
central differences, and the documented kink conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backprop_oracle.reference import activations as A

NAMES = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
EXTREMES = np.array([-1e4, -800.0, -100.0, -40.0, -1.0, 0.0, 1.0, 40.0, 100.0, 800.0, 1e4])


def test_sigmoid_matches_the_formula_at_ordinary_values() -> None:
    z = np.linspace(-20, 20, 81)
    expected = np.array([1 / (1 + math.exp(-v)) for v in z])
    np.testing.assert_allclose(A.sigmoid(z), expected, rtol=1e-15)
    assert A.sigmoid(np.float64(0.0)) == 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_up_to_1e4(dtype: type) -> None:
    z = EXTREMES.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, ds = A.sigmoid(z), A.sigmoid_prime(z)
    assert s.dtype == dtype and ds.dtype == dtype
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(ds))
    assert np.all((s >= 0) & (s <= 1)) and np.all(ds >= 0)
    assert s[0] == 0.0 and s[-1] == 1.0
    assert ds[0] == 0.0 and ds[-1] == 0.0
    np.testing.assert_allclose(s + s[::-1], 1.0, rtol=0, atol=np.finfo(dtype).eps)  # symmetry
    assert np.all(np.diff(s) >= 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_activation_is_finite_at_extremes_and_keeps_dtype(name: str, dtype: type) -> None:
    f, df = A.activation(name)
    z = EXTREMES.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a, d = f(z), df(z)
    assert a.dtype == dtype and d.dtype == dtype
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d))


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_central_differences(name: str) -> None:
    """h = 1e-6 in float64; tolerance 1e-7 relative to max(1, |f'|). Kinked activations are
    sampled away from 0 (|z| >= 0.05)."""
    f, df = A.activation(name)
    z = np.concatenate([np.linspace(-6, -0.05, 40), np.linspace(0.05, 6, 40)])
    h = 1e-6
    fd = (f(z + h) - f(z - h)) / (2 * h)
    assert np.all(np.abs(df(z) - fd) <= 1e-7 * np.maximum(1.0, np.abs(fd)))


def test_closed_form_derivatives() -> None:
    z = np.linspace(-5, 5, 21)
    s = A.sigmoid(z)
    np.testing.assert_allclose(A.sigmoid_prime(z), s * (1 - s), rtol=1e-15)
    np.testing.assert_allclose(A.tanh_prime(z), 1 / np.cosh(z) ** 2, rtol=1e-12)
    np.testing.assert_array_equal(A.identity_prime(z), np.ones_like(z))


def test_relu_and_leaky_relu_values() -> None:
    z = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(A.relu(z), [0.0, 0.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(A.leaky_relu(z), [-0.02, -0.005, 0.0, 0.5, 2.0], rtol=1e-15)
    np.testing.assert_array_equal(A.relu_prime(z), [0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(A.leaky_relu_prime(z), [0.01, 0.01, 0.01, 1.0, 1.0], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kink_conventions_at_zero(dtype: type) -> None:
    """Documented conventions: relu'(0) = 0 and leaky_relu'(0) = the slope 0.01."""
    zero = np.zeros(3, dtype=dtype)
    np.testing.assert_array_equal(A.relu_prime(zero), np.zeros(3, dtype=dtype))
    np.testing.assert_array_equal(A.leaky_relu_prime(zero), np.full(3, 0.01, dtype=dtype))
    assert A.LEAKY_SLOPE == 0.01
    assert A.KINKED == {"relu", "leaky_relu"}


def test_activation_lookup() -> None:
    assert A.activation("tanh") == (A.tanh, A.tanh_prime)
    assert set(A.ACTIVATIONS) == set(NAMES)
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of sigmoid"):
        A.activation("swish")
