"""`probe report`: a fleet's result logs turned into events, sentences and a page analysts can cite.

The flow: `load` (DuckDB reads every file once) -> `events` (runs of one finding per target and
network) -> `summary` (the numbers and tables) -> `sentences` (the record's wording, per language)
-> `render` / `html` (Markdown, JSON, CSV, Parquet, HTML). docs/report.md describes each part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from probe.report.events import build_events
from probe.report.load import Filters, load
from probe.report.sentences import LANGUAGES, sentences
from probe.report.summary import Report, summarise

FORMATS = ("html", "md", "csv", "json", "parquet")


def build_report(
    con: duckdb.DuckDBPyConnection, paths: list[Path], filters: Filters, languages: tuple[str, ...] = LANGUAGES
) -> Report:
    problems = load(con, paths, filters)
    events = build_events(con, filters.all_confidence)
    shown: dict[str, Any] = {
        key: str(value)
        for key, value in vars(filters).items()
        if value not in (None, False) and key != "all_confidence"
    }
    report = summarise(con, events, problems, filters.all_confidence, shown)
    report.sentences = sentences([e for e in events if e.confirmed or filters.all_confidence], languages)
    return report


def write_report(report: Report, con: duckdb.DuckDBPyConnection, fmt: str, out: Path | None) -> str | None:
    """Write the report; return the text for standard output when no file was asked for."""
    from probe.report import html, render

    if fmt == "parquet":
        render.to_parquet(con, report, out or Path("report-parquet"))
        return None
    text = {"html": html.to_html, "md": render.to_markdown, "csv": render.to_csv, "json": render.to_json}[fmt](report)
    if out is None and fmt == "html":
        out = Path("report.html")
    if out is None:
        return text
    out.write_text(text, encoding="utf-8")
    return None
