"""The report as text: Markdown for the monthly record, JSON for programs, CSV of the episodes, the
monthly entry as plain text, and Parquet (measurements and episodes, partitioned by day and network)
for the engines that take over when one machine is outgrown.

Certificate issuers, blockpage titles and place names come from the network or the operator: in
Markdown every cell and sentence is escaped (no HTML, no emphasis, no table break), and in CSV a
cell that a spreadsheet would read as a formula is quoted (OWASP's CSV injection advice)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb

from probe.report.events import Episode
from probe.report.sentences import common_name, counted, load_template, when, zones_phrase
from probe.report.summary import Report
from probe.results.forensics_text import forensics_lines

ENGLISH = load_template("en")
KIND_NAMES: dict[str, str] = ENGLISH["kinds"]  # one glossary: the page's words for each kind


_MARKDOWN_SPECIAL = set("\\`*_[]<>|~&#!")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md(value: Any) -> str:
    """Text as Markdown shows it literally: punctuation that means something escaped, lines joined."""
    text = " ".join(str(value if value is not None else "-").split())
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in text)


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet cannot run: text starting with = + - @ tab or CR is prefixed with a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def days_text(episode: Episode) -> str:
    first, last = episode.first_day.isoformat(), episode.last_day.isoformat()
    return first if first == last else f"{first} to {last}"


EVIDENCE_WORDS: dict[str, Any] = ENGLISH["page"]["evidence"]  # the page language's words replace them


def certificate_lines(chain: list[dict[str, Any]], words: dict[str, str]) -> list[str]:
    """Each certificate of a presented chain: subject, issuer, validity and SHA-256."""
    lines = []
    for index, cert in enumerate(chain):
        head = words["certificate"].format(n=index)
        if cert.get("unreadable"):
            lines.append(f"{head}: {words['unreadable']} (SHA-256 {cert.get('sha256') or '?'})")
            continue
        lines.append(f"{head}: {words['subject']} {cert.get('subject')}; {words['issuer']} {cert.get('issuer')}")
        lines.append(f"{head}: {words['valid'].format(a=cert.get('not_before'), b=cert.get('not_after'))}")
        lines.append(f"{head}: SHA-256 {cert.get('sha256')}")
    return lines


def _word(w: dict[str, Any], group: str, code: Any) -> str:
    """A code in the glossary's words (`connection_reset` -> "connection reset"), else spaced out."""
    return str(w.get(group, {}).get(code) or str(code or "?").replace("_", " "))


def evidence_lines(event: Episode, words: dict[str, Any] | None = None) -> list[str]:
    """The evidence of an episode in plain words (its first measurement's): what an analyst cites.
    `words`: the page language's labels (English by default)."""
    w = {**EVIDENCE_WORDS, **(words or {})}
    e = event.evidence
    lines = []
    if event.blocking == "tls_mitm":
        lines.append(f"{w['issuer']}: {e.get('issuer') or '?'}")
        if e.get("catalog_id"):
            lines.append(
                w["catalog"].format(
                    id=e["catalog_id"], name=e.get("interceptor_name") or "",
                    by=_word(w, "matched_by", e.get("matched_by")),
                )
            )  # fmt: skip
        if e.get("certificates"):
            lines += certificate_lines(e["certificates"], w)
        else:
            for index, fingerprint in enumerate(e.get("chain_sha256") or []):
                lines.append(f"{w['certificate'].format(n=index)}: SHA-256 {fingerprint}")
    if event.blocking == "dns":
        lines.append(f"{w['answers']}: {', '.join(e.get('answers') or []) or w['none']}")
        lines.append(f"{w['control_answers']}: {', '.join(e.get('control_answers') or []) or w['none']}")
    if event.blocking in ("tls", "tcp"):
        for handshake in e.get("handshakes") or []:
            failure = handshake.get("failure")
            outcome = _word(w, "failures", failure) if failure else w["completed"]
            if handshake.get("alert"):
                outcome += f" (alert {handshake['alert']})"
            purpose = _word(w, "purposes", handshake.get("purpose") or "target")
            lines.append(w["handshake"].format(purpose=purpose, name=handshake.get("server_name"), outcome=outcome))
        for connect in e.get("connects") or []:
            failure = connect.get("failure")
            outcome = _word(w, "failures", failure) if failure else w["ok"]
            lines.append(w["connect"].format(address=connect.get("address"), port=connect.get("port"), outcome=outcome))
    if e.get("blockpage_id"):
        lines.append(w["blockpage"].format(name=e.get("blockpage_name") or "", id=e["blockpage_id"]))
    if e.get("redirect_hop"):
        hop = e["redirect_hop"]
        lines.append(f"on redirect {hop.get('index')}: {hop.get('url')} ({hop.get('stage')})")
    lines += forensics_lines(e.get("forensics"))
    lines.append(f"{w['anomalies']}: {', '.join(sorted(event.anomalies))}")
    lines.append(f"{w['first_measurement']}: {e.get('measurement_id') or event.first_measurement or '-'}")
    return lines


