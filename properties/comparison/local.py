"""Each backward step of an implementation, replayed by the reference from the
implementation's *own* upstream gradient: where a correct upstream gradient turns into a wrong
one (the layer where a bug enters), and whether a disagreement at a non-differentiable point
is a valid one-sided choice there (a sound ``kink`` verdict).

For a layered case with deltas ``d^l = dC/dz^l`` from the implementation, top-down:

* **output** — ``d^L`` against the reference's ``d^L`` (BP1); a ReLU output at 0 may use any
  factor between its one-sided derivatives;
* **parameters of layer l** — ``dC/dW^l, dC/db^l`` against the layer's rule (BP3, BP4)
  applied to the implementation's ``d^l``;
* **layer l's backward, then layer l-1's activation derivative** — ``d^(l-1)`` against
  ``rule_l(d^l) ⊙ sigma'(z^(l-1))`` (BP2 with the layer's input gradient). Where the
  implementation also returns ``da<l-1> = dC/da^(l-1)``, the two are checked apart.

Valid one-sided choices, the only deviations excused at a kink:

* ReLU / leaky ReLU at ``z = 0``: the factor lies between the one-sided derivatives
  (``[0, 1]``, ``[LEAKY_SLOPE, 1]``), element by element;
* a tied max-pool window: its upstream value goes to its tied maxima only (each gets a share
  between 0 and the upstream value, every other cell exactly 0) and the shares sum to the
  upstream value (the sum is checked where windows do not overlap, ``stride >= size``).

A point "at a kink" is one within reach (``Kinks``: exact zeros and ties for an analytic
oracle; the FD perturbation radius and the forward rounding bound besides). Tolerances are
the comparison's own per-element tolerances of the tensor checked (they bound the whole
chain's error, so the single step's is within them), plus, for FD results, the upstream
tensor's FD error carried through the step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ...reference.activations import activation
from ...reference.case import LEAKY_SLOPE, Case, Pool, layer_name, parametrised
from ...reference.conv import offset_slices, scatter_offsets
from ...reference.costs import cost as cost_of
from ...reference.layers import layer_arrays, layer_rule
from ...reference.network import feedforward
from ...reference.result import Result
from .error_model import Bounds

__all__ = ["CONVENTIONS", "convention_words", "Forward", "forward64", "Kinks", "kinks",
           "replay", "Step", "under_convention", "what_layer"]

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]
SLOPES = {"relu": (0.0, 1.0), "leaky_relu": (LEAKY_SLOPE, 1.0)}


@dataclass
class Kinks:
    """The kink points within reach, per kinked layer ``l``: ``relu[l]`` marks elements of
    ``z^l`` near 0; ``windows[l]`` marks max-pool windows whose runner-up is near the maximum,
    ``reach[l]`` (per sample) how near a cell must be to the maximum to count as tied."""

    relu: dict[int, Mask] = field(default_factory=dict)
    windows: dict[int, Mask] = field(default_factory=dict)
    reach: dict[int, Array] = field(default_factory=dict)

    def rows(self, N: int) -> dict[int, Mask]:
        """Per kinked layer, the batch rows holding a kink point within reach."""
        masks = {**self.relu, **self.windows}
        return {l: np.asarray(m.reshape(N, -1).any(axis=1)) for l, m in sorted(masks.items())}


def kinks(case: Case, b: Bounds, results: tuple[Result, ...], scale: float) -> Kinks:
    """``Kinks`` of ``case``: ReLU inputs with ``|z^l| <= r^l + scale Ez^l`` and max-pool windows
    with runner-up gap ``<= 2 (r^(l-1) + scale max Ez^(l-1))`` per sample, ``r`` the largest
    change an FD perturbation made (``Result.meta["kink_radius"]``, 0 for analytic results)."""
    radius: dict[str, Array] = {}
    for result in results:
        for key, val in (result.meta.get("kink_radius") or {}).items():
            radius[key] = np.maximum(radius.get(key, 0.0), np.asarray(val, np.float64))
    N = case.batch
    out = Kinks()
    for l, kind in b.kinked.items():
        if kind == "relu":
            z, ez = b.z[f"z{l}"], b.Ez[f"z{l}"] * scale
            r = np.broadcast_to(radius.get(f"z{l}", 0.0), (N,)).reshape(N, *[1] * (z.ndim - 1))
            out.relu[l] = np.abs(z) <= r + ez
        else:
            gap = b.gaps[f"gap{l}"]
            prev = b.Ez.get(f"z{l - 1}", np.zeros(1))
            ea = prev.reshape(N, -1).max(axis=1) * scale if l > 1 else np.zeros(N)
            ra = np.broadcast_to(radius.get(f"a{l - 1}", 0.0), (N,))
            out.reach[l] = (2 * (ra + ea)).reshape(N, *[1] * (gap.ndim - 1))
            out.windows[l] = gap <= out.reach[l]
    return out


@dataclass(frozen=True)
class Step:
    """One replayed step: ``what`` it is in words, the implementation's ``tensor`` checked,
    its ``layer``, the largest error / tolerance, and ``broken``: ``""`` when the step holds,
    else the rule it broke, in words."""

    layer: int
    what: str
    tensor: str
    margin: float
    broken: str = ""

    @property
    def ok(self) -> bool:
        return not self.broken


def what_layer(case: Case, l: int) -> str:
    """``layer 3 (maxpool 2x2/2)``: the index and the layer's own short name."""
    return f"layer {l} ({layer_name(case.layers[l - 1])})"


