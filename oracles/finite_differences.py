"""Finite-difference oracle: central differences with Richardson extrapolation, or
complex-step differentiation where the whole path is analytic, in float64 whatever the dtype
under test.

Quantities: the loss, ``dC/dtheta`` for every parameter, and ``delta^l = dC/dz^l`` for every
layer (graph node), the latter through an additive offset on ``z^l`` in the forward pass.
The forward pass is the oracle's own (``_forward64``), never the reference's.

Central differences, per element with step ``h = 2^round(log2(eps^(1/3) max(1, |theta|)))``
(``eps = 2^-52``, so ``h ~ 2^-17 max(1, |theta|)``, exactly representable and far above one
ulp of ``theta``):

    D(h) = (C(theta + h) - C(theta - h)) / 2h           error  ~ C''' h^2 / 6 + eps |C| / h
    D    = (4 D(h/2) - D(h)) / 3                          (Richardson: error O(h^4))
    err  = 3 |D(h/2) - D(h)| + 16 eps S / (h/2)          (S: magnitude of the cost's terms)

``|D(h/2) - D(h)|`` measures the truncation error of ``D(h/2)`` (an over-estimate of that of
``D``) plus the roundoff noise of both (``D`` amplifies the noise of ``D(h/2)`` by about 1.5,
hence the factor 3); the second term bounds the roundoff of the cost itself.

Complex step (no relu / leaky_relu, no max pooling anywhere): ``D = Im C(theta + i h) / h``
with ``h = 1e-20 max(1, |theta|)``; no subtraction, so ``err = 4 eps |D|`` (plus the forward
rounding that the comparison's error model adds for a float64 computation).

Batching: a parameter perturbation is turned into the exact offset it makes on ``z^l`` (dense
``W[j,k] + h`` adds ``h a^(l-1)[:, k]`` to ``z^l[:, j]``; conv ``W[o,c,u,v] + h`` adds ``h``
times the ``(u, v)``-shifted input channel ``c`` to output channel ``o``); all perturbed copies
of a chunk run through the remaining layers at once. For ``delta^l`` the samples of a batch are
independent, so coordinate ``j`` is perturbed in every sample at once and each sample's own
cost gives ``dC/dz^l[n, j] = (1/N) dC_n/dz^l[n, j]``.

The screen (``screen_then_locate``) compares ``g^T u`` with the FD derivative of the loss along
a few Rademacher directions ``u`` per tensor and computes full coordinates only where it fails.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..reference.case import Case, Conv2d, Dense, parametrised
from ..reference.result import Result
from ._forward64 import Graph, Network, build, is_analytic, pad, windows
from .base import Oracle, cast

Array = NDArray[np.inexact]
EPS = float(np.finfo(np.float64).eps)
CS_STEP = 1e-20
MEMORY_BUDGET = 512 * 2**20  # bytes for one chunk of perturbed copies (well under 1 GiB)
METHODS = ("auto", "fd", "complex_step")


def fd_step(values: Array) -> NDArray[np.floating]:
    """``2^round(log2(eps^(1/3) max(1, |v|)))`` per element: never so small that
    ``v + h == v`` (``h >= 2^-18 |v|`` while one ulp is ``2^-52 |v|``)."""
    scale = EPS ** (1 / 3) * np.maximum(1.0, np.abs(values))
    return np.exp2(np.round(np.log2(scale)))


@dataclass
class Target:
    """One tensor to differentiate. Coordinates index ``shape`` (``per_sample=False``) or
    ``shape[1:]`` with every sample perturbed at once (``per_sample=True``).

    ``coords(coord (P,), amount (P,) or (P, N))`` and ``along(offsets (P, *shape))`` return
    per-sample costs ``(P, N)`` and their magnitudes."""

    name: str
    base: Array
    per_sample: bool
    coords: Callable[[NDArray[np.intp], Array], tuple[Array, NDArray]]
    along: Callable[[Array], tuple[Array, NDArray]]
    width: int  # floats per sample per perturbed copy (memory estimate)

    @property
    def n_coords(self) -> int:
        shape = self.base.shape[1:] if self.per_sample else self.base.shape
        return int(np.prod(shape, dtype=np.int64))


def _column_offset(P: int, zshape: tuple[int, ...], coord: NDArray[np.intp], values: Array
                   ) -> Array:
    """``(P, N, *zshape[1:])`` zeros with ``values[p]`` (``(N, ...)`` per copy) placed at
    flat coordinate ``coord[p]`` of the first non-batch axis block."""
    N = zshape[0]
    offset = np.zeros((P, N, zshape[1], int(np.prod(zshape[2:], dtype=np.int64))),
                      dtype=values.dtype)
    offset[np.arange(P), :, coord] = values.reshape(P, N, -1)
    return offset.reshape(P, *zshape)


def _network_targets(net: Network) -> list[Target]:
    """Parameter and ``delta^l`` targets of a layered network."""
    targets: list[Target] = []
    width = max(int(np.prod(z.shape[1:])) for z in [net.x, *net.zs]) * _window_factor(net)
    for l, number in parametrised(net.layers):
        targets.extend(_param_targets(net, l, number, width))
    for l in range(1, len(net.layers) + 1):
        targets.append(_delta_target(net, l, width))
    return targets


def _window_factor(net: Network) -> int:
    sizes = [getattr(s, "kernel", getattr(s, "size", 1)) for s in net.layers]
    return 2 + max(sizes) ** 2


def _param_targets(net: Network, l: int, number: int, width: int) -> list[Target]:
    spec = typing.cast("Dense | Conv2d", net.layers[l - 1])  # called for parametrised layers
    z, a_prev = net.zs[l - 1], net.acts[l - 1]
    W, b = net.param(l, "W"), net.param(l, "b")

    def run(offset: Array) -> tuple[Array, NDArray]:
        return net.losses_from(l, z[None] + offset)

    def w_coords(coord: NDArray[np.intp], amount: Array) -> tuple[Array, NDArray]:
        P = len(coord)
        if isinstance(spec, Dense):
            j, k = np.divmod(coord, W.shape[1])
            cols = a_prev[:, k].T  # (P, N): dz^l[:, j] = h a^(l-1)[:, k]
            return net.losses_from_column(l, j, amount[:, None] * cols)
        o, rest = np.divmod(coord, int(np.prod(W.shape[1:])))
        c, uv = np.divmod(rest, W.shape[2] * W.shape[3])
        u, v = np.divmod(uv, W.shape[3])
        win = windows(pad(a_prev, spec.padding), W.shape[2], spec.stride)
        shifted = win[:, c, :, :, u, v]  # advanced indices first: (P, N, Ho, Wo)
        return run(_column_offset(P, z.shape, o, amount[:, None, None, None] * shifted))

    def b_coords(coord: NDArray[np.intp], amount: Array) -> tuple[Array, NDArray]:
        P, N = len(coord), z.shape[0]
        if isinstance(spec, Dense):
            return net.losses_from_column(l, coord, np.repeat(amount[:, None], N, axis=1))
        ones = np.ones((P, N, *z.shape[2:]))
        return run(_column_offset(P, z.shape, coord, amount.reshape(P, *[1] * (z.ndim - 1)) * ones))

    def w_along(dW: Array) -> tuple[Array, NDArray]:
        return run(net.layer_z(l, a_prev[None], W=dW, b=np.zeros_like(b))
                   if isinstance(spec, Dense) else _conv_along(net, l, a_prev, dW, b))

    def b_along(db: Array) -> tuple[Array, NDArray]:
        shape = (db.shape[0], 1, db.shape[1], *[1] * (z.ndim - 2))
        return run(np.broadcast_to(db.reshape(shape), (db.shape[0], *z.shape)))

    return [Target(f"W{number}", W, False, w_coords, w_along, width),
            Target(f"b{number}", b, False, b_coords, b_along, width)]


def _conv_along(net: Network, l: int, a_prev: Array, dW: Array, b: Array) -> Array:
    """``z`` offsets ``(P, N, O, Ho, Wo)`` of a batch of conv weight directions ``dW``."""
    return np.stack([net.layer_z(l, a_prev[None], W=w, b=np.zeros_like(b))[0] for w in dW])


def _delta_target(net: Network, l: int, width: int) -> Target:
    z = net.zs[l - 1]

    def coords(coord: NDArray[np.intp], amount: Array) -> tuple[Array, NDArray]:
        if isinstance(net.layers[l - 1], Dense):
            return net.losses_from_column(l, coord, amount)
        flat = np.zeros((len(coord), *z.shape), dtype=amount.dtype).reshape(len(coord),
                                                                             z.shape[0], -1)
        flat[np.arange(len(coord)), :, coord] = amount
        return net.losses_from(l, z[None] + flat.reshape(len(coord), *z.shape))

    def along(offset: Array) -> tuple[Array, NDArray]:
        return net.losses_from(l, z[None] + offset)

    return Target(f"delta{l}", z, True, coords, along, width)


def _graph_targets(g: Graph) -> list[Target]:
    width = 4 * int(np.prod(g.y.shape[1:])) * (len(g.nodes) + 2)
    targets = []
    for name, leaf in g.params.items():
        targets.append(_leaf_target(g, name, leaf, width))
    for l in range(1, len(g.nodes) + 1):
        targets.append(_node_target(g, l, width))
    return targets


def _leaf_target(g: Graph, name: str, leaf: NDArray, width: int) -> Target:
    def coords(coord: NDArray[np.intp], amount: Array) -> tuple[Array, NDArray]:
        P = len(coord)
        batched: NDArray = np.repeat(leaf[None], P, axis=0).astype(amount.dtype)
        batched.reshape(P, -1)[np.arange(P), coord] += amount
        return g.losses({name: batched}, {})

    def along(offset: Array) -> tuple[Array, NDArray]:
        return g.losses({name: leaf[None] + offset}, {})

    return Target(name, leaf, False, coords, along, width)


def _node_target(g: Graph, l: int, width: int) -> Target:
    shape = g.shapes[l - 1]
    base = g.values[l - 1].reshape(shape)
    per_sample = len(shape) == 2

    def coords(coord: NDArray[np.intp], amount: Array) -> tuple[Array, NDArray]:
        P = len(coord)
        if per_sample:
            offset = np.zeros((P, shape[0], int(np.prod(shape[1:]))), dtype=amount.dtype)
            offset[np.arange(P), :, coord] = amount
        else:
            offset = np.zeros((P, max(1, int(np.prod(shape)))), dtype=amount.dtype)
            offset[np.arange(P), coord] = amount
        return g.losses({}, {l: offset.reshape(P, *shape)})

    def along(offset: Array) -> tuple[Array, NDArray]:
        return g.losses({}, {l: offset})

    return Target(f"delta{l}", np.array(base, dtype=np.float64), per_sample, coords, along,
                  width)


def targets_for(model: Network | Graph) -> list[Target]:
    return _graph_targets(model) if isinstance(model, Graph) else _network_targets(model)


def _chunk(target: Target, copies: int, batch: int) -> int:
    """Coordinates per chunk so that the perturbed copies stay under ``MEMORY_BUDGET``."""
    per_copy = 16 * 4 * batch * max(1, target.width)
    return max(1, MEMORY_BUDGET // (copies * per_copy))


def _coordinate_steps(target: Target, method: str) -> NDArray[np.floating]:
    """Steps shaped ``(n_coords,)`` or ``(n_coords, N)`` (per-sample targets)."""
    h: NDArray[np.floating]
    if method == "complex_step":
        h = CS_STEP * np.maximum(1.0, np.abs(target.base))
    else:
        h = fd_step(target.base)
    if target.per_sample:
        return h.reshape(h.shape[0], -1).T.copy()
    return h.reshape(-1)


def _differentiate(target: Target, method: str, N: int) -> tuple[NDArray, NDArray, NDArray, int]:
    """``(D, err, h)`` per coordinate and the number of perturbed evaluations."""
    h = _coordinate_steps(target, method)
    n = target.n_coords
    copies = 1 if method == "complex_step" else 4
    size = _chunk(target, copies, N)
    D = np.empty_like(h)
    err = np.empty_like(h)
    for start in range(0, n, size):
        stop = min(n, start + size)
        D[start:stop], err[start:stop] = _chunk_derivative(target, method, start, h[start:stop],
                                                           N)
    return D, pooled_error(err), h, n * copies


def pooled_error(err: NDArray) -> NDArray:
    """Each element's estimate, but at least the tensor's 90th percentile: the roundoff noise
    of a difference quotient is a property of the whole tensor (same steps, same forward
    sums), while one element's Richardson difference ``|D(h/2) - D(h)|`` can be small by a
    chance cancellation (seen: a float64 delta 1.6x beyond its own estimate)."""
    if err.size == 0:
        return err
    return np.maximum(err, np.quantile(err, 0.9))


def _chunk_derivative(target: Target, method: str, start: int, h: NDArray, N: int
                      ) -> tuple[NDArray, NDArray]:
    c = h.shape[0]
    coord = np.arange(start, start + c)
    if method == "complex_step":
        costs, _ = target.coords(coord, 1j * h)
        value = costs.imag if target.per_sample else costs.imag.mean(axis=1)
        D = value / (h * N) if target.per_sample else value / h
        spread = np.abs(costs.imag).mean(axis=1) / h if not target.per_sample else np.abs(D)
        return D, 4 * EPS * (np.abs(D) + spread)
    ladder = np.concatenate([h, -h, h / 2, -h / 2])  # (4c,) or (4c, N)
    costs, mag = target.coords(np.tile(coord, 4), ladder)
    if not target.per_sample:
        costs, mag = costs.mean(axis=1), mag.mean(axis=1)
        scale = 1.0
    else:
        costs, scale = costs / 1.0, 1.0 / N
    cp, cm, hp, hm = costs[:c], costs[c:2 * c], costs[2 * c:3 * c], costs[3 * c:]
    d1 = (cp - cm) / (2 * h) * scale
    d2 = (hp - hm) / h * scale
    D = (4 * d2 - d1) / 3
    S = mag.reshape(4, c, *mag.shape[1:]).max(axis=0)
    return D, 3 * np.abs(d2 - d1) + 16 * EPS * S * scale / (h / 2)


def _reshape(target: Target, flat: NDArray) -> NDArray:
    if target.per_sample:
        return flat.T.reshape(target.base.shape)
    return flat.reshape(target.base.shape)


def choose_method(case: Case, method: str = "auto") -> str:
    """``complex_step`` where the path is analytic (and ``method`` allows), else ``fd``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "complex_step" if is_analytic(case) else "fd"
    if method == "complex_step" and not is_analytic(case):
        return "fd"  # switched off: relu / leaky_relu / max pooling on the path
    return method