def summary_dict(report: Report) -> dict[str, Any]:
    start, end = report.period
    first, last = report.days
    return {
        "generated": report.generated.isoformat(),
        "period": {"from": start.isoformat() + "Z" if start else None, "to": end.isoformat() + "Z" if end else None},
        "days": {"from": first.isoformat() if first else None, "to": last.isoformat() if last else None},
        "time_zones": report.zones,
        "filters": report.filters,
        "confidence_shown": "all" if report.all_confidence else "confirmed",
        "measurements": report.measurements,
        "probes": report.probes,
        "places": report.places,
        "networks": report.networks,
        "targets": report.targets,
        "skipped_lines": report.problems.skipped_lines,
        "problems": report.problems.messages(),
        "verdicts": report.verdicts,
        "findings": report.findings,
    }


def to_json(report: Report) -> str:
    document = {
        "summary": summary_dict(report),
        "episodes": [episode.as_dict() for episode in report.episodes],
        "sentences": report.sentences,
        "month": report.month,
        "by_target": report.by_target,
        "by_network": report.by_network,
        "by_place": report.by_place,
        "timeline": {
            **report.timeline,
            "cells": [{"day": d, "target": t, "finding": f} for (d, t), f in sorted(report.timeline["cells"].items())],
        },
        "local_interception": report.local_interception,
        "coverage": report.coverage,
        "timelines": [
            {**t, "cells": [{"day": d, "target": g, "finding": f} for (d, g), f in sorted(t["cells"].items())]}
            for t in report.timelines
        ],
        "matrix": {
            **report.matrix,
            "cells": [{"target": t, "network": n, **c} for (t, n), c in sorted(report.matrix.get("cells", {}).items())],
        },
        "measurements_cited": report.cited,
    }
    return json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n"


EPISODE_COLUMNS = (
    "id", "network", "as_name", "finding", "key", "first_day", "last_day", "days", "ended_day", "sites", "places",
    "measurements", "probes", "confirmed", "issuer", "catalog_id", "blockpage_id", "first_seen", "last_seen", "ended",
    "time_zone", "evidence",
)  # fmt: skip


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EPISODE_COLUMNS)
    for episode in report.episodes:
        row = episode.as_dict()
        row.update(
            network=row["network"] or episode.network_label(),
            days=";".join(row["days"]),
            sites=";".join(row["sites"]),
            places=";".join(row["places"]),
            issuer=episode.evidence.get("issuer"),
            catalog_id=episode.evidence.get("catalog_id"),
            blockpage_id=episode.evidence.get("blockpage_id"),
            evidence=" | ".join(evidence_lines(episode)),
        )
        writer.writerow([csv_cell(row[column]) for column in EPISODE_COLUMNS])
    return out.getvalue()


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
    return lines


def _unknown(network_key: str) -> str:
    return f"unknown network (probe {network_key[-8:]})"


