"""Framework-neutral helpers shared by the PyTorch and JAX oracles.

Only the case model is used here (shapes, layer specs); nothing computes a derivative.
"""

from __future__ import annotations

import platform
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

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
CHUNK_ELEMENTS = 1 << 22  # forward mode: directions per pass x work per direction below this
DIRECTIONS = 4  # forward mode: random directions per tensor (docs/design.md "Forward mode")


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


def check_directions(k: object) -> int:
    """``k`` as a count of forward-mode directions per tensor (0: the whole basis)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"directions must be a non-negative integer (0: every basis "
                         f"direction), got {k!r}")
    return int(k)


def tangent_blocks(case: Case) -> dict[str, tuple[int, ...]]:
    """The tensors forward mode differentiates with respect to, in order: every parameter,
    then a zero offset on every ``z^l`` (its derivative is ``delta<l>``)."""
    blocks = {name: tuple(p.shape) for name, p in case.params.items()}
    blocks.update({f"delta{l}": s for l, s in enumerate(z_shapes(case), 1)})
    return blocks


def rademacher(case: Case, name: str, shape: tuple[int, ...], k: int) -> np.ndarray:
    """``k`` random sign tensors (entries +-1, ``int8``) of ``shape``, fixed by the case and the
    tensor's name: the directions forward mode checks ``name``'s derivative along."""
    seed = [zlib.crc32(case.case_id.encode()), zlib.crc32(name.encode())]
    signs = np.random.default_rng(seed).integers(0, 2, size=(k, *shape), dtype=np.int8)
    return 2 * signs - 1


class Directions(NamedTuple):
    """The directions forward mode takes for one tensor: ``n`` of them, ``rows(start, stop)``
    giving those rows (leading axis), and whether they are its whole basis."""

    n: int
    rows: Callable[[int, int], np.ndarray]
    basis: bool


def forward_rows(case: Case, k: int) -> dict[str, Directions]:
    """The directions forward mode takes per tensor: ``k`` random sign tensors
    (``rademacher``), or the whole basis for a tensor of at most ``k`` elements (as cheap, and
    exact per element); ``k = 0``: the whole basis of every tensor."""
    rows = {}
    for name, shape in tangent_blocks(case).items():
        size = int(np.prod(shape))
        rows[name] = basis_rows(shape) if not k or size <= k else \
            given_rows(rademacher(case, name, shape, k))
    return rows


def forward_found(case: Case, values: Mapping[str, np.ndarray],
                  rows: Mapping[str, Directions]) -> dict[str, Any]:
    """Per tensor, what ``forward_result`` takes: the derivative (basis directions) or
    ``{"u": directions, "values": tangents}``."""
    blocks = tangent_blocks(case)
    return {name: v.reshape(blocks[name]) if rows[name].basis else
            {"u": rows[name].rows(0, rows[name].n), "values": v}
            for name, v in values.items()}


def basis_rows(shape: tuple[int, ...]) -> Directions:
    """Every basis direction of a tensor of ``shape``."""
    n = int(np.prod(shape))

    def rows(start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, n), dtype=np.int8)
        out[np.arange(stop - start), np.arange(start, stop)] = 1
        return out.reshape(stop - start, *shape)

    return Directions(n, rows, True)


def given_rows(directions: np.ndarray) -> Directions:
    """The directions in ``directions`` (leading axis: one per direction)."""
    return Directions(len(directions), lambda start, stop: directions[start:stop], False)


def tangent_chunks(blocks: Mapping[str, tuple[int, ...]], rows: Mapping[str, Directions],
                   chunk: int, dtype: str) -> Iterator[dict[str, np.ndarray]]:
    """Tangents for ``chunk`` directions at a time (the last chunk padded with zero rows): each
    tensor in ``rows`` contributes its directions in its own block, zero in all others; every
    tensor of ``blocks`` is present, with leading axis ``chunk``."""
    spans, total = {}, 0
    for name, d in rows.items():
        spans[name] = (total, total + d.n)
        total += d.n
    for start in range(0, total, chunk):
        out = {name: np.zeros((chunk, *shape), dtype=dtype) for name, shape in blocks.items()}
        for name, (lo, hi) in spans.items():
            a, b = max(lo, start), min(hi, start + chunk)
            if a < b:
                out[name][a - start:b - start] = rows[name].rows(a - lo, b - lo)
        yield out


def split_values(values: np.ndarray, rows: Mapping[str, Directions]) -> dict[str, np.ndarray]:
    """The concatenated per-direction values back per tensor, in ``rows``' order."""
    out, start = {}, 0
    for name, d in rows.items():
        out[name] = values[start:start + d.n]
        start += d.n
    return out


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


def result_from(case: Case, loss: float, grads: dict, deltas: list | dict, zs: list,
                acts: list, meta: dict, input_grads: list | None = None) -> Result:
    """A ``Result`` keyed like the reference's (``a0 = x`` for layered networks;
    ``input_grads[l-1] = dC/da^l`` for ``l = 1..L-1`` when given). ``grads`` may hold only some
    parameters and ``deltas`` (a list from layer 1, or a dict by name) only some layers: forward
    mode by directions returns the tensors it localised, and nothing else."""
    first = 1 if case.family == "graph" else 0
    if isinstance(deltas, list):
        deltas = {f"delta{l}": d for l, d in enumerate(deltas, 1)}
    return Result(
        input_grads={f"da{l}": g for l, g in enumerate(input_grads or [], 1)},
        loss=float(loss),
        grads={k: grads[k] for k in case.params if k in grads},
        deltas=deltas,
        activations={f"a{l}": a for l, a in enumerate(acts, first)},
        zs={f"z{l}": z for l, z in enumerate(zs, 1)},
        meta=meta,
    )


def forward_result(case: Case, loss: float, found: Mapping[str, Any], zs: list, acts: list,
                   meta: dict, directions: int) -> Result:
    """A forward-mode ``Result``: the tensors ``found`` in full among ``grads`` / ``deltas``;
    those found by directions in ``meta["directional"][name] = {"u": k sign tensors,
    "values": k loss tangents}`` (and ``meta["directions"] = k``)."""
    full = {n: v for n, v in found.items() if not isinstance(v, dict)}
    directional = {n: v for n, v in found.items() if isinstance(v, dict)}
    if directions:
        meta = {**meta, "directions": directions, "directional": directional}
    grads = {n: v for n, v in full.items() if n in case.params}
    deltas = {n: v for n, v in full.items() if n not in case.params}
    return result_from(case, loss, grads, deltas, zs, acts, meta)
