"""The finite-difference oracle's own forward pass: float64 (or complex128), batched over a
leading perturbation axis ``P``.

Independent of ``reference/`` (only the case model is imported). Every array of the forward
pass carries shape ``(P, N, ...)``: ``P`` perturbed copies of the network evaluated at once by
batched matmul / ``tensordot`` over ``sliding_window_view`` windows. Layer ``l`` maps
``a^(l-1)`` to ``z^l``; ``a^l = sigma(z^l)`` (pool, flatten, dropout: ``a^l = z^l``).

Every function is complex-safe, so the same code serves complex-step differentiation:
branches are chosen on the real part, ``exp`` only ever sees a non-positive real part, and no
``abs`` or ``max`` touches a complex value on an analytic path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ..reference.case import (
    LEAKY_SLOPE,
    Case,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Node,
    Pool,
    graph_nodes,
    parametrised,
)
from ..reference.graph import Ref

Array = NDArray[np.inexact]


def _neg_real(z: Array) -> tuple[Array, NDArray[np.bool_]]:
    """``(w, pos)`` with ``w = -z`` where ``Re z >= 0`` else ``z``: ``Re w <= 0`` always."""
    pos = np.real(z) >= 0
    return np.where(pos, -z, z), pos


def sigmoid(z: Array) -> Array:
    """``1 / (1 + e^-z)``, as ``e^w / (1 + e^w)`` with ``Re w <= 0`` (``w = -|Re z| ...``,
    mirrored for ``Re z >= 0``): no overflow, analytic (complex-safe), and accurate to a few
    eps *relative* in both tails. (``(1 + tanh(z/2)) / 2`` is only accurate to eps absolute;
    its complex step then loses ``eps / sigmoid(z)`` relative through a later ``log``.)"""
    w, pos = _neg_real(z)
    e = np.exp(w)
    s = np.where(pos, 1.0, e)  # one division for both branches: 1 / (1 + e) or e / (1 + e)
    e += 1
    s /= e
    return s


def softplus(z: Array) -> Array:
    """``log(1 + e^z) = max(z, 0) + log1p(e^(-|z|))``, branch on ``Re z``."""
    w, pos = _neg_real(z)
    return np.where(pos, z, 0) + np.log1p(np.exp(w))


def relu(z: Array) -> Array:
    """``z`` where ``Re z > 0``, else ``+0`` (NaN too). For real ``z`` as ``fmax(z, 0) + 0``
    (the ``+ 0`` turns a kept ``-0`` into ``+0``): the same values, several times faster than
    ``np.where`` on the large perturbed batches."""
    if np.iscomplexobj(z):
        return np.where(np.real(z) > 0, z, 0)
    out = np.fmax(z, 0.0)
    out += 0.0
    return out


def leaky_relu(z: Array) -> Array:
    return np.where(np.real(z) > 0, z, LEAKY_SLOPE * z)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "sigmoid": sigmoid, "tanh": np.tanh, "relu": relu, "leaky_relu": leaky_relu,
    "identity": lambda z: z,
}
KINKED = frozenset({"relu", "leaky_relu"})


def windows(a: Array, size: int, stride: int) -> Array:
    """``(..., C, H, W)`` -> ``(..., C, H_out, W_out, size, size)`` strided window view."""
    view = sliding_window_view(a, (size, size), axis=(-2, -1))
    return view[..., ::stride, ::stride, :, :]


def pad(a: Array, padding: int) -> Array:
    if padding == 0:
        return a
    return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(padding, padding)] * 2)


def dense_z(a: Array, W: Array, b: Array) -> Array:
    """``z = a W^T + b`` for ``a`` of shape ``(..., in)``."""
    with np.errstate(invalid="ignore"):  # spurious OpenBLAS flag: see reference.dense.matmul
        return a @ np.swapaxes(W, -1, -2) + b


def conv_z(a: Array, W: Array, b: Array, stride: int, padding: int) -> Array:
    """``z[.., o, i, j] = b[o] + sum_{c,u,v} W[o,c,u,v] a_pad[.., c, s i + u, s j + v]``."""
    win = windows(pad(a, padding), W.shape[2], stride)  # (..., C, Ho, Wo, k, k)
    z = np.tensordot(win, W, axes=([win.ndim - 5, win.ndim - 2, win.ndim - 1], [1, 2, 3]))
    return np.moveaxis(z, -1, -3) + b[:, None, None]


def pool_z(kind: str, a: Array, size: int, stride: int) -> Array:
    """Max / average / L2 (``sqrt(sum x^2)``, no ``abs``) pooling over strided windows."""
    win = windows(a, size, stride)
    if kind == "max":  # offset by offset: a reduction over a strided window view is slow
        z = win[..., 0, 0].copy()
        for u in range(size):
            for v in range(size):
                np.maximum(z, win[..., u, v], out=z)
        return z
    if kind == "avg":
        return win.sum(axis=(-2, -1)) / (size * size)
    return np.sqrt((win * win).sum(axis=(-2, -1)))


def per_sample(c: Array) -> Array:
    """Sum over every axis after ``(P, N)``."""
    return c.reshape(c.shape[0], c.shape[1], -1).sum(axis=2)


def sample_costs(cost: str, z: Array, a: Array, y: Array) -> tuple[Array, Array]:
    """Per-sample costs ``C_x`` (shape ``(P, N)``; the loss is their mean) and the magnitude
    of the terms that produced them (for the roundoff part of the FD error estimate).

    quadratic ``1/2 ||y - a||^2``; cross_entropy ``sum softplus(z) - y z``; softmax
    ``logsumexp(z) sum_k t_k - sum_k t_k z_k`` with a real shift ``m = max Re z``.
    """
    if cost == "quadratic":
        c = per_sample(0.5 * (y - a) ** 2)
        return c, np.abs(np.real(c))
    if cost == "cross_entropy":
        sp, yz = softplus(z), y * z
        return per_sample(sp - yz), per_sample(np.abs(np.real(sp)) + np.abs(np.real(yz)))
    m = np.real(z).max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]
    c = lse * y.sum(axis=-1) - (y * z).sum(axis=-1)
    mag = np.abs(np.real(lse)) * y.sum(axis=-1) + np.abs(np.real(y * z)).sum(axis=-1)
    return c, mag


class Network:
    """A layered case in float64 with its unperturbed forward pass cached.

    ``losses_from(l, z)`` continues the forward pass from a (perturbed, batched) ``z^l``
    and returns per-sample costs; it also records, per sample, the largest change any
    perturbation made to each kink input (``radius``: relu ``z^m``, max-pool input
    ``a^(m-1)``), which the comparison uses to
    decide whether a perturbation could have crossed a kink.
    """

    def __init__(self, case: Case) -> None:
        self.case = case
        self.layers = case.layers
        self.watch = self._kink_inputs(case)
        self.params = {k: np.asarray(v, np.float64) for k, v in case.params.items()}
        self.masks = {k: np.asarray(v, np.float64) for k, v in case.masks.items()}
        self.x = np.asarray(case.x, np.float64)
        self.y = np.asarray(case.y, np.float64)
        self.numbers = dict(parametrised(case.layers))
        self.radius: dict[str, NDArray[np.float64]] = {}
        self.zs: list[Array] = []
        self.acts: list[Array] = [self.x]
        a: Array = self.x[None]
        for l in range(1, len(self.layers) + 1):
            z = self.layer_z(l, a)
            a = self.activate(l, z)
            self.zs.append(z[0])
            self.acts.append(a[0])
        c, mag = sample_costs(case.cost, z, a, self.y)
        self.costs, self.cost_mag = c[0], mag[0]
        self.loss = float(np.mean(self.costs))

    def param(self, l: int, kind: str) -> Array:
        return self.params[f"{kind}{self.numbers[l]}"]

    def layer_z(self, l: int, a: Array, W: Array | None = None, b: Array | None = None
                ) -> Array:
        """``z^l`` from ``a^(l-1)``; ``W``, ``b`` override the case's (directional steps)."""
        spec = self.layers[l - 1]
        if isinstance(spec, (Dense, Conv2d)):
            W = self.param(l, "W") if W is None else W
            b = self.param(l, "b") if b is None else b
            if isinstance(spec, Dense):
                return dense_z(a, W, b)
            return conv_z(a, W, b, spec.stride, spec.padding)
        if isinstance(spec, Pool):
            return pool_z(spec.kind, a, spec.size, spec.stride)
        if isinstance(spec, Flatten):
            return a.reshape(*a.shape[:2], -1)
        if isinstance(spec, Dropout):
            return a * self.masks[f"mask{l}"] / (1 - spec.p)
        raise ValueError(f"layer {l}: {type(spec).__name__} is not a network layer")

    def activate(self, l: int, z: Array) -> Array:
        spec = self.layers[l - 1]
        return ACTIVATIONS[spec.activation](z) if hasattr(spec, "activation") else z

    @staticmethod
    def _kink_inputs(case: Case) -> set[str]:
        """``z<l>`` of relu / leaky_relu layers and ``a<l-1>`` of max-pool layers."""
        keys = set()
        for l, spec in enumerate(case.layers, 1):
            if getattr(spec, "activation", None) in KINKED:
                keys.add(f"z{l}")
            if isinstance(spec, Pool) and spec.kind == "max":
                keys.add(f"a{l - 1}")
        return keys

    def _track(self, key: str, value: Array, base: Array) -> None:
        if key not in self.watch:
            return
        change = value - base
        change = np.abs(change, out=change) if change.dtype.kind == "f" else np.abs(change)
        change = change.reshape(value.shape[0], value.shape[1], -1)
        r = change.max(axis=(0, 2)) if change.size else np.zeros(value.shape[1])
        self.radius[key] = np.maximum(self.radius.get(key, 0.0), r)

    def losses_from_column(self, l: int, j: NDArray[np.intp], dz: Array
                           ) -> tuple[Array, Array]:
        """Per-sample costs when only column ``j[p]`` of dense ``z^l`` moves, by ``dz[p]``
        (``(P, N)``). Then ``a^l`` changes in that column only and the next dense layer's
        ``z`` by the rank-1 term ``(a_j' - a_j) W^(l+1)[:, j]``: no full activation or
        matmul at layer ``l``."""
        P, L = len(j), len(self.layers)
        z = self.zs[l - 1]
        if f"z{l}" in self.watch:
            r = np.abs(dz).max(axis=0)
            self.radius[f"z{l}"] = np.maximum(self.radius.get(f"z{l}", 0.0), r)
        nxt = self.layers[l] if l < L else None
        if not isinstance(nxt, Dense) or f"a{l}" in self.watch:
            full = np.zeros((P, *z.shape), dtype=dz.dtype)
            full[np.arange(P), :, j] = dz
            return self.losses_from(l, z[None] + full)
        z_col = z[:, j].T + dz  # (P, N)
        da = self.activate(l, z_col) - self.acts[l][:, j].T
        W = self.param(l + 1, "W")
        z_next = self.zs[l][None] + da[:, :, None] * W[:, j].T[:, None, :]
        return self.losses_from(l + 1, z_next)

    def losses_from(self, l: int, z: Array) -> tuple[Array, Array]:
        """Per-sample costs ``(P, N)`` and their term magnitudes, from batched ``z^l``."""
        a = self.activate(l, z)
        self._track(f"z{l}", z, self.zs[l - 1])
        self._track(f"a{l}", a, self.acts[l])
        for m in range(l + 1, len(self.layers) + 1):
            z = self.layer_z(m, a)
            a = self.activate(m, z)
            self._track(f"z{m}", z, self.zs[m - 1])
            self._track(f"a{m}", a, self.acts[m])
        return sample_costs(self.case.cost, z, a, self.y)