def to_markdown(report: Report) -> str:
    s = summary_dict(report)
    first, last = report.days
    lines = [
        "# Monitoring record: blocking and interception",
        "",
        f"Period: {first} to {last} ({md(zones_phrase(report.zones, ENGLISH))}). "
        f"Measurements: {report.measurements} by "
        f"{counted('probe', report.probes, ENGLISH)}, of {counted('target', report.targets, ENGLISH)}, on "
        f"{counted('network', len(report.networks), ENGLISH)}"
        + (f", in {md(', '.join(report.places))}" if report.places else "")
        + f". Skipped lines: {report.problems.skipped_lines}.",
        f"Shown: {'all findings, confirmed or not' if report.all_confidence else 'confirmed findings only'}.",
        "",
    ]
    lines += [f"> {md(message)}" for message in s["problems"]]
    for language, paragraphs in report.month.items():
        lines += ["", f"## Monthly entry ({language})", ""]
        lines += [md(paragraph) + "\n" for paragraph in paragraphs]
    lines += ["", "## Findings by kind", ""]
    lines += _table(
        ["kind", "episodes", "sites", "networks", "measurements (confirmed)", "measurements (unconfirmed)"],
        [
            [KIND_NAMES.get(k, k), v["episodes"], v["sites"], v["networks"], v["confirmed"], v["unconfirmed"]]
            for k, v in report.findings.items()
        ],
    )
    for language, found in report.sentences.items():
        lines += ["", f"## For the record ({language})", ""]
        lines += [f"- {md(text)}" for text in found] or ["- (no confirmed episodes)"]
    lines += ["", "## Episodes", ""]
    lines += _table(
        ["episode", "network", "finding", "days", "ended", "sites", "places", "measurements", "probes", "evidence"],
        [
            [
                e.id,
                e.network_label(),
                KIND_NAMES.get(e.blocking, e.blocking) + ("" if e.confirmed else " (unconfirmed)"),
                days_text(e),
                e.ended_day or "not by the end of the period",
                ", ".join(sorted(e.sites)),
                ", ".join(sorted(e.places)) or "-",
                e.measurements,
                len(e.probes),
                "; ".join(evidence_lines(e)[:3]),
            ]
            for e in report.episodes
        ],
    )
    lines += ["", "## Coverage per network and day", ""]
    lines += _table(
        ["network", "day", "measured", "reachable", "blocked (confirmed)", "blocked (unconfirmed)", "failed",
         "offline", "volunteer's own interception"],
        [
            [c["network"] or _unknown(c["network_key"]), c["day"], c["measured"], c["reachable"],
             c["blocked_confirmed"], c["blocked_unconfirmed"], c["failed"], c["offline"], c["local_interception"]]
            for c in report.coverage
        ],
    )  # fmt: skip
    for title, rows, key, counts in (
        ("By target", report.by_target, "target", ("measurements", "findings", "networks_blocked", "probes")),
        ("By network", report.by_network, "network", ("measurements", "findings", "sites_blocked", "probes")),
        ("By place", report.by_place, "place", ("measurements", "findings", "sites_blocked", "networks_blocked",
                                                "probes")),
    ):  # fmt: skip
        lines += ["", f"## {title}", ""]
        lines += _table(
            [key, *(c.replace("_", " ") for c in counts)], [[r[key], *(r[c] for c in counts)] for r in rows]
        )
    lines += ["", "## A volunteer's own interception (not censorship)", ""]
    lines += (
        _table(
            ["interceptor", "measurements", "probes", "targets"],
            [
                [common_name(r["interceptor"]), r["measurements"], r["probes"], r["targets"]]
                for r in report.local_interception
            ],
        )
        if report.local_interception
        else ["None seen."]
    )
    return "\n".join(lines) + "\n"


def nothing(report: Report, language: str) -> str:
    """No finding in the period, said in words: "From 1 to 31 December 2020, no confirmed ..."."""
    first, last = report.days
    template = load_template(language)
    period = when([(first, last)], template) if first and last else ""
    return str(template["nothing"]).format(When=period).strip(" ,")


def to_text(report: Report) -> str:
    """The monthly entry (with --month), else the sentences: plain text, ready to paste."""
    blocks = report.month or {language: found or [nothing(report, language)] for language, found in
                              report.sentences.items()}  # fmt: skip
    return "\n\n".join("\n\n".join(paragraphs) for paragraphs in blocks.values()) + "\n"


def to_parquet(con: duckdb.DuckDBPyConnection, report: Report, out: Path) -> None:
    """Measurements and episodes, partitioned by day and network (Hive layout: `day=.../network=...`),
    as ClickHouse, Spark or BigQuery load them. docs/report.md shows the load command."""
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        "COPY (SELECT * EXCLUDE (file) FROM m) "
        f"TO '{_quote(out / 'measurements')}' (FORMAT PARQUET, PARTITION_BY (day, network_key), OVERWRITE_OR_IGNORE)"
    )
    rows = [
        {
            **{k: v for k, v in episode.as_dict().items() if k != "evidence"},
            "evidence": json.dumps(episode.evidence, ensure_ascii=False, default=str),
            "day": episode.first_day.isoformat(),
        }
        for episode in report.episodes
    ]
    events_json = out / "events.json.tmp"
    events_json.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    try:
        if rows:
            con.execute(
                f"COPY (SELECT * FROM read_json('{_quote(events_json)}', format = 'array')) "
                f"TO '{_quote(out / 'events')}' (FORMAT PARQUET, PARTITION_BY (day, network_key), OVERWRITE_OR_IGNORE)"
            )
    finally:
        events_json.unlink()


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
