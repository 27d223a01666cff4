"""The JAX oracle against the reference: every family, both dtypes, both modes; the adjoint
identity; dtypes and x64 containment; the compile cache; kink conventions."""

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

jax = pytest.importorskip("jax")
from backprop_oracle.oracles import jax_oracle  # noqa: E402
from backprop_oracle.oracles.jax_oracle import CACHE, JaxOracle  # noqa: E402

ORACLES = {mode: JaxOracle(mode, directions=DIRECTIONS[mode]) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_agrees_with_reference(name: str, dtype: str, mode: str) -> None:
    c = case(name, dtype)
    expected = backprop(c)
    actual = ORACLES[mode].run(c)
    assert_close(actual, expected, dtype, scale_for(name, expected))
    assert actual.meta["method"] == f"jax-{mode}"
    assert actual.meta["switches"]["jax_enable_x64"] == (dtype == "float64")



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_forward_mode_by_directions(name: str, dtype: str) -> None:
    c = case(name, dtype)
    expected = backprop(c)
    actual = JaxOracle("forward").run(c)
    assert_directional(actual, expected, dtype, actual.meta["directions"],
                       scale_for(name, expected))
    assert actual.meta["directions"] == 4


@pytest.mark.parametrize("name", ["mlp", "cnn_pools", "graph"])
def test_localise_gives_full_derivatives_of_the_named_tensors_only(name: str) -> None:
    c = case(name, "float64")
    expected = backprop(c)
    names = [next(iter(c.params)), "delta1"]
    located = JaxOracle("forward").localise(c, names=names)
    assert {*located.grads, *located.deltas} == set(names)
    for n in names:
        want = expected.grads.get(n, expected.deltas.get(n))
        assert np.allclose(located.grads.get(n, located.deltas.get(n)), want, rtol=0,
                           atol=1e-12 * max(float(np.abs(want).max()), 1.0))


def test_bad_direction_count_is_rejected() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="directions must be a non-negative integer"):
            JaxOracle("forward", directions=bad)

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_requested_dtype_on_every_path(dtype: str, mode: str) -> None:
    other = "float32" if dtype == "float64" else "float64"
    result = ORACLES[mode].run(case("cnn_pools", other), dtype=dtype)
    arrays = {**result.grads, **result.deltas, **result.zs, **result.activations}
    assert arrays and all(v.dtype == np.dtype(dtype) for v in arrays.values())


def test_float64_does_not_leak_x64_or_precision() -> None:
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    result = JaxOracle().run(case("mlp", "float64"))
    assert result.meta["switches"]["jax_default_matmul_precision"] == "highest"
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before
    assert jax.numpy.zeros(1).dtype == np.dtype("float64" if before[0] else "float32")


def test_default_precision_is_out_of_the_box() -> None:
    result = JaxOracle(precision="default").run(case("mlp", "float32"))
    assert result.meta["switches"]["dot_conv_precision"] == "DEFAULT"
    assert result.meta["switches"]["jax_default_matmul_precision"] is None
    assert_close(result, backprop(case("mlp", "float32")), "float32")


def test_wrong_dtype_from_the_framework_raises() -> None:
    from backprop_oracle.oracles._common import OracleDtypeError

    sneaky = JaxOracle(overrides={"tanh": lambda z: jax.numpy.tanh(z).astype("float32")})
    with pytest.raises(OracleDtypeError, match="float64 was requested"):
        sneaky.run(case("mlp", "float64"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["mlp", "cnn_pools", "graph"])
def test_adjoint_identity(name: str, dtype: str) -> None:
    lhs, rhs = JaxOracle().adjoint(case(name, dtype), seed=3)
    assert abs(lhs - rhs) <= 64 * EPS[dtype] * max(abs(lhs), abs(rhs), 1.0), (lhs, rhs)


def test_same_architecture_compiles_once() -> None:
    CACHE.clear()
    oracle = JaxOracle("reverse")
    first = oracle.run(case("mlp", "float64"))
    second = oracle.run(examples_mlp_other_values())
    assert CACHE.stats()["misses"] == 1 and CACHE.stats()["hits"] == 1
    assert (first.meta["jit_cache"], second.meta["jit_cache"]) == ("miss", "hit")
    (fn,) = CACHE.entries.values()
    assert fn._cache_size() == 1  # jax itself traced and compiled it once
    assert not np.allclose(first.grads["W1"], second.grads["W1"])


def examples_mlp_other_values():
    from backprop_oracle.properties.cases import examples

    return examples.mlp("float64", seed=99)


def test_eager_mode_agrees_and_skips_the_cache() -> None:
    CACHE.clear()
    c = case("graph", "float64")
    assert_close(JaxOracle(jit=False).run(c), backprop(c), "float64")
    assert CACHE.stats()["misses"] == 0


def test_absent_device_gives_a_reason() -> None:
    oracle = JaxOracle()
    assert oracle.available("cpu") is None
    assert oracle.devices() == ["cpu", "gpu"]
    if not any(d.platform == "gpu" for d in jax.devices()):
        assert "no gpu device visible to jax" in oracle.available("gpu")
    assert oracle.available("cuda") == oracle.available("gpu"), "cuda and gpu: one accelerator"


def test_missing_jax_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "jax", None)
    assert "jax is not installed" in JaxOracle().available("cpu")


def test_kink_conventions_are_measured() -> None:
    """Recorded, not assumed: JAX's ReLU'(0) = 0, leaky-ReLU'(0) = 1 (``jax.nn.leaky_relu``
    takes the linear branch at 0; the reference and torch use the slope), and a tied
    max-pool window sends its gradient to the first cell, in both modes."""
    conv = jax_oracle.conventions()
    for mode in MODES:
        assert conv[mode] == {"relu'(0)": 0.0, "leaky_relu'(0)": 1.0,
                              "maxpool_tie_grad": [1.0, 0.0, 0.0, 0.0]}


def test_settings_report_versions_and_switches() -> None:
    s = JaxOracle().settings("cpu")
    assert s["versions"]["jax"] == jax.__version__
    assert s["switches"]["jax_default_matmul_precision"] == "highest"
