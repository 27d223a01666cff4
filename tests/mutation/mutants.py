"""Planted-bug implementations of the backpropagation equations, each a ``bo.check`` adapter.

A mutant is the reference with one function swapped for a buggy copy while the adapter runs
(``patched``), so every mutant differs from the correct equations in exactly one place.
``layer(case)`` is where the bug enters: the highest layer whose ``delta`` or parameters it
corrupts (a wrong BP2 through layer ``l`` corrupts ``delta^(l-1)``; a wrong BP3/BP4 the
parameters of ``l``), which is what the report's ``first_divergent_layer`` must name.
Training mutants are ``check_training`` adapters.

This is the project's one mutant library. A gradient mutant's adapter also gives the full
``Result`` (loss, gradients and deltas: ``Mutant.result``), which the comparison tests need to
locate a bug; ``RESULTS`` holds those under the names ``tests/properties/comparison`` uses, and
``one_element`` / ``scaled`` are the numerical slips with their size as a parameter (for the
benchmarks). Import it as ``tests.mutation.mutants`` (benchmarks run from the repository root
with ``python -m benchmarks.<name>``) or relatively from inside ``tests``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np

import backprop_oracle as bo
from backprop_oracle.reference import conv, dense, graph, network, pooling
from backprop_oracle.reference.activations import activation
from backprop_oracle.reference.case import Conv2d, Dense, Dropout, Pool
from backprop_oracle.reference.costs import cost as reference_cost

SMALL = {"max_width": 6, "max_batch": 4, "max_layers": 3, "max_image": 8}


@dataclass(frozen=True)
class Mutant:
    name: str
    family: str
    impl: Callable[..., Any]
    layer: Callable[[bo.Case], int | None] = lambda case: None
    applies: Callable[[bo.Case], bool] = lambda case: True
    constraints: dict = field(default_factory=dict)
    training: bool = False
    draw: Callable[[int, int], list[bo.Case]] | None = None  # custom case source (n, seed)

    def result(self, case: bo.Case) -> bo.Result:
        """The full ``Result`` (loss, gradients, deltas) of a gradient mutant."""
        if not isinstance(self.impl, Adapter):
            raise TypeError(f"{self.name} is not a gradient mutant with a full Result")
        return self.impl.result(case)

    def cases(self, n: int, seed: int) -> list[bo.Case]:
        """The first ``n`` cases (in draw order from ``seed``) that the bug can affect."""
        if self.draw is not None:
            return self.draw(n, seed)
        out: list[bo.Case] = []
        batch = 0
        while len(out) < n and batch < 40:
            drawn = bo.cases(self.family, 4 * n, seed + 7919 * batch,
                             **{**SMALL, **self.constraints})
            out += [c for c in drawn if self.applies(c)]
            batch += 1
        return out[:n]


@dataclass(frozen=True)
class Adapter:
    """A ``bo.check`` adapter made from a function returning the full ``Result``: calling it
    gives the gradients (what an implementation under test returns), ``result`` everything."""
    result: Callable[[bo.Case], bo.Result]

    def __call__(self, case: bo.Case) -> dict:
        return dict(self.result(case).grads)


def patched(*patches: tuple[object, str, object]) -> Adapter:
    """An adapter running the reference with ``(module, attribute, replacement)`` swapped."""
    def result(case: bo.Case) -> bo.Result:
        with contextlib.ExitStack() as stack:
            for module, name, new in patches:
                stack.enter_context(mock.patch.object(module, name, new))
            return bo.backprop(case)
    return Adapter(result)


# ---------------------------------------------------------------- where layers are

def _top(case: bo.Case) -> int:
    return len(case.layers)


def _layers_of(case: bo.Case, kind: type) -> list[int]:
    return [l for l, s in enumerate(case.layers, 1) if isinstance(s, kind)]


def _pool_layers(case: bo.Case, kinds: tuple[str, ...], min_size: int = 2) -> list[int]:
    return [l for l, s in enumerate(case.layers, 1)
            if isinstance(s, Pool) and s.kind in kinds and s.size >= min_size and l > 1]


def _param_layer(case: bo.Case, name: str) -> int:
    from backprop_oracle.reference.case import parametrised

    return {f"W{n}": l for l, n in parametrised(case.layers)}[name]


# ---------------------------------------------------------------- dense / costs

def _sigma_prime_of_a(spec: object, z: np.ndarray) -> np.ndarray:
    if not hasattr(spec, "activation"):
        return np.ones_like(z)
    f, f_prime = activation(spec.activation)
    return f_prime(f(z))  # sigma'(a) where BP2 needs sigma'(z)


def _no_sigma_prime(spec: object, z: np.ndarray) -> np.ndarray:
    return np.ones_like(z)  # BP2 without ⊙ sigma'(z^l)


def _cost_bug(kind: str) -> Callable:
    def buggy(name: str) -> Callable:
        def c(z, a, y, act):
            loss, delta = reference_cost(name)(z, a, y, act)
            n = np.asarray(z.shape[0], delta.dtype)
            if kind == "bp1_no_sigma_prime" and name == "quadratic":
                delta = (a - y) / n
            elif kind == "no_mean":
                delta = delta * n
            elif kind == "t_minus_y" and name == "softmax_cross_entropy":
                delta = -delta
            return loss, delta
        return c
    return buggy


def _dense_bug(kind: str) -> Callable:
    def backward(delta, a_prev, W, need_input_grad=True):
        nabla_w, nabla_b, da = _DENSE_BACKWARD(delta, a_prev, W, need_input_grad)
        if kind == "bias_axis":
            nabla_b = delta.sum(axis=1)
        elif kind == "bias_without_one_over_n":
            nabla_b = delta.sum(axis=0) * delta.shape[0]
        elif kind == "bp2_transpose" and da is not None and W.shape[0] == W.shape[1]:
            da = delta @ W.T
        return nabla_w, nabla_b, da
    return backward


def _bp4_uses_a_l(case, l, delta, a_prev, z, numbers, grads, gaps):
    da = _LAYER_BACKWARD(case, l, delta, a_prev, z, numbers, grads, gaps)
    spec = case.layers[l - 1]
    if isinstance(spec, Dense):
        a_l = activation(spec.activation)[0](z)
        if a_l.shape == a_prev.shape:
            grads[f"W{numbers[l]}"] = delta.T @ a_l  # BP4 with a^l for a^(l-1)
    return da


def _dropout_not_in_backward(case, l, delta, a_prev, z, numbers, grads, gaps):
    spec = case.layers[l - 1]
    if isinstance(spec, Dropout):
        return delta / np.asarray(1 - spec.p, delta.dtype)  # the mask forgotten
    return _LAYER_BACKWARD(case, l, delta, a_prev, z, numbers, grads, gaps)


_LAYER_BACKWARD = network._layer_backward
_DENSE_BACKWARD = dense.backward


def _square_mlps(n: int, seed: int) -> list[bo.Case]:
    """MLPs whose layers are all ``w x w`` (BP4 with ``a^l`` and a transposed BP2 keep their
    shapes there, so only the values can give them away)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, depth, batch = int(rng.integers(2, 6)), int(rng.integers(2, 4)), int(rng.integers(1, 5))
        acts = rng.choice(["sigmoid", "tanh"], size=depth)
        params = {}
        for k in range(1, depth + 1):
            params[f"W{k}"] = rng.normal(size=(w, w)) / np.sqrt(w)
            params[f"b{k}"] = rng.normal(size=w) * 0.1
        out.append(bo.Case(family="mlp", layers=tuple(bo.dense(w, a) for a in acts),
                           cost="quadratic", params=params, x=rng.normal(size=(batch, w)),
                           y=rng.uniform(size=(batch, w)), seed=seed))
    return out