Forward = tuple[Case, list[Array], list[Array]]  # the float64 case, its z^l and a^l


def forward64(case: Case) -> Forward:
    """The case in float64 and its forward pass, shared by ``replay`` and
    ``under_convention`` (computed once per comparison that needs them)."""
    case64 = case.astype("float64")
    return (case64, *feedforward(case64))


def replay(case: Case, forward: Forward, actual: Result, tol: Mapping[str, Array],
           fd_err: Mapping[str, Array], near: Kinks, scale: float) -> tuple[list[Step], str]:
    """The implementation's backward steps, top-down, each from its own upstream gradient
    (module docstring); with ``""``, or why the replay stopped early (a delta it did not
    return: the location is then as precise as the tensors it did return allow)."""
    case64, zs, acts = forward
    L = len(case.layers)
    numbers = dict(parametrised(case.layers))
    shapes = {f"delta{l}": z.shape for l, z in enumerate(zs, 1)}
    deltas = {k: np.asarray(v, np.float64) for k, v in actual.deltas.items()
              if np.shape(v) == shapes.get(k)}  # a malformed one is its own record
    if f"delta{L}" not in deltas:
        return [], "the implementation returned no deltas"
    steps = [_output_step(case64, zs[-1], acts[-1], deltas[f"delta{L}"], tol, near, scale)]
    for l in range(L, 0, -1):
        spec = case.layers[l - 1]
        delta = deltas[f"delta{l}"]
        g = layer_rule(spec).backward(spec, delta, acts[l - 1], zs[l - 1],
                                      layer_arrays(case64, l, numbers), l > 1)
        if g.nabla_w is not None and g.nabla_b is not None:
            n = numbers[l]
            for name, expected in ((f"W{n}", g.nabla_w), (f"b{n}", g.nabla_b)):
                mine = actual.grads.get(name)
                if name in tol and mine is not None and np.shape(mine) == expected.shape:
                    steps.append(_exact_step(
                        l, f"the BP3/BP4 step of {what_layer(case, l)}", name,
                        np.asarray(mine, np.float64), expected, tol[name]))
        if l == 1:
            break
        below = f"delta{l - 1}"
        if below not in deltas or below not in tol:
            return steps, f"the implementation returned no {below}"
        carried = _carried_fd_error(case64, l, fd_err.get(f"delta{l}"), acts, zs, numbers)
        rounding = scale * _terms(case64, l, delta, acts, zs, numbers)
        mine = actual.input_grads.get(f"da{l - 1}")
        da = None
        if mine is not None and f"da{l - 1}" in tol and np.shape(mine) == zs[l - 2].shape:
            mine = np.asarray(mine, np.float64)
            da = (mine, tol[f"da{l - 1}"], scale * np.abs(mine))
        steps += _bp2_steps(case, l, spec, delta, g.da_prev, zs[l - 2], acts[l - 1],
                            deltas[below], tol[below] + carried, rounding, near, da)
    return steps, ""


