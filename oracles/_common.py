"""Framework-neutral helpers shared by the PyTorch and JAX oracles.

Only the case model is used here (shapes, layer specs); nothing computes a derivative.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..reference.case import (
    Case,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Pool,
    graph_nodes,
    layer_shapes,
    parametrised,
)
from ..reference.graph import Ref
from ..reference.result import Result

MODES = ("reverse", "forward")
PRECISIONS = ("strict", "default")
CHUNK_ELEMENTS = 1 << 22  # forward mode: basis chunk x work per direction stays below this


class OracleDtypeError(TypeError):
    """A framework returned an array whose dtype is not the one requested."""


def check_choice(value: str, options: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``options``, else a ``ValueError`` naming ``what``."""
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r}")
    return value


def z_shapes(case: Case) -> list[tuple[int, ...]]:
    """The shape of ``z^l`` (graph: node ``l``'s value) for every layer, batch included."""
    if case.family == "graph":
        return graph_shapes(case)
    shapes = layer_shapes(case.layers, case.x.shape[1:])
    return [(case.batch, *shapes[f"z{l}"]) for l in range(1, len(case.layers) + 1)]


def graph_shapes(case: Case) -> list[tuple[int, ...]]:
    """Broadcast shape of each graph node: ``x`` is ``(N, k)``, leaves ``(k,)``, constants
    ``()``."""
    shapes: list[tuple[int, ...]] = []
    for spec in graph_nodes(case):
        ins = [_ref_shape(case, ref, shapes) for ref in spec.inputs]
        shapes.append(tuple(np.broadcast_shapes(*ins)))
    return shapes


