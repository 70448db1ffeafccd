"""The report as text: Markdown for the monthly record, JSON for programs, CSV of the events, and
Parquet (measurements and events, partitioned by day and network) for the engines that take over
when one machine is outgrown."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb

from probe.report.events import Event
from probe.report.sentences import common_name
from probe.report.summary import Report
from probe.results.forensics_text import forensics_lines

KIND_NAMES = {
    "tls_mitm": "TLS interception",
    "tls": "TLS blocking",
    "tcp": "TCP blocking",
    "dns": "DNS manipulation",
    "http": "HTTP blocking",
}


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def evidence_lines(event: Event) -> list[str]:
    """The evidence of an event in plain words: what an analyst cites."""
    e = event.evidence
    lines = []
    if event.blocking == "tls_mitm":
        lines.append(f"issuer: {e.get('issuer') or '?'}")
        if e.get("catalog_id"):
            lines.append(
                f"catalog entry: {e['catalog_id']} ({e.get('interceptor_name') or ''}), matched by "
                f"{(e.get('matched_by') or '').replace('_', ' ')}"
            )
        for index, fingerprint in enumerate(e.get("chain_sha256") or []):
            lines.append(f"certificate {index} SHA-256: {fingerprint}")
    if event.blocking == "dns":
        lines.append(f"answers: {', '.join(e.get('answers') or []) or 'none'}")
        lines.append(f"control's answers: {', '.join(e.get('control_answers') or []) or 'none'}")
    if event.blocking in ("tls", "tcp"):
        for handshake in e.get("handshakes") or []:
            outcome = handshake.get("failure") or "handshake completed"
            if handshake.get("alert"):
                outcome += f" (alert {handshake['alert']})"
            lines.append(f"{handshake.get('purpose')} SNI {handshake.get('server_name')}: {outcome}")
        for connect in e.get("connects") or []:
            lines.append(f"connect {connect.get('address')}:{connect.get('port')}: {connect.get('failure') or 'ok'}")
    if e.get("blockpage_id"):
        lines.append(f"blockpage: {e.get('blockpage_name') or ''} (fingerprint {e['blockpage_id']})")
    if e.get("redirect_hop"):
        hop = e["redirect_hop"]
        lines.append(f"on redirect {hop.get('index')}: {hop.get('url')} ({hop.get('stage')})")
    lines += forensics_lines(e.get("forensics"))
    lines.append(f"anomalies: {', '.join(e.get('anomalies') or [])}")
    lines.append(f"first measurement: {e.get('measurement_id')} in {e.get('file')}")
    return lines


def summary_dict(report: Report) -> dict[str, Any]:
    start, end = report.period
    return {
        "generated": report.generated.isoformat(),
        "period": {"from": start.isoformat() + "Z" if start else None, "to": end.isoformat() + "Z" if end else None},
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
        "events": [event.as_dict() for event in report.events],
        "sentences": report.sentences,
        "by_target": report.by_target,
        "by_network": report.by_network,
        "by_place": report.by_place,
        "timeline": {
            **report.timeline,
            "cells": [{"day": d, "target": t, "finding": f} for (d, t), f in sorted(report.timeline["cells"].items())],
        },
        "local_interception": report.local_interception,
    }
    return json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n"


EVENT_COLUMNS = (
    "target",
    "network",
    "as_name",
    "finding",
    "key",
    "first_seen",
    "last_seen",
    "ended",
    "measurements",
    "probes",
    "places",
    "confirmed",
    "issuer",
    "catalog_id",
    "blockpage_id",
    "evidence",
)


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EVENT_COLUMNS)
    for event in report.events:
        row = event.as_dict()
        writer.writerow(
            [
                row["target"],
                row["network"],
                row["as_name"],
                row["finding"],
                row["key"],
                row["first_seen"],
                row["last_seen"],
                row["ended"],
                row["measurements"],
                row["probes"],
                ";".join(row["places"]),
                row["confirmed"],
                event.evidence.get("issuer"),
                event.evidence.get("catalog_id"),
                event.evidence.get("blockpage_id"),
                " | ".join(evidence_lines(event)),
            ]
        )
    return out.getvalue()


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def to_markdown(report: Report) -> str:
    s = summary_dict(report)
    start, end = report.period
    lines = [
        "# Monitoring record: blocking and interception",
        "",
        f"Period: {_day(start)} to {_day(end)} UTC. Measurements: {report.measurements} by {report.probes} "
        f"probes, of {report.targets} targets, on {len(report.networks)} networks"
        + (f", in {', '.join(report.places)}" if report.places else "")
        + f". Skipped lines: {report.problems.skipped_lines}.",
        f"Shown: {'all findings, confirmed or not' if report.all_confidence else 'confirmed findings only'}.",
        "",
    ]
    for message in s["problems"]:
        lines.append(f"> {message}")
    lines += ["", "## Findings by kind", ""]
    lines += _table(
        ["kind", "confirmed", "unconfirmed"],
        [[KIND_NAMES.get(k, k), v["confirmed"], v["unconfirmed"]] for k, v in report.findings.items()],
    )
    for language, found in report.sentences.items():
        lines += ["", f"## For the record ({language})", ""]
        lines += [f"- {text}" for text in found] or ["- (no confirmed events)"]
    lines += ["", "## Events", ""]
    lines += _table(
        ["target", "network", "finding", "first seen", "last seen", "ended", "measurements", "probes", "evidence"],
        [
            [
                e.target,
                f"{e.network or '-'} {e.as_name or ''}".strip(),
                KIND_NAMES.get(e.blocking, e.blocking),
                _day(e.first_seen),
                _day(e.last_seen),
                _day(e.ended),
                e.measurements,
                len(e.probes),
                "; ".join(evidence_lines(e)[:3]),
            ]
            for e in report.events
        ],
    )
    for title, rows, key in (
        ("By target", report.by_target, "target"),
        ("By network", report.by_network, "network"),
        ("By place", report.by_place, "place"),
    ):
        lines += ["", f"## {title}", ""]
        lines += _table(
            [key, "measurements", "findings", "targets blocked", "probes"],
            [[r[key], r["measurements"], r["findings"], r["targets_blocked"], r["probes"]] for r in rows],
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


def to_parquet(con: duckdb.DuckDBPyConnection, report: Report, out: Path) -> None:
    """Measurements and events, partitioned by day and network (Hive layout: `day=.../network=...`),
    as ClickHouse, Spark or BigQuery load them. docs/report.md shows the load command."""
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT * EXCLUDE (file), coalesce(network, 'unknown') AS network_key FROM m) "
        f"TO '{_quote(out / 'measurements')}' (FORMAT PARQUET, PARTITION_BY (day, network_key), OVERWRITE_OR_IGNORE)"
    )
    rows = [
        {
            **{k: v for k, v in event.as_dict().items() if k != "evidence"},
            "evidence": json.dumps(event.evidence, ensure_ascii=False, default=str),
            "day": event.first_seen.date().isoformat(),
            "network_key": event.network or "unknown",
        }
        for event in report.events
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