def _ratio(err: Array, tol: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))


def _outside(actual: Array, lo: Array, hi: Array, tol: Array) -> Array:
    """Per element: how far ``actual`` lies outside ``[lo, hi]``, over the tolerance."""
    err = np.maximum(np.maximum(lo - actual, actual - hi), 0.0)
    return np.where(np.isfinite(actual), _ratio(err, np.broadcast_to(tol, actual.shape)),
                    np.inf)


def _exact_step(l: int, what: str, name: str, actual: Array, expected: Array, tol: Array
                ) -> Step:
    ratio = _outside(actual, expected, expected, tol)
    worst = float(ratio.max(initial=0.0))
    broken = "" if worst <= 1 else (
        f"not at a kink: {name} differs from the reference's rule applied to the "
        f"implementation's own upstream gradient (error / tolerance {worst:.3g} at "
        f"{_index(ratio)})")
    return Step(l, what, name, worst, broken)


def _index(ratio: Array) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))


def _slope_interval(name: str, z: Array, at_kink: Mask | None) -> tuple[Array, Array]:
    """``sigma'(z)`` as an interval: the one-sided derivatives at kink points within reach."""
    d = np.asarray(activation(name)[1](z), np.float64)
    if name not in SLOPES or at_kink is None:
        return d, d
    lo, hi = SLOPES[name]
    return np.where(at_kink, lo, d), np.where(at_kink, hi, d)


def _times(a: tuple[Array, Array], s: tuple[Array, Array]) -> tuple[Array, Array]:
    """Interval product ``[a] * [s]`` (both may straddle 0)."""
    products = [a[i] * s[j] for i in (0, 1) for j in (0, 1)]
    return np.minimum.reduce(products), np.maximum.reduce(products)


def _output_step(case64: Case, zL: Array, aL: Array, actual: Array, tol: Mapping[str, Array],
                 near: Kinks, scale: float) -> Step:
    """BP1: ``d^L`` against the reference's; at a ReLU output's kink, any one-sided factor."""
    L = len(case64.layers)
    name = f"delta{L}"
    act = getattr(case64.layers[-1], "activation", "identity")
    _, expected = cost_of(case64.cost)(zL, aL, case64.y, act)
    lo, hi = expected, expected
    widen: Array | float = 0.0
    if act in SLOPES and L in near.relu:
        _, grad_a = cost_of(case64.cost)(zL, aL, case64.y, "identity")
        lo, hi = _times((grad_a, grad_a), _slope_interval(act, zL, near.relu[L]))
        widen = np.where(near.relu[L], scale * np.abs(grad_a), 0.0)
    ratio = _outside(actual, lo, hi, tol[name] + widen)
    worst = float(ratio.max(initial=0.0))
    broken = "" if worst <= 1 else _kink_words(
        name, ratio, near.relu.get(L), f"the output layer's ({act}) one-sided derivatives")
    return Step(L, f"the output error (BP1) of {what_layer(case64, L)}", name, worst, broken)


def _kink_words(name: str, ratio: Array, at_kink: Mask | None, rule: str) -> str:
    i = _index(ratio)
    if at_kink is not None and bool(np.broadcast_to(at_kink, ratio.shape)[i]):
        return (f"at a kink: {name}{list(i)} is not between {rule} times the upstream "
                f"gradient (error / tolerance {float(ratio[i]):.3g})")
    return (f"not at a kink: {name}{list(i)} differs from the reference's rule applied to the "
            f"implementation's own upstream gradient (error / tolerance {float(ratio[i]):.3g})")