class FiniteDifferences(Oracle):
    """Central differences + Richardson (``mode="fd"``) or complex step
    (``mode="complex_step"``, automatic on analytic paths). ``Result.meta``: ``method``,
    ``methods`` per tensor, ``fd_error`` / ``fd_step`` per tensor, ``kink_radius`` (per
    sample, the largest change any perturbation made to ``z<l>`` / ``a<l>``)."""

    name = "fd"
    precision = "strict"

    def __init__(self, method: str = "auto", deltas: bool = True) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.deltas = deltas

    @property
    def mode(self) -> str:  # type: ignore[override]  # read-only: follows self.method
        return "fd" if self.method == "fd" else "complex_step"

    def settings(self, device: str = "cpu") -> dict:
        return {"numpy": np.__version__, "method": self.method, "computed_in": "float64",
                "step": "2^round(log2(eps^(1/3) max(1,|theta|))), Richardson h, h/2",
                "complex_step": CS_STEP}

    def run(self, case: Case, device: str = "cpu", dtype: str | None = None,
            only: list[str] | None = None) -> Result:
        """FD ``Result`` for ``case`` (arrays rounded to ``dtype`` first, then computed in
        float64). ``only``: names of the tensors to compute (default all)."""
        reason = self.available(device)
        if reason:
            raise RuntimeError(reason)
        case = cast(case, dtype)
        method = choose_method(case, self.method)
        model = build(case)
        grads: dict[str, NDArray[np.floating]] = {}
        deltas: dict[str, NDArray[np.floating]] = {}
        errors, steps, methods = {}, {}, {}
        evaluations = 1
        for target in targets_for(model):
            is_delta = target.name.startswith("delta")
            if (only is not None and target.name not in only) or (is_delta and not self.deltas
                                                                     and only is None):
                continue
            D, err, h, n = _differentiate(target, method, case.batch)
            if method == "complex_step":  # cancellation: terms ~ the tensor's own scale
                err = err + 8 * EPS * float(np.abs(D).max(initial=0.0))
            evaluations += n
            (deltas if is_delta else grads)[target.name] = _reshape(target, D)
            errors[target.name] = _reshape(target, err)
            steps[target.name] = _reshape(target, h)
            methods[target.name] = method
        return Result(
            loss=model.loss, grads=grads, deltas=deltas,
            meta={"method": method, "requested": self.method, "methods": methods,
                  "fd_error": errors, "fd_step": steps, "dtype_computed": "float64",
                  "dtype_values": case.dtype, "kink_radius": dict(model.radius),
                  "evaluations": evaluations, "oracle": self.name},
        )


