"""``Record``: one comparison of one tensor, serialised as one JSON object per line
(DESIGN.md "Contracts"). NumPy scalars and arrays become plain JSON; ``nan`` / ``inf`` become
the strings ``"nan"``, ``"inf"``, ``"-inf"`` and are read back as floats."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable

import numpy as np

VERDICTS = ("agree", "diverge", "kink", "nan", "oracle_error", "unsupported")
QUANTITIES = ("loss", "grad", "delta", "update", "run")
_FLOATS = ("max_abs_err", "max_rel_err", "err_ulps", "tolerance", "margin",
           "expected_value", "actual_value")


@dataclass
class Record:
    """One tensor of one case compared between an oracle (``actual``) and the expected side."""

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
    versions: dict[str, str] = field(default_factory=dict)
    replay: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    def to_json(self) -> str:
        """One line of JSON (no newline inside)."""
        return json.dumps(_plain(asdict(self)), sort_keys=False, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> "Record":
        data = json.loads(line)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in _FLOATS:
            if isinstance(data.get(key), str):
                data[key] = float(data[key])
        data["shape"] = tuple(data.get("shape", ()))
        data["worst_index"] = tuple(data.get("worst_index", ()))
        return cls(**data)


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy -> Python, non-finite floats -> strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else ("nan" if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    return value


def dumps(records: Iterable[Record]) -> str:
    """JSON lines, one record a line."""
    return "".join(r.to_json() + "\n" for r in records)


def loads(text: str) -> list[Record]:
    return [Record.from_json(line) for line in text.splitlines() if line.strip()]