def _bp2_steps(case: Case, l: int, spec: object, delta: Array, da_prev: Array | None,
               z_prev: Array, a_prev: Array, actual: Array, tol: Array, rounding: Array,
               near: Kinks, da: tuple[Array, Array, Array] | None = None) -> list[Step]:
    """``d^(l-1)`` against ``rule_l(d^l) ⊙ sigma'(z^(l-1))``, kinks as intervals. At a kink
    the comparison's tolerance (made for the reference's own one-sided choice) is widened by
    the rounding of ``dC/da^(l-1)`` (``rounding``) times the largest one-sided factor.
    ``da``: the implementation's own ``da<l-1>``, its tolerance and its rounding in
    ``delta<l-1>``'s product; then two steps, layer
    ``l``'s backward (``da<l-1>`` against ``rule_l(d^l)``) and the activation derivative of
    layer ``l-1`` (``d^(l-1)`` against ``da<l-1> ⊙ sigma'``)."""
    assert da_prev is not None
    lo, hi = da_prev, da_prev
    pooled = isinstance(spec, Pool) and spec.kind == "max" and l in near.windows
    if pooled:
        assert isinstance(spec, Pool)
        lo, hi = _tied_window_interval(spec, delta, a_prev, near.windows[l], near.reach[l])
    act = getattr(case.layers[l - 2], "activation", "identity")
    slopes = _slope_interval(act, z_prev, near.relu.get(l - 1))
    backward = f"the backward of {what_layer(case, l)}"
    derivative = f"the activation derivative of {what_layer(case, l - 1)}"
    if da is None:
        what = backward + (f" or {derivative}" if act != "identity" else "")
        return [_interval_step(case, l, spec, what, f"delta{l - 1}", delta, actual, (lo, hi),
                               slopes, tol, rounding, near, pooled, act)]
    mine, tol_da, product = da
    ones = (np.ones_like(mine), np.ones_like(mine))
    return [_interval_step(case, l, spec, backward, f"da{l - 1}", delta, mine, (lo, hi), ones,
                           tol_da, rounding, near, pooled, "identity"),
            _interval_step(case, l - 1, None, derivative, f"delta{l - 1}", delta, actual,
                           (mine, mine), slopes, tol, product, near, False, act)]


def _interval_step(case: Case, l: int, spec: object, what: str, name: str, delta: Array,
                   actual: Array, routed: tuple[Array, Array], slopes: tuple[Array, Array],
                   tol: Array, rounding: Array, near: Kinks, pooled: bool, act: str) -> Step:
    """``actual`` within ``routed ⊙ slopes`` (interval products) up to the tolerance, widened
    at kink elements; for a max pool with tied windows (``pooled``) the shares' sums too."""
    s_lo, s_hi = slopes
    at_kink = (routed[0] != routed[1]) | (s_lo != s_hi)
    lo, hi = _times(routed, slopes)
    tol = tol + np.where(at_kink, rounding * np.maximum(np.abs(s_lo), np.abs(s_hi)), 0.0)
    ratio = _outside(actual, lo, hi, tol)
    tie_broken = ""
    if pooled:
        assert isinstance(spec, Pool)
        tie_broken = _window_sums(spec, delta, actual, slopes, near.windows[l], l, tol)
    worst = float(ratio.max(initial=0.0))
    broken = tie_broken
    if worst > 1:
        i = _index(ratio)
        slope_kink = bool(s_lo[i] != s_hi[i])
        if slope_kink:
            relu = np.broadcast_to(s_lo != s_hi, ratio.shape)
            broken = _kink_words(name, ratio, relu, f"{act}'s one-sided derivatives")
        elif routed[0][i] != routed[1][i]:
            broken = (f"at a tied max-pool window of {what_layer(case, l)}: {name}{list(i)} is "
                      f"not a share between 0 and the window's upstream value (error / "
                      f"tolerance {float(ratio[i]):.3g})")
        else:
            broken = _untied_words(name, ratio, i, lo, pooled)
    return Step(l, what, name, max(worst, 2.0 if tie_broken else 0.0), broken)


def _untied_words(name: str, ratio: Array, i: tuple[int, ...], expected: Array,
                  pooled: bool) -> str:
    where = (" a cell of a tied max-pool window that is not one of its maxima, or"
             if pooled and expected[i] == 0 else "")
    return (f"not at a kink:{where} {name}{list(i)} differs from the reference's rule applied "
            f"to the implementation's own upstream gradient (error / tolerance "
            f"{float(ratio[i]):.3g})")