# ---------------------------------------------------------------- conv / pooling

def _conv_input_grad_cropped_off_by_one(delta, a_prev, W, stride, padding):
    """conv.backward's input gradient read one cell too far into the padded full correlation
    (cropped at ``padding + 1`` instead of ``padding``)."""
    a_pad = conv.pad(a_prev, padding)
    n, o, ho, wo = delta.shape
    c, k = W.shape[1], W.shape[2]
    d_cols = (W.reshape(o, -1).T @ delta.reshape(n, o, -1)).reshape(n, c, k, k, ho, wo)
    parts = [(u, v, d_cols[:, :, u, v]) for u in range(k) for v in range(k)]
    big = conv.pad(conv.scatter_offsets(parts, a_pad.shape, stride), 1)
    h, w = a_prev.shape[2], a_prev.shape[3]
    p = padding + 2  # right: padding + 1 (the extra pad of 1); this is one cell too far
    return big[:, :, p:p + h, p:p + w]


def _conv_bug(kind: str) -> Callable:
    real = _CONV_BACKWARD

    def backward(delta, a_prev, W, stride, padding, need_input_grad=True):
        nabla_w, nabla_b, da = real(delta, a_prev, W, stride, padding, need_input_grad)
        k = W.shape[2]
        if kind == "input_grad_cropped_off_by_one" and da is not None:
            da = _conv_input_grad_cropped_off_by_one(delta, a_prev, W, stride, padding)
        elif kind == "padding_off_by_one" and padding >= 1:
            # x padded with one row/column too many on the top/left and one too few after
            a_pad = np.pad(a_prev, ((0, 0), (0, 0), (padding + 1, padding - 1),
                                    (padding + 1, padding - 1)))
            cols = conv.im2col(a_pad, k, stride)[..., :delta.shape[2] * delta.shape[3]]
            flat = delta.reshape(delta.shape[0], delta.shape[1], -1)
            nabla_w = (flat @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
        elif kind == "kernel_flipped":
            nabla_w = nabla_w[:, :, ::-1, ::-1]
        elif kind == "stride_ignored" and stride > 1:
            cols = conv.im2col(conv.pad(a_prev, padding), k, 1)
            cols = cols[..., :delta.shape[2] * delta.shape[3]]
            flat = delta.reshape(delta.shape[0], delta.shape[1], -1)
            nabla_w = (flat @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
        return nabla_w, nabla_b, da
    return backward


_CONV_BACKWARD = conv.backward
_POOL_BACKWARD = pooling.backward


def _pool_bug(kind: str) -> Callable:
    def backward(pool_kind, delta, a_prev, z, size, stride, index=None):
        if kind == "max_last_cell" and pool_kind == "max":
            index = np.full(delta.shape, size * size - 1, dtype=np.intp)
        elif kind == "max_next_cell" and pool_kind == "max":
            index = (pooling.max_route(a_prev, size, stride)[0] + 1) % (size * size)
        elif kind == "avg_not_divided" and pool_kind == "avg":
            parts = [(u, v, delta) for u, v, _ in pooling.offset_slices(a_prev, size, stride)]
            return conv.scatter_offsets(parts, a_prev.shape, stride)
        elif kind == "l2_times_z" and pool_kind == "l2":
            parts = [(u, v, delta * cell / np.maximum(z, 1e-300) ** 2)
                     for u, v, cell in pooling.offset_slices(a_prev, size, stride)]
            return conv.scatter_offsets(parts, a_prev.shape, stride)
        return _POOL_BACKWARD(pool_kind, delta, a_prev, z, size, stride, index)
    return backward


def _conv_layer(case: bo.Case, test: Callable[[Conv2d], bool]) -> int | None:
    found = [l for l in _layers_of(case, Conv2d) if test(case.layers[l - 1])]
    return max(found) if found else None


def _below_top_conv(case: bo.Case) -> int | None:
    """A wrong input gradient of conv ``l > 1`` corrupts ``delta^(l-1)``; an adapter returns
    gradients only, so the layer named is the highest parametrised one below ``l``."""
    from backprop_oracle.reference.case import parametrised

    top = _conv_layer(case, lambda s: True)
    below = [l for l, _ in parametrised(case.layers) if top is not None and l < top]
    return max(below) if below else None


# ---------------------------------------------------------------- graph

def _mul_own_input(g, ins, out):
    return g * ins[0], g * ins[1]  # each input times itself instead of the other


def _graph_ops_with(op: str, backward: Callable) -> dict:
    ops = dict(graph.OPS)
    ops[op] = graph.Op(graph.OPS[op].forward, backward)
    return ops


def _has_mul_of_distinct(case: bo.Case) -> bool:
    """A ``mul`` of two different inputs on the path to the output node."""
    live, stack = set(), [len(case.layers)]
    while stack:
        l = stack.pop()
        if l not in live:
            live.add(l)
            stack += [r for r in case.layers[l - 1].inputs if isinstance(r, int)]
    return any(case.layers[l - 1].op == "mul" and
               case.layers[l - 1].inputs[0] != case.layers[l - 1].inputs[1] for l in live)


# ---------------------------------------------------------------- numerical slips

def one_element(case: bo.Case, name: str = "W1", rel: float = 1e-3) -> bo.Result:
    """The reference with the largest-magnitude element of ``grads[name]`` off by ``rel``
    relative."""
    r = bo.backprop(case)
    g = r.grads[name].copy()
    i = np.unravel_index(int(np.argmax(np.abs(g))), g.shape)
    g[i] *= np.asarray(1 + rel, g.dtype)
    r.grads[name] = g
    return r


def scaled(case: bo.Case, factor: float = 1 + 1e-4) -> bo.Result:
    """The reference with every parameter gradient scaled by ``factor``."""
    r = bo.backprop(case)
    r.grads = {k: v * np.asarray(factor, v.dtype) for k, v in r.grads.items()}
    return r


# ---------------------------------------------------------------- training

def sgd_step(case: bo.Case, training: bo.Training, sign: float = 1.0, late: int = 0) -> list:
    """One step of PyTorch-convention momentum SGD; ``sign=-1`` flips the momentum term,
    ``late=1`` reads the schedule one step behind."""
    velocity = training.velocity or {k: np.zeros_like(w) for k, w in case.params.items()}
    grads = bo.backprop(case).grads
    eta = training.eta(max(training.start - late, 0))
    return [{k: case.params[k] - eta * (sign * training.mu * velocity[k] + grads[k])
             for k in case.params}]


# ---------------------------------------------------------------- the list

def _hidden_smooth(case: bo.Case) -> bool:
    return len(case.layers) >= 2 and case.layers[-2].activation in ("sigmoid", "tanh")


SMOOTH = {"activations": ["sigmoid", "tanh"], "dropout": False}

MUTANTS: list[Mutant] = [
    Mutant("sigma_prime_of_a", "mlp", patched((network, "_sigma_prime", _sigma_prime_of_a)),
           layer=lambda c: _top(c) - 1, applies=_hidden_smooth, constraints=SMOOTH),
    Mutant("bp2_without_sigma_prime", "mlp", patched((network, "_sigma_prime", _no_sigma_prime)),
           layer=lambda c: _top(c) - 1, applies=_hidden_smooth, constraints=SMOOTH),
    Mutant("bp1_without_sigma_prime", "mlp",
           patched((network, "cost", _cost_bug("bp1_no_sigma_prime"))), layer=_top,
           constraints={**SMOOTH, "costs": ["quadratic"]}),
    Mutant("missing_one_over_m", "mlp", patched((network, "cost", _cost_bug("no_mean"))),
           layer=_top, applies=lambda c: c.batch >= 2, constraints={"dropout": False}),
    Mutant("bias_gradient_wrong_axis", "mlp",
           patched((dense, "backward", _dense_bug("bias_axis"))), layer=_top,
           constraints={"dropout": False}),
    Mutant("bias_gradient_without_one_over_n", "mlp",
           patched((dense, "backward", _dense_bug("bias_without_one_over_n"))), layer=_top,
           applies=lambda c: c.batch >= 2, constraints={"dropout": False}),
    Mutant("bp4_a_l_for_a_l_minus_1", "mlp",
           patched((network, "_layer_backward", _bp4_uses_a_l)), layer=_top, draw=_square_mlps),
    Mutant("bp2_transposed_weight", "mlp",
           patched((dense, "backward", _dense_bug("bp2_transpose"))),
           layer=lambda c: _top(c) - 1, draw=_square_mlps),
    Mutant("softmax_gradient_t_minus_y", "softmax",
           patched((network, "cost", _cost_bug("t_minus_y"))), layer=_top),
    Mutant("conv_padding_off_by_one", "cnn",
           patched((conv, "backward", _conv_bug("padding_off_by_one"))),
           layer=lambda c: _conv_layer(c, lambda s: s.padding >= 1),
           applies=lambda c: _conv_layer(c, lambda s: s.padding >= 1) is not None),
    Mutant("conv_input_gradient_cropped_off_by_one", "cnn",
           patched((conv, "backward", _conv_bug("input_grad_cropped_off_by_one"))),
           layer=_below_top_conv, applies=lambda c: _below_top_conv(c) is not None),
    Mutant("conv_kernel_flipped", "cnn",
           patched((conv, "backward", _conv_bug("kernel_flipped"))),
           layer=lambda c: _conv_layer(c, lambda s: s.kernel >= 2),
           applies=lambda c: _conv_layer(c, lambda s: s.kernel >= 2) is not None),
    Mutant("conv_stride_ignored_in_backward", "cnn",
           patched((conv, "backward", _conv_bug("stride_ignored"))),
           layer=lambda c: _conv_layer(c, lambda s: s.stride >= 2),
           applies=lambda c: _conv_layer(c, lambda s: s.stride >= 2) is not None),
    Mutant("maxpool_gradient_to_last_cell", "cnn",
           patched((pooling, "backward", _pool_bug("max_last_cell"))),
           layer=lambda c: max(_pool_layers(c, ("max",))) - 1,
           applies=lambda c: bool(_pool_layers(c, ("max",))), constraints={"pools": ["max"]}),
    Mutant("maxpool_gradient_to_the_cell_after_the_argmax", "cnn",
           patched((pooling, "backward", _pool_bug("max_next_cell"))),
           layer=lambda c: max(_pool_layers(c, ("max",))) - 1,
           applies=lambda c: bool(_pool_layers(c, ("max",))), constraints={"pools": ["max"]}),
    Mutant("avgpool_gradient_not_divided", "cnn",
           patched((pooling, "backward", _pool_bug("avg_not_divided"))),
           layer=lambda c: max(_pool_layers(c, ("avg",))) - 1,
           applies=lambda c: bool(_pool_layers(c, ("avg",))), constraints={"pools": ["avg"]}),
    Mutant("l2pool_gradient_over_z_squared", "cnn",
           patched((pooling, "backward", _pool_bug("l2_times_z"))),
           layer=lambda c: max(_pool_layers(c, ("l2",), min_size=1)) - 1,
           applies=lambda c: bool(_pool_layers(c, ("l2",), min_size=1)),
           constraints={"pools": ["l2"]}),
    Mutant("dropout_mask_not_applied_in_backward", "mlp",
           patched((network, "_layer_backward", _dropout_not_in_backward)),
           layer=lambda c: max(_layers_of(c, Dropout)) - 1,
           applies=lambda c: any(not m.all() for m in c.masks.values())),
    Mutant("graph_mul_times_own_input", "graph",
           patched((graph, "OPS", _graph_ops_with("mul", _mul_own_input))),
           applies=_has_mul_of_distinct),
    Mutant("one_element_off_1e-3", "mlp", Adapter(one_element),
           layer=lambda c: _param_layer(c, "W1"), constraints={"dropout": False}),
    Mutant("all_gradients_scaled_1e-4", "mlp", Adapter(scaled), layer=_top,
           constraints={"dropout": False}),
    Mutant("momentum_wrong_sign", "mlp", lambda c, t: sgd_step(c, t, sign=-1.0), training=True),
    Mutant("schedule_one_step_late", "mlp", lambda c, t: sgd_step(c, t, late=1), training=True),
]

BY_NAME = {m.name: m for m in MUTANTS}

# The names tests/properties/comparison/test_compare.py gives the planted bugs it locates on
# its fixed cases -> the catalogue entry implementing the bug (the two suites had a copy each).
# Its "conv_padding_off_by_one" is the input-gradient bug, not the catalogue entry of that name
# (a wrong weight gradient), which would be located one layer higher.
COMPARISON_NAMES = {
    "sigma_prime_of_a": "sigma_prime_of_a",
    "bp1_without_sigma_prime": "bp1_without_sigma_prime",
    "missing_one_over_m": "missing_one_over_m",
    "bias_wrong_axis": "bias_gradient_wrong_axis",
    "conv_padding_off_by_one": "conv_input_gradient_cropped_off_by_one",
    "maxpool_wrong_cell": "maxpool_gradient_to_last_cell",
    "one_element_1e-3": "one_element_off_1e-3",
    "scale_1e-4": "all_gradients_scaled_1e-4",
}
RESULTS: dict[str, Callable[[bo.Case], bo.Result]] = {
    name: BY_NAME[entry].result for name, entry in COMPARISON_NAMES.items()}


def correct(case: bo.Case) -> dict:
    return dict(bo.backprop(case).grads)
