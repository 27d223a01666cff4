"""``bo.check``: verify someone else's implementation against the reference.

``impl(case) -> dict[str, ndarray]`` returns the gradients keyed like ``case.params``; it may
also return ``"loss"`` and per-layer ``"delta<l>"`` (``dC/dz^l``), which are then compared too.
Every case gets the comparison of ``compare.py`` (error-model tolerances). Where the
implementation and the reference disagree, PyTorch and JAX (where installed) run the case as
tie-breakers, and each record says which side is the odd one out (``detail["blame"]``).

Bad returns never raise: each missing or malformed tensor (wrong shape or dtype, not an array)
becomes an ``oracle_error`` record whose message names the case and the tensor, at that
tensor's layer, and the well-formed tensors of the same return are still compared (one bad
shape does not hide a wrong value elsewhere); unexpected keys are one more such record, a
return that is not a dict one record for the case; an exception
inside the implementation is recorded with its traceback; ``NotImplementedError`` makes the
case ``unsupported``. Non-finite values are compared as such (verdict ``nan``) and the record
says where the first one is.

``bo.check_training(impl, cases, Training(...))`` checks SGD with momentum and a learning-rate
schedule step by step (teacher-forced: each step starts from the reference's parameters and
velocity, so errors do not compound and the tolerance has an exact model).
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...reference import backprop
from ...reference.case import FAMILY_NAMES, Case
from ...reference.result import Result
from ...reference import training as ref_training
from ...reports.records_io import RecordWriter, to_jsonable
from ..cases.case_io import save_case
from ..comparison.compare import (_layer_of, compare, error_record, first_divergent_layer,
                      summary_verdict, triangulate)
from ..comparison.error_model import KAPPA, bounds, tolerance, unit_roundoff

FAILING = ("diverge", "nan", "oracle_error")
Impl = Callable[[Case], Mapping[str, Any]]


class BadReturn(Exception):
    """The implementation returned something that is not gradients of the case."""


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    """The outcome of ``check``: one record per compared tensor (dicts, as in
    ``records.jsonl``), the cases, and the implementation's name."""

    name: str
    records: list[dict] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    replay: str = ""

    @property
    def ok(self) -> bool:
        """No divergence, no one-sided NaN, no error raised by or found in the returns
        (``unsupported`` cases and ``kink`` verdicts are allowed)."""
        return not any(r.get("verdict") in FAILING for r in self.records)

    def verdicts(self) -> dict[str, str]:
        """The most severe verdict of the implementation per case id."""
        by_case: dict[str, list] = {}
        for r in self.records:
            if r.get("oracle") == self.name:
                by_case.setdefault(r["case_id"], []).append(_Verdict(r["verdict"]))
        return {c: summary_verdict(v) for c, v in by_case.items()}  # type: ignore[arg-type]

    def counts(self) -> dict[str, int]:
        """How many cases ended with each verdict."""
        return dict(Counter(self.verdicts().values()))

    def failures(self) -> list[dict]:
        return [r for r in self.records if r.get("verdict") in FAILING
                and r.get("oracle") == self.name]

    def summary(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(self.counts().items()))
        lines = [f"{self.name}: {len(self.cases)} cases: {counts or 'none run'}"]
        for r in self.failures()[:10]:
            where = r.get("first_divergent_layer")
            lines.append(f"  case {r['case_id']} ({r.get('arch', '')}) {r['name']}: "
                         f"{r['verdict']}" + (f", enters at layer {where}" if where else "")
                         + (f", odd one out: {r['detail']['blame']}"
                            if isinstance(r.get("detail"), dict) and r["detail"].get("blame")
                            else "")
                         + (f" — {_message(r)}" if _message(r) else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def write(self, directory: Path | str) -> Path:
        """``records.jsonl``, ``summary.json``, ``summary.md``, ``report.html`` and the cases
        (for replay) into ``directory``, as ``run`` writes them; returns the HTML path."""
        from ..campaign.engine import environment_of, finish

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for case in self.cases:
            save_case(case, directory / "cases")
        (directory / "records.jsonl").unlink(missing_ok=True)
        with RecordWriter(directory / "records.jsonl") as writer:
            writer.write(self.records)
        env = {**environment_of(), "implementation": self.name}
        (directory / "environment.json").write_text(json.dumps(env, indent=1))
        finish(directory)
        return directory / "report.html"


@dataclass(frozen=True)
class _Verdict:
    verdict: str


def _message(record: dict) -> str:
    detail = record.get("detail")
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("reason") or "")
    return ""


# ---------------------------------------------------------------- validating returns

def _where(case: Case) -> str:
    return f"case {case.case_id} ({case.describe()})"


def _delta_names(case: Case) -> set[str]:
    return {f"delta{l}" for l in range(1, len(case.layers) + 1)}


def validate(case: Case, returned: Any) -> tuple[Result, list[tuple[str, str]]]:
    """The well-formed part of the implementation's return as a ``Result``, and one
    ``(name, message)`` per problem: a missing or malformed tensor by its name, anything else
    (not a dict, unexpected keys) as ``"-"``. Raises ``BadReturn`` only when nothing in the
    return can be compared (it is not a dict)."""
    if isinstance(returned, Result):
        returned = {**returned.grads, **returned.deltas,
                    **({} if returned.loss is None else {"loss": returned.loss})}
    if not isinstance(returned, Mapping):
        raise BadReturn(f"{_where(case)}: returned {type(returned).__name__}, expected a dict "
                        f"of gradients keyed like case.params ({', '.join(case.params)})")
    keys, delta_names = set(map(str, returned)), _delta_names(case)
    problems = [(k, f"{_where(case)}: missing gradient {k} (expected keys "
                    f"{', '.join(case.params)})") for k in case.params if k not in keys]
    extra = sorted(keys - set(case.params) - delta_names - {"loss"})
    if extra:
        problems.append(("-", f"{_where(case)}: unexpected key(s) {', '.join(extra)} (expected "
                              f"{', '.join(case.params)}, optionally loss and "
                              f"delta1..delta{len(case.layers)})"))
    grads, deltas, loss = {}, {}, None
    for k, value in returned.items():
        k = str(k)
        try:
            if k in case.params:
                grads[k] = _array(case, k, value, case.params[k].shape)
            elif k in delta_names:
                deltas[k] = _array(case, k, value, None)
            elif k == "loss":
                loss = float(np.asarray(_array(case, k, value, (), scalar=True)))
        except BadReturn as exc:
            problems.append((k, str(exc)))
    return Result(loss=loss, grads=grads, deltas=deltas,
                  meta={"method": "implementation"}), problems


def _array(case: Case, name: str, value: Any, shape: tuple | None, scalar: bool = False
           ) -> np.ndarray:
    if scalar and isinstance(value, (float, int, np.floating)) and not isinstance(value, bool):
        value = np.asarray(value, case.dtype)
    if not isinstance(value, np.ndarray):
        raise BadReturn(f"{_where(case)}: {name} is a {type(value).__module__}."
                        f"{type(value).__qualname__}, not a numpy.ndarray")
    if shape is not None and value.shape != tuple(shape):
        raise BadReturn(f"{_where(case)}: {name} has shape {value.shape}, expected "
                        f"{tuple(shape)} (the shape of case.params[{name!r}])"
                        if name in case.params else
                        f"{_where(case)}: {name} has shape {value.shape}, expected {shape}")
    if value.dtype != np.dtype(case.dtype) and not scalar:
        raise BadReturn(f"{_where(case)}: {name} has dtype {value.dtype}, the case is "
                        f"{case.dtype}")
    return value


def _non_finite_note(result: Result, name: str) -> str:
    value = result.grads.get(name, result.deltas.get(name))
    if value is None:
        return ""
    bad = np.argwhere(~np.isfinite(value))
    if not len(bad):
        return ""
    return f"{name}: {len(bad)} non-finite value(s) from the implementation, first at " \
           f"index {tuple(int(i) for i in bad[0])}"


# ---------------------------------------------------------------- checking

def _resolve(cases: Sequence[Case] | str, n: int, seed: int, constraints: dict) -> list[Case]:
    if isinstance(cases, str):
        if cases not in FAMILY_NAMES:
            raise ValueError(f"unknown family {cases!r}; expected one of "
                             f"{', '.join(FAMILY_NAMES)} or a list of Case")
        from ..cases.strategies import cases as draw_cases

        return draw_cases(cases, n, seed, **constraints)
    if isinstance(cases, Case):
        return [cases]
    cases = list(cases)
    for i, c in enumerate(cases):
        if not isinstance(c, Case):
            raise TypeError(f"cases[{i}] is a {type(c).__name__}, not a Case")
    return cases


def _impl_name(impl: Callable) -> str:
    module = getattr(impl, "__module__", None) or ""
    name = getattr(impl, "__qualname__", None) or type(impl).__name__
    return f"{module}:{name}" if module else name


def _tiebreakers(names: Sequence[str]) -> list:
    """Reverse-mode framework oracles that can run on the CPU here."""
    made = []
    for name in names:
        if name == "torch":
            from ...oracles.torch_oracle import TorchOracle as Framework
        elif name == "jax":
            from ...oracles.jax_oracle import JaxOracle as Framework
        else:
            raise ValueError(f"unknown tie-breaker {name!r}; expected torch or jax")
        oracle = Framework(mode="reverse", precision="strict")
        if oracle.available("cpu") is None:
            made.append(oracle)
    return made


def _record_dicts(records: Sequence[Any], extra: dict) -> list[dict]:
    return [{**(dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r)), **extra}
            for r in records]


