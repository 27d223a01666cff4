"""A real browser opens a report from a run that contains a planted divergence: the matrix,
the divergence row and its drill-down are visible, a name containing ``<script>`` renders as
text, and a screenshot is saved (``BO_SCREENSHOT_DIR`` or pytest's tmp dir) for a person to
look at. Needs Debian's chromium (installed by ``.ci/run``) and Playwright for Python."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle
from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.campaign.output import finish
from backprop_oracle.properties.comparison.records import RecordWriter

np = pytest.importorskip("numpy")

CHROMIUM = "/usr/bin/chromium"
EVIL = "<script>window.__pwned = 1</script>impl"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


class ScaledLayer2(Oracle):
    """A wrong implementation: the reference with layer 2's bias gradient scaled by 1.01."""

    name, mode = EVIL, "reverse"

    def run(self, case: bo.Case, device: str = "cpu", dtype: str | None = None) -> bo.Result:
        result = bo.backprop(case)
        result.grads = dict(result.grads, b2=result.grads["b2"] * 1.01)
        return result


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backprop_oracle.oracles.finite_differences import FiniteDifferences

    out = tmp_path_factory.mktemp("run")
    cases = bo.cases("mlp", 4, seed=5, max_layers=3, max_width=6, dtypes=["float64"],
                     activations=["tanh", "sigmoid"])
    cases = [c for c in cases if "b2" in c.params]
    runnable = [(FiniteDifferences(), "cpu"), (ScaledLayer2(), "cpu")]
    with RecordWriter(out / "records.jsonl") as writer:
        for case in cases:
            writer.write(campaign.run_case(case, runnable, out))
    summary = finish(out)
    assert summary.exit_code == 1
    return out / "report.html"


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (flags for this closed network)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def _opened(report: Path, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """The report open in a real browser page, and the folder its screenshots go to."""
    shots = Path(os.environ.get("BO_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(report.as_uri())
        yield page, shots


def test_report_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    with _opened(report, tmp_path) as (page, shots):
        assert page.locator("#verdict").inner_text().startswith("FAIL")
        assert page.locator("#agreement-matrix").is_visible()
        assert page.locator("#agreement-matrix td.bad").count() >= 1
        row = page.locator("tr.worst-row").first
        assert row.is_visible() and "diverge" in row.inner_text()
        row.locator("a").first.click()
        drill = page.locator("#drill-0")
        assert drill.is_visible()
        assert "b2" in drill.inner_text() and "replay" in drill.inner_text()
        assert EVIL in page.locator("body").inner_text()  # shown as text ...
        assert page.evaluate("window.__pwned") is None  # ... never executed
        page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert (shots / "report.png").stat().st_size > 10_000


class Nudged(Oracle):
    """A correct implementation up to ``ulps`` units in the last place at the last element of
    every gradient: it agrees, and its worst element is the same for every ``Nudged``."""

    mode = "reverse"

    def __init__(self, name: str, ulps: int) -> None:
        self.name, self.ulps = name, ulps

    def run(self, case: bo.Case, device: str = "cpu", dtype: str | None = None) -> bo.Result:
        result = bo.backprop(case)
        grads = {}
        for key, g in result.grads.items():
            g = np.array(g, copy=True)
            i = g.size - 1
            for _ in range(self.ulps):
                g.flat[i] = np.nextafter(g.flat[i], np.inf)
            grads[key] = g
        result.grads = grads
        return result


class NoGPU(Oracle):
    """An implementation that cannot run here: one ``unsupported`` record with its reason."""

    name, mode = "gpu-only", "reverse"

    def available(self, device: str = "cpu") -> str | None:
        return "gpu-only needs a CUDA kernel that this machine lacks"

    def run(self, case: bo.Case, device: str = "cpu", dtype: str | None = None) -> bo.Result:
        raise AssertionError("never run")


@pytest.fixture(scope="module")
def agreeing_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backprop_oracle.oracles.finite_differences import FiniteDifferences

    out = tmp_path_factory.mktemp("agree")
    case = bo.cases("mlp", 1, seed=1, max_layers=2, max_width=4, dtypes=["float64"],
                    activations=["tanh"])[0]
    assert all(np.all(g != 0) for g in bo.backprop(case).grads.values())  # nudges are seen
    runnable = [(FiniteDifferences(), "cpu"), (Nudged("nudged-a", 2), "cpu"),
                (Nudged("nudged-b", 1), "cpu"), (NoGPU(), "cpu")]
    with RecordWriter(out / "records.jsonl") as writer:
        writer.write(campaign.run_case(case, runnable, out))
    summary = finish(out)
    assert summary.exit_code == 0 and summary.verdicts["unsupported"] == 1
    return out / "report.html"


def test_all_agree_report_in_a_real_browser(agreeing_report: Path, tmp_path: Path) -> None:
    """Closest calls with drill-downs, every oracle's value at the same element, and a plain
    panel with the reason for the unsupported oracle (no agreement bar)."""
    with _opened(agreeing_report, tmp_path) as (page, shots):
        assert page.locator("#verdict").inner_text().startswith("PASS")
        closest = page.locator("#closest-calls")
        assert closest.is_visible() and "Closest calls" in closest.inner_text()
        assert "Nothing but agreement" not in page.locator("body").inner_text()
        rows = page.locator("tr.worst-row")
        assert rows.count() == 3  # fd, nudged-a, nudged-b; never the unsupported one
        assert "gpu-only" not in page.locator("#worst-table").inner_text()
        rows.first.locator("a").first.click()
        assert page.locator("#drill-0").is_visible()
        assert page.locator("#drill-0 svg").count() == 1
        # the nudged oracles' drill-down: every oracle's value at the same element
        nudged = page.locator("section.drill", has_text="nudged-a/reverse on cpu").first
        table = nudged.locator("table.same-element")
        assert table.is_visible()
        header = table.locator("tr").first.inner_text()
        index = header.split("value at ")[1].split()[0]
        assert index.startswith("(")
        same = table.locator("tr.same")
        assert same.count() == 3 and "not recorded" not in table.inner_text()
        assert {"nudged-a", "nudged-b", "fd"} == {
            same.nth(i).inner_text().split("/")[0].strip() for i in range(3)}
        values = {same.nth(i).inner_text().split("/")[0].strip():
                  float(same.nth(i).locator("td.at-index").inner_text()) for i in range(3)}
        reference = float(nudged.inner_text().split("reference there: ")[1].split()[0])
        # Nudged(k) moves that element k ULPs up: there the nudged values differ by one ULP
        assert values["fd"] == pytest.approx(reference, rel=1e-6)
        assert values["nudged-b"] == np.nextafter(reference, np.inf)
        assert values["nudged-a"] == np.nextafter(values["nudged-b"], np.inf)
        fd = table.locator("tr", has_text="fd/").first
        own = fd.locator("td").nth(4).inner_text()  # its own worst element, or "the same"
        assert own == "the same element" or own.startswith("(")
        panel = page.locator("section.plain", has_text="gpu-only")
        assert panel.count() == 1 and panel.is_visible()
        assert "needs a CUDA kernel" in panel.inner_text()
        assert panel.locator("svg").count() == 0 and "tolerance" not in panel.inner_text()
        page.screenshot(path=str(shots / "report-all-agree.png"), full_page=True)
        nudged.scroll_into_view_if_needed()
        nudged.screenshot(path=str(shots / "report-same-element.png"))
        page.locator("#not-compared").scroll_into_view_if_needed()
    assert (shots / "report-all-agree.png").stat().st_size > 10_000


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
