"""``assert_agree``: the assertion of the property suite, usable in anyone's ``@given`` test.

On failure it saves the case (``BO_FAILURES``, default ``.bo-failures/``) with a ``run.json``
naming the oracle, and raises an ``AssertionError`` that shows the case, every failing record
(tensor, verdict, error, tolerance and how it was derived, worst index, both values) and a
one-line replay command."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable

from ...reference.case import Case
from ..cases.case_io import save_case

FAILING = ("diverge", "nan", "oracle_error")


def _as_dict(record: object) -> dict:
    return dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)


def failure_dir() -> Path:
    return Path(os.environ.get("BO_FAILURES", ".bo-failures"))


def _save_for_replay(case: Case, records: list[dict]) -> Path:
    from .engine import RunConfig

    directory = failure_dir()
    save_case(case, directory / "cases")
    oracles = sorted({r.get("oracle") for r in records} & {"fd", "torch", "jax"}) or ["fd"]
    modes = sorted({r.get("mode") for r in records} & {"reverse", "forward"}) or ["reverse"]
    devices = sorted({r.get("device") for r in records} & {"cpu", "cuda", "gpu"}) or ["cpu"]
    config = RunConfig(oracles=tuple(oracles), modes=tuple(modes), devices=tuple(devices),
                       dtypes=(case.dtype,))
    (directory / "run.json").write_text(json.dumps(config.to_json(), indent=1))
    return directory


def describe_failure(case: Case, records: list[dict], directory: Path | None) -> str:
    lines = [f"case {case.case_id}: {case.describe()}"]
    for r in records:
        if r.get("verdict") not in FAILING:
            continue
        lines.append(
            f"  {r.get('oracle')}/{r.get('mode')} {r.get('device')} {r.get('dtype')} "
            f"{r.get('quantity')} {r.get('name')}: {r.get('verdict')} — max abs err "
            f"{r.get('max_abs_err')} at {r.get('worst_index')} (reference "
            f"{r.get('expected_value')}, oracle {r.get('actual_value')}), "
            f"{r.get('n_beyond')}/{r.get('n_total')} beyond tolerance {r.get('tolerance')} "
            f"= {r.get('tolerance_model')}; detail {r.get('detail')}")
    first = next((r.get("first_divergent_layer") for r in records
                  if r.get("first_divergent_layer")), None)
    if first:
        lines.append(f"  divergence enters at layer {first}")
    if directory is not None:
        lines.append(f"  replay: backprop-oracle replay {case.case_id} --from {directory}")
    return "\n".join(lines)


def assert_agree(case: Case, records: Iterable[object], *, allow_kinks: bool = True) -> None:
    """Fail unless every record agrees (``kink`` allowed unless ``allow_kinks`` is false)."""
    rows = [_as_dict(r) for r in records]
    bad = FAILING if allow_kinks else FAILING + ("kink",)
    if any(r.get("verdict") in bad for r in rows):
        directory = _save_for_replay(case, rows)
        raise AssertionError("records disagree:\n" + describe_failure(case, rows, directory))
