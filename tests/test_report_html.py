"""The HTML report as a person sees it: opened in a real browser (Debian's chromium, driven by
Playwright), read, sorted, filtered and expanded, with no request leaving the page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from tests.reportdata import fleet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("the HTML report is tested in Debian's chromium (bash .ci/run installs it)", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

# As root and on a closed network: no sandbox, and none of the browser's own background requests.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-features=Translate,OptimizationHints",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[tuple[Page, list[str], Path]]:
    logs = fleet(tmp_path / "logs")
    out = tmp_path / "report.html"
    assert main(["report", str(logs), "--out", str(out)]) == 0
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    tab = context.new_page()
    requests: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(out.as_uri())
    try:
        yield tab, requests, out
    finally:
        context.close()


def _rows(tab: Page) -> list[list[str]]:
    return tab.eval_on_selector_all(
        "#events tbody tr:not([hidden])",
        "rows => rows.map(r => Array.from(r.cells).slice(0, 8).map(c => c.innerText.trim()))",
    )


def test_the_page_shows_the_events_chart_and_sentences(page: tuple[Page, list[str], Path], tmp_path: Path) -> None:
    tab, requests, out = page
    tab.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert tab.title().startswith("Monitoring record: 2020-12-01")
    rows = _rows(tab)
    assert len(rows) == 4
    assert ["twitter.com", "AS21299 Kar-Tel"] in [row[:2] for row in rows]
    assert tab.locator("#events").get_by_text("TLS interception").first.is_visible()
    cells = tab.locator("#timeline rect.cell")
    assert cells.count() > 0 and tab.locator('#timeline rect[data-finding="tls_mitm"]').count() >= 2
    assert tab.locator("#timeline").bounding_box()["height"] > 50  # drawn, not an empty box
    assert tab.get_by_text("TLS connections to 2 sites were intercepted").is_visible()
    assert tab.locator('ul[lang="ru"]').get_by_text("перехватывались").first.is_visible()
    assert tab.locator("#local-interception").get_by_text("ESET SSL Filter").is_visible()
    assert "ESET" not in tab.locator("#events").inner_text()
    # Nothing left the page: only the file itself was requested.
    assert requests == [out.as_uri()]


def test_sorting_filtering_and_the_evidence_panel(page: tuple[Page, list[str], Path]) -> None:
    tab, requests, out = page
    tab.get_by_role("button", name="Measurements").click()
    ascending = [int(row[6]) for row in _rows(tab)]
    assert ascending == sorted(ascending) and ascending[0] == 2
    tab.get_by_role("button", name="Measurements").click()
    descending = [int(row[6]) for row in _rows(tab)]
    assert descending == sorted(descending, reverse=True)
    assert tab.locator('th[aria-sort="descending"]').inner_text().startswith("Measurements")

    first = tab.locator("#events tbody tr:not([hidden])").first
    evidence = first.locator("details ul")
    assert not evidence.is_visible()
    first.locator("summary").click()
    assert evidence.is_visible()
    assert "issuer: CN=Information Security Certification Authority CA" in evidence.inner_text()

    tab.fill("#filter-text", "kar-tel")
    assert [row[:2] for row in _rows(tab)] == [["twitter.com", "AS21299 Kar-Tel"]]
    assert tab.locator("#shown-count").inner_text() == "1"
    tab.fill("#filter-text", "")
    tab.select_option("#filter-kind", "dns")
    assert [row[0] for row in _rows(tab)] == ["dns.example"]
    assert requests == [out.as_uri()]
