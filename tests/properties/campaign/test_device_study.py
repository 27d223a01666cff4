"""The GPU study's code paths on whatever is present: error margins per precision, spread over
repeated runs (exactly zero on the CPU; a planted nondeterministic oracle shows up), device
agreement, absent accelerators skipped with the oracle's reason."""

from __future__ import annotations

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.properties.campaign import device_study as D

SMALL = dict(max_width=5, max_batch=3, max_layers=2, max_image=5)


def test_spread_is_the_largest_difference_between_runs() -> None:
    case = bo.cases("mlp", 1, seed=1, dtypes=["float64"], **SMALL)[0]  # 1e-9 fits float64
    runs = [bo.backprop(case) for _ in range(3)]
    assert set(D.spread(runs).values()) == {0.0}
    runs[2].grads = {**runs[2].grads, "W1": runs[2].grads["W1"] + 1e-9}
    assert D.spread(runs)["grad/W1"] == pytest.approx(1e-9, rel=1e-6)


def test_a_nondeterministic_framework_shows_in_the_spread(monkeypatch) -> None:
    pytest.importorskip("torch")
    from backprop_oracle.oracles.torch_oracle import TorchOracle

    class Jittery(TorchOracle):
        calls = 0

        def run(self, case, device="cpu", dtype=None):
            result = super().run(case, device, dtype)
            Jittery.calls += 1
            noise = np.asarray(1e-7 * Jittery.calls, case.dtype)
            result.grads = {k: v + noise for k, v in result.grads.items()}
            return result

    monkeypatch.setattr(D, "_oracle", lambda framework, precision: Jittery(precision=precision))
    study = D.run_study(families=("mlp",), n=1, frameworks=("torch",), devices=("cpu",),
                        precisions=("strict",), dtypes=("float64",), repeats=3, **SMALL)
    (row,) = study.table()
    assert row["max_spread"] == pytest.approx(2e-7, rel=1e-3)
    assert row["max_spread_over_tol"] > 1


def test_study_on_this_machine() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    study = D.run_study(families=("mlp", "cnn"), n=1, repeats=2, **SMALL)
    rows = study.table()
    cpu = [r for r in rows if r["device"] == "cpu"]
    assert {(r["framework"], r["dtype"], r["precision"]) for r in cpu} == {
        (f, d, p) for f in ("torch", "jax") for d in ("float32", "float64")
        for p in ("strict", "default")}
    assert all(r["max_spread"] == 0.0 and r["max"] <= 1 for r in cpu)
    assert not study.errors
    for framework, device in (("torch", "cuda"), ("jax", "gpu")):
        measured = any(r["framework"] == framework and r["device"] == device for r in rows)
        assert measured != ((framework, device) in study.skipped), "measured or skipped"
    text = D.markdown(rows, study.skipped)
    assert "| torch | cpu | cnn | float32 | strict |" in text
