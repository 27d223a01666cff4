"""The adapter API used as an adapter author would: a JAX implementation that works in the
channels-last conventions (NHWC activations, HWIO kernels, (in, out) dense weights, (H, W, C)
flatten) through ``bo.layouts`` and ``case.walk()`` agrees with the reference under
``bo.check``; forgetting the flatten permutation is caught; integer labels work on cases
drawn with ``targets="one_hot"``; ``bo.load_case`` reloads what ``check`` saved."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import backprop_oracle as bo

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
lax = jax.lax
L = bo.layouts


def _activate(name: str, z: Any) -> Any:
    return {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
            "leaky_relu": lambda v: jax.nn.leaky_relu(v, bo.LEAKY_SLOPE),
            "identity": lambda v: v}[name](z)


def _pool(spec: Any, a: Any) -> Any:
    window, strides = (1, spec.size, spec.size, 1), (1, spec.stride, spec.stride, 1)
    if spec.kind == "max":
        return lax.reduce_window(a, jnp.array(-jnp.inf, a.dtype), lax.max, window, strides,
                                 "VALID")
    zero = jnp.array(0, a.dtype)
    if spec.kind == "avg":
        return lax.reduce_window(a, zero, lax.add, window, strides, "VALID") / spec.size ** 2
    return jnp.sqrt(lax.reduce_window(a * a, zero, lax.add, window, strides, "VALID"))


def _loss(case: Any, p: dict, eps: dict, x: Any, y: Any, masks: dict,
          integer_labels: bool) -> Any:
    """Forward in channels-last; ``eps[l]`` is added to ``z^l`` so that its gradient is
    ``delta<l>`` in the adapter's own layout."""
    a = z = x
    for layer in case.walk():
        spec, l = layer.spec, layer.index
        if isinstance(spec, bo.Dense):
            n = layer.number
            z = a @ p[f"W{n}"] + p[f"b{n}"] + eps[l]
            a = _activate(spec.activation, z)
        elif isinstance(spec, bo.Conv2d):
            n = layer.number
            z = lax.conv_general_dilated(
                a, p[f"W{n}"], (spec.stride, spec.stride), [(spec.padding, spec.padding)] * 2,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=lax.Precision.HIGHEST) + p[f"b{n}"] + eps[l]
            a = _activate(spec.activation, z)
        else:  # no activation: a^l = z^l
            if isinstance(spec, bo.Pool):
                z = _pool(spec, a)
            elif isinstance(spec, bo.Flatten):
                z = a.reshape(a.shape[0], -1)  # row-major over (H, W, C)
            elif isinstance(spec, bo.Dropout):
                z = a * masks[layer.mask] / (1 - spec.p)
            z = a = z + eps[l]
    n = x.shape[0]
    if case.cost == "quadratic":
        return jnp.sum(0.5 * (y - a) ** 2) / n
    if case.cost == "cross_entropy":
        return jnp.sum(jax.nn.softplus(z) - y * z) / n
    lse = jax.nn.logsumexp(z, axis=-1)
    if integer_labels:
        labels = jnp.argmax(y, axis=-1)
        return jnp.sum(lse - z[jnp.arange(n), labels]) / n
    return jnp.sum(lse * y.sum(axis=-1) - (y * z).sum(axis=-1)) / n


