"""The report as one self-contained HTML page: it can be mailed and opened offline.

Everything is inline (style, script, the timeline drawn as SVG), and a Content-Security-Policy
forbids the page any request at all. The episode table sorts and filters in the page; each episode
(anchored by its id) opens to its evidence (a `<details>` element, so it works without the script).
"""

from __future__ import annotations

from html import escape
from typing import Any

from probe.report.render import KIND_NAMES, days_text, evidence_lines, summary_dict, zones_text
from probe.report.sentences import common_name
from probe.report.summary import Report

COLOURS = {
    "tls_mitm": "#b2182b",
    "tls": "#ef8a62",
    "dns": "#7b3294",
    "tcp": "#8c510a",
    "http": "#2166ac",
    "none": "#d9f0d3",
}
LANGUAGE_NAMES = {"en": "English", "ru": "Русский", "kk": "Қазақша"}

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.5em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { border-bottom: 1px solid #eee; padding: .3em .5em; text-align: left; vertical-align: top; }
th button { font: inherit; font-weight: bold; background: none; border: none; cursor: pointer; padding: 0; }
th[aria-sort=ascending] button::after { content: " \\25B2"; } th[aria-sort=descending] button::after { content: " \\25BC"; }
.kind { display: inline-block; padding: 0 .4em; border-radius: 3px; color: #fff; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; margin: .4em 0; }
.sentences li { margin: .4em 0; }
details summary { cursor: pointer; color: #2166ac; }
details ul { font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
.controls { display: flex; gap: 1em; margin: .5em 0; }
svg text { font-size: 11px; fill: #333; }
.legend span { display: inline-block; margin-right: 1em; }
.legend i { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin-right: .3em; }
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
      const rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        const x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  const text = document.getElementById('filter-text'), kind = document.getElementById('filter-kind');
  function filter() {
    const needle = text.value.toLowerCase();
    let shown = 0;
    Array.from(body.rows).forEach(function (row) {
      const visible = row.textContent.toLowerCase().includes(needle) && (!kind.value || row.dataset.kind === kind.value);
      row.hidden = !visible;
      if (visible) shown += 1;
    });
    document.getElementById('shown-count').textContent = shown;
  }
  text.addEventListener('input', filter);
  kind.addEventListener('change', filter);
})();
"""


def _e(value: Any) -> str:
    return escape(str(value)) if value is not None else "–"


def _timeline_svg(timeline: dict[str, Any]) -> str:
    days, targets = timeline["days"], timeline["targets"]
    if not days or not targets:
        return "<p>No findings to draw.</p>"
    cell, left, top = 20, 180, 80
    width, height = left + cell * len(days) + 70, top + cell * len(targets) + 10
    parts = [
        f'<svg id="timeline" role="img" aria-label="Findings by day and target" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for column, day in enumerate(days):
        x = left + column * cell + cell / 2
        parts.append(f'<text x="{x}" y="{top - 6}" transform="rotate(-60 {x} {top - 6})">{_e(day)}</text>')
    for row, target in enumerate(targets):
        y = top + row * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell - 4}" text-anchor="end">{_e(target[:28])}</text>')
        for column, day in enumerate(days):
            finding = timeline["cells"].get((day, target))
            if finding is None:
                continue
            x = left + column * cell
            parts.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="{COLOURS.get(finding, "#ccc")}" data-day="{_e(day)}" data-target="{_e(target)}" '
                f'data-finding="{_e(finding)}"><title>{_e(day)} {_e(target)}: '
                f"{_e(KIND_NAMES.get(finding, finding))}</title></rect>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{_e(KIND_NAMES.get(kind, "reachable"))}</span>'
        for kind, colour in COLOURS.items()
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def _events_table(report: Report) -> str:
    kinds = sorted({episode.blocking for episode in report.episodes})
    options = "".join(f'<option value="{_e(k)}">{_e(KIND_NAMES.get(k, k))}</option>' for k in kinds)
    head = "".join(
        f'<th data-sort="{kind}"><button>{_e(name)}</button></th>'
        for name, kind in (("Network", "text"), ("Finding", "text"), ("Days", "text"), ("Sites", "text"),
                           ("Places", "text"), ("Ended", "text"), ("Measurements", "number"), ("Probes", "number"))
    ) + "<th>Evidence</th>"  # fmt: skip
    rows = []
    for episode in report.episodes:
        evidence = "".join(f"<li>{_e(line)}</li>" for line in evidence_lines(episode))
        colour = COLOURS.get(episode.blocking, "#888")
        network = episode.network_label()
        sites, places = ", ".join(sorted(episode.sites)), ", ".join(sorted(episode.places))
        ended = episode.ended_day.isoformat() if episode.ended_day else ""
        rows.append(
            f'<tr id="{episode.id}" data-kind="{_e(episode.blocking)}">'
            f'<td data-value="{_e(network)}">{_e(network)}</td>'
            f'<td data-value="{_e(episode.blocking)}"><span class="kind" style="background:{colour}">'
            f"{_e(KIND_NAMES.get(episode.blocking, episode.blocking))}</span>"
            f"{'' if episode.confirmed else ' (unconfirmed)'}</td>"
            f'<td data-value="{episode.first_day.isoformat()}">{_e(days_text(episode))}</td>'
            f'<td data-value="{_e(sites)}">{_e(sites)}</td>'
            f'<td data-value="{_e(places)}">{_e(places or "–")}</td>'
            f'<td data-value="{ended or "9999"}">{_e(ended or "not yet")}</td>'
            f'<td data-value="{episode.measurements}">{episode.measurements}</td>'
            f'<td data-value="{len(episode.probes)}">{len(episode.probes)}</td>'
            f'<td><details><summary>evidence</summary><p><a href="#{episode.id}">{episode.id}</a></p>'
            f"<ul>{evidence}</ul></details></td></tr>"
        )
    return (
        '<div class="controls"><label>Filter <input id="filter-text" type="search" placeholder="site, issuer, AS">'
        f'</label><label>Kind <select id="filter-kind"><option value="">all</option>{options}</select></label>'
        f'<span><span id="shown-count">{len(report.episodes)}</span> of {len(report.episodes)} episodes</span></div>'
        f'<table id="events"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _simple_table(table_id: str, headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def to_html(report: Report) -> str:
    s = summary_dict(report)
    first, last = report.days
    cards = [
        ("Measurements", report.measurements), ("Probes", report.probes), ("Targets", report.targets),
        ("Networks", len(report.networks)), ("Episodes", len(report.episodes)),
        ("Skipped lines", report.problems.skipped_lines),
    ]  # fmt: skip
    notes = "".join(f'<p class="note">{_e(m)}</p>' for m in s["problems"])
    sentences = "".join(
        f'<h3 lang="{_e(lang)}">{_e(LANGUAGE_NAMES.get(lang, lang))}</h3><ul class="sentences" lang="{_e(lang)}">'
        + ("".join(f"<li>{_e(t)}</li>" for t in found) or "<li>No episodes.</li>")
        + "</ul>"
        for lang, found in report.sentences.items()
    )
    month = "".join(
        f'<div class="month" lang="{_e(lang)}"><h3>{_e(LANGUAGE_NAMES.get(lang, lang))}</h3>'
        + "".join(f"<p>{_e(paragraph)}</p>" for paragraph in paragraphs)
        + "</div>"
        for lang, paragraphs in report.month.items()
    )
    month = f'<h2 id="monthly-entry">Monthly entry</h2>{month}' if month else ""
    findings = _simple_table(
        "findings",
        ["kind", "episodes", "sites", "networks", "measurements (confirmed)", "measurements (unconfirmed)"],
        [
            [KIND_NAMES.get(k, k), v["episodes"], v["sites"], v["networks"], v["confirmed"], v["unconfirmed"]]
            for k, v in report.findings.items()
        ],
    )
    per = ["measurements", "findings", "sites_blocked", "networks_blocked", "probes"]
    tables = "".join(
        f"<h3>{_e(title)}</h3>"
        + _simple_table(tid, [key, *(p.replace("_", " ") for p in per)], [[r[key], *(r[p] for p in per)] for r in rows])
        for title, tid, rows, key in (
            ("By target", "by-target", report.by_target, "target"),
            ("By network", "by-network", report.by_network, "network"),
            ("By place", "by-place", report.by_place, "place"),
        )
    )
    local = (
        _simple_table(
            "local-interception",
            ["interceptor", "measurements", "probes", "targets"],
            [
                [common_name(r["interceptor"]), r["measurements"], r["probes"], r["targets"]]
                for r in report.local_interception
            ],
        )  # fmt: skip
        if report.local_interception
        else "<p>None seen.</p>"
    )
    shown = "all findings, confirmed or not" if report.all_confidence else "confirmed findings only"
    places = f" in {', '.join(report.places)}" if report.places else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Monitoring record: {first} to {last}</title><style>{_STYLE}</style></head>
<body>
<h1>Monitoring record: blocking and interception</h1>
<p id="period">Period: {first} to {last} ({_e(zones_text(report))}){_e(places)}. Shown: {shown}. Generated {_e(report.generated.strftime("%Y-%m-%d %H:%M %Z"))}.</p>
<div class="cards">{"".join(f'<div class="card"><b>{v}</b>{_e(k)}</div>' for k, v in cards)}</div>
{notes}
{month}
<h2>Findings by kind</h2>{findings}
<h2>For the record</h2>{sentences}
<h2>Timeline</h2>{_timeline_svg(report.timeline)}
<h2>Episodes</h2>{_events_table(report)}
<h2>Tables</h2>{tables}
<h2>A volunteer's own interception (not censorship)</h2>
<p>Antivirus, corporate gateways and debugging proxies on the volunteer's side intercept TLS too; they are
listed here and never counted as censorship.</p>{local}
<script>{_SCRIPT}</script>
</body></html>
"""
