"""`probe report`: a fleet's result logs turned into episodes, sentences and a page analysts can cite.

The flow: `load` (DuckDB reads every file once; one row per measurement; local days from
`localtime`) -> `events` (episodes per network, kind and interceptor or blockpage; coverage per
network and day) -> `summary` (the numbers and tables) -> `sentences` (the record's wording and the
monthly entry, per language) -> `render` / `html` (Markdown, JSON, CSV, Parquet, text, HTML).
docs/report.md describes each part.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from probe.report.events import build_coverage, build_episodes
from probe.report.load import Filters, load, where
from probe.report.sentences import LANGUAGES, load_template, month_entry, sentences
from probe.report.summary import Report, summarise

FORMATS = ("html", "md", "csv", "json", "parquet", "text")


def build_report(
    con: duckdb.DuckDBPyConnection, paths: list[Path], filters: Filters, languages: tuple[str, ...] = LANGUAGES
) -> Report:
    templates = {language: load_template(language) for language in languages}  # a bad language fails first
    problems = load(con, paths, filters)
    episodes = build_episodes(con, filters.all_confidence)
    build_coverage(con)
    shown: dict[str, Any] = {
        key: str(value)
        for key, value in vars(filters).items()
        if value not in (None, False) and key != "all_confidence"
    }
    report = summarise(con, episodes, problems, filters.all_confidence, shown)
    published = [e for e in episodes if e.confirmed or filters.all_confidence]
    report.sentences = sentences(published, languages)
    if filters.month and filters.since:
        year_start = date(filters.since.year, 1, 1)
        con.execute(
            "CREATE OR REPLACE VIEW year_m AS SELECT * FROM allm WHERE "
            + where(Filters(since=year_start, until=filters.until, network=filters.network, target=filters.target))
        )
        year = [
            e for e in build_episodes(con, filters.all_confidence, "year_m") if e.confirmed or filters.all_confidence
        ]
        zones = sorted(report.zones)
        report.month = {
            language: month_entry(published, year, filters.since, zones, template)
            for language, template in templates.items()
        }
    return report


def write_report(report: Report, con: duckdb.DuckDBPyConnection, fmt: str, out: Path | None) -> str | None:
    """Write the report; return the text for standard output when no file was asked for."""
    from probe.report import html, render

    if fmt == "parquet":
        render.to_parquet(con, report, out or Path("report-parquet"))
        return None
    writers = {"html": html.to_html, "md": render.to_markdown, "csv": render.to_csv, "json": render.to_json,
               "text": render.to_text}  # fmt: skip
    text = writers[fmt](report)
    if out is None and fmt == "html":
        out = Path("report.html")
    if out is None:
        return text
    out.write_text(text, encoding="utf-8")
    return None