def channels_last(case: Any, *, permute_flatten: bool = True,
                  integer_labels: bool = False) -> dict:
    """An adapter for a channels-last library. ``permute_flatten=False`` is the planted bug:
    every array converted by hand, but the flatten order left as the reference's."""
    if case.family == "graph":
        raise NotImplementedError("no graph nodes")
    if integer_labels and case.cost == "softmax_cross_entropy":
        if not np.array_equal(case.y, np.eye(case.y.shape[1])[case.y.argmax(1)]):
            raise NotImplementedError("integer labels only: targets must be one-hot")
    if permute_flatten:
        arrays = L.case_arrays(case, L.CHANNELS_LAST)
    else:
        arrays = {"x": L.to_nhwc(case.x) if case.x.ndim == 4 else case.x, "y": case.y}
        for layer in case.walk():
            for name, W in layer.params.items():
                if name[0] == "b":
                    arrays[name] = W
                else:
                    arrays[name] = (L.conv_kernel_to_hwio(W) if isinstance(layer.spec, bo.Conv2d)
                                    else L.dense_to_in_out(W))
            if layer.mask:
                m = case.masks[layer.mask]
                arrays[layer.mask] = L.to_nhwc(m) if m.ndim == 4 else m
    with (jax.enable_x64(True) if case.dtype == "float64" else contextlib.nullcontext()):
        as_jax = {k: jnp.asarray(v) for k, v in arrays.items()}
        p = {k: as_jax[k] for k in case.params}
        masks = {k: as_jax[k] for k in case.masks}
        shapes = {}  # z^l per sample in channels-last, from a forward pass without eps
        for layer in case.walk():
            s = layer.output_shape
            shapes[layer.index] = (s[1], s[2], s[0]) if len(s) == 3 else s
        eps = {l: jnp.zeros((case.batch, *s), dtype=case.dtype) for l, s in shapes.items()}
        loss, (gp, geps) = jax.value_and_grad(_loss, argnums=(1, 2))(
            case, p, eps, as_jax["x"], as_jax["y"], masks, integer_labels)
    out: dict[str, object] = {k: np.asarray(v, dtype=case.dtype) for k, v in gp.items()}
    out.update({f"delta{l}": np.asarray(v, dtype=case.dtype) for l, v in geps.items()})
    out["loss"] = float(loss)
    if permute_flatten:
        return L.grads_from(case, L.CHANNELS_LAST, out)
    back: dict[str, object] = {"loss": out["loss"]}
    for layer in case.walk():
        for name in layer.params:
            g = np.asarray(out[name])
            back[name] = (g if name[0] == "b" else L.conv_kernel_from_hwio(g)
                          if isinstance(layer.spec, bo.Conv2d) else L.dense_from_in_out(g))
        d = np.asarray(out[layer.delta])
        back[layer.delta] = L.from_nhwc(d) if d.ndim == 4 else d
    return back


def _permutes(case: Any) -> bool:
    """Whether a flatten in ``case`` has a non-trivial (C, H, W) -> (H, W, C) order."""
    return any(isinstance(layer.spec, bo.Flatten) and layer.input_shape[0] > 1
               and layer.input_shape[1] * layer.input_shape[2] > 1 for layer in case.walk())


@pytest.mark.parametrize("family", ["cnn", "mlp"])
def test_channels_last_adapter_agrees(family: str) -> None:
    cases = bo.cases(family, 6, seed=3, max_batch=4, max_image=8, max_width=8)
    report = bo.check(channels_last, cases, tiebreakers=())
    assert report.ok, report.summary()
    assert report.counts() == {"agree": 6}, report.summary()


def test_forgetting_the_flatten_permutation_is_caught() -> None:
    cases = [c for c in bo.cases("cnn", 12, seed=3, max_batch=4, max_image=8, max_width=8)
             if _permutes(c)][:3]
    assert cases
    report = bo.check(lambda case: channels_last(case, permute_flatten=False), cases,
                      name="no_permutation", tiebreakers=())
    assert not report.ok
    assert set(report.verdicts().values()) == {"diverge"}, report.summary()


def test_one_hot_targets_serve_integer_labels() -> None:
    drawn = bo.cases("softmax", 6, seed=5, targets="one_hot", max_batch=4, max_width=8)
    for case in drawn:
        assert np.array_equal(case.y, np.eye(case.y.shape[1])[case.y.argmax(1)])
    adapter = lambda case: channels_last(case, integer_labels=True)  # noqa: E731
    assert bo.check(adapter, drawn, tiebreakers=()).counts() == {"agree": 6}
    mixed = bo.check(adapter, bo.cases("softmax", 6, seed=5, max_batch=4, max_width=8),
                     tiebreakers=())
    assert mixed.counts().get("unsupported", 0) > 0  # the default draws soft targets too


def test_load_case_from_an_output_folder_or_its_cases(tmp_path: Path) -> None:
    case = bo.cases("cnn", 1, seed=3, max_batch=2, max_image=6)[0]
    bo.check(channels_last, [case], tiebreakers=()).write(tmp_path)
    for folder in (tmp_path, tmp_path / "cases", str(tmp_path)):
        loaded = bo.load_case(folder, case.case_id)
        assert loaded.case_id == case.case_id
        assert isinstance(loaded.layers[0], bo.Conv2d)
    with pytest.raises(FileNotFoundError):
        bo.load_case(tmp_path, "0" * 16)
