"""Kink mode: cases drawn on purpose at ReLU/leaky-ReLU inputs of exactly 0 and tied max-pool
windows (inputs and parameters on a grid of multiples of 1/4, so every sum is exact in every
framework). Disagreements there are ``kink``, never ``diverge``; each framework's convention
is measured and must be stable."""

from __future__ import annotations

from collections import Counter

import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.jax_oracle import JaxOracle
from backprop_oracle.oracles.torch_oracle import TorchOracle
from backprop_oracle.properties.campaign.conventions import measure
from backprop_oracle.properties.comparison.compare import compare

KINK_CASES = (bo.cases("cnn", 12, seed=1, kinks=True, activations=["relu", "leaky_relu"],
                       pools=["max"], max_image=8)
              + bo.cases("mlp", 12, seed=1, kinks=True, activations=["relu", "leaky_relu"],
                         max_width=8, max_batch=6))


@pytest.mark.parametrize("oracle", [TorchOracle("reverse"), TorchOracle("forward"),
                                    JaxOracle("reverse"), JaxOracle("forward")],
                         ids=lambda o: o.label)
def test_kinks_are_never_divergences(oracle, bo_record) -> None:
    reason = oracle.available("cpu")
    if reason:
        pytest.skip(reason)
    verdicts: Counter = Counter()
    for case in KINK_CASES:
        records = compare(case, bo.backprop(case), oracle.run(case, "cpu", case.dtype),
                          oracle=oracle.name, mode=oracle.mode, device="cpu", dtype=case.dtype)
        bo_record(case, [dict(r.__dict__, precision="strict", arch=case.describe())
                         for r in records])
        verdicts.update(r.verdict for r in records)
    assert verdicts["diverge"] == 0 and verdicts["nan"] == 0, verdicts
    if differs_from_reference(oracle.name, oracle.mode):  # e.g. JAX's leaky_relu'(0) = 1
        assert verdicts["kink"] > 0, f"conventions differ but no kink was seen: {verdicts}"
    else:  # same conventions as the reference: exact kinks must simply agree
        assert verdicts["kink"] == 0 and verdicts["agree"] > 0, verdicts


def differs_from_reference(framework: str, mode: str) -> bool:
    rows = measure(("cpu",))
    ours = {r["what"]: r["observed"] for r in rows
            if r["framework"] == "reference" and r["mode"] == mode}
    return any(r["observed"] != ours[r["what"]] for r in rows
               if r["framework"] == framework and r["mode"] == mode)


def test_conventions_are_measured_and_stable() -> None:
    rows = [r for r in measure(("cpu",)) if r["mode"] != "-"]
    assert {r["framework"] for r in rows} == {"reference", "torch", "jax"}
    assert all(r["stable"] == "yes" for r in rows)
    seen = {(r["framework"], r["mode"], r["what"]): r["observed"] for r in rows}
    for framework in ("reference", "torch", "jax"):
        for mode in ("reverse", "forward"):
            assert seen[(framework, mode, "relu'(0)")] == "0"
            assert seen[(framework, mode, "maxpool_tie_grad")].startswith("all to cell 0")
    # measured here (jax 0.10, torch 2.13): JAX's leaky_relu uses x >= 0, PyTorch x > 0
    assert seen[("torch", "reverse", "leaky_relu'(0)")] == "0.01"
    assert seen[("jax", "reverse", "leaky_relu'(0)")] == "1"
