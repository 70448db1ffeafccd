"""`probe report`'s words as an analyst trial read them (issue 23): unconfirmed findings said as
suspected and kept out of the monthly entry, whole dates, plurals, zones said in each language,
counts that read as they mean, no Python value in prose, and an empty result said in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.cli.main import main
from tests.reportdata import PROBES, episode_fleet, fleet, record, write_log

ALL_LANGUAGES = ["--language", "en", "--language", "ru", "--language", "kk"]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    return json.loads(_run(capsys, *args, "--format", "json"))


def test_unconfirmed_findings_are_said_as_suspected_and_left_out_of_the_monthly_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = fleet(tmp_path / "logs")  # tcp.example on AS29355: an unconfirmed TCP timeout
    report = _json(capsys, str(logs), "--all-confidence", "--month", "2020-12", *ALL_LANGUAGES)  # fmt: skip
    suspected = {language: [s for s in found if "tcp.example" in s] for language, found in report["sentences"].items()}
    assert "it is suspected, but not confirmed, that connections to 1 site (tcp.example)" in suspected["en"][0]
    assert "возможно (это не подтверждено)" in suspected["ru"][0]
    assert "мүмкін (бұл расталмаған)" in suspected["kk"][0]
    confirmed = [s for s in report["sentences"]["en"] if "twitter.com" in s]
    assert confirmed and "suspected" not in confirmed[0]
    for language, paragraphs in report["month"].items():
        assert not any("tcp.example" in p for p in paragraphs), language
    assert "Since 1 January 2020: 3 episodes" in report["month"]["en"][-1]  # the unconfirmed one left out


def test_the_counts_since_january_say_which_number_is_what(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    late = record("dns.example", "2020-11-10T05:00:00Z", "AS21299", PROBES[2], "dns", region="Almaty")
    again = record("dns.example", "2020-11-20T05:00:00Z", "AS21299", PROBES[2], region="Almaty")  # ends it
    write_log(tmp_path / "logs" / "november.jsonl", [late, again])
    text = _run(capsys, str(logs), "--month", "2020-12", "--format", "text", *ALL_LANGUAGES)  # fmt: skip
    assert (
        "Since 1 January 2020: 7 episodes of blocking or interception, 6 of which began in December, affected "
        "3 sites on 5 networks." in text
    )
    assert "зафиксировано 7 эпизодов блокировки или перехвата в 5 сетях, из них в декабре начались: 6; " in text
    assert "оның ішінде желтоқсанда басталғаны: 6; зардап шеккен сайттар саны: 3." in text
    one = _run(capsys, str(logs), "--month", "2020-12", "--network", "AS29355", "--format", "text", "--language", "en",
               "--language", "ru")  # fmt: skip
    assert (
        "Since 1 January 2020: 1 episode of blocking or interception, which began in December, affected 1 site "
        "on 1 network." in one
    )
    assert "С 1 января 2020 г. зафиксирован 1 эпизод блокировки или перехвата в 1 сети (он начался в декабре)" in one
    before = _run(capsys, str(logs), "--month", "2020-12", "--network", "AS21299", "--target", "dns.example",
                  "--format", "text", "--language", "en")  # fmt: skip
    assert (
        "2 episodes of blocking or interception, 1 of which began in December, affected 1 site on 1 network" in before
    )


def test_counts_in_the_markdown_and_on_the_command_line_use_plurals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = episode_fleet(tmp_path / "logs")
    markdown = _run(capsys, str(logs), "--network", "AS29355", "--format", "md")
    assert "Measurements: 1 by 1 probe, of 1 target, on 1 network, in Almaty." in markdown
    assert "| TLS interception | 1 | 1 | 1 | 1 | 0 |" in markdown
    out = tmp_path / "page.html"
    assert main(["report", str(logs), "--network", "AS29355", "--out", str(out)]) == 0
    assert "1 episode from 1 measurement; written to" in capsys.readouterr().err


def test_kinds_have_one_name_in_the_page_and_the_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    markdown = _run(capsys, str(logs), "--format", "md")
    assert "| false DNS answers | 1 |" in markdown and "DNS manipulation" not in markdown


def test_every_measurement_lands_in_one_coverage_column_and_the_matrix_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = fleet(tmp_path / "logs")  # AS29355: an antivirus (mail.example), an unconfirmed block (tcp.example)
    report = _json(capsys, str(logs))
    columns = ("reachable", "blocked_confirmed", "blocked_unconfirmed", "failed", "offline", "local_interception")
    assert all(c["measured"] == sum(c[k] for k in columns) for c in report["coverage"])
    assert sum(c["local_interception"] for c in report["coverage"]) == 1
    cells = {(c["target"], c["network"]): c for c in report["matrix"]["cells"]}
    assert (cells[("mail.example", "AS29355")]["finding"], cells[("mail.example", "AS29355")]["count"]) == (
        "local_interception", 1)  # fmt: skip
    assert (cells[("tcp.example", "AS29355")]["finding"], cells[("tcp.example", "AS29355")]["count"]) == (
        "blocked_unconfirmed", 1)  # fmt: skip
    page = tmp_path / "page.html"
    assert main(["report", str(logs), "--out", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert "own interception (antivirus) <small>1/1</small>" in html
    assert "blocked, unconfirmed <small>1/1</small>" in html
    markdown = _run(capsys, str(logs), "--format", "md")
    assert "| volunteer's own interception |" in markdown.replace("\\'", "'")


def test_after_analyze_the_report_says_what_it_set_aside_and_ids_stay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """x.jsonl, x.jsonl.gz and x.analyzed-A.jsonl in one folder: two files set aside, the records said
    re-judged; an episode whose measurements changed keeps its id (network, kind, key, first day)."""
    import gzip

    times = ("2020-12-06T05:00:00Z", "2020-12-06T06:00:00Z", "2020-12-07T05:00:00Z")
    original = [record("twitter.com", t, "AS9198", PROBES[0], "tls_mitm") for t in times]
    before = _json(capsys, str(write_log(tmp_path / "before" / "x.jsonl", original).parent))
    write_log(tmp_path / "x.jsonl", original)
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress((tmp_path / "x.jsonl").read_bytes()))
    at = {"at": "2020-12-10T00:00:00.000000Z"}
    # the episode's first measurement is re-judged away: it starts the same day, with another first one
    rejudged = [{**original[0], "blocking": "none", "anomalies": [], "interceptor": None, "rejudged": at},
                *({**r, "rejudged": at} for r in original[1:])]  # fmt: skip
    write_log(tmp_path / "x.analyzed-20201210T000000Z.jsonl", rejudged)
    assert main(["report", str(tmp_path / "x.jsonl"), str(tmp_path / "x.analyzed-20201210T000000Z.jsonl"),
                 "--format", "json"]) == 0  # fmt: skip
    problems = json.loads(capsys.readouterr().out)["summary"]["problems"]
    assert any("3 measurements were re-judged by `probe analyze`" in p for p in problems)
    (folder := tmp_path / "folder").mkdir()
    for name in ("x.jsonl", "x.jsonl.gz", "x.analyzed-20201210T000000Z.jsonl"):
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    after = _json(capsys, str(folder))
    problems = after["summary"]["problems"]
    assert any(p.startswith("2 files were set aside: a re-judged copy of each") for p in problems)
    assert any("3 measurements were re-judged" in p for p in problems)
    assert after["summary"]["measurements"] == 3 and after["episodes"][0]["measurements"] == 2
    assert after["episodes"][0]["first_day"] == before["episodes"][0]["first_day"] == "2020-12-06"
    assert after["episodes"][0]["id"] == before["episodes"][0]["id"]


def test_a_network_and_a_target_never_measured_together_is_said_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = episode_fleet(tmp_path / "logs")
    assert main(["report", str(logs), "--network", "AS21299", "--target", "twitter.com"]) == 2
    err = capsys.readouterr().err
    assert "None" not in err
    assert (
        "--network AS21299 --target twitter.com: no records of that target on that network; its targets are: "
        "clean.example, dns.example" in err
    )


def test_sentences_with_no_finding_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    text = _run(capsys, str(logs), "--target", "clean.example", "--format", "text", "--language", "en",
                "--language", "ru")  # fmt: skip
    assert text.split("\n\n") == [
        "On 3 December 2020, no confirmed blocking or interception was recorded.",
        "3 декабря 2020 г. подтверждённых блокировок и перехвата не зафиксировано.\n",
    ]


def test_a_single_day_among_ranges_is_never_a_bare_number() -> None:
    from datetime import date

    from probe.report.sentences import load_template, when

    ranges = [(date(2020, 12, 1), date(2020, 12, 1)), (date(2020, 12, 6), date(2020, 12, 7)),
              (date(2020, 12, 19), date(2020, 12, 21))]  # fmt: skip
    assert when(ranges, load_template("en")) == "On 1 December, from 6 to 7 December and from 19 to 21 December 2020"
    assert when(ranges, load_template("ru")) == "1 декабря, с 6 по 7 декабря и с 19 по 21 декабря 2020 г."
    assert when(ranges, load_template("kk")) == "2020 жылғы 1, 6–7 және 19–21 желтоқсанда"  # the month ends the list
    assert when(ranges[1:], load_template("en")) == "From 6 to 7 and from 19 to 21 December 2020"


def test_zones_are_said_in_each_language_with_probes_with_no_network_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = episode_fleet(tmp_path / "logs")
    lost = record("twitter.com", "2020-12-09T05:00:00Z", None, PROBES[12], "tls_mitm")
    lost["network"]["country"] = None  # no AS, no country: its days are UTC days, and the page says so
    write_log(tmp_path / "logs" / "lost.jsonl", [lost])
    report = _json(capsys, str(logs), "--month", "2020-12", *ALL_LANGUAGES)
    assert report["summary"]["time_zones"]["UTC"] == ["unknown"]
    assert report["month"]["en"][0] == (
        "December 2020 (days are in each network's local time: Asia/Almaty (AS21299, AS29355, AS9198, probes with "
        "no network recorded); UTC (probes with no network recorded))"
    )
    assert "UTC (зонды без сведений о сети)" in report["month"]["ru"][0] and "unknown" not in report["month"]["ru"][0]
    assert "UTC (желісі белгісіз зондтар)" in report["month"]["kk"][0]
    page = tmp_path / "page.html"
    assert main(["report", str(logs), "--language", "ru", "--out", str(page)]) == 0
    assert "UTC (зонды без сведений о сети)" in page.read_text(encoding="utf-8")
    utc = _run(capsys, str(logs), "--tz", "UTC", "--month", "2020-12", "--format", "text", "--language", "en")
    assert utc.startswith("December 2020 (days are in UTC)")


def test_no_internal_key_or_raw_code_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A probe with no AS is named and chosen as the page names it; a handshake, a connection and a
    catalog match are said in words in each language; links cut short say how many are left."""
    logs = episode_fleet(tmp_path / "logs")
    assert main(["report", str(logs), "--network", "AS1"]) == 2
    err = capsys.readouterr().err
    assert "unknown network (probe 0000000b)" in err and "unknown:" not in err.replace("unknown:<", "")
    only = _json(capsys, str(logs), "--network", "unknown:0000000b")
    assert {e["network_key"] for e in only["episodes"]} == {"unknown:" + PROBES[10]}
    markdown = _run(capsys, str(logs), "--format", "md")
    assert "unknown:0000" not in markdown and "| unknown network (probe 0000000b) | 2020-12-08 |" in markdown
    handshakes = [
        {"purpose": "target", "server_name": "blocked.example", "failure": "connection_reset", "peer_certificates": []},
        {"purpose": "control_sni", "server_name": "example.org", "failure": None, "peer_certificates": []},
    ]
    records = []
    for n in range(25):
        r = record("blocked.example", f"2020-12-09T05:{n:02d}:00Z", "AS9198", PROBES[0], "tcp")
        r["blocking"], r["anomalies"] = "tls", ["tls.reset"]
        r["observations"]["tls_handshakes"] = handshakes
        records.append(r)
    write_log(tmp_path / "logs" / "tls.jsonl", records)
    page = tmp_path / "page.html"
    for language, said in (
        ("en", ("handshake with the site&#x27;s name (blocked.example): connection reset",
                "handshake with a control name (example.org): completed", "matched by the certificate")),
        ("ru", ("рукопожатие с именем сайта (blocked.example): соединение сброшено", "совпадение по отпечатку",
                "<th>Доступен</th>")),
        ("kk", ("қол алысу бақылау атауымен (example.org): аяқталды", "сәйкестік: сертификат саусақ ізі")),
    ):  # fmt: skip
        assert main(["report", str(logs), "--language", language, "--out", str(page)]) == 0
        html = page.read_text(encoding="utf-8")
        assert all(words in html for words in said), language
        assert "control_sni" not in html and "connection_reset" not in html and "issuer name" not in html
    assert "and 5 more" in page.read_text(encoding="utf-8").replace("және тағы 5", "and 5 more")


def test_tables_by_target_and_network_count_what_varies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = episode_fleet(tmp_path / "logs")
    markdown = _run(capsys, str(logs), "--format", "md")
    assert "| target | measurements | findings | networks blocked | probes |" in markdown
    assert "| network | measurements | findings | sites blocked | probes |" in markdown
    assert "| twitter.com | 8 | 7 | 4 | 5 |" in markdown  # AS9198, AS29355 and two probes with no AS
