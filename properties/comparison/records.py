"""``Record``: one comparison of one tensor (or one event: a skipped combination, an oracle
that raised), serialised as one JSON object per line of ``records.jsonl`` (docs/design.md
"Contracts"). This module is the one place that defines a record: its fields, the verdicts
and their severity, the constructors of the records that are not tensor comparisons, the JSON
conversion, and reading and writing ``records.jsonl``.

JSON: NumPy scalars and arrays become plain JSON; ``nan`` / ``inf`` become the strings
``"nan"``, ``"inf"``, ``"-inf"`` (``number`` reads them back). Writing appends and flushes per
batch, so an interrupted run leaves valid records for every finished case; reading skips a
last line cut short by an interruption.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import shlex
import traceback
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "bad_return_record", "case_verdict", "delta_layer", "dumps", "error_record", "FAILING",
    "index_key", "input_layer", "loads", "message", "most_severe", "number", "PACKAGES",
    "QUANTITIES", "rank", "read_records", "Record", "RecordWriter", "replay_command", "SEVERITY",
    "skip_record",
    "to_jsonable", "unsupported_record", "VERDICTS", "versions"
]

VERDICTS = ("agree", "diverge", "kink", "nan", "oracle_error", "unsupported")
# Most severe first: a case's verdict is the first of these among its records.
SEVERITY = ("diverge", "nan", "oracle_error", "kink", "unsupported", "agree")
# Verdicts that make a report not ok and a command exit 1.
FAILING = ("diverge", "nan", "oracle_error")
QUANTITIES = ("loss", "grad", "delta", "input", "update", "run", "skip")
PACKAGES = ("backprop-oracle", "numpy", "torch", "jax", "jaxlib", "hypothesis")


@dataclass
class Record:
    """One tensor of one case compared between an oracle (``actual``) and the expected side,
    or one event (``quantity`` ``run``: the oracle raised or cannot run the case; ``skip``: an
    oracle/device combination that could not run at all, ``detail["reason"]`` says why).

    ``norm_err = ||actual - expected||_2`` and ``norm_tol = ||tol||_2`` over the tensor's
    finite elements (if every ``|err_i| <= tol_i`` then ``norm_err <= norm_tol``). A
    ``diverge`` record's ``divergence`` says what kind: ``wrong`` (normwise beyond tolerance
    too) or ``tail-accuracy`` (only elementwise: small elements relatively inaccurate while the
    tensor as a whole is within tolerance; the error model assumes elementary functions that are
    relatively accurate, so this is still a defect)."""

    case_id: str
    family: str
    oracle: str
    mode: str
    device: str
    dtype: str
    quantity: str
    name: str
    shape: tuple[int, ...] = ()
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    err_ulps: float = 0.0
    worst_index: tuple[int, ...] = ()
    n_beyond: int = 0
    n_total: int = 0
    tolerance: float = 0.0
    tolerance_model: str = ""
    margin: float = 0.0
    verdict: str = "agree"
    first_divergent_layer: int | None = None
    expected_value: float | None = None
    actual_value: float | None = None
    norm_err: float = 0.0
    norm_tol: float = 0.0
    divergence: str = ""
    precision: str = "-"
    arch: str = ""
    step: int | None = None
    seconds: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    replay: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, "
                             f"got {self.quantity!r}")

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (no deep copy of the record)."""
        return to_jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    def to_json(self) -> str:
        """One line of JSON (no newline inside)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("max_abs_err", "max_rel_err", "err_ulps", "tolerance", "margin",
                    "expected_value", "actual_value", "norm_err", "norm_tol"):
            if isinstance(values.get(key), str):
                values[key] = float(values[key])
        values["shape"] = tuple(values.get("shape") or ())
        values["worst_index"] = tuple(values.get("worst_index") or ())
        if isinstance(values.get("detail"), str):  # records.jsonl written before 0.2
            values["detail"] = {"reason": values["detail"]}
        return cls(**values)

    @classmethod
    def from_json(cls, line: str) -> Record:
        return cls.from_dict(json.loads(line))


def index_key(index: Iterable[int]) -> str:
    """An element's index as a JSON key (``detail["values"]``): ``"2,0"``; ``""`` for a
    scalar such as the loss."""
    return ",".join(str(int(i)) for i in index)


def message(record: Record) -> str:
    """What the record's ``detail`` says in words (an error's message, a skip's reason; for a
    divergence the kink rule it broke and where it enters)."""
    words = [str(record.detail.get(k)) for k in ("message", "reason", "kink_rule", "enters")
             if record.detail.get(k)]
    return "; ".join(words)


def most_severe(verdicts: Iterable[str]) -> str:
    """The first of ``SEVERITY`` among ``verdicts`` (``agree`` for none)."""
    found = set(verdicts)
    return next((v for v in SEVERITY if v in found), "agree")


def case_verdict(records: Iterable[Record]) -> str:
    """The most severe verdict among ``records`` (``agree`` for none)."""
    return most_severe(r.verdict for r in records)


def rank(verdict: str) -> int:
    """Position of ``verdict`` in ``SEVERITY`` (0 the most severe)."""
    return SEVERITY.index(verdict) if verdict in SEVERITY else len(SEVERITY)


# ---------------------------------------------------------------- where a record came from

def versions() -> dict[str, str]:
    """Python and the installed versions of the packages a verdict depends on."""
    return dict(_installed())


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return tuple(found.items())


def replay_command(case_id: str, directory: str | Path = "DIR") -> str:
    """The command line that re-runs one recorded case (shell-quoted)."""
    return f"backprop-oracle replay {case_id} --from {shlex.quote(str(directory))}"


def delta_layer(name: str) -> int | None:
    """``l`` of a tensor named ``delta<l>``, else ``None``."""
    return int(name[5:]) if name.startswith("delta") and name[5:].isdigit() else None


def input_layer(name: str) -> int | None:
    """``l`` of an input gradient named ``da<l>`` (``dC/da^l``), else ``None``."""
    return int(name[2:]) if name.startswith("da") and name[2:].isdigit() else None


# ---------------------------------------------------------------- records that are events

def error_record(where: dict[str, Any], exc: BaseException) -> Record:
    """The oracle raised: ``oracle_error`` with the message and traceback
    (``unsupported`` for ``NotImplementedError``). ``where``: the identifying fields."""
    verdict = "unsupported" if isinstance(exc, NotImplementedError) else "oracle_error"
    return Record(**where, quantity="run", name="-", verdict=verdict, detail={
        "type": type(exc).__name__, "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))})


def unsupported_record(where: dict[str, Any], reason: str) -> Record:
    """The oracle cannot run this case on this device (a reason, not a crash)."""
    return Record(**where, quantity="run", name="-", verdict="unsupported",
                  detail={"reason": reason})


def bad_return_record(where: dict[str, Any], tensor: str, text: str,
                      layer: int | None) -> Record:
    """An implementation returned ``tensor`` missing or malformed (``"-"``: the return as a
    whole): ``oracle_error`` at that tensor's layer."""
    return Record(**where, quantity="run", name=tensor, verdict="oracle_error",
                  first_divergent_layer=layer, detail={"type": "BadReturn", "message": text})


