"""``bo.check``: verify someone else's implementation against the reference.

``impl(case) -> dict[str, ndarray]`` returns the gradients keyed like ``case.params``; it may
also return ``"loss"`` and per-layer ``"delta<l>"`` (``dC/dz^l``), which are then compared too.
The implementation is wrapped as an oracle (``Implementation``) and every case goes through the
one evaluation path (``comparison.evaluate``): error-model tolerances, and where the
implementation and the reference disagree, PyTorch and JAX (where installed) run the case as
tie-breakers, and each record says which side is the odd one out (``detail["blame"]``).

Bad returns never raise: each missing or malformed tensor (wrong shape or dtype, not an array)
becomes an ``oracle_error`` record whose message names the case and the tensor, at that
tensor's layer, and the well-formed tensors of the same return are still compared (one bad
shape does not hide a wrong value elsewhere); unexpected keys are one more such record, a
return that is not a dict one record for the case; an exception inside the implementation is
recorded with its traceback; ``NotImplementedError`` makes the case ``unsupported``.
Non-finite values are compared as such (verdict ``nan``) and the record says where the first
one is.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from ...oracles import registry
from ...oracles.base import Oracle
from ...oracles.jax_oracle import CACHE_ENV
from ...reference import backprop
from ...reference.case import FAMILY_NAMES, Case
from ...reference.result import Result
from ..campaign.output import Output, environment_of
from ..campaign.stopping import Interrupted, Stop, graceful
from ..campaign.threads import child_environment, limit
from ..campaign.worker import worker_for
from ..comparison.error_model import bounds
from ..comparison.evaluate import BadReturn, Results, cross_values, evaluate
from ..comparison.records import FAILING, Record, case_verdict, message, rank

Impl = Callable[[Case], Mapping[str, Any]]


# ---------------------------------------------------------------- the report

SHOWN_CASES = 20  # failing cases listed by ``Report.summary``
ARCH_WIDTH = 60  # characters of a case's architecture shown on its summary line


def shorten(text: str, width: int = ARCH_WIDTH) -> str:
    """``text`` cut to ``width`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= width else text[:width - 1] + "…"


def _finite(value: float) -> float:
    return value if np.isfinite(value) else np.inf


def _margin(value: float) -> str:
    return f"{value:.3g}" if value else "-"


def _counted(counts: Mapping[str, int]) -> str:
    """``3 agree, 1 diverge``, most severe verdict last."""
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda vn: -rank(vn[0])))

@dataclass
class Report:
    """The outcome of ``check``: one record per compared tensor, the cases, and the
    implementation's name."""

    name: str
    records: list[Record] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    replay: str = ""
    interrupted: bool = False

    def add(self, case: Case, records: list[Record], output: Output | None = None) -> None:
        """A finished case and its records (written to ``output`` at once, when given)."""
        self.cases.append(case)
        self.records += records
        if output is not None:
            output.save_case(case)
            output.write(records)

    @property
    def ok(self) -> bool:
        """No divergence, no one-sided NaN, no error raised by or found in the returns
        (``unsupported`` cases and ``kink`` verdicts are allowed)."""
        return not any(r.failing for r in self.records)

    def verdicts(self) -> dict[str, str]:
        """The most severe verdict of the implementation per case id."""
        by_case: dict[str, list[Record]] = {}
        for r in self.records:
            if r.oracle == self.name:
                by_case.setdefault(r.case_id, []).append(r)
        return {c: case_verdict(v) for c, v in by_case.items()}

    def counts(self) -> dict[str, int]:
        """How many cases ended with each verdict."""
        return dict(Counter(self.verdicts().values()))

    def failures(self) -> list[Record]:
        return [r for r in self.records if r.verdict in FAILING and r.oracle == self.name]

    def failing_cases(self) -> list[tuple[Record, int]]:
        """Per failing case, in order: its worst failing record (most severe verdict, then
        largest error / tolerance) and how many of its records fail."""
        by_case: dict[str, list[Record]] = {}
        for r in self.failures():
            by_case.setdefault(r.case_id, []).append(r)
        return [(min(rs, key=lambda r: (rank(r.verdict), -_finite(r.margin))), len(rs))
                for rs in by_case.values()]

    def summary(self, shown: int = SHOWN_CASES) -> str:
        """Cases counted by their most severe verdict, records (one per compared tensor, as
        summary.md counts them) by verdict, and one line per failing case (the first
        ``shown``): case id, verdict, worst tensor, the layer where it enters, error /
        tolerance, the architecture shortened, the odd one out and the message."""
        stopped = " (interrupted: the cases finished before the stop)" if self.interrupted else ""
        records = Counter(r.verdict for r in self.records)
        lines = [f"{self.name}: {len(self.cases)} cases{stopped}: "
                 f"{_counted(self.counts()) or 'none run'}",
                 f"  {len(self.records)} records (one per compared tensor, as summary.md "
                 f"counts them): {_counted(records) or 'none'}"]
        failing = self.failing_cases()
        if failing:
            lines.append(f"failing cases ({len(failing)}): case id, verdict, worst tensor, "
                         "layer where it enters, error/tolerance, architecture")
        width = max((len(r.name) for r, _ in failing[:shown]), default=0)
        for r, n in failing[:shown]:
            layer = "-" if r.first_divergent_layer is None else str(r.first_divergent_layer)
            blame = r.detail.get("blame")
            blame = "the implementation" if blame == self.name else blame
            text = message(r)
            prefix = f"case {r.case_id} ({r.arch}): "
            text = text[len(prefix):] if text.startswith(prefix) else text
            verdict = f"{r.verdict} ({r.divergence})" if r.divergence else r.verdict
            lines.append(f"  {r.case_id}  {verdict:<28} {r.name:<{width}}  layer {layer:<3}"
                         f"margin {_margin(r.margin):<9} {shorten(r.arch)}"
                         + (f" (+{n - 1} more failing tensors)" if n > 1 else "")
                         + (f"; odd one out: {blame}" if blame else "")
                         + (f" — {shorten(text, 200)}" if text else ""))
        if len(failing) > shown:
            lines.append(f"  ... and {len(failing) - shown} more failing cases (summary.md and "
                         "report.html list them all)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def write(self, directory: Path | str) -> Path:
        """``records.jsonl``, ``summary.json``, ``summary.md``, ``report.html`` and the cases
        (for replay) into ``directory``, as ``run`` writes them; returns the HTML path."""
        output = Output(directory)
        output.describe(environment=environment_of(implementation=self.name))
        for case in self.cases:
            output.save_case(case)
        output.write(self.records)
        output.finish()
        return output.directory / "report.html"


# ---------------------------------------------------------------- validating returns

def describe_case(case: Case) -> str:
    return f"case {case.case_id} ({case.describe()})"


def _delta_names(case: Case) -> set[str]:
    return {f"delta{l}" for l in range(1, len(case.layers) + 1)}


def _input_names(case: Case) -> set[str]:
    """``da1..da<L-1>``: the input gradients a layered case's implementation may return."""
    return set() if case.family == "graph" else {f"da{l}" for l in range(1, len(case.layers))}


def validate(case: Case, returned: Any) -> tuple[Result, list[tuple[str, str]]]:
    """The well-formed part of the implementation's return as a ``Result``, and one
    ``(name, message)`` per problem: a missing or malformed tensor by its name, anything else
    (not a dict, unexpected keys) as ``"-"``. Raises ``BadReturn`` only when nothing in the
    return can be compared (it is not a dict)."""
    if isinstance(returned, Result):
        returned = {**returned.grads, **returned.deltas, **returned.input_grads,
                    **({} if returned.loss is None else {"loss": returned.loss})}
    if not isinstance(returned, Mapping):
        raise BadReturn(f"{describe_case(case)}: returned {type(returned).__name__}, expected a "
                        f"dict of gradients keyed like case.params ({', '.join(case.params)})")
    keys, delta_names, input_names = set(map(str, returned)), _delta_names(case), \
        _input_names(case)
    problems = [(k, f"{describe_case(case)}: missing gradient {k} (expected keys "
                    f"{', '.join(case.params)})") for k in case.params if k not in keys]
    extra = sorted(keys - set(case.params) - delta_names - input_names - {"loss"})
    if extra:
        inputs = f", da1..da{len(case.layers) - 1}" if input_names else ""
        problems.append(("-", f"{describe_case(case)}: unexpected key(s) {', '.join(extra)} "
                              f"(expected {', '.join(case.params)}, optionally loss, "
                              f"delta1..delta{len(case.layers)}{inputs})"))
    grads, deltas, inputs_given, loss = {}, {}, {}, None
    for k, value in returned.items():
        k = str(k)
        try:
            if k in case.params:
                grads[k] = check_array(case, k, value, case.params[k].shape)
            elif k in delta_names:
                deltas[k] = check_array(case, k, value, None)
            elif k in input_names:
                inputs_given[k] = check_array(case, k, value, None)
            elif k == "loss":
                loss = float(np.asarray(check_array(case, k, value, (), scalar=True)))
        except BadReturn as exc:
            problems.append((k, str(exc)))
    return Result(loss=loss, grads=grads, deltas=deltas, input_grads=inputs_given,
                  meta={"method": "implementation", "problems": problems}), problems


def check_array(case: Case, name: str, value: Any, shape: tuple | None, scalar: bool = False
                ) -> np.ndarray:
    """``value`` if it is an array of ``shape`` (``None``: any) in the case's dtype, else
    ``BadReturn`` naming the case and the tensor."""
    if scalar and isinstance(value, (float, int, np.floating)) and not isinstance(value, bool):
        value = np.asarray(value, case.dtype)
    if not isinstance(value, np.ndarray):
        raise BadReturn(f"{describe_case(case)}: {name} is a {type(value).__module__}."
                        f"{type(value).__qualname__}, not a numpy.ndarray")
    if shape is not None and value.shape != tuple(shape):
        raise BadReturn(f"{describe_case(case)}: {name} has shape {value.shape}, expected "
                        f"{tuple(shape)} (the shape of case.params[{name!r}])"
                        if name in case.params else
                        f"{describe_case(case)}: {name} has shape {value.shape}, expected "
                        f"{shape}")
    if value.dtype != np.dtype(case.dtype) and not scalar:
        raise BadReturn(f"{describe_case(case)}: {name} has dtype {value.dtype}, the case is "
                        f"{case.dtype}")
    return value


class Implementation(Oracle):
    """A user's ``impl(case) -> dict`` as an oracle: its return validated into a ``Result``
    (problems in ``meta["problems"]``)."""

    mode = "implementation"
    precision = "-"

    def __init__(self, impl: Impl, name: str) -> None:
        self.impl, self.name = impl, name

    def run(self, case: Case, device: str = "cpu", dtype: str | None = None) -> Result:
        return validate(case, call(self.impl, case))[0]


def call(impl: Callable[..., Any], *args: Any) -> Any:
    """``impl(*args)``, with ``SystemExit``, ``KeyboardInterrupt`` and other
    ``BaseException``s it raises turned into ``ImplementationExit`` (recorded as an
    ``oracle_error``; the check goes on)."""
    try:
        return impl(*args)
    except Exception:
        raise
    except BaseException as exc:
        raise ImplementationExit(f"the implementation raised {type(exc).__name__}({exc})"
                                 ) from exc


class ImplementationExit(RuntimeError):
    """The implementation raised ``SystemExit``, ``KeyboardInterrupt`` or another
    ``BaseException`` (a stop asked for by the user never reaches it: see ``stopping``)."""


# ---------------------------------------------------------------- checking

def resolve_cases(cases: Sequence[Case] | Case | str, n: int, seed: int,
                  constraints: dict[str, Any]) -> list[Case]:
    """A family name (``n`` cases drawn from ``seed`` under ``constraints``), one case or a
    list of cases, as a list of ``Case``."""
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


def impl_name(impl: Callable[..., Any]) -> str:
    module = getattr(impl, "__module__", None) or ""
    name = getattr(impl, "__qualname__", None) or type(impl).__name__
    return f"{module}:{name}" if module else name


FRAMEWORK_NAMES = {"torch": "PyTorch", "jax": "JAX"}
_ANNOUNCED: set[tuple[str, ...]] = set()  # per process: tie-breakers already announced


class Judges(Sequence[Oracle]):
    """The tie-breakers: reverse-mode framework oracles that can run on the CPU here, made
    (and their frameworks imported, seconds each) only when they are first iterated, that is
    when a first case disagrees; a check whose cases all agree never imports them. The first
    use in a process says so on one stderr line. Sent to a worker process as the names only."""

    def __init__(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in FRAMEWORK_NAMES:
                raise ValueError(f"unknown tie-breaker {name!r}; expected torch or jax")
        self.names = tuple(names)
        self._ready: list[Oracle] | None = None

    def __bool__(self) -> bool:
        return bool(self.names)

    def __iter__(self) -> Iterator[Oracle]:
        return iter(self.ready())

    def __len__(self) -> int:
        return len(self.ready())

    def __getitem__(self, index: Any) -> Any:  # Any: Sequence's int and slice overloads
        return self.ready()[index]

    def ready(self) -> list[Oracle]:
        if self._ready is None:
            if self.names and self.names not in _ANNOUNCED:
                _ANNOUNCED.add(self.names)
                print(f"importing {' and '.join(FRAMEWORK_NAMES[n] for n in self.names)} to "
                      "break a tie", file=sys.stderr, flush=True)
            self._ready = [o for o in registry.build(self.names, ("reverse",))
                           if o.available("cpu") is None]
        return self._ready

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names, "_ready": None}


def judges_for(names: Sequence[str]) -> Judges:
    """The tie-breakers ``names`` (``torch``, ``jax``), made when first needed (``Judges``)."""
    return Judges(names)


def check_case(impl: Implementation, case: Case, judges: Sequence[Oracle] = (),
               replay: str = "") -> list[Record]:
    """The records of ``impl`` on one case (never raises for anything ``impl`` does), with
    every implementation's values at the others' worst elements (``cross_values``)."""
    results: Results = {}
    reference = backprop(case)
    return cross_values(evaluate(case, impl, "cpu", reference=reference,
                                 model=bounds(case, reference), judges=judges,
                                 replay=replay.format(case=case), keep=results), results)


def check(impl: Impl, cases: Sequence[Case] | Case | str, *, n: int = 20, seed: int = 0,
          name: str | None = None, tiebreakers: Sequence[str] = ("torch", "jax"),
          replay: str = "", progress: Callable[[int, int], None] | None = None,
          timeout: float | None = None, output: Output | None = None, stop: Stop | None = None,
          threads: int | None = 1, workers: int = 1, client: Any = None,
          **constraints: Any) -> Report:
    """Run ``impl`` on ``cases`` (a list of ``Case``, or a family name: then ``n`` cases drawn
    from ``seed`` under ``constraints``, as ``bo.cases``) and compare with the reference.

    ``tiebreakers``: frameworks run where ``impl`` and the reference disagree, so the verdict
    says which side is wrong (those not installed are left out). ``timeout``: each case runs
    in a worker process that is killed after this many seconds (the case is then an
    ``oracle_error``); ``None`` runs ``impl`` in this process without a limit (it may be any
    callable, and a debugger's breakpoints work). ``output``: records and cases are written
    there as each case finishes. Ctrl-C or SIGTERM (in the main thread) stops between cases:
    the report covers the finished cases and says ``interrupted``. ``threads``: BLAS and
    PyTorch threads while checking (default 1, restored after; the small arrays of a case are
    faster on one, ``benchmarks/bench_check.py``); ``None`` leaves them alone. ``workers``:
    more than 1 checks the cases on a Dask ``LocalCluster`` of that many processes (one thread
    each); ``client``: on the cluster of this ``distributed.Client`` instead. ``impl`` is then
    sent to the workers with cloudpickle (a ``TypeError`` says so when it cannot be)."""
    chosen = resolve_cases(cases, n, seed, constraints)
    label = name or impl_name(impl)
    judges = judges_for(tiebreakers)
    wrapped = Implementation(impl, label)
    report = Report(name=label, replay=replay)
    with graceful(stop) as stop:
        finished = (_on_cluster(wrapped, chosen, judges, replay, timeout, threads, workers,
                                client, stop) if workers > 1 or client is not None else
                    _in_process(wrapped, chosen, judges, replay, timeout, threads, stop))
        with contextlib.closing(finished):
            for i, (case, records) in enumerate(finished, 1):
                report.add(case, records, output)
                if progress:
                    progress(i, len(chosen))
        report.interrupted = stop.requested
    return report


def _in_process(wrapped: Implementation, cases: list[Case], judges: Sequence[Oracle],
                replay: str, timeout: float | None, threads: int | None, stop: Stop
                ) -> Generator[tuple[Case, list[Record]], None, None]:
    """``check``'s cases one after the other here (through a killable worker process when
    there is a time limit), until ``stop``."""
    with worker_for(timeout) as worker, limit(threads) if threads else contextlib.nullcontext():
        for case in cases:
            if stop.requested:
                return
            try:
                records = (check_case(wrapped, case, judges, replay) if worker is None else
                           worker.cross_values(case, worker.evaluate(
                               case, wrapped, judges=judges, replay=replay.format(case=case),
                               stop=stop)))
            except Interrupted:
                return
            yield case, records


def _on_cluster(wrapped: Implementation, cases: list[Case], judges: Sequence[Oracle],
                replay: str, timeout: float | None, threads: int | None, workers: int,
                client: Any, stop: Stop) -> Generator[tuple[Case, list[Record]], None, None]:
    """``check``'s cases on a Dask cluster (``properties/campaign/cluster.py``), in order."""
    try:
        from ..campaign.cluster import Campaign
        from ..campaign.engine import Execution
    except ImportError as exc:
        raise ImportError('bo.check(workers=N) needs dask.distributed: pip install '
                          '"backprop-oracle[cluster]"') from exc
    try:
        impl = cloudpickle.dumps(wrapped)
    except Exception as exc:  # a lock, an open file, a C object inside the implementation
        raise TypeError(
            f"{wrapped.name}: the implementation cannot be sent to worker processes "
            f"({type(exc).__name__}: {exc}); make it a function at the top level of an "
            "importable module (or of a file), or check with workers=1") from None
    environ = child_environment(threads or 1) if threads else {}
    if os.environ.get(CACHE_ENV):
        environ[CACHE_ENV] = os.environ[CACHE_ENV]
    with Campaign(Execution(max(1, workers)), environ, client) as campaign:
        yield from campaign.checked(impl, cases, judges, replay, timeout, stop)
