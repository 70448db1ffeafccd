"""The page's tables: the episodes (each anchored `#e-...`, its evidence in a `<details>`), the
measurements they cite (each anchored `#m-<measurement_id>`, linked to its episode), and the plain
tables, with every header in the page language."""

from __future__ import annotations

from typing import Any

from probe.report.page_charts import COLOURS, e, network_name
from probe.report.render import evidence_lines
from probe.report.summary import Report


def place_name(place: str, page: dict[str, Any]) -> str:
    """A place as the language writes it (the gazetteer's cities), else as the operator wrote it."""
    return str(page.get("place_names", {}).get(place.strip().lower(), place))


def _episode_row(episode: Any, kinds: dict[str, str], page: dict[str, Any]) -> str:
    columns = page["columns"]
    evidence = "".join(f"<li>{e(line)}</li>" for line in evidence_lines(episode, page["evidence"]))
    cited = "".join(f'<a href="#m-{e(i)}">{e(i[:12])}</a> ' for i in episode.measurement_ids)
    if episode.measurements > len(episode.measurement_ids):  # the first ones are linked; the rest are counted
        cited += e(str(page["evidence"]["links_more"]).format(n=episode.measurements - len(episode.measurement_ids)))
    network = network_name(episode.network_key, episode.network, episode.as_name, page)
    sites = ", ".join(sorted(episode.sites))
    places = ", ".join(sorted(place_name(p, page) for p in episode.places))
    ended = episode.ended_day.isoformat() if episode.ended_day else ""
    first, last = episode.first_day.isoformat(), episode.last_day.isoformat()
    days = first if first == last else f"{first} – {last}"
    confidence = page["confidence"]["confirmed" if episode.confirmed else "unconfirmed"]
    return (
        f'<tr class="episode" id="{e(episode.id)}" data-kind="{e(episode.blocking)}">'
        f'<td data-value="{e(network)}">{e(network)}</td>'
        f'<td data-value="{e(episode.blocking)}">'
        f'<span class="kind" style="background:{COLOURS.get(episode.blocking, "#888")}">'
        f"{e(kinds.get(episode.blocking, episode.blocking))}</span> "
        f'<a class="confidence" href="#confidence">{e(confidence)}</a></td>'
        f'<td data-value="{first}">{e(days)}</td>'
        f'<td data-value="{e(sites)}">{e(sites)}</td>'
        f'<td data-value="{e(places)}">{e(places or "–")}</td>'
        f'<td data-value="{ended or "9999"}">{e(ended or page["not_yet"])}</td>'
        f'<td data-value="{episode.measurements}">{episode.measurements}</td>'
        f'<td data-value="{len(episode.probes)}">{len(episode.probes)}</td>'
        f'</tr><tr class="evidence" data-for="{e(episode.id)}"><td colspan="8"><details>'
        f'<summary>{e(columns["evidence"])}: <a href="#{e(episode.id)}">#{e(episode.id)}</a></summary>'
        f"<ul>{evidence}</ul><p>{e(page['episode_measurements'])}: {cited}</p></details></td></tr>"
    )


