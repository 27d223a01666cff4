"""Xavier and uniform initialisers, checked statistically against the formula of seed 001
and against the frameworks' own initialisers.

Every test uses a fixed seed and states its significance level ``ALPHA``; at that level a
correct initialiser fails about 1 run in 100 by chance, but with fixed seeds the outcome is
deterministic. The power of each test is shown by a planted wrong sigma that it rejects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from backprop_oracle.reference.init import fans, uniform, xavier_normal, xavier_sigma

ALPHA = 0.01
SHAPES = [(64, 32), (8, 3, 3, 3), (10, 784)]


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_normal_matches_its_formula(shape: tuple[int, ...]) -> None:
    """sigma = sqrt(2 / (n_in + n_out)), conv fans include the kernel area."""
    rng = np.random.default_rng(0)
    w = np.concatenate([xavier_normal(shape, rng).ravel() for _ in range(4)])
    n_in, n_out = fans(shape)
    sigma = np.sqrt(2.0 / (n_in + n_out))
    assert stats.kstest(w, "norm", args=(0, sigma)).pvalue > ALPHA


@pytest.mark.parametrize("shape", SHAPES)
def test_ks_rejects_a_wrong_sigma(shape: tuple[int, ...]) -> None:
    """Power: sigma = sqrt(1 / (n_in + n_out)) (a common slip) is rejected."""
    rng = np.random.default_rng(0)
    w = np.concatenate([xavier_normal(shape, rng).ravel() for _ in range(4)])
    wrong = np.sqrt(1.0 / sum(fans(shape)))
    assert stats.kstest(w, "norm", args=(0, wrong)).pvalue < ALPHA


def test_uniform_is_uniform_on_minus_one_one() -> None:
    w = uniform((200, 50), np.random.default_rng(1)).ravel()
    assert stats.kstest(w, "uniform", args=(-1, 2)).pvalue > ALPHA
    assert stats.kstest(w, "uniform", args=(-0.5, 1)).pvalue < ALPHA  # power


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_xavier_normal(shape: tuple[int, ...]) -> None:
    """Two-sample KS between ours and ``torch.nn.init.xavier_normal_`` (gain 1)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = np.concatenate([torch.nn.init.xavier_normal_(torch.empty(shape, dtype=torch.float64))
                             .numpy().ravel() for _ in range(4)])
    rng = np.random.default_rng(2)  # one generator: four independent draws, not one copied
    ours = np.concatenate([xavier_normal(shape, rng).ravel() for _ in range(4)])
    assert stats.ks_2samp(ours, theirs).pvalue > ALPHA


@pytest.mark.parametrize("shape", SHAPES)
def test_jax_glorot_normal_is_a_truncated_normal_of_the_same_variance(shape: tuple[int, ...]
                                                                       ) -> None:
    """``jax.nn.initializers.glorot_normal`` draws from a normal truncated at +-2 before
    scaling (stddev sigma / 0.8796), so its variance is sigma^2 but it is not N(0, sigma^2):
    KS rejects normality and no value exceeds 2 sigma / 0.8796. Fans are given in our
    ``(out, in, k, k)`` layout."""
    jax = pytest.importorskip("jax")
    from jax.nn import initializers

    init = initializers.glorot_normal(in_axis=1, out_axis=0)
    keys = jax.random.split(jax.random.key(0), 8)
    theirs = np.concatenate([np.asarray(init(k, shape, np.float32)).ravel() for k in keys])
    sigma = xavier_sigma(shape)
    n = theirs.size
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], n) / n  # CI for var / sigma^2
    assert low < np.mean(theirs ** 2) / sigma ** 2 < high
    assert np.max(np.abs(theirs)) <= 2 * sigma / 0.87962566103423978 * (1 + 1e-6)
    if n > 5000:  # enough samples to see the truncation
        assert stats.kstest(theirs, "norm", args=(0, sigma)).pvalue < ALPHA