def skip_record(family: str, oracle: str, mode: str, precision: str, device: str, dtype: str,
                reason: str) -> Record:
    """An oracle/device combination that cannot run at all, for one family and dtype."""
    return Record(case_id="-", family=family, oracle=oracle, mode=mode, device=device,
                  dtype=dtype, quantity="skip", name="-", verdict="unsupported",
                  precision=precision, detail={"reason": reason})


# ---------------------------------------------------------------- JSON and records.jsonl

def to_jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars and arrays become Python numbers and lists; non-finite
    floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def number(value: Any) -> float:
    """A record's numeric field back as a float (``"nan"``/``"inf"`` strings included)."""
    if value is None:
        return math.nan
    return float(value)


def dumps(records: Iterable[Record]) -> str:
    """JSON lines, one record a line."""
    return "".join(r.to_json() + "\n" for r in records)


def loads(text: str) -> list[Record]:
    return [Record.from_json(line) for line in text.splitlines() if line.strip()]


class RecordWriter:
    """Appends records to ``path`` one line at a time, flushing each batch to disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.count = 0

    def write(self, records: Iterable[Record]) -> None:
        text = dumps(records)
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.count += text.count("\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path, case_ids: Container[str] | None = None
                 ) -> Iterator[dict[str, Any]]:
    """The records of ``path`` as JSON objects, one at a time (memory does not grow with the
    file); a final line cut short by an interruption is skipped. ``case_ids``: only the
    records of these cases are wanted; a line that cannot hold one is skipped without being
    parsed (the caller still checks ``case_id`` of what it gets)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # truncated by an interrupted write
            if line.strip() and (case_ids is None or _may_hold(line, case_ids)):
                yield json.loads(line)


_CASE_KEY = re.compile(r'"case_id":\s*')
_CASE_VALUE = re.compile(r'"case_id":\s*"([^"\\]*)"')


def _may_hold(line: str, case_ids: Container[str]) -> bool:
    """Whether a JSON line may be the record of one of ``case_ids``. Inside a JSON string
    every quote is escaped, so ``"case_id":`` followed by a quote only matches a key; a value
    the pattern cannot read (escapes, not a string) means: parse the line to be sure."""
    values = _CASE_VALUE.findall(line)
    if len(values) < len(_CASE_KEY.findall(line)):
        return True
    return any(v in case_ids for v in values)
