"""The PyTorch oracle against the reference: every family, both dtypes, both modes; the
adjoint identity; dtypes; restored global settings; kink conventions; errors propagate."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_oracle.reference import backprop

from ._support import (
    BUILDERS,
    DIRECTIONS,
    DTYPES,
    EPS,
    MODES,
    assert_close,
    assert_directional,
    case,
    scale_for,
)

torch = pytest.importorskip("torch")
from backprop_oracle.oracles import torch_oracle  # noqa: E402
from backprop_oracle.oracles.torch_oracle import TorchOracle  # noqa: E402

ORACLES = {mode: TorchOracle(mode, directions=DIRECTIONS[mode]) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_agrees_with_reference(name: str, dtype: str, mode: str) -> None:
    c = case(name, dtype)
    expected = backprop(c)
    actual = ORACLES[mode].run(c)
    assert_close(actual, expected, dtype, scale_for(name, expected))
    assert actual.meta["method"] == f"torch-{mode}"
    assert actual.meta["dtype"] == dtype and actual.meta["device"] == "cpu"



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_forward_mode_by_directions(name: str, dtype: str) -> None:
    c = case(name, dtype)
    expected = backprop(c)
    actual = TorchOracle("forward").run(c)
    assert_directional(actual, expected, dtype, actual.meta["directions"],
                       scale_for(name, expected))
    assert actual.meta["directions"] == 4


@pytest.mark.parametrize("name", ["mlp", "cnn_pools", "graph"])
def test_localise_gives_full_derivatives_of_the_named_tensors_only(name: str) -> None:
    c = case(name, "float64")
    expected = backprop(c)
    names = [next(iter(c.params)), "delta1"]
    located = TorchOracle("forward").localise(c, names=names)
    assert {*located.grads, *located.deltas} == set(names)
    for n in names:
        want = expected.grads.get(n, expected.deltas.get(n))
        assert np.allclose(located.grads.get(n, located.deltas.get(n)), want, rtol=0,
                           atol=1e-12 * max(float(np.abs(want).max()), 1.0))


def test_bad_direction_count_is_rejected() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="directions must be a non-negative integer"):
            TorchOracle("forward", directions=bad)

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_requested_dtype_on_every_path(dtype: str, mode: str) -> None:
    other = "float32" if dtype == "float64" else "float64"
    result = ORACLES[mode].run(case("cnn_pools", other), dtype=dtype)
    arrays = {**result.grads, **result.deltas, **result.zs, **result.activations}
    assert arrays and all(v.dtype == np.dtype(dtype) for v in arrays.values())
    assert result.meta["dtype"] == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["mlp", "cnn_pools", "graph"])
def test_adjoint_identity(name: str, dtype: str) -> None:
    lhs, rhs = TorchOracle().adjoint(case(name, dtype), seed=3)
    assert abs(lhs - rhs) <= 64 * EPS[dtype] * max(abs(lhs), abs(rhs), 1.0), (lhs, rhs)


def _switch_values() -> dict:
    return torch_oracle._switches(torch)


def test_strict_settings_are_applied_recorded_and_restored() -> None:
    before = _switch_values()
    result = TorchOracle(precision="strict").run(case("mlp", "float32"))
    switches = result.meta["switches"]
    assert switches["deterministic_algorithms"] is True
    assert all(v == "ieee" for k, v in switches.items() if k.endswith("fp32_precision"))
    assert _switch_values() == before


def test_strict_settings_do_not_import_inductor() -> None:
    """In a fresh process the strict switches (determinism included) are set without
    ``torch.use_deterministic_algorithms``' import of ``torch._inductor`` (1.9 s once per
    process: every worker of a campaign paid it on its first case)."""
    import subprocess
    import sys

    code = ("import sys, torch; from backprop_oracle.oracles.torch_oracle import TorchOracle; "
            "from backprop_oracle.properties.cases import examples; "
            "r = TorchOracle().run(examples.mlp()); "
            "print(r.meta['switches']['deterministic_algorithms'], "
            "torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["True", "False", "False"]


def test_default_precision_leaves_settings_alone() -> None:
    before = _switch_values()
    result = TorchOracle(precision="default").run(case("mlp", "float32"))
    assert result.meta["switches"] == before == _switch_values()


def test_settings_report_versions_and_switches() -> None:
    s = TorchOracle().settings("cpu")
    assert s["versions"]["torch"] == torch.__version__ and s["precision"] == "strict"
    assert s["switches"]["deterministic_algorithms"] is True


def test_absent_device_gives_a_reason() -> None:
    oracle = TorchOracle()
    assert oracle.available("cpu") is None
    assert "cpu" in oracle.devices() and "cuda" in oracle.devices()
    if not torch.cuda.is_available():
        assert "no CUDA device" in oracle.available("cuda")
    assert "not 'tpu'" in oracle.available("tpu")


def test_missing_torch_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    assert "torch is not installed" in TorchOracle().available("cpu")


def test_errors_inside_run_propagate_and_settings_are_restored() -> None:
    def broken(*args):
        raise RuntimeError("planted failure")

    before = _switch_values()
    with pytest.raises(RuntimeError, match="planted failure"):
        TorchOracle(overrides={"linear": broken}).run(case("mlp", "float64"))
    assert _switch_values() == before


def test_kink_conventions_are_measured() -> None:
    """Recorded, not assumed: torch's ReLU'(0) = 0, leaky-ReLU'(0) = slope, and a tied
    max-pool window sends its gradient to the first cell, in both modes."""
    conv = torch_oracle.conventions()
    for mode in MODES:
        assert conv[mode] == {"relu'(0)": 0.0, "leaky_relu'(0)": 0.01,
                              "maxpool_tie_grad": [1.0, 0.0, 0.0, 0.0]}


def test_bad_mode_or_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        TorchOracle(mode="sideways")
    with pytest.raises(ValueError, match="precision"):
        TorchOracle(precision="loose")
