"""A real browser opens a report from a run that contains a planted divergence: the matrix,
the divergence row and its drill-down are visible, a name containing ``<script>`` renders as
text, and a screenshot is saved (``BO_SCREENSHOT_DIR`` or pytest's tmp dir) for a person to
look at. Needs Debian's chromium (installed by ``.ci/run``) and Playwright for Python."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle
from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.campaign.output import finish
from backprop_oracle.properties.comparison.records import RecordWriter

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


def test_report_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("BO_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(report.as_uri())
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
        browser.close()
    assert (shots / "report.png").stat().st_size > 10_000