def check_case(impl: Impl, case: Case, name: str, tiebreakers: Sequence = (),
               replay: str = "") -> list[dict]:
    """The records of ``impl`` on one case (never raises for anything ``impl`` does)."""
    extra = {"precision": "-", "arch": case.describe(), "replay": replay.format(case=case)}
    reference = backprop(case)
    try:
        actual, problems = validate(case, impl(case))
    except BadReturn as exc:
        return _record_dicts([_bad_return(case, name, "-", str(exc))], extra)
    except Exception as exc:  # noqa: BLE001 - the implementation's failure is the finding
        return _record_dicts([error_record(case, oracle=name, mode="implementation",
                                           device="cpu", dtype=case.dtype, exc=exc)], extra)
    records = compare(case, reference, actual, oracle=name, mode="implementation",
                      device="cpu", dtype=case.dtype)
    for r in records:
        note = _non_finite_note(actual, r.name) if r.verdict == "nan" else ""
        if note:
            r.detail = {**r.detail, "message": note}
    records += [_bad_return(case, name, k, message) for k, message in problems]
    if problems:  # a malformed tensor counts as diverging where the bug is located
        first = first_divergent_layer(case, {**{r.name: r.verdict for r in records},
                                             **{k: "diverge" for k, _ in problems if k != "-"}})
        for r in records:
            r.first_divergent_layer = first
    rows = _record_dicts(records, extra)
    if summary_verdict(records) in ("diverge", "nan") and tiebreakers:
        rows += _break_tie(case, reference, actual, name, rows, tiebreakers, extra)
    return rows


