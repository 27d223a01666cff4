"""The error model: a tolerance per element, derived from the computation that produced it.

For an element ``i`` of a quantity (loss, ``dC/dtheta``, ``delta^l``) computed in a dtype with
unit roundoff ``u`` (``2^-24`` float32, ``2^-53`` float64), and compared with an oracle:

    tol_i = kappa * (u_actual + u_expected) * E_i  +  fd_err_i

* ``E_i`` (in units of ``u``) is a first-order running-error bound of the whole computation,
  obtained by running the same recurrences on absolute values (Higham, *Accuracy and Stability
  of Numerical Algorithms*, ch. 3): every rounded operation contributes ``u |result|``, a dot
  product / sum of length ``n`` contributes ``n u sum |terms|`` (the bound for any summation
  order, BLAS blocking and FMA included), and an input error ``e`` is carried through the
  operation's local derivative in absolute value. So ``E_i = K_i * M_i`` where ``M_i`` is the
  magnitude of the terms that produced element ``i`` (the backward pass on ``|W|``, ``|a|``,
  ``|delta|``, ``|sigma'(z)|``) and ``K_i`` the growth factor of the path: the number of
  rounding stages (layers x operations per layer) plus the accumulation lengths ``n`` of the
  sums along it (fan-in for ``z``, fan-out for ``W^T delta``, batch for BP3/BP4, batch x output
  positions for conv). Records show ``K = E/M`` and ``M`` at the worst element.
* ``sigma'(z)``, computed as ``s (1 - s)`` or ``1 - tanh^2``, has an *absolute* rounding of
  about ``u`` even where ``sigma'`` is tiny (saturation), and inherits the forward error of
  ``z`` through ``sigma''``:  ``E[sigma'] = c_sigma * R(z) + |sigma''(z)| * E[z]`` with
  ``R = 3 s + sigma'`` (sigmoid), ``5 t^2 + sigma'`` (tanh). The forward error ``E[z^l] =
  |W| E[a^(l-1)] + (fan_in + 1) (|W| |a| + |b|)`` is propagated from the input.
* BP1 magnitudes: quadratic ``(E[a] + |a - y|) |sigma'| / n + |a - y| E[sigma'] / n``;
  cross-entropy ``(E[a] + a softplus(z) + |a - y|) / n``; softmax ``(E[s] + |s - t|) / n``
  with ``E[s] = s (E[z] + sum_j s_j E[z_j] + |z - max z| + |lse| + K + 3)``: extreme logits
  (up to 1e4) enter through ``E[z]`` and ``|z - max z|``. The ``a softplus(z)`` and
  ``s |lse|`` terms cover frameworks that form the probability in log space,
  ``exp(z - lse)``: ``lse`` carries an absolute rounding of ``u |lse|``, which becomes a
  relative error of the probability (JAX's gradient of ``softplus`` does this: at ``z = 33``
  it returns ``sigma(z) = 1`` exactly, 3e-15 away from the true ``1 - 2.9e-15``).
* Underflow: XLA flushes subnormal results to zero (NumPy and PyTorch on CPU do not), so an
  operation may also make an absolute error up to ``tiny`` (the smallest normal number of the
  dtype), which the backward pass can amplify at most by ``gain`` (the product over layers of
  ``max(1, sum |W|)``, or over graph nodes of their largest local derivative). The tolerance
  adds the floor ``kappa * tiny * (L + 1) * gain``: negligible wherever values are normal, it
  keeps a probability of 1e-322 that came out as 0 from being called a divergence.
* The loss: the same forward bounds, through the cost's own terms (softplus, ``|y z|``,
  log-sum-exp, squared residuals) and the ``n`` additions of the batch sum.
* ``u_expected``: the oracle's own rounding (float64 for finite differences, whose truncation
  and roundoff are in ``fd_err_i`` from ``Result.meta["fd_error"]``).
* ``kappa = 2``: a safety factor on the first-order model, calibrated on random cases of every
  family in float32 and float64 against float64 finite differences and float64 analytic
  results (zero false alarms; tests/properties/comparison/test_error_model.py re-runs a slice
  of that campaign), while keeping a float32 error of 1e-3 relative and a float64 scale error
  of 1e-4 visible.

Everything here runs in float64 on the case's values (exact for float32 cases) and may call
the reference's layer functions: the bounds are recurrences on absolute values, not gradients.
Layers are told apart by the ``kind`` of their rule in ``reference.layers.LAYER_RULES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import NDArray

from ...reference import graph as ref_graph
from ...reference import network, pooling
from ...reference.activations import sigmoid
from ...reference.case import Case, Dense, Dropout, Pool, graph_nodes, parametrised
from ...reference.costs import softmax as softmax_fn
from ...reference.costs import softplus
from ...reference.layers import NO_ARRAYS, LayerArrays, layer_rule
from ...reference.result import Result

__all__ = [
    "Array", "Bounds", "bounds", "describe", "KAPPA", "smallest_normal", "tolerance",
    "underflow_floor", "UNIT_ROUNDOFF", "unit_roundoff"
]

Array = NDArray[np.floating]  # float64 at run time; floating is what numpy's stubs return
KAPPA = 2.0
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24,
                 "float64": 2.0**-53}


def unit_roundoff(dtype: str) -> float:
    """``u`` of a dtype name (``float32`` -> ``2^-24``)."""
    try:
        return UNIT_ROUNDOFF[str(dtype)]
    except KeyError:
        raise ValueError(f"no unit roundoff for dtype {dtype!r}") from None


@dataclass
class Bounds:
    """``E[name]``: rounding budget in units of ``u`` per element (``"loss"`` included);
    ``M[name]``: magnitude of the terms; ``z``/``Ez``: float64 ``z^l`` and its forward bound;
    ``gaps``: max-pool runner-up gaps of the float64 forward; ``kinked``: layer -> kind."""

    E: dict[str, Array] = field(default_factory=dict)
    M: dict[str, Array] = field(default_factory=dict)
    z: dict[str, Array] = field(default_factory=dict)
    Ez: dict[str, Array] = field(default_factory=dict)
    gaps: dict[str, Array] = field(default_factory=dict)
    kinked: dict[int, str] = field(default_factory=dict)
    values: dict[str, Array] = field(default_factory=dict)
    gain: float = 1.0  # bound on how much the backward pass amplifies an absolute error
    stages: int = 1  # rounding stages along the longest path (layers or nodes + 1)


def _abs(case: Case) -> dict[str, Array]:
    return {k: np.abs(np.asarray(v, np.float64)) for k, v in case.params.items()}


# ----------------------------------------------------------------------- activations

def _act_terms(name: str, z: Array) -> tuple[Array, Array, Array, Array]:
    """``(|sigma'|, |sigma''|, R' (rounding of sigma'), R (rounding of sigma))``."""
    zero = np.zeros_like(z)
    if name == "sigmoid":
        s = sigmoid(z)
        d = s * (1 - s)
        return d, np.abs(d * (1 - 2 * s)), 3 * s + d, 3 * s
    if name == "tanh":
        t = np.tanh(z)
        d = 1 - t * t
        return d, np.abs(2 * t * d), 5 * t * t + d, 2 * np.abs(t)
    if name == "relu":
        return (z > 0).astype(float), zero, zero, zero
    if name == "leaky_relu":
        d = np.where(z > 0, 1.0, 0.01)
        return d, zero, np.where(z > 0, 0.0, 0.01), np.where(z > 0, 0.0, 0.01 * np.abs(z))
    return np.ones_like(z), zero, zero, zero


# ----------------------------------------------------------------------- layered networks

def _forward_bounds(case: Case, zs: list[Array], acts: list[Array]
                    ) -> tuple[list[Array], list[Array], list[Array]]:
    """``(Ez, Ea, Mz)`` per layer (``Ea[0] = 0``: the input is exact)."""
    P = _abs(case)
    numbers = dict(parametrised(case.layers))
    Ea, Ez, Mz = [np.zeros_like(acts[0])], [], []
    for l, spec in enumerate(case.layers, 1):
        a, ea, z = np.abs(acts[l - 1]), Ea[-1], zs[l - 1]
        rule = layer_rule(spec)
        if rule.has_params:  # dense, conv2d: fan-in W[0].size
            W, b = P[f"W{numbers[l]}"], P[f"b{numbers[l]}"]
            m = rule.forward(spec, a, LayerArrays(W, b))
            e = rule.forward(spec, ea, LayerArrays(W, 0 * b)) + (W[0].size + 1) * m
        elif rule.kind == "pool":
            pool = cast(Pool, spec)  # the rule kind fixes the spec type
            k2 = pool.size ** 2
            if pool.kind == "max":
                m, e = np.abs(z), pooling.forward("max", ea, pool.size, pool.stride)
            elif pool.kind == "avg":
                m = pooling.forward("avg", a, pool.size, pool.stride)
                e = pooling.forward("avg", ea, pool.size, pool.stride) + (k2 + 1) * m
            else:
                m = np.abs(z)
                s = pooling.forward("avg", a * ea, pool.size, pool.stride) * k2
                e = np.where(z > 0, s / np.where(z > 0, z, 1), np.sqrt(k2) * pooling.forward(
                    "max", ea, pool.size, pool.stride)) + (k2 + 2) * m
        elif rule.kind == "flatten":
            m, e = rule.forward(spec, a, NO_ARRAYS), rule.forward(spec, ea, NO_ARRAYS)
        else:  # dropout
            scale = case.masks[f"mask{l}"] / (1 - cast(Dropout, spec).p)
            m, e = np.abs(z), ea * scale + 2 * np.abs(z)
        Ez.append(e)
        Mz.append(m)
        if hasattr(spec, "activation"):
            d, _, _, r = _act_terms(spec.activation, z)
            Ea.append(d * e + r)
        else:
            Ea.append(e)
    return Ez, Ea, Mz


def _bp1(case: Case, zL: Array, aL: Array, EzL: Array, EaL: Array
         ) -> tuple[Array, Array, Array, Array]:
    """``(E[delta^L], M[delta^L], E[loss], M[loss])`` (units of ``u``)."""
    y, n = np.asarray(case.y, np.float64), case.batch
    count = y[0].size
    if case.cost == "quadratic":
        d, dd, r1, _ = _act_terms(cast(Dense, case.layers[-1]).activation, zL)  # validated
        res = np.abs(aL - y)
        esig = r1 + dd * EzL
        delta = res * d / n
        E: Array = ((EaL + res) * d + res * esig) / n + 2 * delta
        terms: Array = 0.5 * res ** 2
        E_loss = (np.sum(res * EaL) + (count + 4) * np.sum(terms) + np.sum(res * res)) / n
        return E, (np.abs(aL) + np.abs(y)) * d / n, np.asarray(E_loss), np.asarray(
            np.sum(terms) / n)
    if case.cost == "cross_entropy":
        res = np.abs(aL - y)
        E = (EaL + np.abs(aL) * softplus(zL) + res) / n + res / n  # + log-space sigma
        terms = softplus(zL) + np.abs(y * zL)
        E_loss = (np.sum(res * EzL) + (count + 4) * np.sum(terms)) / n
        return E, (np.abs(aL) + np.abs(y)) / n, np.asarray(E_loss), np.asarray(
            np.sum(terms) / n)
    return _softmax_bp1(zL, y, EzL, n)


def _softmax_bp1(z: Array, t: Array, Ez: Array, n: int) -> tuple[Array, Array, Array, Array]:
    s = softmax_fn(z)
    K = z.shape[-1]
    shift = np.abs(z - z.max(axis=-1, keepdims=True))
    m = z.max(axis=-1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=-1))
    Es = s * (Ez + (s * Ez).sum(axis=-1, keepdims=True) + shift + np.abs(lse)[:, None] + K + 3)
    res = np.abs(s - t)
    E = (Es + res) / n + res / n
    terms = (np.abs(lse) + np.abs(m)) * t.sum(axis=-1) + np.abs(t * z).sum(axis=-1) + K
    E_loss = (np.sum(res * Ez) + (K + n + 4) * np.sum(terms)) / n
    return E, (s + t) / n, np.asarray(E_loss), np.asarray(np.sum(terms) / n)


def _layer_back(case: Case, l: int, Ed: Array, Md: Array, d: Array, acts: list[Array],
                Ea: list[Array], zs: list[Array], Ez: list[Array], b: Bounds,
                P: dict[str, Array]) -> tuple[Array, Array] | None:
    """Fill ``b.E``/``b.M`` for layer ``l``'s parameters; return ``(E, M)`` of
    ``dC/da^(l-1)`` (``None`` for layer 1)."""
    spec, numbers = case.layers[l - 1], dict(parametrised(case.layers))
    a, ea, ad, z = np.abs(acts[l - 1]), Ea[l - 1], np.abs(d), zs[l - 1]
    first, rule = l == 1, layer_rule(spec)
    if rule.has_params:
        W = P[f"W{numbers[l]}"]
        arrays = LayerArrays(W=W)
        if rule.kind == "dense":
            n_sum, n_in = case.batch, W.shape[0]
        else:  # conv2d: sums over the batch and the output positions
            n_sum, n_in = case.batch * d[0, 0].size, W.shape[0] * W.shape[2] * W.shape[3]
        mW, mb, mda, _ = rule.backward(spec, ad, a, z, arrays, not first)
        eW, eb, eda, _ = rule.backward(spec, Ed, a, z, arrays, not first)
        eW2 = rule.backward(spec, ad, ea, z, arrays, not first).nabla_w
        Mg = rule.backward(spec, Md, a, z, arrays, not first)
        # dense and conv2d always return nabla_w and nabla_b
        assert mW is not None and mb is not None and eW is not None and eb is not None
        assert eW2 is not None and Mg.nabla_w is not None and Mg.nabla_b is not None
        num = numbers[l]
        b.E[f"W{num}"], b.M[f"W{num}"] = eW + eW2 + (n_sum + 1) * mW, Mg.nabla_w
        b.E[f"b{num}"], b.M[f"b{num}"] = eb + (n_sum + 1) * mb, Mg.nabla_b
        if first:
            return None
        assert eda is not None and mda is not None and Mg.da_prev is not None  # not first
        return eda + (n_in + 1) * mda, Mg.da_prev
    if first:
        return None

    def route(x: Array, cell: Array, zl: Array) -> Array:
        """``dC/da^(l-1)`` of the layer's own backward, for ``delta = x``, ``a^(l-1) = cell``."""
        da_prev = rule.backward(spec, x, cell, zl, NO_ARRAYS, True).da_prev
        assert da_prev is not None  # need_input_grad=True
        return da_prev

    if rule.kind == "pool":
        pool = cast(Pool, spec)  # the rule kind fixes the spec type
        if pool.kind == "max":  # routed by the arg-max of the signed a^(l-1)
            return route(Ed, acts[l - 1], z), route(Md, acts[l - 1], z)
        if pool.kind == "avg":
            return route(Ed, a, z) + 2 * route(ad, a, z), route(Md, a, z)
        az = np.abs(z)
        rel = np.where(az > 0, Ez[l - 1] / np.where(az > 0, az, 1), 0)
        return (route(Ed + ad * rel, a, az) + route(ad, ea, az) + 3 * route(ad, a, az),
                route(Md, a, az))
    if rule.kind == "flatten":
        return route(Ed, a, z), route(Md, a, z)
    # dropout: Ed * (mask / (1 - p)), not the reference's (Ed * mask) / (1 - p)
    scale = case.masks[f"mask{l}"] / (1 - cast(Dropout, spec).p)
    return Ed * scale + 2 * ad * scale, Md * scale


def _network_bounds(case: Case, reference: Result | None) -> Bounds:
    c64 = case.astype("float64")
    ref = reference if reference is not None else network.backprop(c64)
    zs = [ref.zs[f"z{l}"] for l in range(1, len(case.layers) + 1)]
    acts = [ref.activations[f"a{l}"] for l in range(len(case.layers) + 1)]
    Ez, Ea, Mz = _forward_bounds(c64, zs, acts)
    L = len(case.layers)
    b = Bounds(z={f"z{l}": z for l, z in enumerate(zs, 1)},
               Ez={f"z{l}": e for l, e in enumerate(Ez, 1)}, gaps=dict(ref.gaps))
    for l, spec in enumerate(case.layers, 1):
        if getattr(spec, "activation", None) in ("relu", "leaky_relu"):
            b.kinked[l] = "relu"
        elif layer_rule(spec).kind == "pool" and cast(Pool, spec).kind == "max":
            b.kinked[l] = "maxpool"
    Ed, Md, b.E["loss"], b.M["loss"] = _bp1(c64, zs[-1], acts[-1], Ez[-1], Ea[-1])
    b.E[f"delta{L}"], b.M[f"delta{L}"] = Ed, Md
    P = _abs(c64)
    for l in range(L, 0, -1):
        d = ref.deltas[f"delta{l}"]
        back = _layer_back(c64, l, Ed, Md, d, acts, Ea, zs, Ez, b, P)
        if back is None:
            break
        eda, mda = back
        b.E[f"da{l - 1}"], b.M[f"da{l - 1}"] = eda, mda
        spec = case.layers[l - 2]
        sp, spp, r1, _ = _act_terms(getattr(spec, "activation", "identity"), zs[l - 2])
        da = np.abs(ref.input_grads[f"da{l - 1}"])  # layer l's backward of delta^l
        Ed = eda * sp + da * (r1 + spp * Ez[l - 2]) + np.abs(ref.deltas[f"delta{l - 1}"])
        Md = mda * sp
        b.E[f"delta{l - 1}"], b.M[f"delta{l - 1}"] = Ed, Md
    b.values = {**ref.grads, **ref.deltas, **ref.input_grads}
    b.gain = float(np.prod([max(1.0, float(np.sum(np.abs(v)))) for k, v in c64.params.items()
                            if k.startswith("W")]))
    b.stages = L + 1
    return b


def _local_gain(op: str, ins: list[Array], out: Array) -> float:
    """Largest local derivative of one node, from |inputs| and |output| (seed 002's rules).
    Only this node's rule is evaluated: another's may divide by zero here."""
    if op == "mul":
        return max(float(np.max(i)) for i in ins)
    if op == "div":
        return float(np.max(1 / ins[-1]) * max(1.0, float(np.max(out))))
    if op == "exp":
        return float(np.max(out))
    if op == "reciprocal":
        return float(np.max(out)) ** 2
    if op == "log":
        return float(np.max(1 / ins[0]))
    return 1.0


def _graph_gain(case: Case, values: list[Array]) -> float:
    """Product over nodes of the largest local derivative (seed 002's node rules)."""
    gain = 1.0
    for l, spec in enumerate(graph_nodes(case), 1):
        ins = [np.abs(v) for v in ref_graph.node_inputs(case, spec.inputs, values)]
        out = np.abs(values[l - 1])
        gain *= max(1.0, _local_gain(spec.op, ins, out))
    return gain


# ----------------------------------------------------------------------- graphs

def _graph_forward(case: Case, values: list[Array]) -> list[Array]:
    """Forward bound per node (units of ``u``); leaves and ``x`` exact, constants rounded."""
    E: list[Array] = []

    def err(ref: ref_graph.Ref) -> Array:
        if isinstance(ref, str):
            return np.zeros(1)
        if isinstance(ref, float):
            return np.abs(np.asarray(ref))
        return E[ref - 1]

    for l, spec in enumerate(graph_nodes(case), 1):
        ins = ref_graph.node_inputs(case, spec.inputs, values)
        ins = tuple(np.asarray(v, np.float64) for v in ins)
        es = [err(r) for r in spec.inputs]
        out = np.abs(values[l - 1])
        E.append(_op_forward_error(spec.op, ins, es, out))
    return E


def _op_forward_error(op: str, ins: tuple[Array, ...], es: list[Array], out: Array) -> Array:
    a = np.abs(ins[0])
    if op == "add":
        return es[0] + es[1] + out
    if op == "mul":
        return np.abs(ins[1]) * es[0] + a * es[1] + out
    if op == "div":
        bb = np.abs(ins[1])
        return es[0] / bb + a * es[1] / bb ** 2 + out
    if op == "neg":
        return es[0] + 0 * out
    if op == "exp":
        return out * es[0] + 2 * out
    if op == "reciprocal":
        return es[0] / a ** 2 + out
    if op == "log":
        return es[0] / a + 2 * out
    s = sigmoid(ins[0])
    return s * (1 - s) * es[0] + 3 * s


def _unbroadcast(x: Array, shape: tuple[int, ...]) -> tuple[Array, int]:
    n = 1
    while x.ndim > len(shape):
        n *= x.shape[0]
        x = x.sum(axis=0)
    return x, n


def _graph_bounds(case: Case) -> Bounds:
    c64 = case.astype("float64")
    ref = ref_graph.backprop(c64)
    values = [ref.activations[f"a{l}"] for l in range(1, len(case.layers) + 1)]
    Ev = _graph_forward(c64, values)
    out = np.broadcast_to(values[-1], case.y.shape)
    Eout = np.broadcast_to(Ev[-1], case.y.shape)
    n, y = case.batch, np.asarray(c64.y)
    b = Bounds()
    Ed: Array
    Md: Array
    if case.cost == "quadratic":
        res = np.abs(out - y)
        Ed, Md = (Eout + res) / n + res / n, (np.abs(out) + np.abs(y)) / n
        b.E["loss"] = np.asarray((np.sum(res * Eout) + (y[0].size + 4) * np.sum(res * res)) / n)
        b.M["loss"] = np.asarray(np.sum(0.5 * res * res) / n)
        dabs = res / n
    else:
        Ed, Md, b.E["loss"], b.M["loss"] = _softmax_bp1(out, y, Eout, n)
        dabs = np.abs(softmax_fn(out) - y) / n
    node_E = [np.zeros_like(v) for v in values]
    node_M = [np.zeros_like(v) for v in values]
    node_E[-1], k = _unbroadcast(Ed, values[-1].shape)
    node_E[-1] = node_E[-1] + k * _unbroadcast(dabs, values[-1].shape)[0]
    node_M[-1] = _unbroadcast(Md, values[-1].shape)[0]
    leaf_E = {k_: np.zeros_like(v) for k_, v in c64.params.items()}
    leaf_M = {k_: np.zeros_like(v) for k_, v in c64.params.items()}
    for l in range(len(case.layers), 0, -1):
        spec = graph_nodes(case)[l - 1]
        ins = tuple(np.asarray(v, np.float64) for v in ref_graph.node_inputs(c64, spec.inputs,
                                                                             values))
        g = np.abs(ref.deltas[f"delta{l}"])
        es = [np.zeros(1) if isinstance(r, str) else (np.abs(np.asarray(r)) if isinstance(
            r, float) else Ev[r - 1]) for r in spec.inputs]
        locs = _op_backward_error(spec.op, ins, es, values[l - 1], Ev[l - 1], node_E[l - 1],
                                  node_M[l - 1], g)
        for ref_, (e, m), inp in zip(spec.inputs, locs, ins, strict=True):
            e_sum, k = _unbroadcast(e, inp.shape)
            m_sum, _ = _unbroadcast(m, inp.shape)
            e_sum = e_sum + k * m_sum
            if isinstance(ref_, int):
                node_E[ref_ - 1] = node_E[ref_ - 1] + e_sum + m_sum
                node_M[ref_ - 1] = node_M[ref_ - 1] + m_sum
            elif isinstance(ref_, str) and ref_ != "x":
                leaf_E[ref_] = leaf_E[ref_] + e_sum + m_sum
                leaf_M[ref_] = leaf_M[ref_] + m_sum
    for l in range(1, len(values) + 1):
        b.E[f"delta{l}"], b.M[f"delta{l}"] = node_E[l - 1], node_M[l - 1]
    b.E.update(leaf_E)
    b.M.update(leaf_M)
    b.values = {**ref.grads, **ref.deltas}
    b.gain = _graph_gain(c64, values)
    b.stages = len(values) + 1
    return b


def _op_backward_error(op: str, ins: tuple[Array, ...], es: list[Array], out: Array,
                       eout: Array, Eg: Array, Mg: Array, g: Array) -> list[tuple[Array, Array]]:
    """Per input: ``(E, M)`` of the local gradient ``upstream * local derivative``."""
    out = np.abs(out)
    a = np.abs(ins[0])
    if op == "add":
        return [(Eg, Mg), (Eg, Mg)]
    if op == "neg":
        return [(Eg, Mg)]
    if op == "mul":
        bb = np.abs(ins[1])
        return [(Eg * bb + g * es[1] + g * bb, Mg * bb), (Eg * a + g * es[0] + g * a, Mg * a)]
    if op == "div":
        bb = np.abs(ins[1])
        ea = Eg / bb + g * es[1] / bb ** 2 + g / bb
        eb = Eg * out / bb + g * (eout / bb + out * es[1] / bb ** 2) + 2 * g * out / bb
        return [(ea, Mg / bb), (eb, Mg * out / bb)]
    if op == "exp":
        return [(Eg * out + g * eout + g * out, Mg * out)]
    if op == "reciprocal":
        return [(Eg * out ** 2 + 2 * g * out * eout + 2 * g * out ** 2, Mg * out ** 2)]
    if op == "log":
        return [(Eg / a + g * es[0] / a ** 2 + g / a, Mg / a)]
    s = sigmoid(ins[0])
    d = s * (1 - s)
    esig = np.abs(1 - 2 * s) * eout + 2 * d
    return [(Eg * d + g * esig + g * d, Mg * d)]


def bounds(case: Case, reference: Result | None = None) -> Bounds:
    """The per-element rounding budgets of every quantity of ``case`` (units of ``u``).
    ``reference``: the reference's ``backprop(case)``, reused when the case is float64 (the
    bounds are built on a float64 run of the reference; else it is run here)."""
    if case.family == "graph":
        return _graph_bounds(case)
    usable = reference is not None and case.dtype == "float64" \
        and reference.meta.get("method") == "reference"
    return _network_bounds(case, reference if usable else None)


def tolerance(E: Array, u_actual: float, u_expected: float, fd_err: Array | float = 0.0,
              kappa: float = KAPPA, floor: float = 0.0) -> Array:
    """``tol = kappa (u_actual + u_expected) E + fd_err + floor``."""
    return kappa * (u_actual + u_expected) * np.asarray(E) + np.asarray(fd_err) + floor


def smallest_normal(dtype: str) -> float:
    return float(np.finfo(np.dtype(dtype)).tiny)


def underflow_floor(b: Bounds, dtype_actual: str, dtype_expected: str,
                    kappa: float = KAPPA) -> float:
    """``kappa * tiny * stages * gain``: the largest absolute error flush-to-zero of
    subnormal intermediates can leave after the backward pass (``tiny``: smallest normal
    number of the coarser dtype)."""
    tiny = max(smallest_normal(dtype_actual), smallest_normal(dtype_expected))
    return kappa * tiny * b.stages * b.gain


def describe(i: tuple, E: Array, M: Array, u_actual: float, u_expected: float,
             fd_err: Array | float, kappa: float = KAPPA, floor: float = 0.0) -> str:
    """The tolerance at index ``i`` written out, e.g.
    ``kappa=2 x u=5.96e-08 x K=12 x |terms|=3.1e-02 + fd_err=1.0e-11``."""
    e = float(np.asarray(E)[i]) if np.ndim(E) else float(E)
    m = float(np.asarray(M)[i]) if np.ndim(M) else float(M)
    f = float(np.asarray(fd_err)[i]) if np.ndim(fd_err) else float(fd_err)
    K = e / m if m > 0 else float("inf") if e > 0 else 0.0
    return (f"kappa={kappa:g} x u={u_actual + u_expected:.3g} x K={K:.3g} x |terms|={m:.3g}"
            f" + fd_err={f:.3g}" + (f" + underflow={floor:.3g}" if floor else ""))