def _ref_shape(case: Case, ref: Ref, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    if isinstance(ref, str):
        return tuple(case.x.shape) if ref == "x" else tuple(case.params[ref].shape)
    if isinstance(ref, float):
        return ()
    return shapes[int(ref) - 1]


def chunk_size(n_directions: int, work_per_direction: int) -> int:
    """How many basis directions one vectorised forward-mode pass takes."""
    per = max(1, work_per_direction + n_directions)
    return int(max(1, min(n_directions, CHUNK_ELEMENTS // per)))


def forward_work(case: Case) -> int:
    """Elements touched by one forward pass (activations plus parameters), per direction."""
    acts = sum(int(np.prod(s)) for s in z_shapes(case))
    return acts + int(case.x.size) + sum(int(p.size) for p in case.params.values())


def assert_dtypes(result: Result, dtype: str, label: str) -> Result:
    """Raise ``OracleDtypeError`` unless every gradient, delta, z and activation is ``dtype``."""
    for group in ("grads", "deltas", "zs", "activations", "input_grads"):
        for name, value in getattr(result, group).items():
            if np.asarray(value).dtype != np.dtype(dtype):
                raise OracleDtypeError(
                    f"{label}: {group[:-1]} {name} came back as {np.asarray(value).dtype}, "
                    f"but {dtype} was requested")
    return result


def base_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__}


def sorted_keys(d: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``d`` ordered by the layer number after ``prefix``."""
    return dict(sorted(d.items(), key=lambda kv: int(kv[0][len(prefix):])))


# --- the model walk, written once over a table of framework ops ---------------------------
#
# ``ops`` maps names to a framework's own functions: ``linear(a, W, b)``, ``conv(a, W, b,
# stride, padding)``, ``max_pool/avg_pool/l2_pool(a, size, stride)``, ``flatten(a)``,
# ``dropout(a, mask, p)``, each activation name, each graph op name, ``const(value)``,
# ``broadcast(v, shape)`` and each cost name ``(z, a, y) -> loss``. The walk only composes them,
# so every derivative comes from the framework.


def network_forward(case: Case, params: Mapping, x: object, y: object, masks: Mapping,
                    ops: Mapping, offsets: list | None = None, hook=None,
                    a_offsets: list | None = None) -> tuple[Any, list, list]:
    """``(loss, zs, activations)`` with ``activations[0] = x``; ``z^l += offsets[l-1]``
    when given (deltas by differentiating w.r.t. a zero offset), ``a^l += a_offsets[l-1]``
    likewise for ``l < L`` (the input gradients ``dC/da^l``); ``hook(z)`` sees each z."""
    numbers = dict(parametrised(case.layers))
    a, zs, acts = x, [], [x]
    for l, spec in enumerate(case.layers, 1):
        z = _layer(spec, l, a, params, masks, numbers, ops)
        if offsets is not None:
            z = z + offsets[l - 1]
        if hook is not None:
            z = hook(z)
        a = ops[spec.activation](z) if isinstance(spec, (Dense, Conv2d)) else z
        zs.append(z)
        acts.append(a)  # as computed: the offset below must not hide its dtype
        if a_offsets is not None and l < len(case.layers):
            a = a + a_offsets[l - 1]
    return ops[case.cost](zs[-1], acts[-1], y), zs, acts


def _layer(spec: object, l: int, a: object, params: Mapping, masks: Mapping,
           numbers: dict[int, int], ops: Mapping) -> object:
    if isinstance(spec, Dense):
        return ops["linear"](a, params[f"W{numbers[l]}"], params[f"b{numbers[l]}"])
    if isinstance(spec, Conv2d):
        return ops["conv"](a, params[f"W{numbers[l]}"], params[f"b{numbers[l]}"],
                           spec.stride, spec.padding)
    if isinstance(spec, Pool):
        return ops[f"{spec.kind}_pool"](a, spec.size, spec.stride)
    if isinstance(spec, Flatten):
        return ops["flatten"](a)
    if isinstance(spec, Dropout):
        return ops["dropout"](a, masks[f"mask{l}"], spec.p)
    raise ValueError(f"layer {l}: {type(spec).__name__} is not a network layer")


def graph_forward(case: Case, params: Mapping, x: object, y: object, ops: Mapping,
                  offsets: list | None = None, hook=None) -> tuple[Any, list, list]:
    """``(loss, values, values)``: node ``l``'s value at index ``l - 1``; the last node,
    broadcast to the targets' shape, is the output the cost sees."""
    values: list = []
    for l, spec in enumerate(graph_nodes(case), 1):
        ins = [_graph_input(ref, params, x, values, ops) for ref in spec.inputs]
        v = ops[spec.op](*ins)
        if offsets is not None:
            v = v + offsets[l - 1]
        if hook is not None:
            v = hook(v)
        values.append(v)
    out = ops["broadcast"](values[-1], tuple(case.y.shape))
    return ops[case.cost](out, out, y), values, values


def _graph_input(ref: Ref, params: Mapping, x: object, values: list, ops: Mapping) -> object:
    if isinstance(ref, str):
        return x if ref == "x" else params[ref]
    if isinstance(ref, float):
        return ops["const"](ref)
    return values[int(ref) - 1]


def model_forward(case: Case, params: Mapping, x: object, y: object, masks: Mapping,
                  ops: Mapping, offsets: list | None = None, hook=None,
                  a_offsets: list | None = None) -> tuple[Any, list, list]:
    """``(loss, zs, activations)`` for any family (``a_offsets``: layered networks only)."""
    if case.family == "graph":
        return graph_forward(case, params, x, y, ops, offsets, hook)
    return network_forward(case, params, x, y, masks, ops, offsets, hook, a_offsets)


def output_of(case: Case, params: Mapping, x: object, y: object, masks: Mapping,
              ops: Mapping) -> object:
    """The network output ``z^L`` (graph: the last node's value), for the adjoint check."""
    return model_forward(case, params, x, y, masks, ops)[1][-1]


def result_from(case: Case, loss: float, grads: dict, deltas: list, zs: list, acts: list,
                meta: dict, input_grads: list | None = None) -> Result:
    """A ``Result`` keyed like the reference's (``a0 = x`` for layered networks;
    ``input_grads[l-1] = dC/da^l`` for ``l = 1..L-1`` when given)."""
    first = 1 if case.family == "graph" else 0
    return Result(
        input_grads={f"da{l}": g for l, g in enumerate(input_grads or [], 1)},
        loss=float(loss),
        grads={k: grads[k] for k in case.params},
        deltas={f"delta{l}": d for l, d in enumerate(deltas, 1)},
        activations={f"a{l}": a for l, a in enumerate(acts, first)},
        zs={f"z{l}": z for l, z in enumerate(zs, 1)},
        meta=meta,
    )