def _bad_return(case: Case, name: str, tensor: str, message: str):
    """An ``oracle_error`` record for a missing or malformed ``tensor`` (``"-"``: the return
    as a whole), with that tensor's layer."""
    from ..comparison.records import Record

    return Record(case_id=case.case_id, family=case.family, oracle=name, mode="implementation",
                  device="cpu", dtype=case.dtype, quantity="run", name=tensor,
                  verdict="oracle_error",
                  first_divergent_layer=None if tensor == "-" else _layer_of(case, tensor),
                  detail={"type": "BadReturn", "message": message})


def _break_tie(case: Case, reference: Result, actual: Result, name: str, rows: list[dict],
               tiebreakers: Sequence, extra: dict) -> list[dict]:
    """Run the frameworks on a disagreeing case; name the odd one out on every record."""
    pairs = {("reference", name): summary_verdict([_Verdict(r["verdict"]) for r in rows])}
    added: list[dict] = []
    for oracle in tiebreakers:
        try:
            theirs = oracle.run(case, "cpu", case.dtype)
        except Exception:  # noqa: BLE001 - a tie-breaker that fails just does not vote
            continue
        vs_ref = compare(case, reference, theirs, oracle=oracle.name, mode=oracle.mode,
                         device="cpu", dtype=case.dtype)
        vs_impl = compare(case, theirs, actual, oracle=name, mode="implementation",
                          device="cpu", dtype=case.dtype, expected_dtype=case.dtype)
        pairs[("reference", oracle.name)] = summary_verdict(vs_ref)
        pairs[(oracle.name, name)] = summary_verdict(vs_impl)
        added += _record_dicts(vs_ref, {**extra, "precision": oracle.precision})
    odd = triangulate(pairs)
    blame = odd or "undetermined"
    votes = {f"{a} vs {b}": v for (a, b), v in pairs.items()}
    for r in rows + added:
        r["detail"] = {**(r.get("detail") or {}), "blame": blame, "votes": votes}
    return added


