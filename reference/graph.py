"""The computational-graph engine of seed 002.

Each node is a local computation with a local backward rule: the upstream derivative times
the node's local derivative goes to each input; where a value feeds several nodes, their
contributions add ("forward split, backward merge"). Nodes are evaluated in topological
order and differentiated in reverse. Inputs are ``"x"``, leaves ``"p<i>"`` of shape ``(k,)``
broadcast over the batch, earlier nodes (1-based ``int``), or constants (``float``).

The graph's last node is the output ``a``; the case's cost turns it into the loss:
quadratic, or softmax-with-loss, whose backward is ``y - t`` (divided by the batch size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

from .activations import sigmoid
from .case import Case, CaseError, Node, graph_nodes, layer_name
from .costs import cost
from .result import Result

Array = NDArray[np.floating]


@dataclass(frozen=True)
class Op:
    """``forward(*inputs) -> out`` and ``backward(upstream, inputs, out) -> input grads``."""

    forward: Callable[..., Array]
    backward: Callable[[Array, tuple[Array, ...], Array], tuple[Array, ...]]


OPS: dict[str, Op] = {
    # add passes the upstream derivative through unchanged
    "add": Op(lambda a, b: a + b, lambda g, ins, out: (g, g)),
    # mul multiplies it by the *other* input (the "flipped" value)
    "mul": Op(lambda a, b: a * b, lambda g, ins, out: (g * ins[1], g * ins[0])),
    "div": Op(lambda a, b: a / b, lambda g, ins, out: (g / ins[1], -g * out / ins[1])),
    "neg": Op(lambda a: -a, lambda g, ins, out: (-g,)),
    "exp": Op(np.exp, lambda g, ins, out: (g * out,)),
    # d(1/x)/dx = -1/x^2 = -out^2
    "reciprocal": Op(lambda a: 1 / a, lambda g, ins, out: (-g * out ** 2,)),
    "log": Op(np.log, lambda g, ins, out: (g / ins[0],)),
    # sigmoid node: upstream * y (1 - y)
    "sigmoid": Op(sigmoid, lambda g, ins, out: (g * out * (1 - out),)),
}

Ref: TypeAlias = str | int | float


def _unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes that broadcasting added to an input of ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    return grad


def _domain_error(spec: Node, ins: tuple[Array, ...]) -> str | None:
    if spec.op == "log" and np.any(ins[0] <= 0):
        return "log of a non-positive value"
    if spec.op in ("div", "reciprocal") and np.any(ins[-1] == 0):
        return "division by zero"
    return None


def node_inputs(case: Case, refs: tuple[Ref, ...], values: list[Array]) -> tuple[Array, ...]:
    """The input arrays of a node: ``"x"`` -> ``case.x``, a leaf ``"p<i>"`` -> its parameter,
    a constant -> a 0-d array of the case dtype, node ``j`` -> ``values[j - 1]``."""
    def value(ref: Ref) -> Array:
        if isinstance(ref, str):
            return case.x if ref == "x" else case.params[ref]
        if isinstance(ref, float):
            return np.asarray(ref, dtype=case.dtype)
        return values[ref - 1]

    return tuple(value(r) for r in refs)


def forward(case: Case) -> list[Array]:
    """Values of every node, in order (node ``l`` at index ``l - 1``)."""
    values: list[Array] = []
    for l, spec in enumerate(graph_nodes(case), 1):
        ins = node_inputs(case, spec.inputs, values)
        problem = _domain_error(spec, ins)
        if problem:
            raise CaseError(f"node {l} ({layer_name(spec)}): {problem}")
        with np.errstate(over="ignore"):
            out = OPS[spec.op].forward(*ins)
        if not np.all(np.isfinite(out)):
            raise CaseError(f"node {l} ({layer_name(spec)}) produced a non-finite value")
        values.append(np.asarray(out, dtype=case.dtype))
    return values


def backprop(case: Case) -> Result:
    """Loss, leaf gradients, and ``delta<l> = dC/d(node l)`` for a graph case."""
    values = forward(case)
    out = np.broadcast_to(values[-1], case.y.shape)
    loss, delta_out = cost(case.cost)(out, out, case.y, "identity")
    node_grads = [np.zeros_like(v) for v in values]
    node_grads[-1] = _unbroadcast(delta_out, values[-1].shape)
    leaf_grads = {name: np.zeros_like(p) for name, p in case.params.items()}
    for l in range(len(case.layers), 0, -1):
        spec = graph_nodes(case)[l - 1]
        ins = node_inputs(case, spec.inputs, values)
        local = OPS[spec.op].backward(node_grads[l - 1], ins, values[l - 1])
        for ref, grad, inp in zip(spec.inputs, local, ins, strict=True):
            grad = _unbroadcast(grad, inp.shape)
            if isinstance(ref, int):
                node_grads[ref - 1] = node_grads[ref - 1] + grad
            elif isinstance(ref, str) and ref != "x":
                leaf_grads[ref] = leaf_grads[ref] + grad
    return Result(
        loss=float(loss),
        grads=leaf_grads,
        deltas={f"delta{l}": g for l, g in enumerate(node_grads, 1)},
        activations={f"a{l}": v for l, v in enumerate(values, 1)},
        zs={f"z{l}": v for l, v in enumerate(values, 1)},
        meta={"method": "reference"},
    )
