"""The output folder of a run, a check, the pytest suite or a saved failure: the one place
that writes one.

    DIR/run.json          what ran (``RunConfig``), so that ``replay`` can run a case again
    DIR/environment.json  versions, platform, command, precision switches
    DIR/conventions.json  what each framework does at kinks (when measured)
    DIR/cases/            every case, JSON + .npz (``cases.case_io``)
    DIR/records.jsonl     the records, appended and flushed as cases finish
    DIR/summary.json, summary.md, report.html   built by ``finish`` from the records so far

Nothing already written is lost on interruption: ``finish`` builds the summary and report
from whatever records exist.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...reference.case import Case
from ..cases.case_io import save_case
from ..comparison.records import Record, RecordWriter, to_jsonable, versions

__all__ = [
    "environment_of", "finish", "Output", "write_atomically"
]


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a
    reader, or another process writing the same file (the workers of ``pytest -n`` saving
    failures into one folder), sees the old file or the new one, never a part of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def environment_of(**extra: str) -> dict[str, str]:
    """Library versions, the platform and the command line, and ``extra``."""
    env = versions()
    env["platform"] = platform.platform()
    env["command"] = " ".join(sys.argv)
    env.update(extra)
    return env


class Output:
    """One output folder. ``fresh``: start ``records.jsonl`` anew (a run, a check); otherwise
    append to it (saved failures of a test session)."""

    def __init__(self, directory: Path | str, fresh: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            (self.directory / "records.jsonl").unlink(missing_ok=True)
        self.writer = RecordWriter(self.directory / "records.jsonl")

    def describe(self, config: dict[str, Any] | None = None,
                 environment: dict[str, str] | None = None,
                 conventions: list[dict[str, Any]] | None = None) -> None:
        """Write ``run.json``, ``environment.json`` and ``conventions.json`` (those given)."""
        for name, value in (("run", config), ("environment", environment),
                            ("conventions", conventions)):
            if value is not None:
                write_atomically(self.directory / f"{name}.json",
                                 json.dumps(to_jsonable(value), indent=1))

    def save_case(self, case: Case) -> None:
        save_case(case, self.directory / "cases")

    def write(self, records: Iterable[Record]) -> None:
        self.writer.write(records)

    def close(self) -> None:
        self.writer.close()

    def finish(self, interrupted: bool = False) -> Any:
        """Close the records and build the summary and report; returns the ``Summary``."""
        self.close()
        return finish(self.directory, interrupted)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def finish(directory: Path, interrupted: bool = False) -> Any:
    """Build ``summary.json``, ``summary.md`` and ``report.html`` in ``directory`` from its
    records so far."""
    from ...reports import html

    directory = Path(directory)
    records = directory / "records.jsonl"
    records.touch()
    env = _read_json(directory / "environment.json", {})
    if interrupted:
        env["status"] = "interrupted: the report covers the cases finished before the stop"
    summary = html.build(records, directory, environment=env,
                         conventions=_read_json(directory / "conventions.json", []),
                         interrupted=interrupted)
    data = summary.to_json()
    write_atomically(directory / "summary.json", json.dumps(to_jsonable(data), indent=1))
    return summary