def check(impl: Impl, cases: Sequence[Case] | Case | str, *, n: int = 20, seed: int = 0,
          name: str | None = None, tiebreakers: Sequence[str] = ("torch", "jax"),
          replay: str = "", progress: Callable[[int, int], None] | None = None,
          **constraints: Any) -> Report:
    """Run ``impl`` on ``cases`` (a list of ``Case``, or a family name: then ``n`` cases drawn
    from ``seed`` under ``constraints``, as ``bo.cases``) and compare with the reference.

    ``tiebreakers``: frameworks run where ``impl`` and the reference disagree, so the verdict
    says which side is wrong (those not installed are left out)."""
    chosen = _resolve(cases, n, seed, constraints)
    label = name or _impl_name(impl)
    judges = _tiebreakers(tiebreakers)
    report = Report(name=label, cases=chosen, replay=replay)
    for i, case in enumerate(chosen, 1):
        report.records += check_case(impl, case, label, judges, replay)
        if progress:
            progress(i, len(chosen))
    return report


# ---------------------------------------------------------------- training

@dataclass(frozen=True)
class Training:
    """``steps`` steps of SGD with momentum ``mu`` (``convention`` ``"pytorch"``:
    ``v <- mu v + g; w <- w - eta_t v``, or ``"classic"``: ``v <- mu v - eta_t g; w <- w + v``)
    and the step-decay schedule ``eta_t = eta0 * gamma ** (t // every)``, starting at step
    ``start`` with momentum buffers ``velocity`` (zeros when ``None``)."""

    steps: int = 4
    eta0: float = 0.05
    gamma: float = 0.5
    every: int = 2
    mu: float = 0.9
    convention: str = "pytorch"
    start: int = 0
    velocity: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.convention not in ref_training.CONVENTIONS:
            raise ValueError(f"convention must be one of {ref_training.CONVENTIONS}, got "
                             f"{self.convention!r}")
        if self.steps < 1 or self.every < 1:
            raise ValueError("steps and every must be >= 1")

    def eta(self, t: int) -> float:
        """The learning rate of step ``t`` (counted from 0 at the start of training)."""
        return ref_training.step_decay(self.eta0, self.gamma, self.every)(t)


TrainImpl = Callable[[Case, Training], Sequence[Mapping[str, Any]]]


def _velocity(case: Case, training: Training) -> dict[str, np.ndarray]:
    return dict(training.velocity) if training.velocity is not None else {
        k: np.zeros_like(w) for k, w in case.params.items()}


def update_tolerance(case: Case, name: str, eta: float, mu: float, grad: np.ndarray,
                     v_prev: np.ndarray, v_new: np.ndarray, convention: str = "pytorch",
                     kappa: float = KAPPA) -> np.ndarray:
    """Per-element bound on ``|w_impl - w_ref|`` after one teacher-forced step at parameters
    ``w = case.params``: ``eta tol(grad)`` (``tol(grad)``: the comparison's error-model
    tolerance of the gradient at ``w``) plus the rounding of the update itself,
    ``kappa u (eta (mu |v| + |g|) + |w| + eta |v'|)`` for ``"pytorch"`` and
    ``kappa u (mu |v| + eta |g| + |w| + |v'|)`` for ``"classic"``."""
    u = unit_roundoff(case.dtype)
    tol_g = tolerance(bounds(case).E[name], u, u, kappa=kappa)
    w, g, v, v2 = (np.abs(x) for x in (case.params[name], grad, v_prev, v_new))
    if convention == "pytorch":
        rounding = eta * (mu * v + g) + w + eta * v2
    else:
        rounding = mu * v + eta * g + w + v2
    return eta * tol_g + kappa * u * rounding


