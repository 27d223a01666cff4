"""CNN draws exercise pooling (issue 16, item 1): most pool windows are larger than 1x1,
half of the CNNs have a ReLU conv feeding a real max pool, max-pool near-ties are repaired
(not rejected) and leave no near-tie nor a ReLU input near 0, ``max_batch`` is honoured, and
no case has every gradient exactly zero unless ``zero_grads=True``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.properties.cases import strategies as S
from backprop_oracle.reference import pooling
from backprop_oracle.reference.activations import KINKED
from backprop_oracle.reference.case import FAMILY_NAMES, Conv2d, Dense, Layer, Pool
from backprop_oracle.reference.network import feedforward

ROOT = Path(__file__).resolve().parents[3]
N = 60  # CNNs per sample


@pytest.fixture(scope="module")
def cnns() -> list[bo.Case]:
    return bo.cases("cnn", N, seed=0)


def pools_after(case: bo.Case) -> list[tuple[Layer, Pool]]:
    """Each pool layer of ``case`` with the layer right before it."""
    return [(before, spec) for before, spec in zip(case.layers, case.layers[1:], strict=False)
            if isinstance(spec, Pool)]


def relu_feeds_real_max_pool(case: bo.Case) -> bool:
    return any(isinstance(before, Conv2d) and before.activation == "relu"
               and pool.kind == "max" and pool.size > 1 for before, pool in pools_after(case))


def every_gradient_zero(case: bo.Case) -> bool:
    return not any(np.any(g != 0) for g in bo.backprop(case).grads.values())


def test_most_pool_windows_are_larger_than_one(cnns: list[bo.Case]) -> None:
    sizes = [pool.size for case in cnns for _, pool in pools_after(case)]
    assert sum(size > 1 for size in sizes) >= 0.8 * len(sizes), sizes


def test_half_the_cnns_have_a_relu_conv_feeding_a_real_max_pool(cnns: list[bo.Case]) -> None:
    assert sum(map(relu_feeds_real_max_pool, cnns)) >= 0.5 * N


def test_max_pool_near_ties_are_repaired_not_rejected() -> None:
    reasons = [r for i in range(N) for r in S.draw_attempts("cnn", 0, i, pools=["max"])[1]]
    near_ties = [r for r in reasons if r.startswith("max-pool")]
    assert len(near_ties) <= 0.1 * N, f"{len(near_ties)} of {N} max-pool CNNs rejected"


def assert_clear_of_kinks(case: bo.Case) -> None:
    """Every ReLU / leaky input at least ``MARGIN`` from 0, every max-pool window's runner-up
    at least ``MARGIN`` (relative to the layer's largest value above 1) below its maximum."""
    zs, acts = feedforward(case)
    for l, spec in enumerate(case.layers, 1):
        if isinstance(spec, (Dense, Conv2d)) and spec.activation in KINKED:
            assert np.min(np.abs(zs[l - 1])) >= S.MARGIN * 0.99, f"layer {l}: z near 0"
        if isinstance(spec, Pool) and spec.kind == "max":
            gap = pooling.max_route(acts[l - 1], spec.size, spec.stride)[1]
            threshold = S.MARGIN * max(1.0, float(np.max(np.abs(acts[l - 1]))))
            assert np.min(gap) >= threshold, f"layer {l}: runner-up gap {np.min(gap):.3g}"


@pytest.mark.parametrize("constraints", [
    {}, {"pools": ["max"]}, {"pools": ["max"], "activations": ["relu"]},
    {"pools": ["max"], "activations": ["leaky_relu", "tanh", "sigmoid"]},
])
def test_repaired_cnns_keep_clear_of_kinks(constraints: dict) -> None:
    for case in bo.cases("cnn", 25, seed=1, **constraints):
        assert_clear_of_kinks(case)
        assert_clear_of_kinks(case.astype("float64"))


def test_kink_mode_still_draws_tied_max_pool_windows() -> None:
    ties = 0
    for case in bo.cases("cnn", 20, seed=3, kinks=True, activations=["relu"], pools=["max"]):
        _, acts = feedforward(case)
        ties += sum(np.sum(pooling.max_route(acts[l - 1], s.size, s.stride)[1] == 0)
                    for l, s in enumerate(case.layers, 1) if isinstance(s, Pool) and s.size > 1)
    assert ties > 0


def test_cnn_batches_honour_max_batch() -> None:
    batches = [case.batch for case in bo.cases("cnn", 40, seed=0, max_batch=12)]
    assert 4 < max(batches) <= 12
    assert all(case.batch <= 2 for case in bo.cases("cnn", 10, seed=0, max_batch=2))


def test_a_huge_cnn_batch_is_refused_naming_max_batch() -> None:
    with pytest.raises(ValueError, match=r"^max_batch=10000000: .*memory budget"):
        bo.cases("cnn", 1, max_batch=10_000_000)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_no_case_has_every_gradient_zero_unless_asked(family: str) -> None:
    assert not any(every_gradient_zero(c) for c in bo.cases(family, 40, seed=0))


def test_zero_grads_true_keeps_the_cases_otherwise_redrawn() -> None:
    allowed = bo.cases("graph", 20, seed=0, zero_grads=True)
    default = bo.cases("graph", 20, seed=0)
    redrawn = [every_gradient_zero(case) for case in allowed]
    assert any(redrawn)
    assert [a.case_id != d.case_id for a, d in zip(allowed, default, strict=True)] == redrawn
    with pytest.raises(ValueError, match="zero_grads"):
        bo.cases("graph", 1, zero_grads="yes")


@pytest.mark.parametrize("constraints", [
    {}, {"pools": ["max"]}, {"zero_grads": True}, {"max_batch": 12, "activations": ["relu"]},
])
def test_cnn_draws_are_deterministic(constraints: dict) -> None:
    forward = [c.case_id for c in bo.cases("cnn", 10, seed=4, **constraints)]
    backward = [S.case_at("cnn", 4, i, **constraints).case_id for i in reversed(range(10))]
    assert forward == backward[::-1]
    assert S.draw_attempts("cnn", 4, 3, **constraints)[0].case_id == forward[3]


def test_case_stats_prints_a_row_per_family() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.case_stats", "--n", "4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| mlp", "| softmax", "| cnn", "| cnn, pools=max", "| graph"]
