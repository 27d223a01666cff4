"""The framework-neutral problem instance: layer specs, graph nodes, and ``Case``.

A ``Case`` is validated when it is built, so every later stage (reference, oracles,
reports) can rely on consistent shapes. Bad input raises ``CaseError`` (a ``ValueError``)
whose message names the layer index or parameter and what was expected versus found.

Conventions (docs/design.md): batch-first arrays; dense ``W`` is ``(out, in)``; conv ``W`` is
``(out_channels, in_channels, k, k)`` and convolution is cross-correlation; parameters are
named ``W1, b1, W2, b2, ...`` by parametrised layer counting from 1; graph leaves are named
``p1, p2, ...``; layers (and graph nodes) are indexed from 1 in messages and result keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias, cast

import numpy as np
from numpy.typing import NDArray

ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
COST_NAMES = ("quadratic", "cross_entropy", "softmax_cross_entropy")
FAMILY_NAMES = ("mlp", "cnn", "softmax", "graph")
POOL_KINDS = ("max", "avg", "l2")
DTYPES = ("float32", "float64")
LEAKY_SLOPE = 0.01  # leaky_relu(z) = z for z > 0, else LEAKY_SLOPE * z
GRAPH_OPS = {  # op -> number of inputs (seed 002's nodes)
    "add": 2,
    "mul": 2,
    "div": 2,
    "neg": 1,
    "exp": 1,
    "reciprocal": 1,
    "log": 1,
    "sigmoid": 1,
}


class CaseError(ValueError):
    """A case, a layer spec or an array does not make a valid problem instance."""


def _positive_int(value: object, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise CaseError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _known(value: str, names: tuple[str, ...], what: str) -> str:
    if value not in names:
        raise CaseError(f"unknown {what} {value!r}; expected one of {', '.join(names)}")
    return value


@dataclass(frozen=True)
class Dense:
    """Fully connected layer: ``z = a W^T + b`` (batch-first), ``a = activation(z)``."""

    units: int
    activation: str = "sigmoid"

    def __post_init__(self) -> None:
        _positive_int(self.units, "dense units")
        _known(self.activation, ACTIVATION_NAMES, "activation")


@dataclass(frozen=True)
class Conv2d:
    """2-D cross-correlation with square kernel, stride and symmetric zero padding."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    activation: str = "relu"

    def __post_init__(self) -> None:
        _positive_int(self.out_channels, "conv2d out_channels")
        _positive_int(self.kernel, "conv2d kernel")
        _positive_int(self.stride, "conv2d stride")
        _positive_int(self.padding, "conv2d padding", minimum=0)
        _known(self.activation, ACTIVATION_NAMES, "activation")


@dataclass(frozen=True)
class Pool:
    """Max, average or L2 pooling over ``size x size`` windows, no padding."""

    kind: str
    size: int
    stride: int

    def __post_init__(self) -> None:
        _known(self.kind, POOL_KINDS, "pool kind")
        _positive_int(self.size, f"{self.kind}pool size")
        _positive_int(self.stride, f"{self.kind}pool stride")


