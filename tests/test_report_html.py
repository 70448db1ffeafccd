"""The HTML report as a person sees it: opened in a real browser (Debian's chromium, driven by
Playwright), read, sorted, filtered and expanded, with no request leaving the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from tests.reportdata import episode_fleet, fleet

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


SCREENSHOTS = os.environ.get("REPORT_SCREENSHOTS")  # a folder: one full-page screenshot per language


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[tuple[Page, list[str], Path]]:
    logs = fleet(tmp_path / "logs")
    out = tmp_path / "report.html"
    assert main(["report", str(logs), "--out", str(out), "--month", "2020-12"]) == 0
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
        "#events tbody tr.episode:not([hidden])",
        "rows => rows.map(r => Array.from(r.cells).slice(0, 8).map(c => c.innerText.trim()))",
    )


def test_the_page_shows_the_events_chart_and_sentences(page: tuple[Page, list[str], Path], tmp_path: Path) -> None:
    tab, requests, out = page
    tab.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert tab.title().startswith("Monitoring record: 2020-12-01")
    assert "days are in Asia/Almaty time" in tab.locator("#period").inner_text()
    rows = _rows(tab)
    assert len(rows) == 3  # episodes: one row names both sites intercepted on AS9198
    assert ["AS21299 (Kar-Tel)", "twitter.com"] in [[row[0], row[3]] for row in rows]
    assert ["AS9198 (Kazakhtelecom)", "twitter.com, www.facebook.com"] in [[row[0], row[3]] for row in rows]
    assert tab.locator("#events").get_by_text("TLS interception").first.is_visible()
    cells = tab.locator("#timeline rect.cell")
    assert cells.count() > 0 and tab.locator('#timeline rect[data-finding="tls_mitm"]').count() >= 2
    assert tab.locator("#timeline").bounding_box()["height"] > 50  # drawn, not an empty box
    assert tab.get_by_text("secure connections to 2 sites (twitter.com and www.facebook.com) were").is_visible()
    assert tab.locator('ul[lang="ru"]').get_by_text("перехватывались").first.is_visible()
    assert tab.locator("#monthly-entry").is_visible()
    assert tab.locator('div.month[lang="ru"]').get_by_text("С 1 января 2020 г. зафиксировано").is_visible()
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

    first = tab.locator("#events tbody tr.evidence:not([hidden])").first
    evidence = first.locator("details ul")
    assert not evidence.is_visible()
    first.locator("summary").click()
    assert evidence.is_visible()
    assert "issuer: CN=Information Security Certification Authority CA" in evidence.inner_text()

    tab.fill("#filter-text", "kar-tel")
    assert [[row[0], row[3]] for row in _rows(tab)] == [["AS21299 (Kar-Tel)", "twitter.com"]]
    assert tab.locator("#shown-count").inner_text() == "1"
    tab.fill("#filter-text", "")
    tab.select_option("#filter-kind", "dns")
    assert [row[3] for row in _rows(tab)] == ["dns.example"]
    assert requests == [out.as_uri()]


@pytest.mark.parametrize("language", ["en", "ru", "kk"])
def test_the_page_in_each_language(browser: Browser, tmp_path: Path, language: str) -> None:
    """The episodes' sentences and the monthly entry in one language, as a reader sees them."""
    logs = episode_fleet(tmp_path / "logs")
    out = tmp_path / "report.html"
    assert main(["report", str(logs), "--out", str(out), "--month", "2020-12", "--language", language]) == 0
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    tab = context.new_page()
    try:
        tab.goto(out.as_uri())
        if SCREENSHOTS:
            tab.screenshot(path=str(Path(SCREENSHOTS) / f"report-{language}.png"), full_page=True)
        sentences = tab.locator(f'ul.sentences[lang="{language}"] li')
        assert sentences.count() == 5 and sentences.first.is_visible()
        expected = {"en": "From 6 to 7 and from 19 to 21 December 2020", "ru": "С 6 по 7 и с 19 по 21 декабря 2020 г.",
                    "kk": "2020 жылғы 6–7 және 19–21 желтоқсанда"}[language]  # fmt: skip
        assert tab.locator(f'div.month[lang="{language}"]').get_by_text(expected).first.is_visible()
        assert len(_rows(tab)) == 6
    finally:
        context.close()
