"""The page as a reader sees it (Debian's chromium, driven by Playwright): coverage per network and
day as stacked bars with the counts of a known fleet, the timeline per network, the site-by-network
matrix, anchors that navigate, certificates in words in the evidence, and the whole page in English,
Russian and Kazakh. With REPORT_SCREENSHOTS=<folder>, one full-page screenshot per language."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from probe.report.sentences import available_languages, load_template
from tests.reportdata import certified_fleet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-features=Translate,OptimizationHints",
]  # fmt: skip
SCREENSHOTS = os.environ.get("REPORT_SCREENSHOTS")


def _keys(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return {prefix}
    found = {prefix} if prefix else set()
    for key, inner in value.items():
        if prefix.endswith(("places", "place_names", "how", "categories", "from_word")):
            continue  # gazetteers and glossaries: each language names what it has
        found |= _keys(inner, f"{prefix}.{key}" if prefix else key)
    return found


def test_every_language_has_every_page_key() -> None:
    english = _keys(load_template("en")["page"])
    for language in available_languages():
        page = load_template(language)["page"]
        assert _keys(page) == english, language


def _report(tmp_path: Path, language: str = "en") -> Path:
    logs = certified_fleet(tmp_path / "logs")
    out = tmp_path / f"report-{language}.html"
    assert main(["report", str(logs), "--out", str(out), "--month", "2020-12", "--language", language]) == 0
    return out


if CHROMIUM is None:
    pytest.skip("the page is tested in Debian's chromium (bash .ci/run installs it)", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def _bar(tab: Page, network: str, day: str) -> dict[str, int]:
    """What one day's bar shows: its segments' counts by kind."""
    return tab.eval_on_selector_all(
        f'svg.coverage[data-network="{network}"] g.day[data-day="{day}"] rect.seg',
        "rects => Object.fromEntries(rects.map(r => [r.dataset.kind, Number(r.dataset.count)]))",
    )


def test_coverage_bars_show_each_networks_days(tab: Page, tmp_path: Path) -> None:
    tab.goto(_report(tmp_path).as_uri())
    # AS9198 on 7 December (Almaty): twitter.com intercepted, www.facebook.com reachable.
    assert _bar(tab, "AS9198", "2020-12-07") == {"blocked_confirmed": 1, "reachable": 1}
    assert _bar(tab, "AS9198", "2020-12-06") == {"blocked_confirmed": 2}
    assert _bar(tab, "AS9198", "2020-12-10") == {"reachable": 1}
    assert _bar(tab, "AS21299", "2020-12-03") == {"reachable": 1}
    # 23:30 UTC on 30 November is 1 December in Almaty.
    assert _bar(tab, "AS29355", "2020-12-01") == {"blocked_confirmed": 1}
    # Not measured is drawn as not measured, not as an empty success.
    assert tab.locator('svg.coverage[data-network="AS9198"] rect.unmeasured[data-day="2020-12-12"]').count() == 1
    assert _bar(tab, "AS9198", "2020-12-12") == {}
    bars = tab.locator('svg.coverage[data-network="AS9198"] g.day[data-day="2020-12-07"] rect.seg')
    heights = [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]
    assert len(heights) == 2 and all(h > 10 for h in heights)  # drawn, each half of the day's peak of 2
    # Every network has its own chart, never merged (two probes with no AS are two networks).
    networks = tab.eval_on_selector_all("svg.coverage", "s => s.map(x => x.dataset.network)")
    assert len(networks) == 5 and len(set(networks)) == 5
    timelines = tab.eval_on_selector_all("svg.timeline", "s => s.map(x => x.dataset.network)")
    assert sorted(timelines) == sorted(networks)
    assert tab.locator('svg.timeline[data-network="AS9198"] rect[data-target="twitter.com"]'
                       '[data-day="2020-12-10"]').get_attribute("data-finding") == "none"  # fmt: skip


def test_the_matrix_and_the_network_table(tab: Page, tmp_path: Path) -> None:
    tab.goto(_report(tmp_path).as_uri())
    matrix = tab.locator("#matrix")
    networks = matrix.locator("thead th[data-network]")
    column = {networks.nth(i).get_attribute("data-network"): i + 1 for i in range(networks.count())}

    def cell(target: str, network: str) -> str:
        return matrix.locator(f'tr[data-target="{target}"] td').nth(column[network] - 1).inner_text()

    assert cell("twitter.com", "AS9198") == "TLS interception 4/5"
    assert cell("www.facebook.com", "AS9198") == "TLS interception 1/2"
    assert cell("dns.example", "AS21299") == "false DNS answers 2/2"
    assert cell("clean.example", "AS21299") == "reachable 1/1"
    assert cell("dns.example", "AS9198") == "not measured"
    assert "AS9198 (Kazakhtelecom)" in networks.all_inner_texts()
    rows = tab.eval_on_selector_all("#by-network tbody tr", "rows => rows.map(r => r.cells[1].innerText)")
    assert {"Kazakhtelecom", "Kar-Tel", "Kcell"} <= set(rows)
    assert tab.locator("#confidence + dl.confidence dt").all_inner_texts() == ["Confirmed", "Unconfirmed"]


def test_anchors_navigate_and_the_evidence_names_the_certificates(tab: Page, tmp_path: Path) -> None:
    out = _report(tmp_path)
    tab.goto(out.as_uri())
    ids = tab.eval_on_selector_all("#events tbody tr.episode", "rows => rows.map(r => r.id)")
    assert len(ids) == 6 and all(i.startswith("e-") for i in ids)
    measurements = tab.eval_on_selector_all("#measurements tbody tr", "rows => rows.map(r => r.id)")
    assert len(measurements) == 10 and all(m.startswith("m-") for m in measurements)  # every finding's
    records = (tmp_path / "logs" / "fleet.jsonl").read_text(encoding="utf-8").splitlines()
    found = {"m-" + json.loads(r)["measurement_id"] for r in records if json.loads(r)["blocking"] == "tls_mitm"}
    assert found <= set(measurements)

    episode = tab.locator("#events tbody tr.episode", has_text="2020-12-06").first
    panel = tab.locator(f'#events tr.evidence[data-for="{episode.get_attribute("id")}"]')
    panel.locator("summary").click()
    evidence = panel.locator("details").inner_text()
    assert "subject CN=twitter.com" in evidence or "subject CN=www.facebook.com" in evidence
    assert "issuer C=KZ,O=ISCA,CN=Information Security Certification Authority CA" in evidence
    assert "valid from 20" in evidence and "SHA-256 " in evidence
    # A measurement's link leads to its row, which leads back to its episode.
    link = panel.locator('details a[href^="#m-"]').first
    target = link.get_attribute("href")
    link.click()
    assert tab.evaluate("location.hash") == target
    row = tab.locator(f"tr{target}")
    assert row.is_visible() and tab.evaluate(f"document.querySelector('{target}').getBoundingClientRect().top") < 900
    row.locator('a[href^="#e-"]').click()
    assert tab.evaluate("location.hash") == "#" + episode.get_attribute("id")
    # Opened at an episode's anchor, the page shows that episode.
    tab.goto(out.as_uri() + "#" + ids[-1])
    top = tab.evaluate(f"document.getElementById('{ids[-1]}').getBoundingClientRect().top")
    assert -2 <= top < 900


HEADINGS = {
    "en": ("Monitoring record: blocking and interception", "Coverage per network and day", "Network"),
    "ru": ("Мониторинг: блокировки и перехват", "Охват по сетям и дням", "Сеть"),
    "kk": ("Мониторинг: бұғаттау және ұстап алу", "Желілер мен күндер бойынша қамту", "Желі"),
}


@pytest.mark.parametrize("language", ["en", "ru", "kk"])
def test_the_whole_page_in_each_language(tab: Page, tmp_path: Path, language: str) -> None:
    tab.goto(_report(tmp_path, language).as_uri())
    if SCREENSHOTS:
        tab.screenshot(path=str(Path(SCREENSHOTS) / f"page-{language}.png"), full_page=True)
    title, coverage, network = HEADINGS[language]
    assert tab.evaluate("document.documentElement.lang") == language
    assert tab.locator("h1").inner_text() == title
    assert coverage in tab.locator("h2").all_inner_texts()
    assert tab.locator("#events thead th").first.inner_text() == network
    if language != "en":
        english = set(load_template("en")["page"]["headings"].values()) | set(
            load_template("en")["page"]["columns"].values()
        )
        shown = tab.locator("h2, h3, th, .legend, .card, #period, dl.confidence, summary").all_inner_texts()
        assert not english & {text.strip() for text in shown}
        assert "Coverage" not in tab.locator("body").inner_text()
    page = load_template(language)["page"]
    assert page["legend"]["blocked_confirmed"] in tab.locator(".legend").first.inner_text()