def check_training_case(impl: TrainImpl, case: Case, training: Training, name: str,
                        replay: str = "") -> list[dict]:
    """Teacher-forced: step ``t`` of ``impl`` starts from the reference's parameters and
    velocity at ``t`` (``Training(steps=1, start=t, velocity=v_t)``); one ``update`` record
    per parameter and step."""
    extra = {"precision": "-", "arch": case.describe(), "replay": replay.format(case=case),
             "mode": "training", "oracle": name, "device": "cpu", "dtype": case.dtype,
             "case_id": case.case_id, "family": case.family}
    params, velocity = dict(case.params), _velocity(case, training)
    rows: list[dict] = []
    for t in range(training.start, training.start + training.steps):
        at = case.with_arrays(params=params)
        grads = backprop(at).grads
        eta = training.eta(t)
        new_w, new_v = ref_training.momentum_step(params, grads, velocity, eta, training.mu,
                                                  training.convention)
        one = dataclasses.replace(training, steps=1, start=t, velocity=velocity)
        try:
            returned = impl(at, one)
            got = _step_params(at, returned, t)
        except BadReturn as exc:
            return rows + [{**extra, "quantity": "run", "name": "-", "step": t,
                            "verdict": "oracle_error",
                            "detail": {"type": "BadReturn", "message": str(exc)}}]
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback
            verdict = "unsupported" if isinstance(exc, NotImplementedError) else "oracle_error"
            return rows + [{**extra, "quantity": "run", "name": "-", "step": t,
                            "verdict": verdict, "detail": {
                                "type": type(exc).__name__, "message": str(exc),
                                "traceback": traceback.format_exc()}}]
        for k, w in new_w.items():
            tol = update_tolerance(at, k, eta, training.mu, grads[k], velocity[k], new_v[k],
                                   training.convention)
            rows.append({**extra, **_update_record(k, t, eta, w, got[k], tol)})
        params, velocity = new_w, new_v
    return rows


def _step_params(case: Case, returned: Any, t: int) -> dict[str, np.ndarray]:
    if not isinstance(returned, Sequence) or len(returned) != 1:
        raise BadReturn(f"{_where(case)}: step {t}: expected a list with the parameters after "
                        f"the one step asked for, got {type(returned).__name__}"
                        + (f" of length {len(returned)}" if isinstance(returned, Sequence)
                           else ""))
    after = returned[0]
    if not isinstance(after, Mapping):
        raise BadReturn(f"{_where(case)}: step {t}: parameters are a {type(after).__name__}, "
                        f"expected a dict keyed like case.params")
    missing = [k for k in case.params if k not in after]
    extra = sorted(set(map(str, after)) - set(case.params))
    if missing or extra:
        raise BadReturn(f"{_where(case)}: step {t}: missing {missing or 'none'}, unexpected "
                        f"{extra or 'none'}")
    return {k: _array(case, k, after[k], case.params[k].shape) for k in case.params}


def _update_record(name: str, t: int, eta: float, expected: np.ndarray, actual: np.ndarray,
                   tol: np.ndarray) -> dict:
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    finite = np.isfinite(a)
    err = np.where(finite, np.abs(a - e), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
    margin = float(ratio.max(initial=0.0))
    verdict = "nan" if not finite.all() else ("agree" if margin <= 1 else "diverge")
    return {"quantity": "update", "name": name, "step": t, "shape": list(e.shape),
            "max_abs_err": float(err.max(initial=0.0)), "margin": margin,
            "tolerance": float(tol[worst]) if ratio.size else 0.0,
            "tolerance_model": f"eta_t={eta:g} x tol(grad) + kappa x u x update terms",
            "worst_index": [int(i) for i in worst], "verdict": verdict,
            "n_beyond": int((ratio > 1).sum()), "n_total": int(ratio.size),
            "expected_value": float(e[worst]) if ratio.size else None,
            "actual_value": float(a[worst]) if ratio.size else None}


def check_training(impl: TrainImpl, cases: Sequence[Case] | Case | str,
                   training: Training | None = None, *, n: int = 10, seed: int = 0,
                   name: str | None = None, replay: str = "", **constraints: Any) -> Report:
    """Check ``impl(case, training) -> [params after each step]`` step by step against the
    reference's SGD with momentum and schedule (``Training``). Cases as in ``check``."""
    chosen = _resolve(cases, n, seed, constraints)
    training = training or Training()
    label = name or _impl_name(impl)
    report = Report(name=label, cases=chosen, replay=replay)
    for case in chosen:
        report.records += check_training_case(impl, case, training, label, replay)
    return report
