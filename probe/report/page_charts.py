"""The page's charts, drawn inline (SVG and tables; no script needed to read them): coverage per
network and day as stacked bars (as OONI's Measurement Aggregation Toolkit draws them: reachable,
blocked confirmed, blocked unconfirmed, failed, offline), the timeline per network (day by site),
and the site-by-network matrix. Every word comes from the page language's labels."""

from __future__ import annotations

from datetime import date, timedelta
from html import escape
from typing import Any

SEGMENTS = ("reachable", "blocked_confirmed", "blocked_unconfirmed", "failed", "offline", "local_interception")
SEGMENT_COLOURS = {
    "reachable": "#7fbf7b",
    "blocked_confirmed": "#b2182b",
    "blocked_unconfirmed": "#f4a582",
    "failed": "#8c8c8c",
    "offline": "#d9d9d9",
    "local_interception": "#92c5de",
}
COLOURS = {
    "tls_mitm": "#b2182b",
    "tls": "#ef8a62",
    "dns": "#7b3294",
    "tcp": "#8c510a",
    "http": "#2166ac",
    "quic": "#35978f",  # issue 22: QUIC
    "throttled": "#bf812d",  # issue 22: throttling
    "none": "#d9f0d3",
    "failed": "#e0e0e0",
    "blocked_unconfirmed": "#f4a582",
    "local_interception": "#92c5de",
    "offline": "#eeeeee",
}
MAX_LABELLED_DAYS = 62  # beyond this, every seventh day is labelled


def e(value: Any) -> str:
    return escape(str(value)) if value is not None else "–"


def network_name(network_key: str, network: str | None, as_name: str | None, page: dict[str, Any]) -> str:
    if network is None:
        return str(page["unknown_network"]).format(probe=network_key[-8:])
    return f"{network} ({as_name})" if as_name else network


def _all_days(first: date | None, last: date | None) -> list[date]:
    if first is None or last is None:
        return []
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def legend(items: list[tuple[str, str]]) -> str:
    return (
        '<p class="legend">' + "".join(f'<span><i style="background:{c}"></i>{e(t)}</span>' for c, t in items) + "</p>"
    )


def _day_labels(days: list[date], left: int, step: int, y: int, css: str) -> list[str]:
    """A chart's day axis: each day's number (every seventh when there are many days), and the month
    under the first day and under each month's first."""
    labelled = len(days) <= MAX_LABELLED_DAYS
    labels = []
    for column, day in enumerate(days):
        x = left + column * step
        if labelled or column % 7 == 0:
            labels.append(f'<text{css} x="{x + (step - 2) / 2}" y="{y}" text-anchor="middle">{day.day}</text>')
        if day.day == 1 or column == 0:
            labels.append(f'<text x="{x}" y="{y + 14}">{day.isoformat()[:7]}</text>')
    return labels


