"""The report's aggregation on DuckDB and on Spark (`local[*]`): the same episodes, field by field, on
the same data; the Parquet exchange read back by DuckDB and Spark; DuckDB's memory bounded and its
temporary folder removed. One Spark session for the module (ui off, few shuffle partitions)."""

from __future__ import annotations

import glob
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from probe.cli.main import main
from probe.report.build import build_report, close
from probe.report.load import Filters
from tests.reportdata import PROBES, certified_fleet, episode_fleet, fleet, record, write_log

pyspark = pytest.importorskip("pyspark", reason="the spark extra: pip install '.[spark]'")
if shutil.which("java") is None and not glob.glob("/usr/lib/jvm/*/bin/java"):
    pytest.skip("Spark needs a Java runtime (default-jre-headless)", allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _episodes(paths: list[Path], filters: Filters, engine: str) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        report = build_report(con, paths, filters, ("en",), engine=engine)
        return [e.as_dict() for e in report.episodes] + [
            {"coverage": report.coverage, "problems": vars(report.problems)}
        ]
    finally:
        close(con)


def _fleet_with_everything(directory: Path) -> Path:
    """The episode fleet, plus what reading must get right: a duplicate and a re-judged copy, a
    line that is no record, a record without an AS, a day across midnight UTC; interceptions carry
    their chains (one of a single certificate), so that the evidence is compared too."""
    certified_fleet(directory)
    fleet(directory / "more")
    late = record("twitter.com", "2020-11-30T23:30:00.000000Z", "AS9198", PROBES[0], "tls_mitm")
    lost = record("twitter.com", "2020-12-07T10:00:00.000000Z", None, PROBES[1], "tls_mitm")
    write_log(directory / "extra.jsonl", [late, lost, late])
    (directory / "extra.jsonl").write_text((directory / "extra.jsonl").read_text() + "not json\n")
    return directory


@pytest.mark.parametrize("filters", [Filters(), Filters(all_confidence=True), Filters(network="AS9198")])
def test_duckdb_and_spark_give_identical_episodes(spark: Any, tmp_path: Path, filters: Filters) -> None:
    logs = _fleet_with_everything(tmp_path / "logs")
    on_duckdb = _episodes([logs], filters, "duckdb")
    on_spark = _episodes([logs], filters, "spark")
    assert len(on_duckdb) > 2  # episodes were found, not two empty lists
    assert len(on_spark) == len(on_duckdb)
    for ours, theirs in zip(on_duckdb, on_spark, strict=True):
        for key in ours:
            assert theirs[key] == ours[key], key
    chains = [e["evidence"]["certificates"] for e in on_spark if e.get("evidence", {}).get("certificates")]
    assert chains and all(c[0]["subject"].startswith("CN=") and c[0]["not_after"] for c in chains)
    alone = [
        e["evidence"]["chain_sha256"] for e in on_spark if e.get("network") == "AS29355" and e["finding"] == "tls_mitm"
    ]
    assert filters.network or (alone and all(len(f) == 1 and len(f[0]) == 64 for f in alone))


def test_the_month_entry_is_the_same_on_both_engines(spark: Any, tmp_path: Path) -> None:
    logs = episode_fleet(tmp_path / "logs")
    since, until = Filters.for_month("2020-12")
    filters = Filters(since=since, until=until, month="2020-12")
    entries = []
    for engine in ("duckdb", "spark"):
        con = duckdb.connect()
        try:
            entries.append(build_report(con, [logs], filters, ("en",), engine=engine).month)
        finally:
            close(con)
    assert entries[0] and entries[0] == entries[1]


def test_parquet_exchange_is_partitioned_and_read_by_duckdb_and_spark(spark: Any, tmp_path: Path) -> None:
    logs = episode_fleet(tmp_path / "logs")
    out = tmp_path / "lake"
    assert main(["report", str(logs), "--format", "parquet", "--out", str(out)]) == 0
    parts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert parts and all(
        p.split("/")[1].startswith("day=") and p.split("/")[2].startswith("network_key=") for p in parts
    )
    assert all(Path(p).name.startswith("part-") for p in parts)
    by_duckdb = duckdb.sql(
        f"SELECT count(*), count(DISTINCT network_key) FROM read_parquet('{out}/measurements/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()[0]
    by_spark = spark.read.parquet(str(out / "measurements")).selectExpr("count(*)", "count(DISTINCT network_key)")
    assert by_duckdb == tuple(by_spark.collect()[0])
    events = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/events/**/*.parquet')").fetchall()[0]
    assert events == (spark.read.parquet(str(out / "events")).count(),)
    assert str(tmp_path) not in " ".join(str(r) for r in spark.read.parquet(str(out / "measurements")).collect())


def test_the_cli_runs_on_spark(spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    assert main(["report", str(logs), "--engine", "spark", "--spark-master", "local[2]", "--format", "json"]) == 0
    assert '"episodes"' in capsys.readouterr().out


def test_duckdb_memory_is_bounded_and_its_folder_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = episode_fleet(tmp_path / "logs")
    private = tmp_path / "tmp"  # this test's own temporary folder: other reports running meanwhile do not count
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    con = duckdb.connect()
    build_report(con, [logs], Filters(), ("en",), memory_limit="200MB")
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("190.7 MiB", "200.0 MB", "200MB")
    made = set(private.glob("probe-report-*"))
    assert len(made) == 1 and (next(iter(made)) / "report.duckdb").exists()
    close(con)
    assert not any(p.exists() for p in made)


def test_a_bad_memory_limit_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    assert main(["report", str(logs), "--memory-limit", "lots", "--format", "json"]) == 2
    assert "--memory-limit 'lots'" in capsys.readouterr().err
