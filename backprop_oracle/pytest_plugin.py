"""pytest plugin: ``pytest --bo-report DIR`` (or ``bo_report = DIR`` in the ini file) writes
the records of the property suite to ``DIR/records.jsonl`` as tests run, saves their cases
under ``DIR/cases`` for ``backprop-oracle replay``, and renders ``report.html``,
``summary.md`` and ``summary.json`` at the end of the session, so CI gets the HTML report as
an artifact of its normal test run.

Tests use the ``bo_record`` fixture: ``bo_record(case, records)``. Without a report
directory the fixture only counts the records (nothing is written).

Under pytest-xdist (``-n``) the report is still one: the controller starts ``DIR`` (a fresh
``records.jsonl``, ``run.json``, ``environment.json``); each worker appends its records to
its own ``DIR/.parts/<worker>.jsonl`` (no two processes write one file) and saves its cases
into ``DIR/cases``; at the end of the session, when every worker has finished, the
controller appends the parts to ``records.jsonl`` (whole lines only: a worker that crashed
mid-write loses its last line, not the file), removes them, and builds the summary and report
once. Without workers the one process writes ``records.jsonl`` itself and builds the report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .properties.comparison.records import Record, RecordWriter
    from .reference.case import Case

_KEY = pytest.StashKey["_Reporter"]()
PARTS = ".parts"  # DIR/.parts/<worker>.jsonl: one records file per xdist worker


class _Reporter:
    """The session's report in this process. ``worker``: the xdist worker id (``gw0``, ...),
    which writes only its part; ``None``: the controller, or the only process."""

    def __init__(self, out_dir: Path | None, worker: str | None = None) -> None:
        from .properties.comparison.records import RecordWriter

        self.out_dir, self.worker = out_dir, worker
        self.writer: RecordWriter | None = None
        self.count = 0
        if out_dir is None:
            return
        if worker is None:
            self._start(out_dir)
            self.writer = RecordWriter(out_dir / "records.jsonl")
        else:
            self.writer = RecordWriter(out_dir / PARTS / f"{worker}.jsonl")

    @staticmethod
    def _start(out_dir: Path) -> None:
        """A fresh output folder: no records or worker parts of an earlier session."""
        from .properties.campaign.engine import RunConfig, environment
        from .properties.campaign.output import Output

        shutil.rmtree(out_dir / PARTS, ignore_errors=True)
        output = Output(out_dir)
        env = environment(RunConfig(), [])
        env["command"] = "pytest (property suite)"
        output.describe(RunConfig().to_json(), env)
        output.close()

    def record(self, case: Case, records: Iterable[Record]) -> None:
        from .properties.cases.case_io import save_case

        records = list(records)
        self.count += len(records)
        if self.writer is not None and self.out_dir is not None:
            save_case(case, self.out_dir / "cases")
            self.writer.write(records)

    def finish(self) -> None:
        """A worker closes its part; the controller merges the parts and builds the report."""
        if self.writer is None or self.out_dir is None:
            return
        self.writer.close()
        if self.worker is None:
            from .properties.campaign.output import finish

            self.count += merge_parts(self.out_dir)
            finish(self.out_dir)


def merge_parts(out_dir: Path) -> int:
    """Append the workers' parts to ``out_dir/records.jsonl`` (complete lines only, in
    worker order) and remove them; returns how many records they held."""
    parts = out_dir / PARTS
    count = 0
    with open(out_dir / "records.jsonl", "a", encoding="utf-8") as merged:
        for part in sorted(parts.glob("*.jsonl")) if parts.is_dir() else ():
            with open(part, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        merged.write(line)
                        count += 1
    shutil.rmtree(parts, ignore_errors=True)
    return count


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backprop-oracle")
    group.addoption("--bo-report", metavar="DIR", default=None,
                    help="write the property suite's records and HTML report into DIR")
    parser.addini("bo_report", "directory for the property suite's records and report",
                  default="")


def pytest_configure(config: pytest.Config) -> None:
    """``--bo-report DIR`` is checked before any test runs: a file, a path under a file or an
    unwritable directory is a one-line ``pytest.UsageError``, not a traceback."""
    from .cli import UsageError, writable_dir

    option = config.getoption("--bo-report")
    target = option or config.getini("bo_report") or None
    if target:
        try:
            writable_dir(target, "--bo-report" if option else "bo_report (ini)")
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    worker = getattr(config, "workerinput", {}).get("workerid")  # set by pytest-xdist
    config.stash[_KEY] = _Reporter(Path(target) if target else None, worker)


def pytest_sessionfinish(session: pytest.Session) -> None:
    reporter = session.config.stash.get(_KEY, None)
    if reporter is not None:
        reporter.finish()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    reporter = config.stash.get(_KEY, None)
    if reporter is not None and reporter.out_dir is not None and reporter.worker is None:
        terminalreporter.write_line(
            f"backprop-oracle: {reporter.count} records -> {reporter.out_dir / 'report.html'}")


@pytest.fixture(scope="session")  # session-wide, so hypothesis tests may use it
def bo_record(request: pytest.FixtureRequest) -> Callable[[Case, Iterable[Record]], None]:
    """``bo_record(case, records)``: add a case's comparison records to the session report."""
    reporter: _Reporter = request.config.stash[_KEY]
    return reporter.record
