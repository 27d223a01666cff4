"""pytest plugin: ``pytest --bo-report DIR`` (or ``bo_report = DIR`` in the ini file) writes
the records of the property suite to ``DIR/records.jsonl`` as tests run, saves their cases
under ``DIR/cases`` for ``backprop-oracle replay``, and renders ``report.html``,
``summary.md`` and ``summary.json`` at the end of the session, so CI gets the HTML report as
an artifact of its normal test run.

Tests use the ``bo_record`` fixture: ``bo_record(case, records)``. Without a report
directory the fixture only keeps the records in memory (nothing is written).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .properties.comparison.records import Record
    from .reference.case import Case

_KEY = pytest.StashKey["_Reporter"]()


class _Reporter:
    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.output = None
        self.count = 0
        if out_dir is not None:
            from .properties.campaign.engine import RunConfig, environment
            from .properties.campaign.output import Output

            self.output = Output(out_dir)
            env = environment(RunConfig(), [])
            env["command"] = "pytest (property suite)"
            self.output.describe(RunConfig().to_json(), env)

    def record(self, case: Case, records: Iterable[Record]) -> None:
        records = list(records)
        self.count += len(records)
        if self.output is not None:
            self.output.save_case(case)
            self.output.write(records)

    def finish(self) -> None:
        if self.output is not None:
            self.output.finish()


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
    config.stash[_KEY] = _Reporter(Path(target) if target else None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    reporter = session.config.stash.get(_KEY, None)
    if reporter is not None:
        reporter.finish()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    reporter = config.stash.get(_KEY, None)
    if reporter is not None and reporter.out_dir is not None:
        terminalreporter.write_line(
            f"backprop-oracle: {reporter.count} records -> {reporter.out_dir / 'report.html'}")


@pytest.fixture(scope="session")  # session-wide, so hypothesis tests may use it
def bo_record(request: pytest.FixtureRequest) -> Callable[[Case, Iterable[Record]], None]:
    """``bo_record(case, records)``: add a case's comparison records to the session report."""
    reporter: _Reporter = request.config.stash[_KEY]
    return reporter.record
