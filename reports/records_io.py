"""Reading and writing ``records.jsonl``: one JSON object per line, appended and flushed as
comparisons finish, so that an interrupted run leaves valid records for every finished case.
Reading skips a truncated last line (a run killed mid-write) instead of failing."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


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


class RecordWriter:
    """Appends records to ``path`` one line at a time, flushing each batch to disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.count = 0

    def write(self, records: Iterable[dict]) -> None:
        lines = [json.dumps(to_jsonable(r), sort_keys=True) + "\n" for r in records]
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.count += len(lines)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[dict]:
    """Records from ``path``; a final line cut short by an interruption is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # truncated by an interrupted write
            if line.strip():
                yield json.loads(line)
