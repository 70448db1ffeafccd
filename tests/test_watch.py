"""`probe watch` (issue 23, part 4): alerts when a blocking episode starts and ends, from a fleet log
with known episodes, delivered to a real HTTP receiver on 127.0.0.1 and an Atom file, once each,
across restarts and failed deliveries; a folder store and an S3 store (moto's server)."""

from __future__ import annotations

import gzip
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from probe.cli.main import main
from probe.report.alert_text import render
from probe.report.alerting import Detector, signal_of
from probe.report.changepoint import Cusum
from tests import test_upload_faults
from tests.reportdata import PROBES, record, write_log

SITES = [f"site{n:02d}.example" for n in range(12)]
DNS_SITES = ["news.example", "video.example"]
ISCA_NAME = "Information Security Certification Authority CA (December 2020)"
ATOM = "{http://www.w3.org/2005/Atom}"
START = datetime(2020, 12, 6, 0, 0)


def _at(hour: int, minute: int = 0) -> str:
    return (START + timedelta(hours=hour, minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mark(rec: dict[str, Any], blocking: str) -> dict[str, Any]:
    """A record that is no evidence either way (offline, inconclusive)."""
    rec["blocking"], rec["confidence"], rec["anomalies"], rec["interceptor"] = blocking, "unconfirmed", [], None
    return rec


def fleet(hours: range) -> list[dict[str, Any]]:
    """Known episodes, one measurement of every site an hour, probes taking turns:
    - AS9198: the 12 sites intercepted (ISCA) from hour 6 to hour 17 (reachable again from hour 18),
      with one reachable measurement of site00 amid it (hour 10) and, from hour 12 to 14, every
      record offline or inconclusive; one lone blocked measurement of site01 at hour 2;
    - AS21299: two sites blocked by DNS from hour 8 to hour 14;
    - AS29355: an unconfirmed interception all day (never an alert)."""
    records = []
    for hour in hours:
        probe = PROBES[hour % 3]
        for n, site in enumerate(SITES):
            blocked = 6 <= hour <= 17 and not (site == "site00.example" and hour == 10)
            blocked = blocked or (site == "site01.example" and hour == 2)
            rec = record(site, _at(hour, n), "AS9198", probe, "tls_mitm" if blocked else "none", region="Nur-Sultan")
            if hour in (12, 13, 14):
                _mark(rec, "offline" if n % 2 else "inconclusive")
            records.append(rec)
        for site in DNS_SITES:
            finding = "dns" if 8 <= hour <= 14 else "none"
            records.append(record(site, _at(hour, 30), "AS21299", PROBES[5], finding, region="Almaty"))
        records.append(record("mail.example", _at(hour, 40), "AS29355", PROBES[6], "tls_mitm", confirmed=False))
    return records


class Receiver:
    """A webhook receiver: keeps every POST's JSON body and answers the next status in `answers`
    (200 when none is left)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.taken: list[dict[str, Any]] = []  # the posts answered 200
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                status = outer.answers.pop(0) if outer.answers else 200
                outer.posts.append(body)
                if status == 200:
                    outer.taken.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def _watch(store: Path | str, state: Path, *extra: str) -> int:
    return main(["watch", str(store), "--once", "--state", str(state), *extra])


def _kinds(posts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(p["type"], p["network"], p["blocking"]) for p in posts]


def test_one_alert_per_episode_start_and_end_naming_its_sites(tmp_path: Path, receiver: Receiver) -> None:
    write_log(tmp_path / "results" / "node-a.jsonl", fleet(range(24)))
    code = _watch(tmp_path / "results", tmp_path / "state.json", "--webhook", receiver.url, "--tries", "1")
    assert code == 0
    assert sorted(_kinds(receiver.taken)) == [
        ("end", "AS21299", "dns"), ("end", "AS9198", "tls_mitm"),
        ("start", "AS21299", "dns"), ("start", "AS9198", "tls_mitm"),
    ]  # fmt: skip
    by = {(p["type"], p["network"]): p for p in receiver.taken}
    start, end = by[("start", "AS9198")], by[("end", "AS9198")]
    assert start["sites"] == SITES, "the 12 sites intercepted together are one alert"
    assert end["sites"] == SITES
    assert start["since"].startswith("2020-12-06T06:"), "the onset is the first blocked measurement"
    assert end["until"].startswith("2020-12-06T18:"), "the end is the first reachable measurement"
    assert start["places"] == ["Nur-Sultan"] and start["probes"] == 3 and start["time_zone"] == "Asia/Almaty"
    assert by[("start", "AS21299")]["sites"] == DNS_SITES
    text = start["text"]
    assert f"intercepted with a substituted certificate ({ISCA_NAME})" in text
    assert "12 sites have been" in text and "since 6 December 2020, 12:00 (Asia/Almaty, UTC+6)," in text
    assert "tls_mitm" not in text and "kz-isca" not in text
    assert "blocked by DNS" in by[("start", "AS21299")]["text"]
    assert [p["id"] for p in receiver.taken] == sorted({p["id"] for p in receiver.taken}, key=[
        p["id"] for p in receiver.taken].index), "no alert twice"  # fmt: skip


def test_a_restart_delivers_nothing_twice_and_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    log, state = tmp_path / "results" / "node-a.jsonl", tmp_path / "state.json"
    hook = ("--webhook", receiver.url)
    write_log(log, fleet(range(12)))
    assert _watch(log.parent, state, *hook) == 0
    assert sorted(_kinds(receiver.taken)) == [("start", "AS21299", "dns"), ("start", "AS9198", "tls_mitm")]
    assert _watch(log.parent, state, *hook) == 0, "the same store again"
    assert len(receiver.posts) == 2, "a restart sends nothing twice"
    # The file grows (the rest of the day), and a copy of its first half arrives compressed.
    later = fleet(range(12, 24))
    with log.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in later))
    copy = log.parent / "copy.jsonl.gz"
    copy.write_bytes(gzip.compress("".join(log.read_text("utf-8").splitlines(keepends=True)[:100]).encode()))
    assert _watch(log.parent, state, *hook) == 0
    assert sorted(_kinds(receiver.taken)) == [
        ("end", "AS21299", "dns"), ("end", "AS9198", "tls_mitm"),
        ("start", "AS21299", "dns"), ("start", "AS9198", "tls_mitm"),
    ]  # fmt: skip
    assert len(receiver.posts) == 4
    saved = json.loads(state.read_text("utf-8"))
    assert saved["files"]["node-a.jsonl"]["offset"] == log.stat().st_size, "the next round starts where this ended"
    assert not saved["keys"] and not saved["episodes"], "every episode ended: nothing left building"


def test_a_line_being_written_waits_for_its_newline(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    log, state = tmp_path / "results" / "node-a.jsonl", tmp_path / "state.json"
    lines = [json.dumps(r) + "\n" for r in fleet(range(24))]
    whole = "".join(lines)
    cut = len("".join(lines[:150])) + 40  # in the middle of a record
    log.parent.mkdir()
    log.write_text(whole[:cut], encoding="utf-8")
    assert _watch(log.parent, state, "--webhook", receiver.url) == 0
    log.write_text(whole, encoding="utf-8")
    assert _watch(log.parent, state, "--webhook", receiver.url) == 0
    assert len(receiver.taken) == 4 and len({p["id"] for p in receiver.taken}) == 4
    err = capsys.readouterr().err
    used = sum(int(n) for n in re.findall(r"(\d+) measurements as evidence", err))
    assert "not read" not in err and used == 24 * 14 - 3 * 12, "half a line is neither lost nor bad"


def test_a_failed_delivery_is_tried_again_next_round(tmp_path: Path, receiver: Receiver) -> None:
    write_log(tmp_path / "results" / "node-a.jsonl", fleet(range(24)))
    state = tmp_path / "state.json"
    hook = ("--webhook", receiver.url, "--tries", "1")
    receiver.answers = [500]
    assert _watch(tmp_path / "results", state, *hook) == 7, "a failed delivery is said in the exit code"
    assert len(receiver.posts) == 1 and not receiver.taken, "later alerts wait behind the one that failed"
    pending = [a for a in json.loads(state.read_text("utf-8"))["alerts"] if not a["delivered"]]
    assert len(pending) == 4
    assert _watch(tmp_path / "results", state, *hook) == 0
    assert len(receiver.taken) == 4 and len({p["id"] for p in receiver.taken}) == 4
    assert receiver.taken[0]["id"] == receiver.posts[0]["id"], "the failed one first, in order"
    assert _watch(tmp_path / "results", state, *hook) == 0
    assert len(receiver.posts) == 5


def test_the_atom_feed_parses_with_stable_entries(tmp_path: Path) -> None:
    log, state, feed = tmp_path / "results" / "a.jsonl", tmp_path / "state.json", tmp_path / "alerts.xml"
    write_log(log, fleet(range(12)))
    assert _watch(log.parent, state, "--atom", str(feed)) == 0
    first = ET.parse(feed).getroot()
    assert first.tag == f"{ATOM}feed"
    assert first.findtext(f"{ATOM}id", "").startswith("urn:kz-probe:watch:")
    assert first.findtext(f"{ATOM}updated") and first.find(f"{ATOM}author/{ATOM}name") is not None
    entries = first.findall(f"{ATOM}entry")
    assert len(entries) == 2
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    with log.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in fleet(range(12, 24))))
    assert _watch(log.parent, state, "--atom", str(feed)) == 0
    second = ET.parse(feed).getroot()
    assert second.findtext(f"{ATOM}id") == first.findtext(f"{ATOM}id")
    entries = second.findall(f"{ATOM}entry")
    assert len(entries) == 4
    assert set(ids) <= {e.findtext(f"{ATOM}id") for e in entries}, "an entry keeps its id"
    for entry in entries:
        assert entry.findtext(f"{ATOM}title") and entry.findtext(f"{ATOM}updated")
        assert entry.findtext(f"{ATOM}id", "").startswith("urn:kz-probe:alert:")
    titles = [e.findtext(f"{ATOM}title", "") for e in entries]
    assert sum(t.startswith("Blocking ended on AS9198 (Kazakhtelecom)") for t in titles) == 1


def test_slack_telegram_and_russian_bodies(tmp_path: Path, receiver: Receiver) -> None:
    write_log(tmp_path / "results" / "a.jsonl", fleet(range(12)))
    assert _watch(tmp_path / "results", tmp_path / "s1.json", "--webhook", receiver.url,
                  "--webhook-format", "slack") == 0  # fmt: skip
    assert all(list(p) == ["text"] for p in receiver.taken) and len(receiver.taken) == 2
    assert any(
        "Started: on AS9198 (Kazakhtelecom), since 6 December 2020, 12:00 (Asia/Almaty, UTC+6), 12 sites" in p["text"]
        for p in receiver.taken
    )
    receiver.taken.clear()
    assert _watch(tmp_path / "results", tmp_path / "s2.json", "--webhook", receiver.url, "--webhook-format",
                  "telegram", "--chat-id", "-100123", "--language", "ru") == 0  # fmt: skip
    assert all(p["chat_id"] == "-100123" and p["text"] for p in receiver.taken)
    text = next(p["text"] for p in receiver.taken if "AS9198" in p["text"])
    assert text.startswith("Началось: в сети AS9198 («Kazakhtelecom») с 6 декабря 2020 г., 12:00 (Asia/Almaty, UTC+6)")
    assert "перехват соединений с подменой сертификата" in text and "12 сайтов: site00.example" in text
    receiver.taken.clear()
    assert _watch(tmp_path / "results", tmp_path / "s3.json", "--webhook", receiver.url, "--tz", "Europe/Moscow") == 0
    assert all(p["time_zone"] == "Europe/Moscow" for p in receiver.taken) and len(receiver.taken) == 2
    assert any("since 6 December 2020, 09:00 (Europe/Moscow, UTC+3)" in p["text"] for p in receiver.taken)


def test_bad_input_is_said_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    assert _watch(tmp_path / "missing", state, "--atom", str(tmp_path / "f.xml")) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    assert _watch(tmp_path / "results", state, "--atom", "f.xml", "--language", "xx") == 2
    assert "there are: en, kk, ru" in capsys.readouterr().err
    feed = str(tmp_path / "f.xml")
    assert _watch(tmp_path / "results", tmp_path / "kk.json", "--atom", feed, "--language", "kk") == 0
    assert _watch(tmp_path / "results", state, "--atom", str(tmp_path / "f.xml"), "--tz", "Mars/Olympus") == 2
    assert "--tz 'Mars/Olympus': not a time zone" in capsys.readouterr().err
    assert _watch(tmp_path / "results", state) == 2
    assert "nowhere to deliver" in capsys.readouterr().err
    state.write_text("{not json", encoding="utf-8")
    assert _watch(tmp_path / "results", state, "--atom", str(tmp_path / "f.xml")) == 2
    err = capsys.readouterr().err
    assert "not a probe watch state file" in err and "Traceback" not in err


def test_two_watchers_never_share_a_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import fcntl

    (tmp_path / "results").mkdir()
    state = tmp_path / "state.json"
    with open(tmp_path / "state.json.lock", "a", encoding="utf-8") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _watch(tmp_path / "results", state, "--atom", str(tmp_path / "f.xml")) == 6
    assert "another probe watch is using this state file" in capsys.readouterr().err
    assert _watch(tmp_path / "results", state, "--atom", str(tmp_path / "f.xml")) == 0


def test_one_measurement_against_the_state_does_not_flap() -> None:
    """A lone blocked measurement amid reachable ones, and a lone reachable one amid blocked ones,
    change nothing; three in a row (the default evidence) do."""
    cusum, h = Cusum(), 1.0
    steps = [True, False, False, True, True, False, True, True, True]
    changes = [cusum.step(b, START + timedelta(hours=i), h) for i, b in enumerate(steps)]
    assert changes == [None] * 7 + ["onset", None], "blocked outnumber reachable by 3 since the sum rested"
    assert cusum.state == "blocked"
    more = [False, True, False, False, True, False, False]
    changes = [cusum.step(b, START + timedelta(hours=20 + i), h) for i, b in enumerate(more)]
    assert changes == [None] * 6 + ["end"]
    assert cusum.state == "ok"


def test_records_that_are_no_evidence_neither_start_nor_end() -> None:
    detector = Detector({}, 3, timedelta(hours=6))
    for hour in range(6):
        rec = record("a.example", _at(hour), "AS9198", PROBES[0], "tls_mitm")
        detector.feed(signal_of(rec))  # type: ignore[arg-type]
    for hour in range(6, 30):
        rec = _mark(record("a.example", _at(hour), "AS9198", PROBES[0]), "offline" if hour % 2 else "inconclusive")
        assert signal_of(rec) is None
        unconfirmed = record("a.example", _at(hour, 5), "AS9198", PROBES[1], "tcp", confirmed=False)
        assert signal_of(unconfirmed) is None
    alerts = detector.finish()
    assert [a["type"] for a in alerts] == ["start"]


# The object store is the upload tests' own: moto's server on 127.0.0.1 with one bucket, `monitoring`
# (the fixture keeps its name, `store`, wherever it is bound).
store = test_upload_faults.store
_client = test_upload_faults._client


def _put(port: int, key: str, records: list[dict[str, Any]], compress: bool = False) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    _client(port).put_object(Bucket="monitoring", Key=key, Body=gzip.compress(data) if compress else data)


def test_an_s3_store_as_probe_upload_writes_it(store: int, tmp_path: Path, receiver: Receiver) -> None:
    prefix = "fleet/" + "ab" * 16 + "/2020/12/06/"
    day = fleet(range(24))
    half = len(SITES + DNS_SITES) * 12 + 12  # hours 0 to 11
    _put(store, prefix + "20201206T000000Z-run.jsonl", day[:half])
    _put(store, "elsewhere/20201206T000000Z-run.jsonl", fleet(range(24)))  # not under the prefix
    args = ("--webhook", receiver.url, "--endpoint", f"http://127.0.0.1:{store}")
    state = tmp_path / "state.json"
    assert _watch("s3://monitoring/fleet", state, *args) == 0
    assert sorted(_kinds(receiver.taken)) == [("start", "AS21299", "dns"), ("start", "AS9198", "tls_mitm")]
    assert _watch("s3://monitoring/fleet", state, *args) == 0
    assert len(receiver.posts) == 2
    # The object grows (uploaded again, whole); a compressed copy of the whole day arrives too.
    _put(store, prefix + "20201206T000000Z-run.jsonl", day)
    _put(store, prefix + "copy.jsonl.gz", day, compress=True)
    assert _watch("s3://monitoring/fleet", state, *args) == 0
    assert sorted(_kinds(receiver.taken))[:2] == [("end", "AS21299", "dns"), ("end", "AS9198", "tls_mitm")]
    assert len(receiver.posts) == 4
    saved = json.loads(state.read_text("utf-8"))
    assert set(saved["files"]) == {prefix + "20201206T000000Z-run.jsonl", prefix + "copy.jsonl.gz"}


def _alerts(records: list[dict[str, Any]], tz: str | None = None) -> list[dict[str, Any]]:
    detector = Detector({}, 3, timedelta(hours=6), tz)
    for signal in sorted(filter(None, map(signal_of, records)), key=lambda s: (s.time, s.measurement_id)):
        detector.feed(signal)
    return detector.finish()


def _regional(network: str | None, places: dict[str, str], sites: list[str], blocked_at: set[str],
              days: range) -> list[dict[str, Any]]:  # fmt: skip
    """Every probe in `places` measures every site four times a day; those at `blocked_at` are
    intercepted from day 1 to day 3 of `days`, the others always see the sites reachable."""
    records = []
    for day in days:
        for hour in (0, 6, 12, 18):
            for n, (probe, place) in enumerate(places.items()):
                blocked = place in blocked_at and 1 <= day <= 3
                for site in sites:
                    at = _at(24 * day + hour, 10 + n)
                    records.append(record(site, at, network, probe, "tls_mitm" if blocked else "none", region=place))
    return records


def test_probes_with_no_as_are_apart_and_named_as_the_report_names_them() -> None:
    """Probe ids are zero-padded: two probes share their first 8 characters, never their last."""
    no_as = {PROBES[7]: "Almaty", PROBES[8]: "Almaty"}
    alerts = _alerts(_regional(None, no_as, ["twitter.com"], {"Almaty"}, range(5)))
    starts = [a for a in alerts if a["type"] == "start"]
    assert sorted(a["network"] for a in starts) == [f"unknown:{PROBES[7]}", f"unknown:{PROBES[8]}"]
    assert all(a["probes"] == 1 for a in starts), "one probe per network with no AS"
    titles = sorted(render(a)[0] for a in starts)
    assert titles[0].startswith("Blocking started on an unknown network (probe 00000008)")
    assert titles[1].startswith("Blocking started on an unknown network (probe 00000009)")
    assert "в неизвестной сети (зонд 00000009)" in render(starts[1], "ru")[1]


def test_russian_and_kazakh_alerts_say_places_in_their_script_and_agree_in_number() -> None:
    places = {PROBES[0]: "Nur-Sultan", PROBES[1]: "Karaganda", PROBES[2]: "Almaty", PROBES[3]: "North"}
    one = _alerts(_regional("AS9198", places, ["telegram.org"], set(places.values()), range(5)))
    start, end = one
    ru_start, ru_end = render(start, "ru")[1], render(end, "ru")[1]
    assert "Где: Алматы, Караганда, Нур-Султан и North." in ru_end and "Karaganda" not in ru_end
    assert "1 сайт: telegram.org" in ru_start and "сайтов: 1" not in ru_start
    assert "1 сайт снова доступен" in ru_end and "сайты снова доступны" not in ru_end
    assert "Зафиксировано 3 зондами в 3 измерениях до оповещения." in ru_start, ru_start
    second = render({**start, "since": "2020-12-01T20:10:00.000000Z"}, "ru")[1]
    assert "(«Kazakhtelecom») со 2 декабря 2020 г., 02:10 (Asia/Almaty, UTC+6) —" in second, "со 2, not с 2"
    three = _alerts(_regional("AS9198", {PROBES[2]: "Almaty"}, ["a.example", "b.example", "c.example"], {"Almaty"},
                              range(5)))  # fmt: skip
    ru_three = render(three[-1], "ru")[1]
    assert "3 сайта снова доступны" in ru_three and "Где: Алматы." in ru_three
    kk_start, kk_end = render(start, "kk")[1], render(end, "kk")[1]
    assert "Орындар: Алматы, Қарағанды, Нұр-Сұлтан және North." in kk_end and "Karaganda" not in kk_end
    assert "AS9198 («Kazakhtelecom») желісінде" in kk_start and "1 сайт" in kk_start


def test_english_alerts_read_well_for_every_kind() -> None:
    places = {PROBES[3]: "Almaty"}
    records = _regional("AS29355", places, ["www.youtube.com"], {"Almaty"}, range(5))
    for rec in records:
        if rec["blocking"] == "tls_mitm":
            rec["blocking"], rec["interceptor"] = "tls", None
    start, end = _alerts(records)
    text = render(start)[1]
    assert text.startswith(
        "Started: on AS29355 (Kcell), since 7 December 2020, 06:10 (Asia/Almaty, UTC+6), 1 site has "
        "been cut off during the secure handshake once its name was sent: www.youtube.com."
    ), text
    assert "Seen in Almaty by 1 probe in 3 measurements up to this alert." in text
    ended = render(end)[1]
    assert ended.startswith(
        "Ended: on AS29355 (Kcell), 1 site was reachable again by 10 December 2020, 06:10 "
        "(Asia/Almaty, UTC+6): www.youtube.com. Since 7 December 2020, 06:10 (Asia/Almaty, "
        "UTC+6), it had been cut off during the secure handshake once its name was sent."
    ), ended


def test_times_are_the_networks_local_time_and_utc_only_when_unknown() -> None:
    records = _regional("AS9198", {PROBES[0]: "Almaty"}, ["twitter.com"], {"Almaty"}, range(5))
    start = _alerts(records)[0]
    assert start["since"] == "2020-12-07T00:10:00.000000Z" and start["time_zone"] == "Asia/Almaty"
    assert "7 December 2020, 06:10 (Asia/Almaty, UTC+6)" in render(start)[1]
    assert "7 декабря 2020 г., 06:10 (Asia/Almaty, UTC+6)" in render(start, "ru")[1]
    assert "7 December 2020, 03:10 (Europe/Moscow, UTC+3)" in render(_alerts(records, "Europe/Moscow")[0])[1]
    for rec in records:
        rec["network"]["country"] = None
    unknown = _alerts(records)[0]
    assert unknown["time_zone"] == "UTC" and "7 December 2020, 00:10 UTC" in render(unknown)[1]


def test_the_end_alert_says_which_measurements_it_counts() -> None:
    """A regional block: Karaganda's probe sees the sites reachable while the others see them
    intercepted, so the CUSUM's run restarts and its first blocked measurement is not in the alert's
    count; the report counts it (every blocked measurement of the episode's days). The alert says
    what it counts."""
    from probe.report import localtime

    places = {PROBES[0]: "Nur-Sultan", PROBES[1]: "Karaganda", PROBES[2]: "Almaty"}
    sites = ["twitter.com", "www.facebook.com"]
    records = _regional("AS9198", places, sites, {"Nur-Sultan", "Almaty"}, range(5))
    blocked = sum(r["blocking"] == "tls_mitm" for r in records)
    assert blocked == 48 and localtime.COUNTRY_ZONES["KZ"] == "Asia/Almaty"
    end = _alerts(records)[-1]
    assert end["type"] == "end" and end["measurements"] == 46
    text = render(end)[1]
    assert "in 46 measurements from the onset to the end (counted from the measurement each site's onset" in text
    assert "измерениях от начала до конца" in render(end, "ru")[1]


def test_following_a_store_loads_no_report_engine() -> None:
    """`probe watch` runs every few minutes from cron: it must not pay for DuckDB (or Spark) at start."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, probe.report.watch, probe.cli.commands.watch; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('duckdb', 'pyspark')))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == "[]", loaded.stdout
