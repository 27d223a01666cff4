"""Strategies that draw whole, valid ``Case``s: MLPs, CNNs, softmax heads and graphs.

One builder per family serves two drivers:

- hypothesis (``mlp_cases()``, ``cnn_cases()``, ``softmax_cases()``, ``graph_cases()``,
  ``any_cases()`` in ``hypothesis_strategies``, the only module that imports hypothesis), for
  ``@given`` tests: every architectural choice is a hypothesis draw, so failures shrink
  towards few, narrow layers and small batches;
- a seeded NumPy generator (``cases(family, n, seed, **constraints)``), deterministic and
  usable outside tests: case ``i`` is ``case_at(family, seed, i)``, drawn from its own
  generator, and ``iter_cases`` draws them lazily, one at a time.

**Memory.** Before drawing, constraints whose largest case would need more than the memory
budget (``memory_budget``: the ``memory_budget`` constraint, ``BO_MEMORY_BUDGET``, or half
the available memory) are refused with a ``ValueError`` naming them; ``estimate_bytes``
states the estimate.

Array values come from a NumPy generator seeded by one drawn integer (inputs ``N(0, 1)``,
parameters from the reference's initialisers), so they are bounded, finite and normal.

**Kinks.** By default draws keep away from non-differentiable points: each ReLU / leaky-ReLU
layer's biases are nudged so that no input ``z`` lies within ``margin`` of 0, an L2 pool never
follows a ReLU (an all-zero window is a kink), and max-pool windows are repaired so that each
runner-up is at least ``margin`` below its maximum: a ReLU / leaky-ReLU conv feeding a max pool
gets biases that leave no window all zeros (ReLU zeros tie with each other), and the input
``x`` is nudged, window by window, along the gradient that widens the remaining near-ties
(``_repair_max_pools``). A draw the repair cannot mend is rejected (rare). With
``kinks=True`` inputs and parameters come from a small grid of multiples of 1/4, so every sum
is exact in float32 and float64: ReLU inputs that are exactly 0 and tied max-pool windows then
occur in every framework alike.

**Pooling.** A CNN pool window is at least 2x2 in nine pools out of ten (convs keep their
output at least 2x2 so that one fits), and half of the conv layers are a ReLU conv feeding a
max pool (where ``relu`` and ``max`` are allowed): the usual CNN block, where ties matter.
Two geometries whose ties no repair can break are not drawn: a conv output that sees only
padding (every such cell is ``sigma(b)``; kernels are wider than the padding) and max-pool
windows that overlap before another conv (a repeated maximum).

**Gradients.** A case whose every gradient is exactly zero (e.g. all ReLUs dead, graph
leaves unused) checks nothing; it is redrawn unless ``zero_grads=True``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from ...reference import backprop, conv, dense, pooling
from ...reference.activations import KINKED, activation
from ...reference.case import (
    ACTIVATION_NAMES,
    COST_NAMES,
    DTYPES,
    GRAPH_OPS,
    POOL_KINDS,
    Case,
    CaseError,
    Conv2d,
    Dense,
    Dropout,
    Layer,
    Node,
    Pool,
    avgpool,
    conv2d,
    flatten,
    l2pool,
    layer_shapes,
    maxpool,
    node,
    parametrised,
)
from ...reference.graph import forward as graph_forward
from ...reference.init import init_params
from ...reference.layers import LayerArrays, layer_rule
from ...reference.network import feedforward

T = TypeVar("T")
MARGIN = 1e-3  # distance kept from kinks; >> the finite-difference step's effect on z
GAP_AIM = 2.0  # the max-pool repair nudges windows whose gap is under this many thresholds
#                (float32 rounding stays far below the difference) ...
GAP_NUDGED = 3.0  # ... up to this many
REPAIR_ROUNDS = 20  # nudges of x by the max-pool repair before the draw is rejected
MAX_NUDGE = 0.3  # largest change of one input element in one nudge
ONE_BY_ONE_POOLS = 10  # one CNN pool in this many has a 1x1 window (a no-op, an edge case)
TARGETS = ("any", "one_hot", "soft")  # Constraints.targets


class Rejected(Exception):
    """A draw that cannot be used (the hypothesis driver turns it into ``assume(False)``)."""


class Chooser:
    """The choices a builder makes; subclasses draw them from hypothesis or from NumPy."""

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def boolean(self) -> bool:
        return bool(self.integer(0, 1))


class RngChooser(Chooser):
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))


@dataclass(frozen=True)
class Constraints:
    """What a drawn case may contain. Every field is validated with a message naming it."""

    activations: tuple[str, ...] = ACTIVATION_NAMES
    costs: tuple[str, ...] = COST_NAMES
    pools: tuple[str, ...] = POOL_KINDS
    dtypes: tuple[str, ...] = DTYPES
    max_layers: int = 5
    max_width: int = 64
    max_batch: int = 32
    max_image: int = 16
    max_conv_layers: int = 2
    max_nodes: int = 10
    inits: tuple[str, ...] = ("xavier", "uniform")
    kinks: bool = False
    # softmax family: the last layer's weights and biases scaled by one of 1, 10, ..., 1e4,
    # so logits reach |z| ~ 1e4 (log-sum-exp overflow); False keeps the scale 1
    extreme_logits: bool = True
    # targets of the cross-entropy costs: "any" (each case soft or hard, as drawn so far),
    # "one_hot" (softmax CE: rows of the identity, i.e. integer labels; binary CE: 0/1),
    # "soft" (softmax CE: Dirichlet rows; binary CE: uniform in [0, 1])
    targets: str = "any"
    dropout: bool = True
    memory_budget: int | str | None = None  # bytes or "4G"; None: see ``memory_budget()``
    # True allows cases whose every gradient is exactly zero (all ReLUs dead, graph leaves
    # unused, ...); False (default) redraws them: they would agree with any oracle
    zero_grads: bool = False

    def __post_init__(self) -> None:
        for name, known in (("activations", ACTIVATION_NAMES), ("costs", COST_NAMES),
                            ("pools", POOL_KINDS), ("dtypes", DTYPES),
                            ("inits", ("xavier", "uniform"))):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
                raise ValueError(f"{name} must be a non-empty list, got {value!r}")
            unknown = [v for v in value if v not in known]
            if unknown:
                raise ValueError(f"{name}: unknown {unknown}; expected some of {list(known)}")
            object.__setattr__(self, name, tuple(value))
        for name, low in (("max_layers", 1), ("max_width", 1), ("max_batch", 1),
                          ("max_image", 3), ("max_conv_layers", 1), ("max_nodes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.targets, (list, tuple)) and len(self.targets) == 1:
            object.__setattr__(self, "targets", self.targets[0])  # --constraint targets=X
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {', '.join(TARGETS)}, got "
                             f"{self.targets!r}")
        if self.memory_budget is not None:
            object.__setattr__(self, "memory_budget",
                               parse_bytes(self.memory_budget, "memory_budget"))
        if not isinstance(self.zero_grads, bool):
            raise ValueError(f"zero_grads must be true or false, got {self.zero_grads!r}")

    @classmethod
    def make(cls, **kwargs: Any) -> Constraints:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown constraint(s) {unknown}; expected some of {sorted(known)}")
        return cls(**kwargs)


# ---------------------------------------------------------------- memory guard

MEMORY_FRACTION = 0.5  # default budget: this fraction of the memory available now
FALLBACK_BUDGET = 4 * 2**30  # where the available memory cannot be read
BUDGET_ENV = "BO_MEMORY_BUDGET"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_BYTES = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
# the constraints that size each family's arrays, most influential first
SIZE_CONSTRAINTS = {
    "mlp": ("max_width", "max_layers", "max_batch"),
    "softmax": ("max_width", "max_layers", "max_batch"),
    "cnn": ("max_image", "max_conv_layers", "max_batch", "max_layers"),
    "graph": ("max_nodes", "max_batch"),
}


def parse_bytes(value: Any, name: str) -> int:
    """A positive byte count from an int or a string with an optional binary unit suffix
    (``"4G"``, ``"512M"``, ``"1.5GiB"``; K/M/G/T/P are powers of 1024). ``name`` is the
    setting named in the error."""
    if isinstance(value, (list, tuple)) and len(value) == 1:  # --constraint memory_budget=4G
        value = value[0]
    number: float | None = None
    if isinstance(value, str):
        match = _BYTES.fullmatch(value)
        if match:
            number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 1:
        raise ValueError(f"{name} must be a positive number of bytes, optionally with a unit "
                         f"K, M, G or T (e.g. 4G), got {value!r}")
    return int(number)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``12.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``, else
    ``os.sysconf``), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def memory_budget(c: Constraints | None = None) -> tuple[int, str]:
    """The bytes one drawn case may need, and where that figure comes from: the
    ``memory_budget`` constraint, else the environment variable ``BO_MEMORY_BUDGET`` (bytes,
    or with a unit suffix like ``4G``), else ``MEMORY_FRACTION`` of the available memory."""
    how = f"set by {BUDGET_ENV} or the memory_budget constraint"
    if c is not None and c.memory_budget is not None:
        return int(c.memory_budget), f"memory_budget={c.memory_budget}"
    env = os.environ.get(BUDGET_ENV, "").strip()
    if env:
        return parse_bytes(env, BUDGET_ENV), f"{BUDGET_ENV}={env}"
    available = available_memory()
    if available is None:
        return FALLBACK_BUDGET, f"a fixed default; {how}"
    return int(available * MEMORY_FRACTION), f"half the available memory; {how}"


def estimate_bytes(layers: Sequence[Layer | Node], input_shape: tuple[int, ...], batch: int,
                   itemsize: int = 8, leaves: int = 0) -> int:
    """Bytes a case of this architecture needs while it is drawn, run by the reference and
    checked by the finite-difference oracle (from the shapes alone; nothing is allocated)::

        bytes = s * (2 P + X + Y + 3 A) + 8 * (4 P + X + Y + 5 A)

    ``s`` the itemsize of the case dtype; ``P`` parameter elements (``W`` and ``b`` of every
    dense / conv layer; for a graph ``leaves * width``); ``X = batch * prod(input_shape)``;
    ``Y`` target elements (``batch`` times the last layer's output size); ``A`` activation
    elements, ``batch * prod(z^l shape)`` summed over the layers (images ``batch x C x H x W``;
    for a graph ``batch * width`` per node). In the case dtype: the case's params, x and y
    and the reference's grads and ``z``, ``a``, ``delta`` per layer. In float64: the FD
    oracle's copy of params, x, y, its cached forward pass (``z``, ``a``) and its answer
    (gradient, error estimate and step per parameter and per ``delta`` element); this also
    covers the drawing (params and x made in float64, then cast: about 3.5 P float64 at
    the peak). Not included, each bounded on its own: the FD oracle's chunk of perturbed
    copies (at most ``finite_differences.MEMORY_BUDGET``, 512 MiB, unless a single copy is
    larger) and the frameworks' copies (about one more case in the framework's dtype)."""
    if layers and all(isinstance(spec, Node) for spec in layers):
        width = math.prod(input_shape)
        P, X, A = leaves * width, batch * width, batch * width * len(layers)
        Y = X
    else:
        shapes = layer_shapes(tuple(layers), tuple(input_shape))
        P = sum(math.prod(v) for k, v in shapes.items() if not k.startswith("z"))
        zs = [batch * math.prod(shapes[f"z{l}"]) for l in range(1, len(layers) + 1)]
        X, Y, A = batch * math.prod(input_shape), zs[-1], sum(zs)
    return itemsize * (2 * P + X + Y + 3 * A) + 8 * (4 * P + X + Y + 5 * A)


def _worst_architecture(family: str, c: Constraints
                        ) -> tuple[tuple[Layer | Node, ...], tuple[int, ...], int, int]:
    """The largest case ``family``'s builder can draw under ``c``: (layers, input shape,
    batch, graph leaves). Dense layers and inputs ``max_width`` wide, ``max_layers`` deep,
    each hidden layer with a dropout; convs of 8 channels growing the image by 4 (kernel 1,
    padding 2) each followed by a size-1 pool, ``max_batch`` images; graphs 8 wide,
    ``max_nodes`` long."""
    if family in ("mlp", "softmax"):
        W = c.max_width
        if family == "mlp":
            hidden: tuple[Layer, ...] = (Dense(W, "identity"),)
            hidden += (Dropout(0.5),) if c.dropout else ()
            layers = hidden * (c.max_layers - 1) + (Dense(min(W, 10), "identity"),)
        else:
            layers = (Dense(W, "identity"),) * min(1, c.max_layers - 1)
            layers += (Dense(min(max(W, 2), 10), "identity"),)
        return layers, (W,), c.max_batch, 0
    if family == "cnn":
        convs = (conv2d(8, 1, 1, 2, "identity"), maxpool(1, 1)) * c.max_conv_layers
        head = (Dense(16, "identity"),) * min(1, c.max_layers - 1) + (Dense(10, "identity"),)
        return convs + (flatten(),) + head, (3, c.max_image, c.max_image), c.max_batch, 0
    return (node("exp", "x"),) * c.max_nodes, (8,), min(8, c.max_batch), 3


def _worst_bytes(family: str, c: Constraints) -> int:
    layers, shape, batch, leaves = _worst_architecture(family, c)
    itemsize = max(np.dtype(d).itemsize for d in c.dtypes)
    return estimate_bytes(layers, shape, batch, itemsize, leaves)


def _responsible(family: str, c: Constraints) -> str:
    """The size constraints of ``family`` raised above their defaults such that setting one
    back shrinks the largest case (all of ``family``'s size constraints if none), as
    ``name=value``."""
    names = SIZE_CONSTRAINTS[family]
    defaults: dict[str, Any] = {f.name: f.default for f in fields(Constraints)}
    worst = _worst_bytes(family, c)
    raised = [n for n in names if getattr(c, n) > defaults[n]
              and _worst_bytes(family, dataclasses.replace(c, **{n: defaults[n]})) < worst]
    return ", ".join(f"{n}={getattr(c, n)}" for n in raised or names)


def _refuse_over_budget(family: str, c: Constraints, need: int, what: str) -> None:
    budget, source = memory_budget(c)
    if need > budget:
        raise ValueError(f"{_responsible(family, c)}: {what} needs about {format_bytes(need)}, "
                         f"over the memory budget of {format_bytes(budget)} ({source})")


def check_memory(family: str, c: Constraints) -> int:
    """Refuse (``ValueError`` naming the constraints responsible and the budget) constraints
    under which ``family``'s largest case (``_worst_architecture``, widest dtype allowed) needs
    more than ``memory_budget(c)`` by ``estimate_bytes``; else return that estimate."""
    need = _worst_bytes(family, c)
    _refuse_over_budget(family, c, need, f"the largest {family} case these constraints allow")
    return need


def _guard(family: str, c: Constraints, layers: Sequence[Layer | Node],
           input_shape: tuple[int, ...], batch: int, leaves: int = 0) -> None:
    """The per-case safety net: called by the builders once the architecture is drawn and
    before any of its arrays is allocated (the dtype is not drawn yet: the widest allowed)."""
    itemsize = max(np.dtype(d).itemsize for d in c.dtypes)
    need = estimate_bytes(layers, input_shape, batch, itemsize, leaves)
    _refuse_over_budget(family, c, need, f"a drawn {family} case")


# ---------------------------------------------------------------- values

def _values(rng: np.random.Generator, shape: tuple[int, ...], kinks: bool) -> np.ndarray:
    """Inputs: N(0, 1), or in kink mode multiples of 1/4 in [-1, 1] (exact sums)."""
    if kinks:
        return rng.integers(-4, 5, size=shape) / 4.0
    return rng.normal(size=shape)


def _params(layers: tuple[Layer, ...], input_shape: tuple[int, ...], rng: np.random.Generator,
            init: str, kinks: bool) -> dict[str, np.ndarray]:
    params = init_params(layers, input_shape, rng, init)
    if kinks:  # a grid of multiples of 1/4 keeps every product and sum exact
        params = {k: np.round(v * 4) / 4 for k, v in params.items()}
    return params


def _soft(ch: Chooser, c: Constraints) -> bool:
    """Soft or hard cross-entropy targets: drawn (``targets="any"``) or as constrained; the
    draw is made either way, so the other choices of a case do not depend on ``targets``."""
    drawn = ch.boolean()
    return drawn if c.targets == "any" else c.targets == "soft"


def _targets(cost: str, shape: tuple[int, ...], rng: np.random.Generator, soft: bool
             ) -> np.ndarray:
    if cost == "quadratic":
        return rng.normal(size=shape)
    if cost == "cross_entropy":
        return rng.uniform(size=shape) if soft else rng.integers(0, 2, size=shape).astype(float)
    if soft:
        return rng.dirichlet(np.ones(shape[-1]), size=shape[0])
    return np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[0])]


def _away_from_zero(values: np.ndarray, bias: float, margin: float) -> float:
    """The bias nearest to ``bias`` such that every ``values + bias`` is at least ``margin``
    away from 0 (the mid-point of the closest wide-enough gap among ``-values``)."""
    if values.size == 0 or np.min(np.abs(values + bias)) >= margin:
        return bias
    points = np.sort(-values.ravel())
    lows = np.concatenate(([points[0] - 1.0], points))
    highs = np.concatenate((points, [points[-1] + 1.0]))
    wide = highs - lows >= 2 * margin
    mids = (lows[wide] + highs[wide]) / 2
    return float(mids[np.argmin(np.abs(mids - bias))])


def _lowest_clear(values: np.ndarray, lowest: float, margin: float) -> float:
    """A bias ``>= lowest`` such that every ``values + bias`` is at least ``margin`` away
    from 0: ``lowest`` itself, else stepped past each value in the way by 1.5 margins."""
    points = np.sort(-values.ravel())
    bias = lowest
    for p in points[points > lowest - margin]:
        if p >= bias + margin:
            break
        if p > bias - margin:
            bias = float(p) + 1.5 * margin
    return bias


def _gap_threshold(a_prev: np.ndarray) -> float:
    """The smallest runner-up gap a max-pool window over ``a_prev`` may have: ``MARGIN``,
    relative to the layer's largest value where that is above 1."""
    return MARGIN * max(1.0, float(np.max(np.abs(a_prev))))


def _live_bias(z0: np.ndarray, bias: float, pool: Pool) -> float:
    """The bias of one ReLU / leaky channel (``z0``: its ``z`` without bias, ``(N, H, W)``)
    that feeds a max pool: every ``z`` at least ``MARGIN`` from 0 (as ``_away_from_zero``)
    and every window's largest ``z`` clearly positive, ``GAP_AIM`` gap thresholds up, since
    a window of ReLU zeros is a tie. ``bias`` where it already does, else the nearest above."""
    window_max = pooling.forward("max", z0[:, None], pool.size, pool.stride)
    live = -float(np.min(window_max))  # the bias at which the deadest window's max is 0
    aim = GAP_AIM * _gap_threshold(z0 + max(bias, live))
    lowest = live + aim
    if bias >= lowest:
        kept = _away_from_zero(z0, bias, MARGIN)
        if kept >= lowest:
            return kept
    return _lowest_clear(z0, lowest, MARGIN)


def _next_max_pool(layers: Sequence[Layer], l: int) -> Pool | None:
    """The max pool right after layer ``l`` (counting from 1), if there is one and its
    windows are larger than 1x1 (a single cell cannot tie)."""
    after = layers[l] if l < len(layers) else None
    real = isinstance(after, Pool) and after.kind == "max" and after.size > 1
    return after if real and isinstance(after, Pool) else None


def _repaired_biases(spec: Dense | Conv2d, z0: np.ndarray, b: np.ndarray,
                     pool: Pool | None) -> np.ndarray:
    """``b`` moved so that no ``z = z0 + b`` of a ReLU / leaky layer lies within ``MARGIN`` of
    0 (unit / channel ``j`` is column ``j`` of ``z0``), and, for a conv feeding the max pool
    ``pool``, so that no pooling window is all dead."""
    if isinstance(spec, Conv2d) and pool is not None:
        return np.array([_live_bias(z0[:, j], float(bj), pool) for j, bj in enumerate(b)])
    return np.array([_away_from_zero(z0[:, j], float(bj), MARGIN) for j, bj in enumerate(b)])


def _repair_kinks(layers: tuple[Layer, ...], params: dict[str, np.ndarray], x: np.ndarray,
                  masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Move each ReLU/leaky layer's biases so that no ``z`` lies within ``MARGIN`` of 0 and
    no window of a max pool right after it is all dead (``_repaired_biases``)."""
    params = dict(params)
    a, number = x, 0
    for l, spec in enumerate(layers, 1):
        if isinstance(spec, (Dense, Conv2d)):
            number += 1
            W, b = params[f"W{number}"], params[f"b{number}"].copy()
            if isinstance(spec, Dense):
                z0 = dense.forward(a, W, np.zeros_like(b))
            else:
                z0 = conv.forward(a, W, np.zeros_like(b), spec.stride, spec.padding)
            if spec.activation in KINKED:
                b = _repaired_biases(spec, z0, b, _next_max_pool(layers, l))
                params[f"b{number}"] = b
            z = z0 + (b if isinstance(spec, Dense) else b[None, :, None, None])
            a = _activate(spec.activation, z)
        elif isinstance(spec, Dropout):
            a = a * masks[f"mask{l}"] / (1 - spec.p)
        else:
            a = _pass(spec, a)
    return params


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    return activation(name)[0](z)


def _pass(spec: Layer, a: np.ndarray) -> np.ndarray:
    if isinstance(spec, Pool):
        return pooling.forward(spec.kind, a, spec.size, spec.stride)
    return pooling.flatten_forward(a)


# ---------------------------------------------------------------- max-pool repair

def _layer_arrays(layers: tuple[Layer, ...], params: dict[str, np.ndarray],
                  masks: dict[str, np.ndarray]) -> list[LayerArrays]:
    """The arrays each layer reads (the reference's ``LayerArrays``), in layer order."""
    numbers = dict(parametrised(layers))
    return [LayerArrays(params[f"W{numbers[l]}"], params[f"b{numbers[l]}"]) if l in numbers
            else LayerArrays(mask=masks.get(f"mask{l}")) for l in range(1, len(layers) + 1)]


def _forward(layers: tuple[Layer, ...], arrays: list[LayerArrays], x: np.ndarray
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(zs, acts)`` as ``network.feedforward`` gives them, before a ``Case`` exists."""
    zs, acts = [], [x]
    for spec, layer in zip(layers, arrays, strict=True):
        z = layer_rule(spec).forward(spec, acts[-1], layer)
        zs.append(z)
        acts.append(_activate(spec.activation, z) if hasattr(spec, "activation") else z)
    return zs, acts


def _top_two(a_prev: np.ndarray, size: int, stride: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per max-pool window: the offset number of its maximum (the first in row-major order,
    as ``pooling.max_route``), of its runner-up, and the gap between their values."""
    cells = np.stack([part for _, _, part in conv.offset_slices(a_prev, size, stride)])
    order = np.argsort(-cells, axis=0, kind="stable")[:2]
    top, second = np.take_along_axis(cells, order, axis=0)
    return order[0], order[1], top - second


def _tie_seed(a_prev: np.ndarray, pool: Pool) -> np.ndarray | None:
    """Where some window of ``pool`` has a runner-up gap under ``GAP_AIM`` thresholds: an
    array shaped like ``a_prev`` holding, at each such window's maximum, what its gap lacks
    to ``GAP_NUDGED`` thresholds, and minus that at its runner-up (its inner product with a
    change of ``a_prev`` is how much that change widens those gaps); else None."""
    if pool.size == 1:
        return None
    top, second, gap = _top_two(a_prev, pool.size, pool.stride)
    threshold = _gap_threshold(a_prev)
    lack = np.where(gap < GAP_AIM * threshold, GAP_NUDGED * threshold - gap, 0.0)
    if not np.any(lack):
        return None
    parts = [(u, v, np.where(top == i, lack, 0.0) - np.where(second == i, lack, 0.0))
             for i, (u, v, _) in enumerate(conv.offset_slices(a_prev, pool.size, pool.stride))]
    return conv.scatter_offsets(parts, a_prev.shape, pool.stride)


def _sigma_prime(spec: Layer, z: np.ndarray) -> np.ndarray:
    return activation(spec.activation)[1](z) if hasattr(spec, "activation") else np.ones_like(z)


def _input_gradient(layers: tuple[Layer, ...], arrays: list[LayerArrays],
                    zs: list[np.ndarray], acts: list[np.ndarray],
                    seeds: dict[int, np.ndarray]) -> np.ndarray:
    """The gradient with respect to ``x`` of ``sum_l <seeds[l], a^(l-1)>`` (a vector-Jacobian
    product through the reference's layer rules, from the last seeded layer down)."""
    top = max(seeds)
    grad = seeds[top]  # d/da^(top-1)
    for l in range(top - 1, 0, -1):  # grad: d/da^l -> d/da^(l-1)
        spec = layers[l - 1]
        delta = grad * _sigma_prime(spec, zs[l - 1])
        da_prev = layer_rule(spec).backward(spec, delta, acts[l - 1], zs[l - 1],
                                            arrays[l - 1], True).da_prev
        assert da_prev is not None
        grad = da_prev + seeds.get(l, 0.0)
    return grad


def _nudge(grad: np.ndarray, seeds: dict[int, np.ndarray]) -> np.ndarray:
    """The change of ``x`` along ``grad`` that widens each sample's near-ties by what they
    lack, to first order (exactly for one window per sample), at most ``MAX_NUDGE`` per
    element. ``grad`` and every seed are batch-first."""
    lack = sum(0.5 * np.sum(s.reshape(len(s), -1) ** 2, axis=1) for s in seeds.values())
    norm = np.sum(grad.reshape(len(grad), -1) ** 2, axis=1)
    scale = np.divide(lack, norm, out=np.zeros_like(norm), where=norm > 0)
    step = grad * scale.reshape(-1, *([1] * (grad.ndim - 1)))
    largest = np.max(np.abs(step.reshape(len(step), -1)), axis=1)
    shrink = np.minimum(1.0, MAX_NUDGE / np.maximum(largest, MAX_NUDGE))
    return step * shrink.reshape(-1, *([1] * (grad.ndim - 1)))


def _tie_breaking_step(layers: tuple[Layer, ...], params: dict[str, np.ndarray],
                       x: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray | None:
    """The nudge of ``x`` that widens every max-pool window whose runner-up gap is under
    ``GAP_AIM`` thresholds (``_nudge``); None where there is none, or no nudge helps."""
    if not any(isinstance(s, Pool) and s.kind == "max" for s in layers):
        return None
    arrays = _layer_arrays(layers, params, masks)
    zs, acts = _forward(layers, arrays, x)
    seeds = {l: seed for l, spec in enumerate(layers, 1)
             if isinstance(spec, Pool) and spec.kind == "max"
             and (seed := _tie_seed(acts[l - 1], spec)) is not None}
    if not seeds:
        return None
    step = _nudge(_input_gradient(layers, arrays, zs, acts, seeds), seeds)
    return step if np.any(step) else None


def _repair_max_pools(layers: tuple[Layer, ...], params: dict[str, np.ndarray],
                      x: np.ndarray, masks: dict[str, np.ndarray]
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(params, x)`` with the kinks repaired (``_repair_kinks``) and, up to
    ``REPAIR_ROUNDS`` times, ``x`` nudged to widen the max-pool near-ties that biases cannot
    (two live cells within the margin of each other) and the biases repaired again. What is
    left after the last round is rejected by ``_check_max_pool_gaps``."""
    params = _repair_kinks(layers, params, x, masks)
    for _ in range(REPAIR_ROUNDS):
        step = _tie_breaking_step(layers, params, x, masks)
        if step is None:
            break
        x = x + step
        params = _repair_kinks(layers, params, x, masks)
    return params, x


def _check_max_pool_gaps(case: Case) -> None:
    """Reject the rare draw ``_repair_max_pools`` left with a max-pool window whose
    runner-up is within the threshold (``_gap_threshold``) of its maximum."""
    zs, acts = feedforward(case)
    for l, spec in enumerate(case.layers, 1):
        if isinstance(spec, Pool) and spec.kind == "max":
            gap = pooling.max_route(acts[l - 1], spec.size, spec.stride)[1]
            if np.min(gap) < _gap_threshold(acts[l - 1]):
                raise Rejected("max-pool runner-up gap within the margin")


def _check_gradients(case: Case, c: Constraints) -> None:
    """Reject a case whose every gradient is exactly zero, unless ``c.zero_grads``."""
    if c.zero_grads:
        return
    if not any(np.any(g != 0) for g in backprop(case).grads.values()):
        raise Rejected("every gradient is exactly zero (zero_grads=True allows such cases)")


def _masks(layers: tuple, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An explicit 0/1 mask for every dropout layer, keeping each unit with prob. 1 - p."""
    shapes = layer_shapes(layers, x.shape[1:])
    return {f"mask{l}": (rng.random((x.shape[0], *shapes[f"z{l}"])) >= s.p).astype(float)
            for l, s in enumerate(layers, 1) if isinstance(s, Dropout)}


def _finish(family: str, layers: tuple, cost: str, x: np.ndarray, ch: Chooser,
            c: Constraints, rng: np.random.Generator, seed: int, scale: float = 1.0) -> Case:
    init = ch.choice(c.inits)
    dtype = ch.choice(c.dtypes)
    soft = _soft(ch, c)
    params = _params(layers, x.shape[1:], rng, init, c.kinks)
    if scale != 1.0:  # push the logits of the last layer out to |z| ~ scale
        last = max(int(k[1:]) for k in params if k.startswith("W"))
        params[f"W{last}"] = params[f"W{last}"] * scale
        params[f"b{last}"] = params[f"b{last}"] * scale
    masks = _masks(layers, x, rng)
    if not c.kinks:
        params, x = _repair_max_pools(layers, params, x, masks)
    out = layer_shapes(layers, x.shape[1:])[f"z{len(layers)}"]
    y = _targets(cost, (x.shape[0], *out), rng, soft)
    case = Case(family=family, layers=layers, cost=cost,
                params={k: v.astype(dtype) for k, v in params.items()}, x=x.astype(dtype),
                y=y.astype(dtype), masks={k: m.astype(dtype) for k, m in masks.items()},
                dtype=dtype, seed=seed)
    if not c.kinks:
        _check_max_pool_gaps(case)
    _check_gradients(case, c)
    return case


# ---------------------------------------------------------------- builders

def _output_activation(cost: str, ch: Chooser, c: Constraints) -> str:
    if cost == "cross_entropy":
        return "sigmoid"
    if cost == "softmax_cross_entropy":
        return "identity"
    return ch.choice(c.activations)


def build_mlp(ch: Chooser, c: Constraints) -> Case:
    """1..max_layers dense layers of width 1..max_width, any activation, any cost; a quarter
    of hidden layers followed by dropout with an explicit mask (``dropout=False`` to avoid)."""
    depth = ch.integer(1, c.max_layers)
    cost = ch.choice(c.costs)
    widths = [ch.integer(1, c.max_width) for _ in range(depth - 1)]
    out = ch.integer(1, min(c.max_width, 10))
    acts = [ch.choice(c.activations) for _ in widths] + [_output_activation(cost, ch, c)]
    layers: tuple[Layer, ...] = ()
    for w, a in zip(widths, acts, strict=False):  # acts[-1]: the output layer
        layers += (Dense(w, a),)
        if c.dropout and ch.integer(0, 3) == 0:  # a quarter of hidden layers
            layers += (Dropout(ch.choice((0.25, 0.5))),)
    layers += (Dense(out, acts[-1]),)
    batch, features = ch.integer(1, c.max_batch), ch.integer(1, c.max_width)
    seed = ch.integer(0, 2**31 - 1)
    _guard("mlp", c, layers, (features,), batch)
    rng = np.random.default_rng(seed)
    x = _values(rng, (batch, features), c.kinks)
    return _finish("mlp", layers, cost, x, ch, c, rng, seed)


def build_softmax(ch: Chooser, c: Constraints) -> Case:
    """A softmax-cross-entropy head (1 or 2 dense layers) with logits up to |z| ~ 1e4."""
    classes = ch.integer(2, min(max(c.max_width, 2), 10))
    hidden = ch.integer(0, min(1, c.max_layers - 1))
    layers: tuple[Layer, ...] = ()
    if hidden:
        layers = (Dense(ch.integer(1, c.max_width), ch.choice(c.activations)),)
    layers += (Dense(classes, "identity"),)
    scales = (1.0, 10.0, 100.0, 1e3, 1e4) if c.extreme_logits else (1.0,)
    scale = ch.choice(scales)
    batch, features = ch.integer(1, c.max_batch), ch.integer(1, c.max_width)
    seed = ch.integer(0, 2**31 - 1)
    _guard("softmax", c, layers, (features,), batch)
    rng = np.random.default_rng(seed)
    x = _values(rng, (batch, features), c.kinks)
    return _finish("softmax", layers, "softmax_cross_entropy", x, ch, c, rng, seed, scale)


def _window(ch: Chooser, size_limit: int, overlap: bool) -> tuple[int, int]:
    """A pool's (size, stride): a window of 2 or 3 that fits in ``size_limit``, 1x1 (a no-op,
    kept as an edge case) in one pool out of ``ONE_BY_ONE_POOLS`` or where nothing larger
    fits; any stride up to the size where windows may ``overlap``, else the size."""
    one_by_one = size_limit < 2 or ch.integer(1, ONE_BY_ONE_POOLS) == 1
    size = 1 if one_by_one else ch.integer(2, min(3, size_limit))
    return size, ch.integer(1, size) if overlap else size


def _max_pool(ch: Chooser, size_limit: int, last: bool) -> Pool:
    """A max pool; its windows overlap only after the ``last`` conv: overlapping windows
    repeat a maximum in neighbouring outputs, which a later conv and max pool turn into a
    tie no nudge of the input can break."""
    return maxpool(*_window(ch, size_limit, overlap=last))


def _pool(ch: Chooser, c: Constraints, size_limit: int, after: str, last: bool
          ) -> Pool | None:
    """A pool of an allowed kind (no L2 pool after a ReLU outside kink mode: an all-zero
    window is a kink), windows as ``_window``, ``last``: after the last conv."""
    kinds = [k for k in c.pools if not (k == "l2" and after == "relu" and not c.kinks)]
    if not kinds:
        return None
    kind = ch.choice(kinds)
    if kind == "max":
        return _max_pool(ch, size_limit, last)
    return {"avg": avgpool, "l2": l2pool}[kind](*_window(ch, size_limit, overlap=True))


def _relu_max_block(ch: Chooser, c: Constraints) -> bool:
    """Whether the next conv is a ReLU conv feeding a max pool, the usual CNN block (and
    the pairing whose ties matter): half of the convs, where ``relu`` and ``max`` are allowed."""
    return "relu" in c.activations and "max" in c.pools and ch.boolean()


def _conv(ch: Chooser, height: int, activation_name: str) -> Conv2d:
    """A conv layer on a ``height x height`` map whose output is at least 2x2, so that a 2x2
    pool fits: padding 0..2 (at least 1 on a 1x1 map), kernel 1..5 and stride 1..3 leaving
    room for two positions. The kernel is wider than the padding: an output that sees only
    padding would be ``sigma(b)``, the same in every such cell, a tie in a max pool."""
    padding = ch.integer(0 if height > 1 else 1, 2)
    span = height + 2 * padding
    kernel = ch.integer(padding + 1, min(5, span - 1))
    stride = ch.integer(1, min(3, span - kernel))
    return conv2d(ch.integer(1, 8), kernel, stride, padding, activation_name)


def build_cnn(ch: Chooser, c: Constraints) -> Case:
    """1..max_conv_layers conv layers (channels 1..8, kernel 1..5, stride 1..3, padding 0..2,
    outputs at least 2x2), each maybe pooled (max/avg/L2, windows mostly 2x2 or 3x3; half of
    the convs a ReLU conv with a max pool, ``_relu_max_block``), at least one pool, flatten,
    a dense head; batches of 1..max_batch images."""
    channels, size = ch.integer(1, 3), ch.integer(3, c.max_image)
    layers: list[Layer] = []
    shape = (channels, size, size)
    n_conv = ch.integer(1, c.max_conv_layers)
    pooled = False
    for i in range(n_conv):
        block, last = _relu_max_block(ch, c), i == n_conv - 1
        spec = _conv(ch, shape[1], "relu" if block else ch.choice(c.activations))
        layers.append(spec)
        shape = layer_shapes(tuple(layers), (channels, size, size))[f"z{len(layers)}"]
        if block or (last and not pooled) or ch.boolean():
            pool = (_max_pool(ch, shape[1], last) if block
                    else _pool(ch, c, shape[1], spec.activation, last))
            if pool is not None:
                layers.append(pool)
                pooled = True
                shape = layer_shapes(tuple(layers), (channels, size, size))[f"z{len(layers)}"]
    layers.append(flatten())
    cost = ch.choice(c.costs)
    if ch.boolean() and c.max_layers > 1:
        layers.append(Dense(ch.integer(1, 16), ch.choice(c.activations)))
    layers.append(Dense(ch.integer(1, 10), _output_activation(cost, ch, c)))
    batch = ch.integer(1, c.max_batch)
    seed = ch.integer(0, 2**31 - 1)
    _guard("cnn", c, layers, (channels, size, size), batch)
    rng = np.random.default_rng(seed)
    x = _values(rng, (batch, channels, size, size), c.kinks)
    return _finish("cnn", tuple(layers), cost, x, ch, c, rng, seed)


_POSITIVE_OPS = ("exp", "sigmoid")


def build_graph(ch: Chooser, c: Constraints) -> Case:
    """A random expression DAG of seed 002's nodes over ``x`` and leaves ``p1..``; ``log``,
    ``reciprocal`` and the divisor of ``div`` only take values known to be positive."""
    width, batch = ch.integer(1, 8), ch.integer(1, min(8, c.max_batch))
    leaves = [f"p{i}" for i in range(1, ch.integer(1, 3) + 1)]
    refs: list[str | int | float] = ["x", *leaves]
    positive: list[str | int | float] = [1.0, 2.0]
    nodes: list[Node] = []
    for l in range(1, ch.integer(1, c.max_nodes) + 1):
        op = ch.choice(tuple(GRAPH_OPS))
        if op in ("log", "reciprocal") and len(positive) == 2:
            op = ch.choice(_POSITIVE_OPS)  # no positive node yet: make one
        if op in ("log", "reciprocal"):
            inputs: tuple[str | int | float, ...] = (ch.choice(positive[2:]),)
        elif op == "div":
            inputs = (ch.choice(refs), ch.choice(positive))
        elif GRAPH_OPS[op] == 2:
            inputs = (ch.choice(refs), ch.choice(refs + [0.5, -1.5]))
        else:
            inputs = (ch.choice(refs),)
        nodes.append(node(op, *inputs))
        refs.append(l)
        if op in _POSITIVE_OPS:
            positive.append(l)
    cost = ch.choice([k for k in c.costs if k != "cross_entropy"] or ["quadratic"])
    seed = ch.integer(0, 2**31 - 1)
    _guard("graph", c, nodes, (width,), batch, len(leaves))
    rng = np.random.default_rng(seed)
    dtype = ch.choice(c.dtypes)
    params = {p: rng.uniform(-1, 1, size=width).astype(dtype) for p in leaves}
    case = Case(family="graph", layers=tuple(nodes), cost=cost, params=params,
                x=rng.normal(size=(batch, width)).astype(dtype),
                y=_targets(cost, (batch, width), rng, _soft(ch, c)).astype(dtype),
                dtype=dtype, seed=seed)
    try:
        values = graph_forward(case)
    except CaseError as exc:  # e.g. exp overflowing: not a usable draw
        raise Rejected(str(exc)) from None
    if max(float(np.max(np.abs(v))) for v in values) > 1e3:
        raise Rejected("graph values beyond 1e3")
    _check_gradients(case, c)
    return case


BUILDERS: dict[str, Callable[[Chooser, Constraints], Case]] = {
    "mlp": build_mlp, "cnn": build_cnn, "softmax": build_softmax, "graph": build_graph,
}


# ---------------------------------------------------------------- drivers
# The seeded NumPy driver; the hypothesis driver is in ``hypothesis_strategies``.

# Part of every drawn case's generator seed: fixed, never renumber (it would change every
# drawn case). Case ``index`` of ``family`` under ``seed`` comes from
# ``np.random.default_rng([seed, FAMILY_NUMBERS[family], index, attempt])``.
FAMILY_NUMBERS = {"mlp": 1, "cnn": 2, "softmax": 3, "graph": 4}
ATTEMPTS = 50  # draws of one case before its constraints are declared unsatisfiable


def _natural(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _prepare(family: str, seed: Any, constraints: dict[str, Any]) -> tuple[Constraints, int]:
    """Validate the arguments and refuse constraints over the memory budget, before drawing."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(BUILDERS)}")
    seed = _natural(seed, "seed")
    c = Constraints.make(**constraints)
    check_memory(family, c)
    return c, seed


def _attempts(family: str, c: Constraints, seed: int, index: int,
              constraints: dict[str, Any]) -> tuple[Case, tuple[str, ...]]:
    """Case ``index``: the first of its attempts the builder does not reject, and why each
    attempt before it was rejected."""
    builder, number = BUILDERS[family], FAMILY_NUMBERS[family]
    reasons: list[str] = []
    for attempt in range(ATTEMPTS):
        try:
            chooser = RngChooser(np.random.default_rng([seed, number, index, attempt]))
            return builder(chooser, c), tuple(reasons)
        except Rejected as exc:
            reasons.append(str(exc))
    raise ValueError(f"constraints {constraints} rejected {ATTEMPTS} draws of {family!r} "
                     f"case {index} (the last: {reasons[-1]})")


def _draw_at(family: str, c: Constraints, seed: int, index: int,
             constraints: dict[str, Any]) -> Case:
    return _attempts(family, c, seed, index, constraints)[0]


def case_at(family: str, seed: int, index: int, **constraints: Any) -> Case:
    """Case ``index`` of ``family`` under ``seed`` and ``constraints``, drawn from its own
    generator (``FAMILY_NUMBERS``): the same whatever other cases are drawn, and in any order.
    Constraints whose largest case exceeds the memory budget are refused (``check_memory``)."""
    c, seed = _prepare(family, seed, constraints)
    return _draw_at(family, c, seed, _natural(index, "index"), constraints)


def draw_attempts(family: str, seed: int, index: int, **constraints: Any
                  ) -> tuple[Case, tuple[str, ...]]:
    """``case_at(family, seed, index, **constraints)`` and the reasons the draws before it
    were rejected (a max-pool near-tie the repair could not mend, an all-zero gradient, ...),
    for measuring the drawer (``benchmarks/case_stats.py``)."""
    c, seed = _prepare(family, seed, constraints)
    return _attempts(family, c, seed, _natural(index, "index"), constraints)


def iter_cases(family: str, seed: int, start: int = 0, stop: int | None = None,
               **constraints: Any) -> Iterator[Case]:
    """``case_at(family, seed, i, **constraints)`` for ``i`` in ``start, start + 1, ...``
    up to ``stop`` (excluded; ``None``: without end), each drawn only when asked for. The
    arguments are checked (and the memory budget applied) now, not at the first ``next``."""
    c, seed = _prepare(family, seed, constraints)
    start = _natural(start, "start")
    if stop is not None and _natural(stop, "stop") < start:
        raise ValueError(f"stop must be >= start ({start}), got {stop!r}")
    indices = itertools.count(start) if stop is None else range(start, stop)
    return (_draw_at(family, c, seed, i, constraints) for i in indices)


def cases(family: str, n: int = 100, seed: int = 0, **constraints: Any) -> list[Case]:
    """``n`` cases of ``family`` drawn deterministically from ``seed`` under ``constraints``
    (fields of ``Constraints``: ``activations``, ``costs``, ``pools``, ``dtypes``,
    ``max_layers``, ``max_width``, ``max_batch``, ``max_image``, ``kinks``, ``memory_budget``,
    ``zero_grads``, ...): ``case_at(family, seed, i)`` for ``i < n``, so the first cases do not
    depend on ``n``. A case whose every gradient is exactly zero is redrawn (its next attempt,
    so still deterministic) unless ``zero_grads=True``. Draw lazily with ``iter_cases``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return list(iter_cases(family, seed, 0, int(n), **constraints))
