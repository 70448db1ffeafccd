"""Building the report: read, aggregate, summarise, word and write it (the flow is in `probe.report`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from probe.report.engines import DEFAULT_MEMORY_LIMIT, ENGINES, DuckDBEngine, Engine
from probe.report.events import build_coverage, build_episodes
from probe.report.load import Filters, load, where
from probe.report.sentences import LANGUAGES, load_template, month_entry, sentences
from probe.report.summary import Report, summarise

FORMATS = ("html", "md", "csv", "json", "parquet", "text")


def build_report(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    filters: Filters,
    languages: tuple[str, ...] = LANGUAGES,
    engine: str = "duckdb",
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
    spark_master: str | None = None,
    spark_exchange: Path | None = None,
) -> Report:
    """The report of the results in `paths`. The aggregation runs on `engine` (DuckDB in `con`, with
    `memory_limit`; or Spark at `spark_master`); the summary's tables are then DuckDB's, in `con`.
    `close(con)` removes the engine's temporary files once the report is written."""
    templates = {language: load_template(language) for language in languages}  # a bad language fails first
    close(con)  # a report made before on this connection: its engine's files go
    if engine == "spark":
        from probe.report.spark import SparkEngine

        runner: Engine = SparkEngine(spark_master or "local[*]", spark_exchange)
    elif engine == "duckdb":
        runner = DuckDBEngine(con, memory_limit)
    else:
        raise ValueError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    _ENGINES[id(con)] = runner
    problems = load(runner, paths, filters)
    episodes = build_episodes(runner, filters.all_confidence)
    build_coverage(runner)
    runner.hand_over(con)  # the summary's tables are DuckDB's
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
        runner.view(
            "year_m",
            "SELECT * FROM allm WHERE "
            + where(Filters(since=year_start, until=filters.until, network=filters.network, target=filters.target)),
        )
        year = [
            e for e in build_episodes(runner, filters.all_confidence, "year_m") if e.confirmed or filters.all_confidence
        ]
        report.month = {
            language: month_entry(published, year, filters.since, report.zones, template)
            for language, template in templates.items()
        }
    return report


_ENGINES: dict[int, Engine] = {}


def close(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what the report's engine kept (its temporary folder; Spark's session)."""
    runner = _ENGINES.pop(id(con), None)
    if runner is not None:
        runner.close()


def write_report(report: Report, con: duckdb.DuckDBPyConnection, fmt: str, out: Path | None) -> str | None:
    """Write the report; return the text for standard output when no file was asked for."""
    from probe.report import exchange, html, render

    if fmt == "parquet":
        exchange.to_parquet(con, report, out or Path("report-parquet"))
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