def _bars(rows: list[dict[str, Any]], days: list[date], page: dict[str, Any]) -> str:
    """One network's stacked bars: a bar per local day, its height the day's measurements."""
    by_day = {row["day"]: row for row in rows}
    step = max(8, min(28, 1000 // max(1, len(days))))
    left, top, height = 36, 8, 90
    width = left + step * len(days) + 8
    peak = max((row["measured"] for row in rows), default=1) or 1
    words = page["legend"]
    key = rows[0]["network_key"]
    parts = [
        f'<svg class="coverage" data-network="{e(key)}" role="img" width="{width}" height="{top + height + 34}" '
        f'viewBox="0 0 {width} {top + height + 34}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{peak}</text>'
        f'<text x="{left - 4}" y="{top + height}" text-anchor="end">0</text>'
        f'<line x1="{left}" x2="{width - 4}" y1="{top + height + 0.5}" y2="{top + height + 0.5}" stroke="#999"/>',
    ]
    parts += _day_labels(days, left, step, top + height + 14, "")
    for column, day in enumerate(days):
        x = left + column * step
        row = by_day.get(day)
        if row is None:
            parts.append(
                f'<rect class="unmeasured" data-day="{day.isoformat()}" x="{x}" y="{top + height - 2}" '
                f'width="{step - 2}" height="2" fill="#fff" stroke="#bbb" stroke-dasharray="2 1">'
                f"<title>{day.isoformat()}: {e(words['not_measured'])}</title></rect>"
            )
            continue
        title = f"{day.isoformat()}: " + ", ".join(f"{words[s]} {row[s]}" for s in SEGMENTS if row[s])
        parts.append(
            f'<g class="day" data-day="{day.isoformat()}" data-measured="{row["measured"]}"><title>{e(title)}</title>'
        )
        y = top + height
        for segment in SEGMENTS:
            count = row[segment]
            if not count:
                continue
            size = height * count / peak
            y -= size
            parts.append(
                f'<rect class="seg" data-kind="{segment}" data-count="{count}" x="{x}" y="{y:.2f}" '
                f'width="{step - 2}" height="{size:.2f}" fill="{SEGMENT_COLOURS[segment]}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def coverage_section(
    coverage: list[dict[str, Any]], first: date | None, last: date | None, page: dict[str, Any]
) -> str:
    """Per network, its bars over every day of the period, and the numbers behind them."""
    if not coverage:
        return f"<p>{e(page['no_coverage'])}</p>"
    days = _all_days(first, last)
    networks: dict[str, list[dict[str, Any]]] = {}
    for row in coverage:
        networks.setdefault(row["network_key"], []).append(row)
    order = sorted(networks, key=lambda k: (-sum(r["measured"] for r in networks[k]), k))
    networks = {k: networks[k] for k in order}
    words, columns = page["legend"], page["columns"]
    items = [(SEGMENT_COLOURS[s], words[s]) for s in SEGMENTS] + [
        ("#fff; border: 1px dashed #bbb", words["not_measured"])
    ]
    parts = [f"<p>{e(page['coverage_intro'])}</p>", legend(items)]
    heads = [columns["day"], columns["measured"], *(str(words[s])[:1].upper() + str(words[s])[1:] for s in SEGMENTS)]
    for key, rows in networks.items():
        name = network_name(key, rows[0]["network"], rows[0]["as_name"], page)
        table = "".join(
            f"<tr><td>{row['day'].isoformat()}</td><td>{row['measured']}</td>"
            + "".join(f"<td>{row[s]}</td>" for s in SEGMENTS)
            + "</tr>"
            for row in rows
        )
        parts.append(
            f'<div class="network-coverage" data-network="{e(key)}"><h3>{e(name)}</h3>{_bars(rows, days, page)}'
            f"<details><summary>{e(columns['measurements'])}</summary><table><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in heads)
            + f"</tr></thead><tbody>{table}</tbody></table></details></div>"
        )
    return "".join(parts)


def _timeline_svg(entry: dict[str, Any], days: list[date], kinds: dict[str, str], page: dict[str, Any]) -> str:
    """One network's sites by day, on the period's every day (the coverage charts' axis)."""
    targets = entry["targets"]
    cell, left, top = 16, 180, 4
    width, height = left + cell * len(days) + 8, top + cell * len(targets) + 30
    parts = [
        f'<svg class="timeline" data-network="{e(entry["network_key"])}" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    bottom = top + cell * len(targets)
    parts += _day_labels(days, left, cell, bottom + 12, ' class="day"')
    for row, target in enumerate(targets):
        y = top + row * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell - 5}" text-anchor="end">{e(target[:28])}</text>')
        for column, day in enumerate(days):
            finding = entry["cells"].get((day.isoformat(), target))
            if finding is None:
                continue
            name = kinds.get(finding) or page["reachable"]
            parts.append(
                f'<rect class="cell" x="{left + column * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="{COLOURS.get(finding, "#ccc")}" data-day="{day.isoformat()}" data-target="{e(target)}" '
                f'data-finding="{e(finding)}"><title>{day.isoformat()} {e(target)}: {e(name)}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def timeline_section(
    entries: list[dict[str, Any]], first: date | None, last: date | None, kinds: dict[str, str], page: dict[str, Any]
) -> str:
    """Day by site, one chart per network: never merged across networks."""
    if not entries:
        return f'<div id="timeline"><p>{e(page["no_findings"])}</p></div>'
    days = _all_days(first, last)
    charts = "".join(
        f"<h3>{e(network_name(t['network_key'], t['network'], t['as_name'], page))}</h3>"
        + _timeline_svg(t, days, kinds, page)
        for t in entries
    )
    shown = ("tls_mitm", "tls", "dns", "tcp", "http", "quic", "throttled", "none")  # issue 22: quic, throttled
    items = [(COLOURS[k], kinds.get(k) or page["reachable"]) for k in shown]
    return f"<p>{e(page['timeline_intro'])}</p>" + legend(items) + f'<div id="timeline">{charts}</div>'


def matrix_section(matrix: dict[str, Any], kinds: dict[str, str], page: dict[str, Any]) -> str:
    """Sites down, networks across: what each site showed on each network over the period."""
    if not matrix.get("targets"):
        return f"<p>{e(page['no_coverage'])}</p>"
    networks = matrix["networks"]
    head = f"<th>{e(page['columns']['target'])}</th>" + "".join(
        f'<th data-network="{e(n["network_key"])}">'
        f"{e(network_name(n['network_key'], n['network'], n['as_name'], page))}</th>"
        for n in networks
    )
    rows = []
    for target in matrix["targets"]:
        cells = []
        for n in networks:
            found = matrix["cells"].get((target, n["network_key"]))
            if found is None:
                cells.append(f'<td class="state" data-finding="">{e(page["not_measured"])}</td>')
                continue
            finding = found["finding"]
            name = kinds.get(finding) or (page["reachable"] if finding == "none" else page["legend"][finding])
            shown = found["count"]
            cells.append(
                f'<td class="state" data-finding="{e(finding)}" data-measurements="{found["measurements"]}" '
                f'style="background:{COLOURS.get(finding, "#eee")}{";color:#fff" if finding in kinds else ""}">'
                f"{e(name)} <small>{shown}/{found['measurements']}</small></td>"
            )
        rows.append(f'<tr data-target="{e(target)}"><th scope="row">{e(target)}</th>{"".join(cells)}</tr>')
    more = f"<p>{e(str(page['matrix_more']).format(n=matrix['hidden']))}</p>" if matrix.get("hidden") else ""
    return (
        f'<p>{e(page["matrix_intro"])}</p><table id="matrix"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{more}"
    )
