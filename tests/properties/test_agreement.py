"""The property suite: the reference agrees with finite differences, PyTorch and JAX — loss,
every gradient and every per-layer delta, so a failure names its layer — on drawn cases of
every family, under the error-model tolerances of ``properties.compare`` (each record states
its tolerance and how it was derived); and PyTorch agrees with JAX.

Devices are parametrised from what each framework knows; absent ones skip with the oracle's
own reason. Hypothesis profiles (``BO_PROFILE=ci|thorough|gpu``) set the number of cases."""

from __future__ import annotations

import pytest
from hypothesis import given

import backprop_oracle as bo
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.oracles.jax_oracle import JaxOracle
from backprop_oracle.oracles.torch_oracle import TorchOracle
from backprop_oracle.properties.campaign.assertions import assert_agree
from backprop_oracle.properties.cases import hypothesis_strategies as S
from backprop_oracle.properties.comparison.compare import compare
from backprop_oracle.properties.comparison.evaluate import evaluate

FD = FiniteDifferences()
SMALL = dict(max_width=16, max_batch=8, max_layers=4)  # keeps the ci profile under budget


def framework_params() -> list:
    params = []
    for cls, devices in ((TorchOracle, ("cpu", "cuda")), (JaxOracle, ("cpu", "gpu"))):
        for mode in ("reverse", "forward"):
            for device in devices:
                oracle = cls(mode=mode, precision="strict")
                reason = oracle.available(device)
                params.append(pytest.param(
                    oracle, device, id=f"{oracle.name}-{mode}-{device}",
                    marks=pytest.mark.skipif(reason is not None, reason=str(reason))))
    return params


def check(case: bo.Case, oracle, device: str, bo_record) -> None:
    """The oracle on the case through the harness's one evaluation path, recorded for the
    session report, then asserted (a gradient in the wrong dtype is an oracle error)."""
    records = evaluate(case, oracle, device)
    bo_record(case, records)
    assert_agree(case, records)


@given(case=S.any_cases(dtypes=["float64"], **SMALL))
def test_reference_equals_finite_differences(case: bo.Case, bo_record) -> None:
    """float64, every family; FD's own error estimate is part of the tolerance."""
    check(case, FD, "cpu", bo_record)


@pytest.mark.parametrize("oracle, device", framework_params())
@given(case=S.any_cases(**SMALL))
def test_reference_equals_framework(oracle, device: str, case: bo.Case, bo_record) -> None:
    """float32 and float64 (drawn), reverse and forward mode, per device."""
    check(case, oracle, device, bo_record)


@given(case=S.any_cases(**SMALL))
def test_torch_equals_jax(case: bo.Case, bo_record) -> None:
    """The two frameworks against each other, both on cpu, reverse mode, same dtype."""
    torch_result = TorchOracle().run(case, "cpu", case.dtype)
    jax_result = JaxOracle().run(case, "cpu", case.dtype)
    records = compare(case, torch_result, jax_result, oracle="jax-vs-torch", mode="reverse",
                      device="cpu", dtype=case.dtype, expected_dtype=case.dtype,
                      precision="strict")
    bo_record(case, records)
    assert_agree(case, records)


@pytest.mark.parametrize("oracle, device", framework_params())
def test_dropout_with_a_shared_mask_agrees(oracle, device: str, bo_record) -> None:
    """The same explicit mask in every framework: reference, PyTorch and JAX agree on MLPs
    with dropout layers (float32 and float64)."""
    drawn = [c for c in bo.cases("mlp", 30, seed=9, max_width=12, max_batch=6) if c.masks]
    assert len(drawn) >= 3
    for case in drawn[:6]:
        check(case, oracle, device, bo_record)
