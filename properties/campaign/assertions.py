"""``assert_agree``: the assertion of the property suite, usable in anyone's ``@given`` test.

The suite makes its records through the one evaluation path (``comparison.evaluate``) and
asserts on them with ``assert_agree(case, records)``. On failure the case is saved
(``BO_FAILURES``, default ``.bo-failures/``) with a ``run.json`` naming the oracle, and the
``AssertionError`` shows the case, every failing record (tensor, verdict, error, tolerance
and how it was derived, worst index, both values) and a one-line replay command."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ...reference.case import Case
from ..comparison.records import FAILING, Record, replay_command
from .output import Output

__all__ = [
    "assert_agree", "describe_failure", "failure_dir"
]


def failure_dir() -> Path:
    return Path(os.environ.get("BO_FAILURES", ".bo-failures"))


def _save_for_replay(case: Case, records: list[Record]) -> Path:
    from .engine import DEVICES, RunConfig

    def used(field: str, known: Iterable[str], default: str) -> tuple[str, ...]:
        return tuple(sorted({getattr(r, field) for r in records} & set(known))) or (default,)

    output = Output(failure_dir(), fresh=False)
    output.save_case(case)
    config = RunConfig(oracles=used("oracle", ("fd", "torch", "jax"), "fd"),
                       modes=used("mode", ("reverse", "forward"), "reverse"),
                       devices=used("device", DEVICES, "cpu"), dtypes=(case.dtype,))
    output.describe(config.to_json())
    output.close()
    return output.directory


def describe_failure(case: Case, records: list[Record], directory: Path | None) -> str:
    lines = [f"case {case.case_id}: {case.describe()}"]
    for r in records:
        if r.verdict not in FAILING:
            continue
        lines.append(
            f"  {r.oracle}/{r.mode} {r.device} {r.dtype} {r.quantity} {r.name}: {r.verdict} — "
            f"max abs err {r.max_abs_err} at {r.worst_index} (reference {r.expected_value}, "
            f"oracle {r.actual_value}), {r.n_beyond}/{r.n_total} beyond tolerance "
            f"{r.tolerance} = {r.tolerance_model}; detail {r.detail}")
    first = next((r.first_divergent_layer for r in records if r.first_divergent_layer), None)
    if first:
        lines.append(f"  divergence enters at layer {first}")
    if directory is not None:
        lines.append(f"  replay: {replay_command(case.case_id, directory)}")
    return "\n".join(lines)


def assert_agree(case: Case, records: Iterable[Record], *, allow_kinks: bool = True) -> None:
    """Fail unless every record agrees (``kink`` allowed unless ``allow_kinks`` is false)."""
    rows = list(records)
    bad = FAILING if allow_kinks else FAILING + ("kink",)
    if any(r.verdict in bad for r in rows):
        directory = _save_for_replay(case, rows)
        raise AssertionError("records disagree:\n" + describe_failure(case, rows, directory))