def _tied_window_interval(spec: Pool, delta: Array, a_prev: Array, tied: Mask, reach: Array
                          ) -> tuple[Array, Array]:
    """``dC/da^(l-1)`` of a max pool as an interval: a tied window's upstream value may go in
    any share to any cell within ``reach`` of its maximum, nothing to the others; an untied
    window's goes to its arg-max."""
    cells = offset_slices(a_prev, spec.size, spec.stride)
    best = np.maximum.reduce([part for _, _, part in cells])
    first = np.argmax(np.stack([part for _, _, part in cells]) == best, axis=0)
    low, high = [], []
    for i, (u, v, part) in enumerate(cells):
        candidate = tied & (part >= best - reach)
        routed = np.where(first == i, delta, 0.0)
        low.append((u, v, np.where(candidate, np.minimum(delta, 0.0), routed)))
        high.append((u, v, np.where(candidate, np.maximum(delta, 0.0), routed)))
    return (scatter_offsets(low, a_prev.shape, spec.stride),
            scatter_offsets(high, a_prev.shape, spec.stride))


def _window_sums(spec: Pool, delta: Array, actual: Array, slopes: tuple[Array, Array],
                 tied: Mask, l: int, tol: Array) -> str:
    """A tied window's shares must sum to its upstream value (times the activation
    derivative's range over its cells): checked where windows do not overlap."""
    if spec.stride < spec.size:
        return ""

    def windows(x: Array) -> list[Array]:
        return [p for _, _, p in offset_slices(x, spec.size, spec.stride)]

    lo_s = np.minimum.reduce(windows(slopes[0]))
    hi_s = np.maximum.reduce(windows(slopes[1]))
    total = np.add.reduce(windows(actual))
    tol_sum = np.add.reduce(windows(np.broadcast_to(tol, actual.shape)))
    lo, hi = _times((delta, delta), (lo_s, hi_s))
    ratio = np.where(tied, _outside(total, lo, hi, tol_sum), 0.0)
    if float(ratio.max(initial=0.0)) <= 1:
        return ""
    i = _index(ratio)
    return (f"at a tied max-pool window of layer {l}: the shares of window {list(i)} sum to "
            f"{float(total[i]):.6g}, not to its upstream value {float(delta[i]):.6g} (times "
            f"the activation derivative's one-sided range)")


def _carried_fd_error(case64: Case, l: int, err: Array | None, acts: list[Array],
                      zs: list[Array], numbers: Mapping[int, int]) -> Array | float:
    """An FD upstream delta's own error estimate carried through layer ``l``'s backward and
    the activation derivative below (``|rule_l|(err) ⊙ |sigma'|``); 0 for analytic results."""
    if err is None or not np.any(err):
        return 0.0
    upstream = np.abs(np.broadcast_to(err, zs[l - 1].shape))
    act = getattr(case64.layers[l - 2], "activation", "identity")
    slope = 1.0 if act in SLOPES else np.abs(activation(act)[1](zs[l - 2]))
    return _abs_backward(case64, l, upstream, acts, zs, numbers, np.abs) * slope


def _terms(case64: Case, l: int, delta: Array, acts: list[Array], zs: list[Array],
           numbers: Mapping[int, int]) -> Array:
    """A bound on the rounding of ``dC/da^(l-1)`` in units of ``u``: the number of terms
    each element sums times their magnitude (``|rule_l|(|d^l|)``)."""
    size = _abs_backward(case64, l, np.ones_like(delta), acts, zs, numbers, np.ones_like)
    return size * _abs_backward(case64, l, np.abs(delta), acts, zs, numbers, np.abs)


def _abs_backward(case64: Case, l: int, upstream: Array, acts: list[Array], zs: list[Array],
                  numbers: Mapping[int, int], weights: Callable[[Array], Array]) -> Array:
    """``|dC/da^(l-1)|`` of layer ``l``'s rule for a non-negative ``upstream``, with
    ``|a^(l-1)|`` and ``weights(W)`` (``np.abs``: magnitudes; ``np.ones_like``: counts)."""
    spec = case64.layers[l - 1]
    arrays = layer_arrays(case64, l, numbers)
    if arrays.W is not None:
        arrays = arrays._replace(W=weights(arrays.W))
    g = layer_rule(spec).backward(spec, upstream, np.abs(acts[l - 1]), zs[l - 1], arrays, True)
    return np.abs(np.asarray(g.da_prev))


# ------------------------------------------------------------- uniform conventions