def episodes_table(report: Report, kinds: dict[str, str], page: dict[str, Any]) -> str:
    columns = page["columns"]
    found = sorted({episode.blocking for episode in report.episodes})
    options = "".join(f'<option value="{e(k)}">{e(kinds.get(k, k))}</option>' for k in found)
    head = "".join(
        f'<th data-sort="{sort}"><button>{e(columns[key])}</button></th>'
        for key, sort in (("network", "text"), ("finding", "text"), ("days", "text"), ("sites", "text"),
                          ("places", "text"), ("ended", "text"), ("measurements", "number"), ("probes", "number"))
    )  # fmt: skip
    rows = "".join(_episode_row(episode, kinds, page) for episode in report.episodes)
    total = len(report.episodes)
    shown = (
        e(page["shown_of"]).replace("{shown}", f'<span id="shown-count">{total}</span>').replace("{total}", str(total))
    )
    return (
        f'<div class="controls"><label>{e(page["filter"])} <input id="filter-text" type="search" '
        f'placeholder="{e(page["filter_placeholder"])}"></label><label>{e(page["kind_filter"])} '
        f'<select id="filter-kind"><option value="">{e(page["all"])}</option>{options}</select></label>'
        f"<span>{shown}</span></div>"
        f'<table id="events"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


def measurements_table(report: Report, kinds: dict[str, str], page: dict[str, Any]) -> str:
    """Every measurement the episodes stand on (up to a limit), each with its anchor."""
    columns = page["columns"]
    heads = ("time", "network", "target", "finding", "confidence", "probe", "place", "episode")
    names = {n["network_key"]: n for n in report.matrix.get("networks", [])}
    rows = []
    for m in report.cited:
        n = names.get(m["network_key"], {"network": m["network_key"], "as_name": None})
        network = network_name(m["network_key"], n["network"], n["as_name"], page)
        confidence = page["confidence"]["confirmed" if m["confirmed"] else "unconfirmed"]
        episode = f'<a href="#{e(m["episode"])}">{e(m["episode"])}</a>' if m["episode"] else "–"
        local = m["local_time"].strftime("%Y-%m-%d %H:%M") if m["local_time"] else "–"
        rows.append(
            f'<tr id="m-{e(m["measurement_id"])}"><td><a href="#m-{e(m["measurement_id"])}">{e(local)}</a></td>'
            f"<td>{e(network)}</td><td>{e(m['target'])}</td><td>{e(kinds.get(m['finding'], m['finding']))}</td>"
            f"<td>{e(confidence)}</td><td><code>{e(m['probe'][-8:])}</code></td>"
            f"<td>{e(place_name(m['place'], page) if m['place'] else '–')}</td><td>{episode}</td></tr>"
        )
    more = f"<p>{e(str(page['measurements_more']).format(n=report.cited_more))}</p>" if report.cited_more else ""
    head = "".join(f"<th>{e(columns[h])}</th>" for h in heads)
    return f'<table id="measurements"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


def simple_table(table_id: str, headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


PER = ("measurements", "findings", "sites_blocked", "networks_blocked", "probes")
PER_NETWORK = ("measurements", "findings", "sites_blocked", "probes")  # one network: how many sites
PER_TARGET = ("measurements", "findings", "networks_blocked", "probes")  # one site: on how many networks


def breakdown_tables(report: Report, page: dict[str, Any]) -> str:
    """By network (with its AS name and time zone: the sites blocked there), by target (the networks
    it was blocked on) and by place (both)."""
    columns, headings = page["columns"], page["headings"]
    by_network = [
        [
            network_name(
                r["network_key"], None if r["network_key"].startswith("unknown:") else r["network_key"], None, page
            ),
            r.get("as_name") or "–",
            r.get("time_zone") or "–",
            *(r[p] for p in PER_NETWORK),
        ]
        for r in report.by_network
    ]
    by_place = [
        [place_name(r["place"], page) if r["place"] != "not given" else page["place_not_given"], *(r[p] for p in PER)]
        for r in report.by_place
    ]
    network_heads = [columns["network"], columns["as_name"], columns["time_zone"], *(columns[p] for p in PER_NETWORK)]
    return (
        f"<h3>{e(headings['by_network'])}</h3>"
        + simple_table("by-network", network_heads, by_network)
        + f"<h3>{e(headings['by_target'])}</h3>"
        + simple_table(
            "by-target",
            [columns["target"], *(columns[p] for p in PER_TARGET)],
            [[r["target"], *(r[p] for p in PER_TARGET)] for r in report.by_target],
        )
        + f"<h3>{e(headings['by_place'])}</h3>"
        + simple_table("by-place", [columns["place"], *(columns[p] for p in PER)], by_place)
    )