# ----------------------------------------------------------------------------- the screen

def directional(case: Case, directions: dict[str, NDArray], method: str = "fd"
                ) -> dict[str, tuple[NDArray, NDArray]]:
    """FD derivative of the loss along each direction: ``{name: (D (k,), err (k,))}`` for
    ``directions[name]`` of shape ``(k, *shape)``; uniform step
    ``t = 2^round(log2(eps^(1/3) max(1, max|theta|)))`` and the same Richardson ladder."""
    model = build(case)
    by_name = {t.name: t for t in targets_for(model)}
    out = {}
    for name, u in directions.items():
        target = by_name[name]
        out[name] = _along(target, np.asarray(u, np.float64), method, case.batch)
    return out


def _along(target: Target, u: NDArray, method: str, N: int) -> tuple[NDArray, NDArray]:
    k = u.shape[0]
    if method == "complex_step":
        t = CS_STEP * max(1.0, float(np.abs(target.base).max(initial=0.0)))
        costs, _ = target.along(1j * t * u)
        D = costs.imag.mean(axis=1) / t
        return D, 4 * EPS * np.abs(D) + 4 * EPS * np.abs(u).sum(axis=tuple(range(1, u.ndim)))
    t = float(fd_step(np.array(np.abs(target.base).max(initial=0.0))))
    ladder = np.concatenate([t * u, -t * u, t / 2 * u, -t / 2 * u])
    costs, mag = target.along(ladder)
    L, S = costs.mean(axis=1), mag.mean(axis=1)
    d1 = (L[:k] - L[k:2 * k]) / (2 * t)
    d2 = (L[2 * k:3 * k] - L[3 * k:]) / t
    D = (4 * d2 - d1) / 3
    return D, 3 * np.abs(d2 - d1) + 16 * EPS * S.reshape(4, k).max(axis=0) / (t / 2)


def hoeffding_factor(alpha: float) -> float:
    """``c`` with ``P(|sum_i u_i e_i| >= c ||e||_2) <= 2 exp(-c^2/2) = alpha`` for Rademacher
    ``u`` and any fixed error vector ``e`` (Hoeffding)."""
    return float(np.sqrt(2 * np.log(2 / alpha)))
