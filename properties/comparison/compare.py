"""Compare two ``Result``s of one case tensor by tensor, with tolerances from the error model
(``error_model.py``), and turn each tensor into a ``Record``.

Verdicts per tensor:

* ``nan`` — non-finite on one side only (non-finite on both at the same places agrees there);
* ``agree`` — every finite element within ``tol_i``;
* ``kink`` — the elements beyond tolerance are explained by a non-differentiable point.
  Kink samples: batch rows ``n`` where a relu / leaky_relu input satisfies
  ``|z^l[n, j]| <= r^l[n] + tol(z^l)`` or a max-pool window's runner-up gap satisfies
  ``gap^l[n] <= 2 (r^(l-1)[n] + tol(a^(l-1)))``; ``r`` is the largest change any FD
  perturbation made to that tensor in that sample (``Result.meta["kink_radius"]``, 0 for an
  analytic oracle, so only exact zeros / ties count there) and ``tol(z)`` its forward rounding
  bound. Only kinks at layers ``>= m`` can influence ``delta^m`` and the parameters of layer
  ``m``. A ``delta`` tensor is ``kink`` when all its out-of-tolerance elements lie in kink rows
  (restricted to kink-free rows it agrees). A parameter gradient of layer ``m`` is ``kink``
  when kink rows exist at layers ``>= m`` and ``delta^m`` agrees outside them (or no
  ``delta^m`` is available: then any kink on the path suffices — documented leniency);
* ``diverge`` — anything else beyond tolerance.

``first_divergent_layer``: back-propagation runs from layer ``L`` down to 1, so a bug entering
at layer ``l`` corrupts ``delta^l`` and every delta below it while the deltas above agree. It
is the highest-indexed diverging delta (all above it agree); if no delta diverges, the layer of
the highest diverging parameter gradient (a BP3/BP4 bug). Every record of the comparison
carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...reference.case import Case, parametrised
from ...reference.result import Result
from .error_model import (
    KAPPA,
    Bounds,
    bounds,
    describe,
    tolerance,
    underflow_floor,
    unit_roundoff,
)
from .local import (
    CONVENTIONS,
    Forward,
    Kinks,
    convention_words,
    forward64,
    kinks,
    replay,
    under_convention,
)
from .records import Record, delta_layer, input_layer, most_severe, replay_command, versions

__all__ = [
    "Array", "compare", "compare_results", "Comparison", "divergence_class",
    "first_divergent_layer", "kink_rows",
    "layer_of", "provenance", "screen_then_locate", "tensor_of", "where"
]

Array = NDArray[np.floating]


def provenance(*results: Result) -> dict[str, str]:
    """The versions behind a comparison: the installed packages and what each result's
    oracle reports (``Result.meta["versions"]``: framework build, device)."""
    found = versions()
    for r in results:
        for k, val in (r.meta.get("versions") or {}).items():
            found[str(k)] = str(val)
    return found


def where(case: Case, oracle: str, mode: str, device: str, dtype: str, *,
          precision: str = "-", replay: str | None = None) -> dict[str, Any]:
    """The fields that identify every record of one oracle on one case."""
    return {"case_id": case.case_id, "family": case.family, "oracle": oracle, "mode": mode,
            "device": device, "dtype": dtype, "precision": precision, "arch": case.describe(),
            "versions": versions(),
            "replay": replay_command(case.case_id) if replay is None else replay}


def _dtype_of(result: Result, default: str) -> str:
    return str(result.meta.get("dtype_computed") or result.meta.get("dtype") or default)


def _fd_err(result: Result, name: str) -> Array | float:
    return (result.meta.get("fd_error") or {}).get(name, 0.0)


def layer_of(case: Case, name: str) -> int | None:
    """Layer index of ``delta<l>``, of parameter ``W<k>`` / ``b<k>``, or ``l + 1`` for the input
    gradient ``da<l>`` (the layer whose backward makes it); ``None`` for the loss and for
    graph cases."""
    l = delta_layer(name)
    if l is not None:
        return l
    l = input_layer(name)
    if l is not None:
        return l + 1 if case.family != "graph" else None
    if case.family == "graph" or name == "loss" or not name[1:].isdigit():
        return None
    return {n: l for l, n in parametrised(case.layers)}.get(int(name[1:]))


def kink_rows(case: Case, b: Bounds, results: tuple[Result, ...], scale: float
              ) -> dict[int, NDArray[np.bool_]]:
    """Per kinked layer ``l``, the batch rows with a kink point within reach."""
    return kinks(case, b, results, scale).rows(case.batch)


def _rows_for(layer: int | None, rows: dict[int, NDArray[np.bool_]], N: int
              ) -> NDArray[np.bool_]:
    out = np.zeros(N, dtype=bool)
    if layer is None:
        return out
    for l, r in rows.items():
        if l >= layer:
            out |= r
    return out


class _Tensor:
    """Elementwise comparison of one tensor."""

    def __init__(self, e: Array, a: Array, tol: Array) -> None:
        self.e, self.a = e, a
        fe, fa = np.isfinite(e), np.isfinite(a)
        self.one_sided = fe != fa
        self.both = fe & fa
        self.finite = bool(self.both.all())
        if self.finite:
            self.err = np.abs(a - e)
        else:
            self.err = np.where(self.both, np.abs(np.where(self.both, a, 0)
                                                  - np.where(self.both, e, 0)), 0.0)
        self.tol = np.broadcast_to(tol, e.shape)
        self.beyond = self.both & (self.err > self.tol)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self.tol > 0, self.err / self.tol, np.where(self.err > 0, np.inf, 0))
        self.ratio = ratio
        self.worst = np.unravel_index(int(np.argmax(ratio)), e.shape) if e.size else ()

    def norms(self) -> tuple[float, float]:
        """``(||err||_2, ||tol||_2)`` over the elements finite on both sides."""
        err, tol = (self.err, self.tol) if self.finite else \
            (self.err[self.both], self.tol[self.both])
        return float(np.linalg.norm(err.ravel())), float(np.linalg.norm(tol.ravel()))

    def max_rel(self) -> float:
        """Largest ``err / |expected|`` (``inf`` where the expected value is 0 and the error
        is not)."""
        ae = np.abs(self.e)
        nonzero = ae > 0
        if not nonzero.all() and bool(np.any(self.err[~nonzero] > 0)):
            return float("inf")
        return float((self.err[nonzero] / ae[nonzero]).max(initial=0.0))


def _make_record(where: dict[str, Any], quantity: str, name: str, t: _Tensor, verdict: str,
                 model: str) -> Record:
    w = tuple(int(i) for i in t.worst)
    e_w = float(t.e[w]) if t.e.size else 0.0
    a_w = float(t.a[w]) if t.a.size else 0.0
    norm_err, norm_tol = t.norms()
    dtype = where["dtype"]
    tiny = float(np.finfo(dtype).tiny)
    scale = max(abs(e_w), abs(a_w), tiny) if np.isfinite(e_w) and np.isfinite(a_w) else 1.0
    ulp = float(np.spacing(np.asarray(scale, dtype=dtype)))
    return Record(
        **where, quantity=quantity, name=name, shape=tuple(int(s) for s in t.e.shape),
        max_abs_err=float(t.err.max(initial=0.0)), max_rel_err=t.max_rel(),
        err_ulps=float(t.err[w] / ulp) if t.e.size else 0.0, worst_index=w,
        n_beyond=int(t.beyond.sum() + t.one_sided.sum()), n_total=int(t.e.size),
        tolerance=float(t.tol[w]) if t.e.size else 0.0, tolerance_model=model,
        margin=float(t.ratio.max(initial=0.0)), verdict=verdict,
        expected_value=e_w, actual_value=a_w, norm_err=norm_err, norm_tol=norm_tol,
        divergence=divergence_class(verdict, norm_err, norm_tol))


def divergence_class(verdict: str, norm_err: float, norm_tol: float) -> str:
    """``wrong`` (normwise beyond tolerance) or ``tail-accuracy`` (elementwise beyond,
    normwise within) for a ``diverge``; ``""`` for every other verdict."""
    if verdict != "diverge":
        return ""
    return "wrong" if norm_err > norm_tol else "tail-accuracy"


def _pairs(case: Case, expected: Result, actual: Result) -> list[tuple[str, str, Array, Array]]:
    out: list[tuple[str, str, Array, Array]] = []
    if expected.loss is not None and actual.loss is not None:  # an implementation may omit it
        out.append(("loss", "loss", np.asarray(expected.loss, np.float64),
                    np.asarray(actual.loss, np.float64)))
    for name in case.params:
        if name in expected.grads and name in actual.grads:
            out.append(("grad", name, np.asarray(expected.grads[name], np.float64),
                        np.asarray(actual.grads[name], np.float64)))
    for name in sorted(set(expected.deltas) & set(actual.deltas), key=lambda k: delta_layer(k)
                       or 0):
        out.append(("delta", name, np.asarray(expected.deltas[name], np.float64),
                    np.asarray(actual.deltas[name], np.float64)))
    for name in sorted(set(expected.input_grads) & set(actual.input_grads),
                       key=lambda k: int(k[2:])):
        out.append(("input", name, np.asarray(expected.input_grads[name], np.float64),
                    np.asarray(actual.input_grads[name], np.float64)))
    return out


def tensor_of(result: Result, name: str) -> Any:
    """``result``'s tensor called ``name`` (``loss``, a parameter, ``delta<l>``, ``da<l>``),
    or ``None``."""
    if name == "loss":
        return result.loss
    return result.grads.get(name, result.deltas.get(name, result.input_grads.get(name)))


def _non_finite_note(result: Result, name: str) -> str:
    """Where ``result``'s tensor ``name`` is not finite, in words: how many NaN and how many
    infinite values (with their signs), from whom, and the first one (``""`` if finite). A
    one-sided inf keeps the verdict ``nan`` (the record contract has no inf verdict); this
    message tells the two apart."""
    raw = tensor_of(result, name)
    if raw is None:
        return ""
    value = np.asarray(raw, np.float64)
    bad = np.argwhere(~np.isfinite(value))
    if not len(bad):
        return ""
    n_nan = int(np.isnan(value).sum())
    signs = {s: int(np.sum(value == v)) for s, v in (("+inf", np.inf), ("-inf", -np.inf))}
    n_inf = sum(signs.values())
    kinds = ", ".join(s for s, n in signs.items() if n)
    what = (f"{n_nan} NaN value(s)" if not n_inf else
            f"{n_inf} infinite value(s) ({kinds})" if not n_nan else
            f"{len(bad)} non-finite value(s) ({n_nan} NaN, {n_inf} infinite: {kinds})")
    method = str(result.meta.get("method", "?"))
    who = ("the implementation" if method == "implementation" else
           "the reference" if method == "reference" else f"the oracle ({method})")
    first = tuple(int(i) for i in bad[0])
    shown = "nan" if np.isnan(value[first]) else f"{float(value[first]):+}"
    return f"{name}: {what} from {who}, first at index {first}: {shown}"


@dataclass
class Comparison:
    """Two results of one case compared tensor by tensor: the elementwise comparisons, each
    tensor's verdict, and the layer where a divergence enters. ``problems`` are tensors the
    actual side returned missing or malformed (``(name, message)``, ``"-"`` for the return as
    a whole): they count as diverging where they are located, and become records too."""

    case: Case
    expected: Result
    actual: Result
    tensors: dict[str, tuple[str, _Tensor, str]]
    mismatched: dict[str, tuple[str, tuple[int, ...], str]]
    verdicts: dict[str, str]
    first: int | None
    rows: dict[int, NDArray[np.bool_]]
    problems: tuple[tuple[str, str], ...] = ()
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    enters: str = ""

    @property
    def verdict(self) -> str:
        """The most severe verdict of the comparison (a problem counts as ``oracle_error``)."""
        return most_severe([*self.verdicts.values(), *["diverge"] * bool(self.mismatched),
                            *["oracle_error"] * bool(self.problems)])

    def divergent_layer(self) -> int | None:
        """``first_divergent_layer`` of the tensors' verdicts, the mismatched and the
        problem tensors counting as diverging."""
        located = {**self.verdicts, **{n: "diverge" for n in self.mismatched},
                   **{n: "diverge" for n, _ in self.problems if n != "-"}}
        return first_divergent_layer(self.case, located)

    def records(self, where: dict[str, Any], **detail: Any) -> list[Record]:
        """One record per tensor (and per problem), built once with everything known:
        ``where`` identifies the oracle and case, ``detail`` is added to every record (the
        tie-breakers' vote, for example)."""
        case = self.case
        where = {**where, "versions": {**where.get("versions", {}),
                                       **provenance(self.expected, self.actual)}}
        methods = {"expected": str(self.expected.meta.get("method", "?")),
                   "actual": str(self.actual.meta.get("method", "?"))}
        out: list[Record] = []
        for name, (quantity, shape, reason) in self.mismatched.items():
            out.append(Record(**where, quantity=quantity, name=name, shape=shape,
                              verdict="diverge", divergence="wrong",
                              detail={"reason": reason, **detail}))
        for name, (quantity, t, text) in self.tensors.items():
            rec = _make_record(where, quantity, name, t, self.verdicts[name], text)
            rec.detail = {**methods, "kink_rows": int(_rows_for(layer_of(case, name), self.rows,
                                                                case.batch).sum())}
            note = (_non_finite_note(self.actual, name) or _non_finite_note(self.expected, name)
                    if rec.verdict == "nan" else "")
            if note:
                rec.detail["message"] = note
            rec.detail.update(self.notes.get(name, {}))
            if self.enters and rec.verdict in ("diverge", "nan"):
                rec.detail["enters"] = self.enters
            rec.detail.update(detail)
            out.append(rec)
        for tensor, text in self.problems:
            out.append(Record(**where, quantity="run", name=tensor, verdict="oracle_error",
                              detail={"type": "BadReturn", "message": text, **detail}))
        for rec in out:
            rec.first_divergent_layer = self.first
        return out


def compare_results(case: Case, expected: Result, actual: Result, *, dtype: str,
                    expected_dtype: str | None = None, model: Bounds | None = None,
                    kappa: float = KAPPA, problems: tuple[tuple[str, str], ...] = ()
                    ) -> Comparison:
    """Compare every tensor both results have (loss, gradients, deltas).

    ``actual`` was computed in ``dtype``, ``expected`` in ``expected_dtype`` (default:
    ``expected.meta["dtype_computed"]``, else the case's). FD error estimates
    (``meta["fd_error"]``) of either side are added to the tolerance."""
    b = model if model is not None else bounds(case)
    u_a = unit_roundoff(dtype)
    dtype_e = expected_dtype or _dtype_of(expected, case.dtype)
    u_e = unit_roundoff(dtype_e)
    floor = underflow_floor(b, dtype, dtype_e, kappa)
    near = kinks(case, b, (expected, actual), kappa * (u_a + u_e))
    rows = near.rows(case.batch)
    tensors: dict[str, tuple[str, _Tensor, str]] = {}
    mismatched: dict[str, tuple[str, tuple[int, ...], str]] = {}
    for quantity, name, e, a in _pairs(case, expected, actual):
        if e.shape != a.shape:
            mismatched[name] = (quantity, tuple(e.shape), f"shape {a.shape} != expected {e.shape}")
            continue
        fd = np.asarray(_fd_err(expected, name)) + np.asarray(_fd_err(actual, name))
        E = b.E[name]
        t = _Tensor(e, a, tolerance(E, u_a, u_e, fd, kappa, floor))
        text = describe(tuple(int(i) for i in t.worst), E, b.M[name], u_a, u_e, fd, kappa, floor)
        tensors[name] = (quantity, t, text)
    verdicts = _verdicts(case, tensors, rows)
    notes: dict[str, dict[str, str]] = {}
    enters = ""
    if case.family != "graph" and any(v in ("kink", "diverge") for v in verdicts.values()):
        fd = {n: np.asarray(_fd_err(actual, n), np.float64) for n in tensors}
        forward = forward64(case)
        steps, stopped = replay(case, forward, actual,
                                {n: t.tol for n, (_, t, _) in tensors.items()}, fd, near,
                                kappa * (u_a + u_e))
        verdicts, notes = _verify_kinks(case, forward, tensors, verdicts, near, steps, stopped)
        broken = next((st for st in steps if not st.ok), None)
        enters = f"enters in {broken.what} ({broken.tensor} is the first wrong tensor)" \
            if broken else ""
    comparison = Comparison(case, expected, actual, tensors, mismatched, verdicts, None, rows,
                            tuple(problems), notes, enters)
    comparison.first = comparison.divergent_layer()
    return comparison


def _verify_kinks(case: Case, forward: Forward, tensors: Mapping[str, tuple[str, _Tensor, str]],
                  verdicts: dict[str, str], near: Kinks, steps: list, stopped: str
                  ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A ``kink`` verdict stands only if the deviation is a valid one-sided choice at the
    kink (``local``): checked step by step where the implementation's deltas reach the tensor,
    else by the reference under one uniform convention (``local.CONVENTIONS``). Anything else
    becomes ``diverge``, with the rule it broke in ``notes[name]["kink_rule"]``."""
    verdicts, notes = dict(verdicts), {}
    unreached = []
    for name in [n for n, v in verdicts.items() if v == "kink"]:
        level = _level(case, name)
        relevant = [st for st in steps if st.tensor == name or _level(case, st.tensor) >= level
                    and (delta_layer(st.tensor) or input_layer(st.tensor)) is not None]
        if not any(st.tensor == name for st in steps):
            unreached.append(name)
            continue
        broken = next((st for st in relevant if not st.ok), None)
        if broken is None:
            notes[name] = {"kink_check": "each backward step down to this tensor is a valid "
                                         "one-sided choice at its kinks (layer-local replay)"}
        else:
            verdicts[name] = "diverge"
            notes[name] = {"kink_check": "failed", "kink_rule": broken.broken}
    if unreached:
        verdicts, more = _by_convention(case, forward, tensors, verdicts, near, unreached,
                                        stopped)
        notes.update(more)
    return verdicts, notes


def _level(case: Case, name: str) -> float:
    """Where a tensor sits on the backward chain: ``delta<l>`` at ``l``, ``da<l>`` at
    ``l + 1/2`` (between ``delta<l>`` and ``delta<l+1>``), a parameter of layer ``m`` at ``m``
    (it needs ``delta<m>``). A step of the chain at a level >= a tensor's level is upstream."""
    l = input_layer(name)
    return l + 0.5 if l is not None else float(layer_of(case, name) or 0)


def _by_convention(case: Case, forward: Forward,
                   tensors: Mapping[str, tuple[str, _Tensor, str]],
                   verdicts: dict[str, str], near: Kinks, names: list[str], stopped: str
                   ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``names`` (kink candidates the replay could not reach: ``stopped`` says why) stand as
    ``kink`` when one uniform convention explains all of them within tolerance."""
    for slope, tie in CONVENTIONS:
        ref = under_convention(case, forward, near, slope, tie)
        if all(_within(ref, n, tensors[n][1]) for n in names):
            note = {"kink_check": f"matches the reference with {convention_words(slope, tie)} "
                                  f"({stopped}, so not checked element by element)"}
            return verdicts, {n: note for n in names}
    rule = (f"no valid one-sided choice applied uniformly at the kinks explains it (tried "
            f"ReLU'(0) low/high/middle x tied windows to the first/last maximum or split "
            f"evenly; {stopped}, so it was not checked element by element)")
    return ({**verdicts, **{n: "diverge" for n in names}},
            {n: {"kink_check": "failed", "kink_rule": rule} for n in names})


def _within(ref: Result, name: str, t: _Tensor) -> bool:
    expected = tensor_of(ref, name)
    if expected is None or np.shape(expected) != t.a.shape:
        return False
    err = np.abs(t.a - np.asarray(expected, np.float64))
    return bool(np.all(err[np.isfinite(err)] <= t.tol[np.isfinite(err)]))





def compare(case: Case, expected: Result, actual: Result, *, oracle: str, mode: str,
            device: str, dtype: str, expected_dtype: str | None = None,
            model: Bounds | None = None, kappa: float = KAPPA, precision: str = "-",
            replay: str | None = None) -> list[Record]:
    """One ``Record`` per tensor (loss, every gradient, every delta both sides have), see
    ``compare_results``; ``actual`` was computed by ``oracle``/``mode`` on ``device``."""
    return compare_results(case, expected, actual, dtype=dtype, expected_dtype=expected_dtype,
                           model=model, kappa=kappa).records(
        where(case, oracle, mode, device, dtype, precision=precision, replay=replay))


def _verdicts(case: Case, compared: Mapping[str, tuple[str, _Tensor, str]],
              rows: dict[int, NDArray[np.bool_]]) -> dict[str, str]:
    out: dict[str, str] = {}
    N = case.batch
    for name, (_, t, _) in compared.items():
        if t.one_sided.any():
            out[name] = "nan"
        elif not t.beyond.any():
            out[name] = "agree"
        else:
            out[name] = "diverge"
    for name, (quantity, t, _) in compared.items():
        if out[name] != "diverge" or case.family == "graph" or name == "loss":
            continue
        layer = layer_of(case, name)
        kink = _rows_for(layer, rows, N)
        if not kink.any():
            continue
        if quantity in ("delta", "input"):
            if not t.beyond.reshape(N, -1)[~kink].any():
                out[name] = "kink"
        else:
            own = compared.get(f"delta{layer}")
            if own is None or not own[1].beyond.reshape(N, -1)[~kink].any():
                out[name] = "kink"
    return out


def first_divergent_layer(case: Case, verdicts: Mapping[str, str]) -> int | None:
    """Highest diverging ``delta<l>`` (every delta above it agrees); else the layer of the
    highest diverging parameter gradient; else ``None``."""
    bad = [delta_layer(k) for k, v in verdicts.items() if v in ("diverge", "nan")]
    deltas = [l for l in bad if l is not None]
    if deltas:
        return max(deltas)
    layers = [layer_of(case, k) for k, v in verdicts.items() if delta_layer(k) is None
              and input_layer(k) is None and k != "loss" and v in ("diverge", "nan")]
    found = [l for l in layers if l is not None]
    return max(found) if found else None


def screen_then_locate(case: Case, actual: Result, *, oracle: str = "impl",
                       mode: str = "reverse", device: str = "cpu", dtype: str | None = None,
                       probes: int = 4, alpha: float = 1e-6, seed: int = 0,
                       model: Bounds | None = None) -> tuple[list[Record], dict]:
    """Cheap screen, then full coordinates only where it fails.

    Per parameter tensor, ``probes`` Rademacher directions ``u`` (entries +-1): the analytic
    directional derivative ``g^T u`` against the FD derivative of the loss along ``u``.
    Threshold from the error model: if every element of a correct ``g`` is within ``tol_i``
    of the truth, the error vector ``e`` obeys ``|e_i| <= tol_i``, and for a random sign
    vector ``u`` drawn independently of ``e`` Hoeffding gives
    ``P(|u^T e| >= c ||tol||_2) <= 2 exp(-c^2 / 2) = alpha``; so the screen flags a tensor
    when ``|g^T u - D_u| > c ||tol||_2 + fd_err_u`` with ``c = sqrt(2 ln(2/alpha))`` (5.4 for
    ``alpha = 1e-6``): a false alarm rate below ``probes * alpha`` per tensor whatever the
    rounding pattern. Flagged tensors (and all deltas, for localisation) are then computed
    coordinate by coordinate and compared with ``compare``.
    """
    from ...oracles.finite_differences import FiniteDifferences, directional, hoeffding_factor

    dtype = dtype or case.dtype
    values = case.astype(dtype) if dtype != case.dtype else case
    b = model if model is not None else bounds(values)
    u_a, u_e = unit_roundoff(dtype), unit_roundoff("float64")
    rng = np.random.default_rng(seed)
    directions = {name: rng.choice([-1.0, 1.0], size=(probes, *p.shape))
                  for name, p in values.params.items()}
    fd = directional(values, directions)
    c = hoeffding_factor(alpha)
    failing, screens = [], {}
    for name, u in directions.items():
        g = np.asarray(actual.grads[name], np.float64)
        gu = u.reshape(probes, -1) @ g.reshape(-1)
        D, err = fd[name]
        thr = c * float(np.linalg.norm(tolerance(b.E[name], u_a, u_e))) + err
        ratio = np.abs(gu - D) / thr
        screens[name] = float(np.max(ratio))
        if not np.all(np.isfinite(gu)) or np.any(ratio > 1):
            failing.append(name)
    records: list[Record] = []
    if failing:
        deltas = [f"delta{l}" for l in range(1, len(case.layers) + 1)]
        expected = FiniteDifferences().run(values, device, only=failing + deltas)
        records = compare(values, expected, actual, oracle=oracle, mode=mode, device=device,
                          dtype=dtype, model=b)
    first = records[0].first_divergent_layer if records else None
    meta = {**where(case, oracle, mode, device, dtype), "versions": provenance(actual)}
    for name in values.params:
        if name in failing:
            continue
        records.append(Record(quantity="grad", name=name, shape=tuple(values.params[name].shape),
                              n_total=int(values.params[name].size), margin=screens[name],
                              verdict="agree", first_divergent_layer=first,
                              tolerance_model=f"screen: {probes} Rademacher probes, "
                              f"|g.u - D_u| <= {c:.2f} ||tol||_2 + fd_err_u", **meta,
                              detail={"screen_ratio": screens[name]}))
    return records, {"failing": failing, "screen_ratio": screens, "threshold_factor": c}