# For results without deltas: one choice applied at every kink, the frameworks' among them.
SLOPE_CHOICES = ("low", "high", "middle")
TIE_CHOICES = ("first", "last", "even")
CONVENTIONS = tuple((s, t) for s in SLOPE_CHOICES for t in TIE_CHOICES)


def convention_words(slope: str, tie: str) -> str:
    return (f"the {slope} one-sided derivative at every ReLU kink, tied max-pool windows "
            f"routed to their {tie} maximum" + ("s (split evenly)" if tie == "even" else ""))


def under_convention(case: Case, forward: Forward, near: Kinks, slope: str, tie: str
                     ) -> Result:
    """The reference's gradients and deltas (float64) with ``slope`` at every ReLU kink within
    reach (``low``/``high``: the one-sided derivatives, ``middle``: their mean) and every
    tied max-pool window routed to its ``first``/``last`` tied maximum or split ``even``ly."""
    case64, zs, acts = forward
    L = len(case.layers)
    numbers = dict(parametrised(case.layers))
    act = getattr(case.layers[-1], "activation", "identity")
    _, delta = cost_of(case64.cost)(zs[-1], acts[-1], case64.y, act)
    if act in SLOPES and L in near.relu:
        _, grad_a = cost_of(case64.cost)(zs[-1], acts[-1], case64.y, "identity")
        delta = grad_a * _chosen_slope(act, zs[-1], near.relu[L], slope)
    grads: dict[str, Array] = {}
    deltas = {f"delta{L}": delta}
    inputs: dict[str, Array] = {}
    for l in range(L, 0, -1):
        spec = case.layers[l - 1]
        g = layer_rule(spec).backward(spec, delta, acts[l - 1], zs[l - 1],
                                      layer_arrays(case64, l, numbers), l > 1)
        if g.nabla_w is not None and g.nabla_b is not None:
            grads[f"W{numbers[l]}"], grads[f"b{numbers[l]}"] = g.nabla_w, g.nabla_b
        if l == 1:
            break
        da = g.da_prev
        if isinstance(spec, Pool) and spec.kind == "max" and l in near.windows:
            da = _routed(spec, delta, acts[l - 1], near.windows[l], near.reach[l], tie)
        inputs[f"da{l - 1}"] = np.asarray(da)
        below = getattr(case.layers[l - 2], "activation", "identity")
        delta = np.asarray(da) * _chosen_slope(below, zs[l - 2], near.relu.get(l - 1), slope)
        deltas[f"delta{l - 1}"] = delta
    return Result(loss=None, grads=grads, deltas=deltas, meta={"method": "reference"},
                  input_grads=inputs)


def _chosen_slope(name: str, z: Array, at_kink: Mask | None, choice: str) -> Array:
    """``sigma'(z)``, with the ``low`` / ``high`` one-sided derivative or their mean
    (``middle``) at the kink points (``_slope_interval``'s ends)."""
    lo, hi = _slope_interval(name, z, at_kink)
    return {"low": lo, "high": hi, "middle": (lo + hi) / 2}[choice]


def _routed(spec: Pool, delta: Array, a_prev: Array, tied: Mask, reach: Array, tie: str
            ) -> Array:
    """Max pooling's ``dC/da^(l-1)`` with tied windows routed by ``tie``."""
    cells = offset_slices(a_prev, spec.size, spec.stride)
    values = np.stack([part for _, _, part in cells])
    best = values.max(axis=0)
    candidate = tied & (values >= best - reach)
    candidate |= ~tied & (np.arange(len(cells)).reshape(-1, *[1] * best.ndim)
                          == np.argmax(values == best, axis=0))
    if tie == "even":
        share = candidate / candidate.sum(axis=0)
    else:
        order = np.arange(len(cells)).reshape(-1, *[1] * best.ndim)
        pick = np.where(candidate, order, -1 if tie == "last" else len(cells))
        chosen = pick.max(axis=0) if tie == "last" else pick.min(axis=0)
        share = (order == chosen).astype(np.float64)
    parts = [(u, v, share[i] * delta) for i, (u, v, _) in enumerate(cells)]
    return scatter_offsets(parts, a_prev.shape, spec.stride)