GRAPH_FORWARD: dict[str, Callable[..., Array]] = {
    "add": lambda a, b: a + b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "neg": lambda a: -a, "exp": np.exp, "reciprocal": lambda a: 1 / a, "log": np.log,
    "sigmoid": sigmoid,
}


class Graph:
    """A graph case in float64. Internally every node value has shape ``(P, N or 1, k or 1)``;
    its natural shape (``(N, k)``, ``(k,)`` for leaf-only nodes, ``()`` for constants) is
    ``shape(l)``. ``losses(leaves, offsets, P)``: per-sample costs with batched leaves
    ``(P, k)`` and additive offsets ``(P, *shape(l))`` on node values."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.nodes = graph_nodes(case)
        self.params = {k: np.asarray(v, np.float64) for k, v in case.params.items()}
        self.x = np.asarray(case.x, np.float64)
        self.y = np.asarray(case.y, np.float64)
        self.radius: dict[str, NDArray[np.float64]] = {}
        self.shapes: list[tuple[int, ...]] = []
        for spec in self.nodes:
            self.shapes.append(np.broadcast_shapes(*(self._natural(r) for r in spec.inputs)))
        self.values = [v[0] for v in self._values({}, {})]
        c, mag = self._costs(self.values[-1][None])
        self.costs, self.cost_mag = c[0], mag[0]
        self.loss = float(np.mean(self.costs))

    def _natural(self, ref: Ref) -> tuple[int, ...]:
        if isinstance(ref, str):
            return self.x.shape if ref == "x" else self.params[ref].shape
        if isinstance(ref, float):
            return ()
        return self.shapes[ref - 1]

    @staticmethod
    def lift(value: Array, natural: tuple[int, ...]) -> Array:
        """``(P, *natural)`` -> ``(P, N or 1, k or 1)``."""
        return value.reshape(value.shape[0], *([1] * (2 - len(natural))), *natural)

    def _ref(self, ref: Ref, leaves: dict[str, Array], values: list[Array]) -> Array:
        if isinstance(ref, str):
            if ref == "x":
                return self.x[None]
            leaf = leaves[ref] if ref in leaves else self.params[ref][None]
            return self.lift(leaf, self.params[ref].shape)
        if isinstance(ref, float):
            return np.full((1, 1, 1), ref)
        return values[ref - 1]

    def _values(self, leaves: dict[str, Array], offsets: dict[int, Array]) -> list[Array]:
        values: list[Array] = []
        for l, spec in enumerate(self.nodes, 1):
            out = GRAPH_FORWARD[spec.op](*(self._ref(r, leaves, values) for r in spec.inputs))
            if l in offsets:
                out = out + self.lift(offsets[l], self.shapes[l - 1])
            values.append(out)
        return values

    def _costs(self, out: Array) -> tuple[Array, Array]:
        out = np.broadcast_to(out, (out.shape[0], *self.y.shape))
        return sample_costs(self.case.cost, out, out, self.y)

    def losses(self, leaves: dict[str, Array], offsets: dict[int, Array]
               ) -> tuple[Array, Array]:
        """``(P, N)`` costs, also when the perturbed leaf or node does not reach the output
        (then every copy is the unperturbed cost)."""
        P = max((v.shape[0] for v in (*leaves.values(), *offsets.values())), default=1)
        out = self._values(leaves, offsets)[-1]
        return self._costs(np.broadcast_to(out, (P, *out.shape[1:])))


def build(case: Case) -> Network | Graph:
    return Graph(case) if case.family == "graph" else Network(case)


def is_analytic(case: Case) -> bool:
    """No relu / leaky_relu and no max pooling anywhere: complex step applies."""
    for spec in case.layers:
        if isinstance(spec, Node):
            continue
        if getattr(spec, "activation", None) in KINKED:
            return False
        if isinstance(spec, Pool) and spec.kind == "max":
            return False
    return True