@dataclass(frozen=True)
class Flatten:
    """Reshape ``(N, C, H, W)`` to ``(N, C*H*W)``."""


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with an explicit mask from ``Case.masks``: ``a * mask / (1 - p)``."""

    p: float

    def __post_init__(self) -> None:
        if not (isinstance(self.p, (int, float)) and 0.0 <= self.p < 1.0):
            raise CaseError(f"dropout p must be a number in [0, 1), got {self.p!r}")


@dataclass(frozen=True)
class Node:
    """A computational-graph node (seed 002). Inputs are ``"x"``, a leaf name ``"p<i>"``,
    the 1-based index (``int``) of an earlier node, or a constant (``float``)."""

    op: str
    inputs: tuple[str | int | float, ...]

    def __post_init__(self) -> None:
        _known(self.op, tuple(GRAPH_OPS), "graph op")
        if len(self.inputs) != GRAPH_OPS[self.op]:
            raise CaseError(
                f"graph op {self.op!r} takes {GRAPH_OPS[self.op]} input(s), got {len(self.inputs)}"
            )


Layer: TypeAlias = Dense | Conv2d | Pool | Flatten | Dropout
Spec: TypeAlias = Layer | Node


def dense(units: int, activation: str = "sigmoid") -> Dense:
    return Dense(units, activation)


def conv2d(
    out_channels: int, kernel: int, stride: int = 1, padding: int = 0, activation: str = "relu"
) -> Conv2d:
    return Conv2d(out_channels, kernel, stride, padding, activation)


def maxpool(size: int, stride: int | None = None) -> Pool:
    return Pool("max", size, size if stride is None else stride)


def avgpool(size: int, stride: int | None = None) -> Pool:
    return Pool("avg", size, size if stride is None else stride)


def l2pool(size: int, stride: int | None = None) -> Pool:
    return Pool("l2", size, size if stride is None else stride)


def flatten() -> Flatten:
    return Flatten()


def dropout(p: float) -> Dropout:
    return Dropout(p)


def node(op: str, *inputs: str | int | float) -> Node:
    return Node(op, tuple(inputs))


def layer_name(spec: Spec) -> str:
    """Short human-readable spec string, e.g. ``dense(10, relu)``."""
    if isinstance(spec, Dense):
        return f"dense({spec.units}, {spec.activation})"
    if isinstance(spec, Conv2d):
        return (
            f"conv2d({spec.out_channels}, k={spec.kernel}, s={spec.stride}, "
            f"p={spec.padding}, {spec.activation})"
        )
    if isinstance(spec, Pool):
        return f"{spec.kind}pool({spec.size}, s={spec.stride})"
    if isinstance(spec, Flatten):
        return "flatten()"
    if isinstance(spec, Dropout):
        return f"dropout({spec.p})"
    return f"{spec.op}({', '.join(map(str, spec.inputs))})"


def layer_kind(spec: Spec) -> str:
    """The constructor's name: ``dense``, ``conv2d``, ``maxpool`` / ``avgpool`` / ``l2pool``,
    ``flatten``, ``dropout`` or ``node`` (a ``Pool`` is one class with a ``kind``)."""
    if isinstance(spec, Pool):
        return f"{spec.kind}pool"
    return type(spec).__name__.lower()


@dataclass(frozen=True)
class LayerInfo:
    """One layer (or graph node) of a case, as ``Case.walk()`` yields it.

    ``index``: from 1, as in ``delta<index>`` and ``mask<index>``; ``spec``: the frozen spec
    (``isinstance(info.spec, bo.Dense)``); ``kind``: ``layer_kind(spec)``; ``number``: the
    parameter number of a dense / conv layer (``W<number>``, ``b<number>``), else ``None``;
    ``params``: name -> the case's (read-only) array (dense / conv: ``W`` and ``b``; a graph
    node: the leaves it reads; else empty); ``input_shape`` / ``output_shape``: per sample,
    without the batch axis, in the reference's layout (``(C, H, W)`` or ``(features,)``);
    ``mask``: the name of a dropout layer's mask in ``case.masks``, else ``None``;
    ``delta``: the key of this layer's ``dC/dz`` in ``Result.deltas``."""

    index: int
    spec: Spec
    kind: str
    number: int | None
    params: Mapping[str, NDArray[np.floating]]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    mask: str | None = None

    @property
    def delta(self) -> str:
        return f"delta{self.index}"


