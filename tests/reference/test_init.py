"""Initialisers (seed 001): uniform(-1, 1) and Xavier normal with sigma = sqrt(2/(n_in+n_out)),
checked by Kolmogorov-Smirnov tests at significance 0.01 with fixed seeds; biases never zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import backprop_oracle as bo
from backprop_oracle.reference import init

ALPHA = 0.01  # KS significance: a correct initialiser fails this with probability 1%,
# but the seeds are fixed, so the outcome is deterministic.


@pytest.mark.parametrize(("shape", "n_in", "n_out"), [
    ((200, 300), 300, 200),             # dense (out, in)
    ((16, 8, 3, 3), 8 * 9, 16 * 9),     # conv (out, in, k, k): fans times receptive field
    ((4, 1, 5, 5), 25, 100),
])
def test_fans_and_xavier_sigma(shape: tuple[int, ...], n_in: int, n_out: int) -> None:
    assert init.fans(shape) == (n_in, n_out)
    assert init.xavier_sigma(shape) == pytest.approx(math.sqrt(2 / (n_in + n_out)), rel=1e-15)


def test_fans_need_a_weight() -> None:
    with pytest.raises(ValueError, match=r"fans need a weight of ndim >= 2, got shape \(3,\)"):
        init.fans((3,))


@pytest.mark.parametrize("shape", [(200, 300), (16, 8, 3, 3), (32, 3, 5, 5)])
def test_xavier_normal_passes_ks_against_its_sigma(shape: tuple[int, ...]) -> None:
    sigma = math.sqrt(2 / (init.fans(shape)[0] + init.fans(shape)[1]))
    w = init.xavier_normal(shape, np.random.default_rng(0))
    assert w.shape == shape and w.dtype == np.float64
    assert stats.kstest(w.ravel(), stats.norm(0, sigma).cdf).pvalue > ALPHA
    # the test has power: the same draws reject a sigma off by 20% (e.g. sqrt(1/n_in) forms)
    assert stats.kstest(w.ravel(), stats.norm(0, 1.2 * sigma).cdf).pvalue < ALPHA


def test_uniform_passes_ks_and_stays_in_range() -> None:
    w = init.uniform((100, 80), np.random.default_rng(1))
    assert np.all((w >= -1) & (w <= 1))
    assert stats.kstest(w.ravel(), stats.uniform(loc=-1, scale=2).cdf).pvalue > ALPHA
    assert stats.kstest(w.ravel(), stats.uniform(loc=0, scale=1).cdf).pvalue < ALPHA


@pytest.mark.parametrize("scheme", init.SCHEMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_params_shapes_dtype_and_nonzero_biases(scheme: str, dtype: str) -> None:
    layers = (bo.conv2d(4, 3, padding=1), bo.maxpool(2), bo.flatten(), bo.dense(5, "tanh"),
              bo.dense(2))
    params = init.init_params(layers, (3, 8, 8), np.random.default_rng(2), scheme, dtype)
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (4, 3, 3, 3), "b1": (4,), "W2": (5, 64), "b2": (5,), "W3": (2, 5), "b3": (2,)}
    assert all(v.dtype == np.dtype(dtype) for v in params.values())
    for name in ("b1", "b2", "b3"):
        assert np.all(params[name] != 0), name
    # usable as-is for a case
    rng = np.random.default_rng(3)
    bo.Case(family="cnn", layers=layers, cost="quadratic", params=params,
            x=rng.standard_normal((2, 3, 8, 8)).astype(dtype), y=np.zeros((2, 2), dtype=dtype))


def test_xavier_biases_are_scaled_to_their_layer() -> None:
    layers = (bo.dense(50, "tanh"), bo.dense(400))
    params = init.init_params(layers, (300,), np.random.default_rng(4), "xavier")
    for name, weight in (("b1", "W1"), ("b2", "W2")):
        bound = init.xavier_sigma(params[weight].shape)
        assert np.all(np.abs(params[name]) <= bound)
        assert np.max(np.abs(params[name])) > 0.5 * bound  # not collapsed to ~0
    # 400 draws from U(-sigma, sigma): KS against that law
    sigma2 = init.xavier_sigma((400, 50))
    assert stats.kstest(params["b2"], stats.uniform(-sigma2, 2 * sigma2).cdf).pvalue > ALPHA


def test_init_params_is_deterministic_per_seed() -> None:
    layers = (bo.dense(3), bo.dense(1))
    a = init.init_params(layers, (4,), np.random.default_rng(5))
    b = init.init_params(layers, (4,), np.random.default_rng(5))
    c = init.init_params(layers, (4,), np.random.default_rng(6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], c["W1"])


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unknown initialiser 'he'; expected one of uniform, "
                                         "xavier"):
        init.init_params((bo.dense(1),), (2,), np.random.default_rng(0), "he")
