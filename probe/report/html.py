"""The report as one self-contained HTML page: it can be mailed and opened offline.

Everything is inline (style, script, the charts drawn as SVG), and a Content-Security-Policy
forbids the page any request at all. The whole page is in one language (`<html lang>`, headings,
labels, legends, table headers): the first language asked for, its words in
`templates/<language>.json` under `page`. The page's parts: `page_charts` (coverage per network and
day, the timeline per network, the site-by-network matrix) and `page_tables` (the episodes, anchored
`#e-...`, and the measurements they cite, anchored `#m-<measurement_id>`).
"""

from __future__ import annotations

from typing import Any

from probe.report.page_charts import coverage_section, e, matrix_section, timeline_section
from probe.report.page_tables import breakdown_tables, episodes_table, measurements_table, place_name, simple_table
from probe.report.sentences import common_name, load_template, zones_phrase
from probe.report.summary import Report

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin: 1.2em 0 .3em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.5em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { border-bottom: 1px solid #eee; padding: .3em .5em; text-align: left; vertical-align: top; }
th button { font: inherit; font-weight: bold; background: none; border: none; cursor: pointer; padding: 0; text-align: left; }
th[aria-sort=ascending] button::after { content: " \\25B2"; } th[aria-sort=descending] button::after { content: " \\25BC"; }
.kind { display: inline-block; padding: 0 .4em; border-radius: 3px; color: #fff; }
a.confidence { font-size: .85em; color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; margin: .4em 0; }
.sentences li { margin: .4em 0; }
details summary { cursor: pointer; color: #2166ac; }
details ul { font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
.controls { display: flex; flex-wrap: wrap; gap: 1em; margin: .5em 0; }
svg text { font-size: 11px; fill: #333; } svg.timeline text.day { font-size: 8.5px; }
#events td:nth-child(3) { white-space: nowrap; }
.legend span { display: inline-block; margin-right: 1em; }
.legend i { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin-right: .3em; }
dl.confidence dt { font-weight: bold; } dl.confidence dd { margin: 0 0 .6em 1.5em; }
#matrix td.state { white-space: nowrap; font-size: .9em; }
#matrix, #measurements { font-size: .92em; }
.network-coverage details table { width: auto; font-size: .85em; }
tr:target, tr:target td { background: #fff3b0; }
#events tr.episode td { border-bottom: none; } #events tr.evidence td { padding-top: 0; font-size: .9em; }
"""

_SCRIPT = """
(function () {
  const table = document.getElementById('events');
  if (!table) return;
  const body = table.tBodies[0];
  table.querySelectorAll('th[data-sort]').forEach(function (th, column) {
    th.querySelector('button').addEventListener('click', function () {
      const ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      const numeric = th.dataset.sort === 'number';
      const rows = Array.from(body.querySelectorAll('tr.episode'));
      rows.sort(function (a, b) {
        const x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) {
        const evidence = row.nextElementSibling;
        body.appendChild(row);
        if (evidence && evidence.classList.contains('evidence')) body.appendChild(evidence);
      });
    });
  });
  const text = document.getElementById('filter-text'), kind = document.getElementById('filter-kind');
  function filter() {
    const needle = text.value.toLowerCase();
    let shown = 0;
    body.querySelectorAll('tr.episode').forEach(function (row) {
      const evidence = row.nextElementSibling;
      const words = row.textContent + (evidence ? evidence.textContent : '');
      const visible = words.toLowerCase().includes(needle) && (!kind.value || row.dataset.kind === kind.value);
      row.hidden = !visible;
      if (evidence) evidence.hidden = !visible;
      if (visible) shown += 1;
    });
    document.getElementById('shown-count').textContent = shown;
  }
  text.addEventListener('input', filter);
  kind.addEventListener('change', filter);
  function reveal() {
    const target = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
    if (target && target.hidden) { text.value = ''; kind.value = ''; filter(); }
  }
  window.addEventListener('hashchange', reveal);
  reveal();
})();
"""


def page_language(report: Report) -> str:
    """The page's language: the first one the sentences were asked in."""
    return next(iter(report.sentences), "en")


def _confidence(page: dict[str, Any]) -> str:
    words = page["confidence"]
    return (
        f'<dl class="confidence"><dt>{e(words["confirmed"])}</dt><dd>{e(words["confirmed_text"])}</dd>'
        f"<dt>{e(words['unconfirmed'])}</dt><dd>{e(words['unconfirmed_text'])}</dd></dl>"
        f"<p>{e(words['shown_note'])}</p>"
    )


def to_html(report: Report) -> str:
    language = page_language(report)
    template = load_template(language)
    page: dict[str, Any] = template["page"]
    kinds: dict[str, str] = template["kinds"]
    headings, columns, cards_words = page["headings"], page["columns"], page["cards"]
    first, last = report.days
    cards = [
        ("measurements", report.measurements), ("probes", report.probes), ("targets", report.targets),
        ("networks", len(report.networks)), ("episodes", len(report.episodes)),
        ("skipped_lines", report.problems.skipped_lines),
    ]  # fmt: skip
    notes = "".join(f'<p class="note" lang="en">{e(m)}</p>' for m in report.problems.messages())
    names = {code: load_template(code).get("name", code) for code in {*report.sentences, *report.month}}
    sentences = "".join(
        f'<h3 lang="{e(lang)}">{e(names[lang])}</h3><ul class="sentences" lang="{e(lang)}">'
        + ("".join(f"<li>{e(t)}</li>" for t in found) or f"<li>{e(page['no_episodes'])}</li>")
        + "</ul>"
        for lang, found in report.sentences.items()
    )
    month = "".join(
        f'<div class="month" lang="{e(lang)}"><h3>{e(names[lang])}</h3>'
        + "".join(f"<p>{e(paragraph)}</p>" for paragraph in paragraphs)
        + "</div>"
        for lang, paragraphs in report.month.items()
    )
    month = f'<h2 id="monthly-entry">{e(headings["monthly"])}</h2>{month}' if month else ""
    findings = simple_table(
        "findings",
        [columns[c] for c in ("kind", "episodes", "sites", "networks", "confirmed_measurements",
                              "unconfirmed_measurements")],
        [
            [kinds.get(k, k), v["episodes"], v["sites"], v["networks"], v["confirmed"], v["unconfirmed"]]
            for k, v in report.findings.items()
        ],
    )  # fmt: skip
    local = (
        simple_table(
            "local-interception",
            [columns[c] for c in ("interceptor", "measurements", "probes", "targets")],
            [
                [common_name(r["interceptor"]), r["measurements"], r["probes"], r["targets"]]
                for r in report.local_interception
            ],
        )
        if report.local_interception
        else f"<p>{e(page['none_seen'])}</p>"
    )
    shown = page["shown_all"] if report.all_confidence else page["shown_confirmed"]
    places = (
        str(page["places"]).format(list=", ".join(place_name(p, page) for p in report.places)) if report.places else ""
    )
    period = str(page["period"]).format(
        first=first, last=last, zones=zones_phrase(report.zones, template), places=places, shown=shown,
        generated=report.generated.strftime("%Y-%m-%d %H:%M %Z"),
    )  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="{e(language)}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(str(page["title"]).format(first=first, last=last))}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(page["h1"])}</h1>
<p id="period">{e(period)}</p>
<div class="cards">{"".join(f'<div class="card"><b>{v}</b>{e(cards_words[k])}</div>' for k, v in cards)}</div>
{notes}
{month}
<h2 id="findings-by-kind">{e(headings["findings"])}</h2>{findings}
<h2 id="for-the-record">{e(headings["record"])}</h2>{sentences}
<h2 id="confidence">{e(headings["confidence"])}</h2>{_confidence(page)}
<h2 id="coverage">{e(headings["coverage"])}</h2>{coverage_section(report.coverage, first, last, page)}
<h2 id="timelines">{e(headings["timeline"])}</h2>{timeline_section(report.timelines, first, last, kinds, page)}
<h2 id="sites-and-networks">{e(headings["matrix"])}</h2>{matrix_section(report.matrix, kinds, page)}
<h2 id="episodes">{e(headings["episodes"])}</h2>{episodes_table(report, kinds, page)}
<h2 id="measurements-cited">{e(headings["measurements"])}</h2>{measurements_table(report, kinds, page)}
<h2 id="tables">{e(headings["tables"])}</h2>{breakdown_tables(report, page)}
<h2 id="local-interception-heading">{e(headings["local"])}</h2>
<p>{e(page["local_text"])}</p>{local}
<script>{_SCRIPT}</script>
</body></html>
"""