def parametrised(layers: tuple[Spec, ...]) -> list[tuple[int, int]]:
    """``(layer index from 1, parameter number from 1)`` for each dense/conv layer."""
    numbered = [i for i, s in enumerate(layers, 1) if isinstance(s, (Dense, Conv2d))]
    return [(index, number) for number, index in enumerate(numbered, 1)]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a strided window over a padded axis: ``(n + 2p - k) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def layer_shapes(layers: tuple[Spec, ...], input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Expected parameter shapes and per-layer output shapes (``"z<l>"``), validating geometry.

    ``input_shape`` excludes the batch axis.
    """
    shapes: dict[str, tuple] = {}
    shape = tuple(input_shape)
    number = 0
    for l, spec in enumerate(layers, 1):
        where = f"layer {l} ({layer_name(spec)})"
        if isinstance(spec, Dense):
            if len(shape) != 1:
                raise CaseError(f"{where} needs 2-D input (N, features), got (N, {shape}); "
                                "insert flatten() first")
            number += 1
            shapes[f"W{number}"] = (spec.units, shape[0])
            shapes[f"b{number}"] = (spec.units,)
            shape = (spec.units,)
        elif isinstance(spec, Conv2d):
            if len(shape) != 3:
                raise CaseError(f"{where} needs 4-D input (N, C, H, W), got (N, {shape})")
            c, h, w = shape
            if spec.kernel > min(h, w) + 2 * spec.padding:
                raise CaseError(f"{where}: kernel {spec.kernel} is larger than the padded input "
                                f"{h + 2 * spec.padding}x{w + 2 * spec.padding}")
            number += 1
            shapes[f"W{number}"] = (spec.out_channels, c, spec.kernel, spec.kernel)
            shapes[f"b{number}"] = (spec.out_channels,)
            shape = (spec.out_channels,
                     conv_output_size(h, spec.kernel, spec.stride, spec.padding),
                     conv_output_size(w, spec.kernel, spec.stride, spec.padding))
        elif isinstance(spec, Pool):
            if len(shape) != 3:
                raise CaseError(f"{where} needs 4-D input (N, C, H, W), got (N, {shape})")
            c, h, w = shape
            if spec.size > min(h, w):
                raise CaseError(f"{where}: window {spec.size}x{spec.size} does not fit the "
                                f"{h}x{w} input")
            shape = (c, conv_output_size(h, spec.size, spec.stride, 0),
                     conv_output_size(w, spec.size, spec.stride, 0))
        elif isinstance(spec, Flatten):
            if len(shape) != 3:
                raise CaseError(f"{where} needs 4-D input (N, C, H, W), got (N, {shape})")
            shape = (int(np.prod(shape)),)
        elif isinstance(spec, Dropout):
            pass
        else:
            raise CaseError(f"{where}: graph nodes only belong to the 'graph' family")
        shapes[f"z{l}"] = shape
    return shapes


def _as_array(value: object, what: str, dtype: np.dtype | None) -> NDArray[np.floating]:
    if not isinstance(value, np.ndarray):
        raise CaseError(f"{what} must be a numpy array, got {type(value).__name__}")
    if value.dtype.name not in DTYPES:
        raise CaseError(f"{what} must be float32 or float64, got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise CaseError(f"{what} has dtype {value.dtype}, but the case dtype is {dtype}")
    if not np.all(np.isfinite(value)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise CaseError(f"{what} has a non-finite value at index {bad}")
    frozen = np.array(value, copy=True)
    frozen.setflags(write=False)
    return frozen


def _expect_shape(array: NDArray, expected: tuple, what: str) -> None:
    if array.shape != tuple(expected):
        raise CaseError(f"{what} has shape {array.shape}, expected {tuple(expected)}")


@dataclass(frozen=True, eq=False)
class Case:
    """One problem instance. See docs/design.md "Contracts".

    ``family``: ``mlp | cnn | softmax | graph``; ``layers``: layer specs (or graph ``Node``s,
    in topological order, the last one being the output); ``cost``: ``quadratic |
    cross_entropy | softmax_cross_entropy``; ``params``: name -> array; ``x``: inputs,
    batch-first; ``y``: targets shaped like the output; ``masks``: ``"mask<l>"`` -> 0/1 array
    for each dropout layer ``l``. ``dtype`` defaults to the arrays' dtype; ``case_id`` is a
    hash of spec and arrays.
    """

    family: str
    layers: tuple[Spec, ...]
    cost: str
    params: Mapping[str, NDArray[np.floating]]
    x: NDArray[np.floating]
    y: NDArray[np.floating]
    masks: Mapping[str, NDArray[np.floating]] = field(default_factory=dict)
    # None (the default) means the arrays' dtype: __post_init__ always replaces it by a name
    # from DTYPES, so the attribute is typed as what every validated case has.
    dtype: str = cast(str, None)
    seed: int | None = None
    case_id: str = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _known(self.family, FAMILY_NAMES, "family")
        _known(self.cost, COST_NAMES, "cost")
        if not isinstance(self.layers, (tuple, list)) or not self.layers:
            raise CaseError("layers must be a non-empty tuple of layer specs")
        set_(self, "layers", tuple(self.layers))
        if not isinstance(self.params, Mapping):
            raise CaseError(f"params must be a dict of arrays, got {type(self.params).__name__}")
        x = _as_array(self.x, "x", None)
        dtype = self.dtype if self.dtype is not None else x.dtype.name
        _known(dtype, DTYPES, "dtype")
        x = _as_array(self.x, "x", np.dtype(dtype))
        set_(self, "dtype", dtype)
        set_(self, "x", x)
        set_(self, "y", _as_array(self.y, "y", np.dtype(dtype)))
        for what, array in (("x", self.x), ("y", self.y)):
            if array.ndim and array.shape[0] == 0:
                raise CaseError(f"{what} has an empty batch (0 rows): a case needs at least "
                                "one sample, the cost is a mean over the batch")
        params = {k: _as_array(v, f"parameter {k}", np.dtype(dtype))
                  for k, v in self.params.items()}
        set_(self, "params", MappingProxyType(params))
        masks = {k: _as_array(v, f"mask {k}", np.dtype(dtype)) for k, v in self.masks.items()}
        set_(self, "masks", MappingProxyType(masks))
        if self.family == "graph":
            _validate_graph(self)
        else:
            _validate_network(self)
        set_(self, "case_id", _case_id(self))

    def __reduce__(self) -> tuple[type[Case], tuple[object, ...]]:
        """Pickled as its constructor's arguments (the array mappings are read-only views),
        so a case can be sent to a worker process and is validated again there."""
        return (Case, (self.family, self.layers, self.cost, dict(self.params), self.x, self.y,
                       dict(self.masks), self.dtype, self.seed))

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> str:
        """One line: family, layers, cost, input shape, dtype."""
        arch = " -> ".join(layer_name(s) for s in self.layers)
        return f"{self.family}: x{tuple(self.x.shape)} -> {arch} | {self.cost} | {self.dtype}"

    def spec(self) -> dict:
        """JSON-ready description of everything but the arrays."""
        return {
            "family": self.family,
            "layers": [{"type": type(s).__name__.lower(), **_spec_fields(s)} for s in self.layers],
            "cost": self.cost,
            "dtype": self.dtype,
            "seed": self.seed,
            "x_shape": list(self.x.shape),
            "param_shapes": {k: list(v.shape) for k, v in self.params.items()},
        }

    def walk(self) -> tuple[LayerInfo, ...]:
        """Each layer (graph node) in order with its index, spec, kind, parameters and
        per-sample shapes: ``for layer in case.walk(): layer.index, layer.spec,
        layer.params``. See ``LayerInfo``."""
        if self.family == "graph":
            width = tuple(self.x.shape[1:])
            return tuple(
                LayerInfo(l, s, "node", None,
                          MappingProxyType({r: self.params[r] for r in s.inputs
                                            if isinstance(r, str) and r != "x"}),
                          width, width)
                for l, s in enumerate(graph_nodes(self), 1))
        shapes = layer_shapes(self.layers, self.x.shape[1:])
        numbers = dict(parametrised(self.layers))
        infos, shape = [], tuple(self.x.shape[1:])
        for l, spec in enumerate(self.layers, 1):
            number = numbers.get(l)
            params = {} if number is None else {f"W{number}": self.params[f"W{number}"],
                                                f"b{number}": self.params[f"b{number}"]}
            infos.append(LayerInfo(l, spec, layer_kind(spec), number, MappingProxyType(params),
                                   shape, shapes[f"z{l}"],
                                   f"mask{l}" if isinstance(spec, Dropout) else None))
            shape = shapes[f"z{l}"]
        return tuple(infos)

    def with_arrays(self, **changes: object) -> Case:
        """A new validated case with some of ``params``, ``x``, ``y``, ``masks`` replaced."""
        fields: dict[str, Any] = dict(family=self.family, layers=self.layers, cost=self.cost,
                      params=dict(self.params), x=self.x, y=self.y, masks=dict(self.masks),
                      dtype=self.dtype, seed=self.seed)
        fields.update(changes)
        return Case(**fields)

    def astype(self, dtype: str) -> Case:
        """The same case with every array cast to ``dtype`` (itself when it is ``dtype``
        already: its arrays are read-only)."""
        if dtype == self.dtype:
            return self

        def each(arrays: Mapping[str, NDArray[np.floating]]) -> dict[str, NDArray[np.floating]]:
            return {k: v.astype(dtype) for k, v in arrays.items()}

        return Case(family=self.family, layers=self.layers, cost=self.cost,
                    params=each(self.params), x=self.x.astype(dtype), y=self.y.astype(dtype),
                    masks=each(self.masks), dtype=dtype, seed=self.seed)


def _spec_fields(spec: Spec) -> dict:
    if isinstance(spec, Node):
        return {"op": spec.op, "inputs": list(spec.inputs)}
    return dict(spec.__dict__)


def _check_keys(found: Mapping, expected: Mapping, what: str) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise CaseError(f"missing {what} {', '.join(missing)}")
    if extra:
        raise CaseError(f"unexpected {what} {', '.join(extra)}; expected only "
                        f"{', '.join(sorted(expected)) or 'none'}")
    for name, shape in expected.items():
        _expect_shape(found[name], shape, f"{what.rstrip('s')} {name}")


def _validate_network(case: Case) -> None:
    layers = case.layers
    if case.x.ndim < 2:
        raise CaseError(f"x must be batch-first with ndim >= 2, got shape {case.x.shape}")
    if case.family == "cnn" and not any(isinstance(s, Conv2d) for s in layers):
        raise CaseError("family 'cnn' needs at least one conv2d layer")
    if case.family in ("mlp", "softmax") and case.x.ndim != 2:
        raise CaseError(f"family {case.family!r} needs x of shape (N, features), "
                        f"got {case.x.shape}")
    if case.family == "softmax" and case.cost != "softmax_cross_entropy":
        raise CaseError(f"family 'softmax' needs cost 'softmax_cross_entropy', got {case.cost!r}")
    shapes = layer_shapes(layers, case.x.shape[1:])
    params = {k: v for k, v in shapes.items() if not k.startswith("z")}
    _check_keys(case.params, params, "parameters")
    masks = {f"mask{l}": (case.batch, *shapes[f"z{l}"])
             for l, s in enumerate(layers, 1) if isinstance(s, Dropout)}
    _check_keys(case.masks, masks, "masks")
    for name, mask in case.masks.items():
        if not np.all((mask == 0) | (mask == 1)):
            raise CaseError(f"mask {name} must contain only 0 and 1")
    out = (case.batch, *shapes[f"z{len(layers)}"])
    _expect_shape(case.y, out, "y (targets)")
    last = [s for s in layers if isinstance(s, (Dense, Conv2d))]
    if not last or not isinstance(layers[-1], Dense):
        raise CaseError(f"the last layer must be dense, got {layer_name(layers[-1])}")
    _validate_cost(case.cost, layers[-1].activation, case.y, f"layer {len(layers)}")


def _validate_cost(cost: str, activation: str, y: NDArray, where: str) -> None:
    if cost == "cross_entropy":
        if activation != "sigmoid":
            raise CaseError(f"cost 'cross_entropy' needs a sigmoid output; {where} has "
                            f"{activation!r}")
        if np.any((y < 0) | (y > 1)):
            bad = tuple(int(i) for i in np.argwhere((y < 0) | (y > 1))[0])
            raise CaseError(f"cross_entropy targets must lie in [0, 1]; y at index {bad} is "
                            f"{float(y[bad]):g}")
    if cost == "softmax_cross_entropy":
        if activation != "identity":
            raise CaseError(f"cost 'softmax_cross_entropy' takes logits; {where} has activation "
                            f"{activation!r}, expected 'identity'")
        tol = 1e-4 * y.shape[-1]  # rounding of targets made in float32, either dtype
        sums = y.sum(axis=-1)
        if np.any(y < 0) or np.any(np.abs(sums - 1) > tol):
            raise CaseError("softmax_cross_entropy targets must be non-negative rows summing to 1"
                            f" (row sums range {sums.min():.6g}..{sums.max():.6g})")


def graph_nodes(case: Case) -> tuple[Node, ...]:
    """``case.layers`` of a graph case, typed as the ``Node``s that validation made sure
    every one of them is."""
    return cast("tuple[Node, ...]", case.layers)


def _validate_graph(case: Case) -> None:
    if case.x.ndim != 2:
        raise CaseError(f"family 'graph' needs x of shape (N, k), got {case.x.shape}")
    width = case.x.shape[1]
    for l, spec in enumerate(case.layers, 1):
        if not isinstance(spec, Node):
            raise CaseError(f"layer {l} ({layer_name(spec)}): family 'graph' takes only nodes")
        for ref in spec.inputs:
            if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
                if not 1 <= ref < l:
                    raise CaseError(f"node {l} ({layer_name(spec)}) refers to node {ref}; "
                                    f"only earlier nodes 1..{l - 1} can be inputs")
            elif isinstance(ref, float):
                if not np.isfinite(ref):
                    raise CaseError(f"node {l} ({layer_name(spec)}) has a non-finite constant")
            elif ref != "x" and ref not in case.params:
                raise CaseError(f"node {l} ({layer_name(spec)}) refers to unknown leaf {ref!r}")
    for name, value in case.params.items():
        if not (name.startswith("p") and name[1:].isdigit()):
            raise CaseError(f"graph leaf {name!r} must be named p1, p2, ...")
        _expect_shape(value, (width,), f"parameter {name}")
    if case.masks:
        raise CaseError("family 'graph' takes no dropout masks")
    _expect_shape(case.y, case.x.shape, "y (targets)")
    if case.cost == "cross_entropy":
        raise CaseError("family 'graph' supports costs quadratic and softmax_cross_entropy")
    if case.cost == "softmax_cross_entropy":
        _validate_cost(case.cost, "identity", case.y, "the graph output")


def _case_id(case: Case) -> str:
    spec = {k: v for k, v in case.spec().items() if k != "seed"}  # seed is provenance only
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for group, arrays in (("params", case.params), ("masks", case.masks),
                          ("data", {"x": case.x, "y": case.y})):
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            digest.update(f"{group}/{name}/{a.dtype.str}/{a.shape}".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:16]
