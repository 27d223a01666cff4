"""The oracle registry (inventory with skip reasons, a missing framework simulated in a
subprocess) and odd-one-out triage on planted wrong ops in one framework."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

from backprop_oracle.oracles import registry
from backprop_oracle.oracles.registry import inventory
from backprop_oracle.properties.comparison.compare import compare_results
from backprop_oracle.properties.comparison.evaluate import triangulate
from backprop_oracle.reference import backprop
from backprop_oracle.reference.result import Result

from ._support import case

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
from backprop_oracle.oracles.jax_oracle import JaxOracle  # noqa: E402
from backprop_oracle.oracles.torch_oracle import TorchOracle  # noqa: E402


def test_inventory_lists_every_framework_mode_precision_and_device() -> None:
    rows = [e.as_dict() for e in inventory(registry.framework_oracles())]
    seen = {(r["oracle"], r["mode"], r["precision"], r["device"]) for r in rows}
    for name, accel in (("torch", "cuda"), ("jax", "gpu")):
        for mode in ("reverse", "forward"):
            for precision in ("strict", "default"):
                assert {(name, mode, precision, "cpu"), (name, mode, precision, accel)} <= seen
    for r in rows:
        assert r["available"] == (r["reason"] is None)
        if r["device"] == "cpu":
            assert r["available"], r
        elif not r["available"]:
            assert r["device"] in r["reason"] or "CUDA" in r["reason"]


def test_full_inventory_includes_finite_differences_or_says_why() -> None:
    rows = [e.as_dict() for e in inventory()]
    fd = [r for r in rows if r["oracle"] == "fd"]
    assert fd and all(r["available"] or r["reason"] for r in fd)
    runnable = registry.runnable(registry.framework_oracles())
    assert {(o.label, d) for o, d in runnable} >= {("torch/reverse", "cpu"), ("jax/forward", "cpu")}


MISSING = """
import json, sys
sys.modules["torch"] = None
sys.modules["jax"] = None
from backprop_oracle.oracles import registry
rows = [e.as_dict() for e in registry.inventory(registry.framework_oracles())]
print(json.dumps(rows))
"""


def test_missing_frameworks_give_reasons_not_crashes() -> None:
    done = subprocess.run([sys.executable, "-W", "error", "-c", MISSING], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 16 and not any(r["available"] for r in rows)
    for r in rows:
        assert f"{r['oracle']} is not installed" in r["reason"]


# --- planted wrong ops ---------------------------------------------------------------------


def torch_argmin_max_pool(a, size: int, stride: int):
    """Max pooling whose backward routes each window's gradient to the arg-*min* cell."""
    return _TorchArgminPool.apply(a, size, stride)


class _TorchArgminPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, size, stride):
        ctx.save_for_backward(a)
        ctx.size, ctx.stride = size, stride
        return torch.nn.functional.max_pool2d(a, size, stride)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        _, idx = torch.nn.functional.max_pool2d(-a, ctx.size, ctx.stride, return_indices=True)
        da = torch.zeros_like(a).flatten(2).scatter_add(2, idx.flatten(2), g.flatten(2))
        return da.view_as(a), None, None


def _jax_max(a, size: int, stride: int):
    return jax.lax.reduce_window(a, np.asarray(-np.inf, a.dtype), jax.lax.max,
                                 (1, 1, size, size), (1, 1, stride, stride), "VALID")


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def jax_argmin_max_pool(a, size: int, stride: int):
    """Max pooling whose backward routes each window's gradient to the arg-*min* cell."""
    return _jax_max(a, size, stride)


def _fwd(a, size, stride):
    return _jax_max(a, size, stride), a


def _bwd(size, stride, a, g):
    _, pullback = jax.vjp(lambda t: -_jax_max(-t, size, stride), a)
    return pullback(g)


jax_argmin_max_pool.defvjp(_fwd, _bwd)


def _three(torch_overrides=None, jax_overrides=None, dtype="float64"):
    c = case("cnn_pools", dtype)
    return c, {"reference": backprop(c),
               "torch": TorchOracle(overrides=torch_overrides).run(c),
               "jax": JaxOracle(overrides=jax_overrides).run(c)}


def _versus(c, expected: Result, actual: Result):
    return compare_results(c, expected, actual, dtype=c.dtype, expected_dtype=c.dtype)


def odd_one_out(c, results: dict[str, Result]) -> str | None:
    """The error-model comparison of every pair, then the odd one out."""
    return triangulate({(a, b): _versus(c, results[a], results[b]).verdict
                        for a, b in itertools.combinations(results, 2)})


def test_all_correct_has_no_odd_one_out() -> None:
    assert odd_one_out(*_three()) is None


def test_planted_torch_max_pool_bug_is_named() -> None:
    c, results = _three(torch_overrides={"max_pool": torch_argmin_max_pool})
    assert results["torch"].meta["overrides"] == ["max_pool"]
    assert odd_one_out(c, results) == "torch"
    # located: only the pool's input (delta1, da1) and the layer-1 parameters diverge, and the
    # replay of torch's own steps names the pool's backward (torch returns da1)
    versus = _versus(c, results["reference"], results["torch"])
    assert [k for k, v in versus.verdicts.items() if v == "diverge"] == ["W1", "b1", "delta1",
                                                                          "da1"]
    assert versus.first == 1
    assert versus.enters.startswith("enters in the backward of layer 2 (maxpool")


def test_planted_jax_max_pool_bug_is_named() -> None:
    c, results = _three(jax_overrides={"max_pool": jax_argmin_max_pool}, dtype="float32")
    assert odd_one_out(c, results) == "jax"
    assert _versus(c, results["reference"], results["torch"]).verdict == "agree"
