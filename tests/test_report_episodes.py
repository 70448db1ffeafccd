"""`probe report`'s episodes, local days, one row per measurement, filter errors and escaping, on a
fleet with known episodes (tests/reportdata.py: episode_fleet)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import date
from pathlib import Path

import duckdb
import pytest

from probe.cli.main import main
from probe.report.sentences import counted, load_template, when
from probe.vocabulary.anomalies import Anomaly
from tests.reportdata import PROBES, episode_fleet, record, write_log

SECRET = "SECRET-HOME-alice"  # a directory name no output may show


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return episode_fleet(tmp_path / SECRET / "logs")


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["report", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _episodes(report: dict) -> dict[tuple[str, str, str], dict]:
    return {(e["network_key"], e["finding"], e["first_day"]): e for e in report["episodes"]}


def test_each_episode_once_with_its_sites_places_and_days(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, str(logs))
    episodes = _episodes(report)
    assert len(report["episodes"]) == len(episodes) == 6
    first = episodes[("AS9198", "tls_mitm", "2020-12-06")]
    assert (first["last_day"], first["days"]) == ("2020-12-07", ["2020-12-06", "2020-12-07"])
    assert first["sites"] == ["twitter.com", "www.facebook.com"]  # one episode, two sites: not two rows
    assert first["places"] == ["Karaganda", "Nur-Sultan"]  # every place, not the most frequent
    assert (first["measurements"], first["probes"], first["ended_day"]) == (3, 2, "2020-12-10")
    assert len(first["measurement_ids"]) == 3 and first["key"] == "kz-isca-2020"
    # twitter.com seen reachable on 10 December ends it: 19-21 December is a second episode.
    second = episodes[("AS9198", "tls_mitm", "2020-12-19")]
    assert (second["last_day"], second["sites"], second["ended"]) == ("2020-12-21", ["twitter.com"], None)
    assert second["places"] == ["Karaganda", "Nur-Sultan"]


def test_a_gap_with_no_measurement_does_not_end_an_episode(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dns = _episodes(_json(capsys, str(logs)))[("AS21299", "dns", "2020-12-02")]
    assert (dns["last_day"], dns["days"], dns["ended"]) == ("2020-12-05", ["2020-12-02", "2020-12-05"], None)


def test_a_gap_of_reachable_measurements_ends_an_episode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [
        record("dns.example", "2020-12-02T05:00:00Z", "AS21299", PROBES[0], "dns"),
        record("dns.example", "2020-12-03T05:00:00Z", "AS21299", PROBES[0]),
        record("dns.example", "2020-12-05T05:00:00Z", "AS21299", PROBES[0], "dns"),
    ]
    report = _json(capsys, str(write_log(tmp_path / "x.jsonl", records)))
    assert [(e["first_day"], e["last_day"], e["ended_day"]) for e in report["episodes"]] == [
        ("2020-12-02", "2020-12-02", "2020-12-03"),
        ("2020-12-05", "2020-12-05", None),
    ]


def test_sentences_keep_gaps_and_use_plain_words(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, str(logs), "--language", "en", "--language", "ru", "--language", "kk")
    en = [s for s in report["sentences"]["en"] if "AS9198" in s]
    assert en == [
        "From 6 to 7 and from 19 to 21 December 2020, on AS9198 (Kazakhtelecom) in Karaganda and Nur-Sultan, "
        "secure connections to 2 sites (twitter.com and www.facebook.com) were intercepted with certificates "
        "issued by “Information Security Certification Authority CA”, an authority known to be used for "
        "interception, instead of the sites' own. Seen by 2 probes in 5 measurements. Not seen reachable again "
        "before the end of the period."
    ]
    ru = [s for s in report["sentences"]["ru"] if "AS9198" in s]
    assert ru[0].startswith(
        "С 6 по 7 и с 19 по 21 декабря 2020 г. в сети AS9198 («Kazakhtelecom») в Караганде и в Нур-Султане"
    )
    assert "Зафиксировано 2 зондами в 5 измерениях." in ru[0]
    dns_ru = [s for s in report["sentences"]["ru"] if "dns.example" in s]
    assert dns_ru[0].startswith("Со 2 по 5 декабря 2020 г.") and "для 1 сайта (dns.example)" in dns_ru[0]
    kk = [s for s in report["sentences"]["kk"] if "AS9198" in s]
    assert kk[0].startswith("2020 жылғы 6–7 және 19–21 желтоқсанда AS9198") and "Қарағандыда" in kk[0]
    unknown = [s for s in report["sentences"]["en"] if "unknown network" in s]
    assert len(unknown) == 2  # two probes with no AS: two networks, never one
    everything = " ".join(text for found in report["sentences"].values() for text in found)
    codes = [a.value for a in Anomaly] + ["kz-isca", "tls_mitm", "browser", "браузер", "1 probes", "1 networks"]
    assert [code for code in codes if code in everything] == []


def test_plurals_and_dates_in_each_language() -> None:
    en, ru, kk = load_template("en"), load_template("ru"), load_template("kk")
    assert [counted("probe", n, en) for n in (1, 2)] == ["1 probe", "2 probes"]
    assert [counted("site_ins", n, ru) for n in (1, 2, 5, 11, 21, 22)] == [
        "1 сайтом", "2 сайтами", "5 сайтами", "11 сайтами", "21 сайтом", "22 сайтами"]  # fmt: skip
    assert [counted("site", n, ru) for n in (1, 3, 5, 12)] == ["1 сайт", "3 сайта", "5 сайтов", "12 сайтов"]
    assert [counted("probe", n, kk) for n in (1, 7)] == ["1 зонд", "7 зонд"]
    dec = [(date(2020, 12, 6), date(2020, 12, 7)), (date(2020, 12, 19), date(2020, 12, 21))]
    assert when(dec, en) == "From 6 to 7 and from 19 to 21 December 2020"
    assert when([(date(2020, 12, 2), date(2020, 12, 3))], ru) == "Со 2 по 3 декабря 2020 г."
    assert when([(date(2020, 12, 6), date(2020, 12, 6))], en) == "On 6 December 2020"
    assert when([(date(2020, 11, 30), date(2020, 12, 2))], en) == "From 30 November to 2 December 2020"
    assert when([(date(2020, 12, 30), date(2021, 1, 2))], ru) == "С 30 декабря 2020 г. по 2 января 2021 г."


def test_days_are_local_days(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, str(logs))
    assert ("AS29355", "tls_mitm", "2020-12-01") in _episodes(report)  # 2020-11-30T23:30Z in Almaty
    assert report["summary"]["time_zones"] == {"Asia/Almaty": ["AS21299", "AS29355", "AS9198", "unknown"]}
    december = _json(capsys, str(logs), "--month", "2020-12")
    assert december["summary"]["measurements"] == 13
    utc = _json(capsys, str(logs), "--tz", "UTC")
    assert ("AS29355", "tls_mitm", "2020-11-30") in _episodes(utc)
    assert main(["report", str(logs), "--tz", "Mars/Olympus"]) == 2
    assert "not a time zone" in capsys.readouterr().err
    assert main(["report", str(logs), "--month", "2020-11"]) == 2  # nothing in November, Almaty time
    markdown = _text(capsys, str(logs), "--format", "md")
    assert "days are in Asia/Almaty time" in markdown


def test_the_monthly_entry_with_counts_since_january(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _text(capsys, str(logs), "--month", "2020-12", "--format", "text")
    assert "December 2020 (days are in Asia/Almaty time)" in text
    assert (
        "From 6 to 7 and from 19 to 21 December 2020, connections of users of Kazakhtelecom (AS9198) in Karaganda "
        "and Nur-Sultan to 2 sites (twitter.com and www.facebook.com) were intercepted with a substituted security "
        "certificate (“Information Security Certification Authority CA”)."
    ) in text
    assert "From 2 to 5 December 2020, access to 1 site (dns.example) was restricted for users of Kar-Tel" in text
    assert (
        "Since 1 January 2020: 6 episodes of blocking or interception, 6 of which began in December, affected "
        "3 sites on 5 networks." in text
    )
    assert "С 1 января 2020 г. зафиксировано 6 эпизодов блокировки или перехвата в 5 сетях, из них в декабре" in text
    markdown = _text(capsys, str(logs), "--month", "2020-12", "--format", "md")
    assert "## Monthly entry (ru)" in markdown


def _text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


def test_one_row_per_measurement_id(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = logs / "fleet.jsonl"
    log.with_name("fleet.jsonl.gz").write_bytes(gzip.compress(log.read_bytes()))
    report = _json(capsys, str(logs))
    assert report["summary"]["measurements"] == 13
    assert _episodes(report)[("AS9198", "tls_mitm", "2020-12-06")]["measurements"] == 3
    assert any("13 copies of records read more than once" in p for p in report["summary"]["problems"])


def test_the_newest_rejudged_copy_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """x.analyzed-A.jsonl and x.analyzed-A.analyzed-B.jsonl beside x.jsonl: each record once, as B judged it."""
    original = [record("twitter.com", f"2020-12-0{d}T05:00:00Z", "AS9198", PROBES[0], "tls_mitm", confirmed=False)
                for d in (6, 7)]  # fmt: skip
    first = [{**r, "confidence": "confirmed", "rejudged": {"at": "2020-12-10T00:00:00.000000Z"}} for r in original]
    newest = [{**r, "blocking": "none", "anomalies": [], "interceptor": None,
               "rejudged": {"at": "2020-12-11T00:00:00.000000Z"}} for r in first]  # fmt: skip
    write_log(tmp_path / "x.jsonl", original)
    write_log(tmp_path / "x.analyzed-20201210T000000Z.jsonl", first)
    write_log(tmp_path / "x.analyzed-20201210T000000Z.analyzed-20201211T000000Z.jsonl", newest)
    report = _json(capsys, str(tmp_path))
    assert report["summary"]["measurements"] == 2
    assert report["summary"]["verdicts"] == {"none": 2}
    assert report["episodes"] == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--network", "AS1"], "--network AS1: no records of that network; there are: AS9198 (Kazakhtelecom)"),
        (["--target", "nowhere.example"], "--target nowhere.example: no records of that target; there are: "
                                          "clean.example, dns.example, twitter.com, www.facebook.com"),
        (["--since", "2020-12-09", "--until", "2020-12-01"], "--since 2020-12-09 is after --until 2020-12-01"),
        (["--since", "2021-01-01"], "no records from 2021-01-01 to the end (local days); the records cover "
                                    "2020-12-01 to 2020-12-21"),
        (["--network", "AS21299", "--target", "twitter.com"], "no records of that target on that network"),
    ],
)  # fmt: skip
def test_filters_that_match_nothing_say_what_there_is(
    logs: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    assert main(["report", str(logs), *args]) == 2
    assert said in capsys.readouterr().err


def test_a_network_by_its_name(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(capsys, str(logs), "--network", "kazakhtelecom")
    assert {e["network"] for e in report["episodes"]} == {"AS9198"}


def test_unreadable_input_is_named_with_its_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / SECRET
    folder.mkdir()
    (folder / "garbage.jsonl").write_text("hello\nworld\n", encoding="utf-8")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "no records could be read: 2 lines are not records" in err and "garbage.jsonl:2: not JSON" in err
    (folder / "garbage.jsonl").unlink()
    (folder / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"schema_version": 2}\n' * 50)[:40])
    write_log(folder / "good.jsonl", [record("a.example", "2020-12-01T05:00:00Z", "AS9198", PROBES[0])])
    report = _json(capsys, str(folder))
    (problem,) = [p for p in report["summary"]["problems"] if "cut.jsonl.gz" in p]
    assert "could not be read" in problem and "EOFError" in problem
    assert SECRET not in json.dumps(report)


@pytest.mark.parametrize("bad", [3, 25])
def test_n_lines_are_not_records_names_exactly_n(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: int) -> None:
    good = json.dumps(record("a.example", "2020-12-01T05:00:00Z", "AS9198", PROBES[0]))
    lines = [good] + ["{not json", '{"a": 1}', '{"schema_version": 2, "measurement_start_time": "never"}'] * 9
    log = tmp_path / "x.jsonl"
    log.write_text("\n".join(lines[: bad + 1]) + "\n", encoding="utf-8")
    log.with_name("x.jsonl.gz").write_bytes(gzip.compress(log.read_bytes()))  # the same lines twice over
    report = _json(capsys, str(tmp_path))
    (message,) = [p for p in report["summary"]["problems"] if "are not records" in p]
    assert report["summary"]["skipped_lines"] == 2 * bad
    assert message.startswith(f"{2 * bad} lines are not records")
    assert message.count("x.jsonl") == min(2 * bad, 20)
    assert (f"and {2 * bad - 20} more" in message) == (2 * bad > 20)


EVIL = "=cmd|' /C calc'!A0 <script>alert(1)</script> | *bold* `tick`\nnext line"


def test_markdown_and_csv_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = record("twitter.com", "2020-12-06T05:00:00Z", "AS9198", PROBES[0], "tls_mitm", region="@SUM(1)")
    evil["interceptor"].update(issuer=EVIL, catalog_id=None)
    log = write_log(tmp_path / "x.jsonl", [evil])
    markdown = _text(capsys, str(log), "--format", "md")
    assert "<script>" not in markdown and "\\<script\\>" in markdown
    assert "\\*bold\\*" in markdown and "\\`tick\\`" in markdown and "next line" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| e-")]
    assert len(table) == 1 and table[0].count(" | ") == 9  # the issuer's | broke no column
    rows = list(csv.DictReader(io.StringIO(_text(capsys, str(log), "--format", "csv"))))
    assert rows[0]["issuer"] == "'" + EVIL and rows[0]["places"] == "'@SUM(1)"
    for row in rows:
        assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())
    page = tmp_path / "page.html"
    assert main(["report", str(log), "--out", str(page)]) == 0
    assert "<script>alert" not in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["html", "md", "csv", "json", "text", "parquet"])
def test_no_local_path_in_any_output(logs: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    (logs / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    (logs / "cut.jsonl.gz").write_bytes(b"\x1f\x8b broken")
    out = tmp_path / f"out.{fmt}"
    assert main(["report", str(logs), "--format", fmt, "--out", str(out), "--month", "2020-12"]) == 0
    if fmt == "parquet":
        text = str(duckdb.sql(f"SELECT * FROM read_parquet('{out}/*/*/*/*.parquet', union_by_name = true)").fetchall())
    else:
        text = out.read_text(encoding="utf-8")
    assert "bad.jsonl" in text or fmt in ("csv", "text", "parquet")  # problems are named, by the folder's names
    assert SECRET not in text and str(tmp_path) not in text


def test_kazakhstan_moved_to_utc_plus_5_in_march_2024(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Clocks went back at midnight on 1 March 2024: 18:30Z is 23:30 the same day from 29 February on
    (UTC+5), where UTC+6 would make it 00:30 the next day."""
    records = [
        record("dns.example", "2024-02-29T18:30:00Z", "AS9198", PROBES[0], "dns"),
        record("dns.example", "2024-03-01T18:30:00Z", "AS9198", PROBES[0], "dns"),
    ]
    report = _json(capsys, str(write_log(tmp_path / "x.jsonl", records)))
    assert report["episodes"][0]["days"] == ["2024-02-29", "2024-03-01"]
