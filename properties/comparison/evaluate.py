"""Run one implementation on one case and turn what happened into records: the one path that
``run`` (campaign), ``bo.check``, the device study and the pytest assertion all take.

An implementation is any ``Oracle`` (finite differences, PyTorch, JAX, or a user's adapter
wrapped by ``bo.check``). What can happen, and the records it gives:

* the oracle cannot run on the device: one ``unsupported`` record with the reason;
* it raises: one ``oracle_error`` record with message and traceback (``unsupported`` for
  ``NotImplementedError``; ``BadReturn``: the return as a whole was not gradients);
* it returns a ``Result``: one record per compared tensor (``compare.compare_results``),
  plus one ``oracle_error`` per tensor it returned missing or malformed
  (``Result.meta["problems"]``), all built once with everything known. Where it disagrees with
  the reference and ``judges`` are given, those oracles run the case too and every record
  names the odd one out (``detail["blame"]``, ``detail["votes"]``).

The error-model bounds of the case are computed once and shared by every comparison.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ...oracles.base import Oracle
from ...reference import backprop
from ...reference.case import Case
from ...reference.result import Result
from .compare import Comparison, compare_results, provenance, tensor_of, where
from .directional import directional_records, localise_names, reconcile, screen
from .error_model import Bounds, bounds
from .records import (
    Record,
    bad_return_record,
    delta_layer,
    error_record,
    index_key,
    input_layer,
    unsupported_record,
)

__all__ = [
    "BadReturn", "cross_values", "evaluate", "identity", "Results", "tie_break", "triangulate"
]

Results = dict[tuple[str, str, str, str], Result]  # kept results by ``identity``


class BadReturn(Exception):
    """The implementation returned something that is not gradients of the case."""


def evaluate(case: Case, oracle: Oracle, device: str = "cpu", *,
             reference: Result | None = None, model: Bounds | None = None,
             judges: Sequence[Oracle] = (), replay: str | None = None,
             keep: Results | None = None) -> list[Record]:
    """The records of ``oracle`` on ``case`` (computed in the case's dtype) against
    ``reference`` (default: the reference's ``backprop(case)``). Never raises for anything
    the oracle does. ``keep``: the results it (and any judge) returned are put there, by
    ``identity``, for ``cross_values``."""
    start = time.perf_counter()
    at = where(case, oracle.name, oracle.mode, device, case.dtype, precision=oracle.precision,
               replay=replay)
    reason = oracle.available(device)
    if reason:
        return [unsupported_record(at, reason)]
    reference = reference if reference is not None else backprop(case)
    model = model if model is not None else bounds(case)
    try:
        actual = oracle.run(case, device, case.dtype)
        screens = screen(case, reference, actual, model, dtype=case.dtype)
        localised = localise_names(case, screens)
        if localised:  # forward mode by directions: the whole basis where the screen failed
            actual = _merged(actual, oracle.localise(case, device, case.dtype, localised))
    except BadReturn as exc:
        return [bad_return_record(at, "-", str(exc), None)]
    except Exception as exc:  # recorded, never fatal: one oracle must not stop the run
        return [error_record({**at, "seconds": _since(start)}, exc)]
    if oracle.name == "fd":  # FD refines its mode per case: fd or complex_step
        at["mode"] = str(actual.meta.get("method", oracle.mode))
    if keep is not None:
        keep[identity(at)] = actual
    comparison = compare_results(case, reference, actual, dtype=case.dtype, model=model,
                                 problems=tuple(actual.meta.get("problems", ())))
    reconcile(comparison, screens)
    vote: dict[str, Any] = {}
    judged: list[Record] = []
    if judges and comparison.verdict in ("diverge", "nan"):
        vote, judged = tie_break(comparison, oracle.name, judges, model, replay, keep)
    at = {**at, "seconds": _since(start)}
    own = comparison.records(at, **vote)
    if screens:
        methods = {"expected": str(reference.meta.get("method", "?")),
                   "actual": str(actual.meta.get("method", "?"))}
        at["versions"] = {**at["versions"], **provenance(reference, actual)}
        own = _in_order(case, own + directional_records(screens, at, methods,
                                                        comparison.first))
    return own + judged


def _merged(actual: Result, located: Result) -> Result:
    """``actual`` (tangents along directions) with the full derivatives ``located`` found."""
    return replace(actual, grads={**actual.grads, **located.grads},
                   deltas={**actual.deltas, **located.deltas},
                   meta={**actual.meta, "localised": sorted({*located.grads, *located.deltas})})


def _in_order(case: Case, records: list[Record]) -> list[Record]:
    """Records in tensor order: the loss, the parameters, the deltas, the input gradients,
    then events."""
    order = {name: i for i, name in enumerate(["loss", *case.params])}
    quantities = {"loss": 0, "grad": 0, "delta": 1, "input": 2}

    def key(r: Record) -> tuple[int, int, int]:
        return (quantities.get(r.quantity, 3), order.get(r.name, 0),
                delta_layer(r.name) or input_layer(r.name) or 0)

    return sorted(records, key=key)


def tie_break(comparison: Comparison, name: str, judges: Sequence[Oracle], model: Bounds,
              replay: str | None, keep: Results | None = None
              ) -> tuple[dict[str, Any], list[Record]]:
    """Run ``judges`` on the case where ``name`` and the reference disagree; the vote
    (``blame``: the odd one out, or ``undetermined``; ``votes``: every pairwise verdict) and
    the judges' own records against the reference, which carry the vote too."""
    case, reference, actual = comparison.case, comparison.expected, comparison.actual
    pairs = {("reference", name): comparison.verdict}
    theirs: list[tuple[Oracle, Comparison]] = []
    for judge in judges:
        try:
            result = judge.run(case, "cpu", case.dtype)
        except Exception:  # a judge that fails just does not vote
            continue
        if keep is not None:
            keep[(judge.name, judge.mode, judge.precision, "cpu")] = result
        vs_ref = compare_results(case, reference, result, dtype=case.dtype, model=model)
        vs_impl = compare_results(case, result, actual, dtype=case.dtype,
                                  expected_dtype=case.dtype, model=model)
        pairs[("reference", judge.name)] = vs_ref.verdict
        pairs[(judge.name, name)] = vs_impl.verdict
        theirs.append((judge, vs_ref))
    vote = {"blame": triangulate(pairs) or "undetermined",
            "votes": {f"{a} vs {b}": v for (a, b), v in pairs.items()}}
    judged = [r for judge, vs_ref in theirs for r in vs_ref.records(
        where(case, judge.name, judge.mode, "cpu", case.dtype, precision=judge.precision,
              replay=replay), **vote)]
    return vote, judged


def identity(at: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """Which implementation made a record (or a record's ``where``): oracle, mode, precision,
    device."""
    return (str(at["oracle"]), str(at["mode"]), str(at["precision"]), str(at["device"]))


def cross_values(records: list[Record], results: Mapping[tuple[str, str, str, str], Result]
                 ) -> list[Record]:
    """Every implementation's value at every implementation's worst element: the records of
    one case (one dtype) get ``detail["values"]``, ``{index_key: value}`` of their own result
    at the worst index of each record of the same tensor, so that a report shows all of them
    at the same element. Records whose result was not kept (a worker that died) get none.
    Returns ``records``, changed in place."""
    worst: dict[str, set[tuple[int, ...]]] = defaultdict(set)
    # elementwise records only (a directional one compares tangents, it has no worst element)
    tensors = [r for r in records if r.quantity in TENSOR_QUANTITIES and r.n_total
               and len(r.worst_index) == len(r.shape)]
    for r in tensors:
        worst[r.name].add(tuple(r.worst_index))
    for r in tensors:
        result = results.get(identity(vars(r)))
        raw = None if result is None else tensor_of(result, r.name)
        if raw is None or np.shape(raw) != tuple(r.shape):
            continue
        value = np.asarray(raw, np.float64)
        r.detail["values"] = {index_key(i): float(value[i]) for i in sorted(worst[r.name])}
    return records


TENSOR_QUANTITIES = ("loss", "grad", "delta", "input")


def triangulate(summaries: dict[tuple[str, str], str]) -> str | None:
    """Given pairwise verdicts ``{(a, b): verdict}`` among three or more implementations, the
    one that disagrees with every other while those agree with each other (the odd one out),
    else ``None``."""
    names = sorted({n for pair in summaries for n in pair})

    def agree(x: str, y: str) -> bool | None:
        v = summaries.get((x, y), summaries.get((y, x)))
        return None if v is None else v in ("agree", "kink")

    for odd in names:
        others = [n for n in names if n != odd]
        if len(others) < 2:
            continue
        if all(agree(odd, o) is False for o in others) and all(
                agree(x, y) is not False for i, x in enumerate(others) for y in others[i + 1:]):
            return odd
    return None


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 4)
