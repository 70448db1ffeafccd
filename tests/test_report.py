"""`probe report` and `probe analyze`: a fleet's logs with known events, read as an analyst would."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from pathlib import Path

import duckdb
import pytest

from probe.analyze.verdict import AnalysisContext, judge
from probe.cli.main import main
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.results.record import RunContext, build_record
from probe.vocabulary.targets import parse_target
from tests import pki
from tests.conftest import PkiFixture, validate_record
from tests.reportdata import PROBES, fleet, record, write_log

EN_ISCA = (
    "From 6 to 7 December 2020, on AS9198 (Kazakhtelecom) in Nur-Sultan, secure connections to 2 sites "
    "(twitter.com and www.facebook.com) were intercepted with certificates issued by “Information Security "
    "Certification Authority CA”, an authority known to be used for interception, instead of the sites' own. "
    "Seen by 3 probes in 6 measurements. Not seen reachable again before the end of the period."
)
RU_ISCA = (
    "С 6 по 7 декабря 2020 г. в сети AS9198 («Kazakhtelecom») в Нур-Султане защищённые соединения с 2 сайтами "
    "(twitter.com и www.facebook.com) перехватывались: вместо сертификатов сайтов предъявлялись сертификаты, "
    "выданные «Information Security Certification Authority CA» — центром сертификации, известным как средство "
    "перехвата. Зафиксировано 3 зондами в 6 измерениях. До конца периода доступ к сайтам не восстановился."
)


def _report(tmp_path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["report", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return fleet(tmp_path / "logs")


def test_the_fleets_logs_become_events_and_a_summary(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in logs.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            validate_record(json.loads(line))
    report = _report(logs, str(logs), capsys=capsys)
    summary = report["summary"]
    assert (summary["measurements"], summary["probes"], summary["targets"], summary["skipped_lines"]) == (17, 5, 6, 0)
    assert summary["places"] == ["Almaty", "Nur-Sultan"]
    assert [n["network"] for n in summary["networks"]] == ["AS9198", "AS29355", "AS21299"]
    assert summary["networks"][0]["as_name"] == "Kazakhtelecom"
    assert summary["findings"]["tls_mitm"] == {
        "episodes": 2, "sites": 2, "networks": 2, "confirmed": 8, "unconfirmed": 0}  # fmt: skip
    assert summary["period"] == {"from": "2020-12-01T08:00:00Z", "to": "2020-12-07T11:30:00Z"}
    assert summary["days"] == {"from": "2020-12-01", "to": "2020-12-07"}
    events = {(e["network"], e["finding"]): e for e in report["episodes"]}
    assert set(events) == {("AS9198", "dns"), ("AS9198", "tls_mitm"), ("AS21299", "tls_mitm")}
    assert len(report["episodes"]) == 3
    dns = events[("AS9198", "dns")]
    assert (dns["first_seen"], dns["last_seen"], dns["ended"]) == (
        "2020-12-02T08:00:00Z",
        "2020-12-03T08:00:00Z",
        "2020-12-04T08:00:00Z",  # reachable again: the episode ends
    )
    assert (dns["measurements"], dns["probes"], dns["evidence"]["answers"]) == (2, 2, ["10.10.34.35"])
    assert dns["evidence"]["control_answers"] == ["198.51.100.7"]
    isca = events[("AS9198", "tls_mitm")]
    assert (isca["sites"], isca["measurements"], isca["probes"], isca["ended"]) == (
        ["twitter.com", "www.facebook.com"], 6, 3, None)  # fmt: skip
    assert isca["evidence"]["issuer"] == "CN=Information Security Certification Authority CA,O=ISCA,C=KZ"
    assert isca["evidence"]["catalog_id"] == "kz-isca-2020"


def test_sentences_in_the_records_style_in_english_and_russian(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(logs, str(logs), capsys=capsys)
    assert EN_ISCA in report["sentences"]["en"]
    assert RU_ISCA in report["sentences"]["ru"]
    assert report["sentences"]["en"][0].startswith("From 2 to 3 December 2020, on AS9198 (Kazakhtelecom) in Nur-Sultan")
    assert "Зафиксировано 1 зондом в 2 измерениях" in report["sentences"]["ru"][-1]  # Russian plural: one


def test_a_volunteers_antivirus_is_never_censorship(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(logs, str(logs), "--all-confidence", capsys=capsys)
    assert all("mail.example" not in e["sites"] for e in report["episodes"])
    assert "ESET" not in " ".join(report["sentences"]["en"] + report["sentences"]["ru"])
    assert report["local_interception"] == [
        {"interceptor": "ESET SSL Filter", "measurements": 1, "probes": 1, "targets": 1}
    ]


def test_unconfirmed_findings_are_left_out_unless_asked_for(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = _report(logs, str(logs), capsys=capsys)
    assert all("tcp.example" not in e["sites"] for e in default["episodes"])
    everything = _report(logs, str(logs), "--all-confidence", capsys=capsys)
    (tcp,) = [e for e in everything["episodes"] if "tcp.example" in e["sites"]]
    assert (tcp["finding"], tcp["confirmed"], tcp["network"]) == ("tcp", False, "AS29355")
    assert everything["summary"]["confidence_shown"] == "all"


def test_filters_by_network_target_and_time(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kar_tel = _report(logs, str(logs), "--network", "21299", capsys=capsys)
    assert [(e["sites"], e["network"]) for e in kar_tel["episodes"]] == [(["twitter.com"], "AS21299")]
    assert kar_tel["summary"]["measurements"] == 2
    one = _report(logs, str(logs), "--target", "dns.example", capsys=capsys)
    assert [e["sites"] for e in one["episodes"]] == [["dns.example"]]
    early = _report(logs, str(logs), "--until", "2020-12-05", capsys=capsys)
    assert {s for e in early["episodes"] for s in e["sites"]} == {"dns.example"}
    late = _report(logs, str(logs), "--since", "2020-12-06", capsys=capsys)
    assert "dns.example" not in {s for e in late["episodes"] for s in e["sites"]}
    assert main(["report", str(logs), "--month", "2020-11"]) == 2  # a month with no records is an error
    assert "the records cover 2020-12-01 to 2020-12-07" in capsys.readouterr().err
    december = _report(logs, str(logs), "--month", "2020-12", capsys=capsys)
    assert len(december["episodes"]) == 3


def test_bad_input_is_counted_with_its_place_and_nothing_else_is_lost(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = logs / "node-c" / "broken.jsonl"
    good = record("clean.example", "2020-12-07T12:00:00Z", "AS9198", PROBES[6])
    broken.parent.mkdir()
    broken.write_text(
        json.dumps(good) + "\n" + "{not json\n" + '{"a": "json object, not a record"}\n', encoding="utf-8"
    )
    (logs / "node-c" / "truncated.jsonl.gz").write_bytes(gzip.compress(b'{"schema_version": 2}\n' * 50)[:40])
    compressed = logs / "node-c" / "older.jsonl.gz"
    old = record("clean.example", "2020-12-07T13:00:00Z", "AS9198", PROBES[7])
    old.update({"schema_version": 1})
    old.pop("confidence")
    newer = {**good, "schema_version": 3}
    compressed.write_bytes(gzip.compress((json.dumps(old) + "\n" + json.dumps(newer) + "\n").encode()))
    report = _report(logs, str(logs), capsys=capsys)
    problems = report["summary"]["problems"]
    assert report["summary"]["skipped_lines"] == 2
    assert (
        "node-c/broken.jsonl:2: not JSON" in problems[0] and "node-c/broken.jsonl:3: not a probe record" in problems[0]
    )
    assert any("node-c/truncated.jsonl.gz: the file could not be read" in p for p in problems)
    assert any("1 records of schema_version 3 were refused" in p for p in problems)
    assert any("1 records of schema_version 1 carry no confidence" in p for p in problems)
    assert report["summary"]["measurements"] == 17 + 2  # the good line and the version 1 record
    assert len(report["episodes"]) == 3


def test_csv_and_parquet_read_back_with_duckdb(logs: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "events.csv"
    assert main(["report", str(logs), "--format", "csv", "--out", str(csv_file)]) == 0
    rows = duckdb.sql(f"SELECT sites, network, finding, measurements FROM read_csv('{csv_file}') ORDER BY ALL")
    assert rows.fetchall() == [
        ("dns.example", "AS9198", "dns", 2),
        ("twitter.com", "AS21299", "tls_mitm", 2),
        ("twitter.com;www.facebook.com", "AS9198", "tls_mitm", 6),
    ]
    out = tmp_path / "parquet"
    assert main(["report", str(logs), "--format", "parquet", "--out", str(out)]) == 0
    measurements = duckdb.sql(
        f"SELECT count(*), count(DISTINCT day), count(DISTINCT network_key) "
        f"FROM read_parquet('{out}/measurements/*/*/*.parquet', hive_partitioning = true)"
    ).fetchall()[0]
    assert measurements == (17, 7, 3)
    assert (out / "measurements" / "day=2020-12-06" / "network_key=AS9198").is_dir()
    events = duckdb.sql(
        f"SELECT sites, finding, network_key, day FROM read_parquet('{out}/events/*/*/*.parquet', "
        "hive_partitioning = true) ORDER BY ALL"
    ).fetchall()
    assert [(t, f, str(n)) for t, f, n, _ in events] == [
        (["dns.example"], "dns", "AS9198"),
        (["twitter.com"], "tls_mitm", "AS21299"),
        (["twitter.com", "www.facebook.com"], "tls_mitm", "AS9198"),
    ]


def test_bad_arguments_and_inputs_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no results files" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--month", "2020-13"]) == 2
    assert "--month '2020-13': expected YYYY-MM" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--language", "xx"]) == 2
    assert "no sentence template for language 'xx'; there are: en, kk, ru" in capsys.readouterr().err


def test_analyze_rejudges_history_when_a_catalog_grows(
    test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs of an unknown root's chain are a suspected interception, which the report does not
    publish; once an analyst catalogues the root, `probe analyze` re-judges them, and the report
    shows the interception, confirmed."""
    national = pki.make_root(pki.name(CN="Unnamed National Root", C="ZZ"))
    leaf = pki.make_leaf(national, ["news.example"])
    chain = [base64.b64encode(pki.der(c)).decode() for c in [*leaf.chain, national.cert]]
    roots = load_roots(test_pki.roots_pem)
    context = AnalysisContext(roots=roots, catalogs=load_catalogs(), documentation_is_public=True)
    records = []
    for day, probe in ((8, PROBES[0]), (9, PROBES[1])):
        started = dt.datetime(2020, 12, day, 10, tzinfo=dt.UTC)
        observations = record("news.example", started.isoformat(), "AS9198", probe)["observations"]
        observations["tcp_connect"] = [{"address": "198.51.100.7", "port": 443, "failure": None, "t0": 0, "t": 0.1,
                                        "purpose": "target"}]  # fmt: skip
        observations["tls_handshakes"] = [{
            "address": "198.51.100.7", "port": 443, "server_name": "news.example", "tls_version": "TLSv1.3",
            "cipher_suite": "x", "negotiated_protocol": None, "peer_certificates": chain, "failure": None,
            "alert": None, "os_store_valid": None, "t0": 0.0, "t": 0.1, "purpose": "target"}]  # fmt: skip
        judgement = judge({"host": "news.example"}, observations, started, False, context)
        assert (judgement.blocking, judgement.confidence) == ("tls_mitm", "unconfirmed")
        run = RunContext("0" * 32, {"resolver": "system", "system_resolver_addresses": [], "control_resolver": None,
                                    "helpers": [], "asn": "AS9198", "country": "KZ", "as_name": "Kazakhtelecom",
                                    "region": None},
                         {"roots": roots.describe(), "catalogs": {}, "control_sni": None,
                          "documentation_addresses_public": True}, probe)  # fmt: skip
        records.append(build_record(run, parse_target("news.example", None, 1), started, observations, judgement))
    log = write_log(tmp_path / "logs" / "run.jsonl", records)
    before = _report(tmp_path, str(log), capsys=capsys)
    assert before["episodes"] == []

    catalog = tmp_path / "grown.json"
    entry = {"id": "zz-national-root", "name": "Unnamed National Root", "country": "ZZ",
             "sha256_spki": pki.spki_sha256(national.cert), "sources": ["seen in these logs"]}  # fmt: skip
    document = {"catalog": "interception_cas", "version": "2020-12-10", "certificates": [entry]}
    catalog.write_text(json.dumps(document), encoding="utf-8")
    assert main(["analyze", str(log), "--catalog", str(catalog), "--roots", str(test_pki.roots_pem)]) == 0
    out = capsys.readouterr().out
    assert "tls_mitm (unconfirmed) -> tls_mitm (confirmed): 2" in out
    (rejudged,) = log.parent.glob("run.analyzed-*.jsonl")
    assert log.read_text(encoding="utf-8").count('"confidence": "unconfirmed"') == 2  # the old file is untouched
    new = [json.loads(line) for line in rejudged.read_text(encoding="utf-8").splitlines()]
    for item, old in zip(new, records, strict=True):
        validate_record(item)
        assert item["observations"] == json.loads(json.dumps(old["observations"]))
        assert (item["blocking"], item["confidence"]) == ("tls_mitm", "confirmed")
        assert item["interceptor"]["catalog_id"] == "zz-national-root"
        assert item["rejudged"]["previous"]["confidence"] == "unconfirmed"
        assert any("grown.json" in v for v in item["rejudged"]["catalogs"]["interception_cas"])
    # The folder holds both files: the re-judged copy stands for its original, nothing counts twice.
    folder = _report(tmp_path, str(log.parent), capsys=capsys)
    assert folder["summary"]["measurements"] == 2 and len(folder["episodes"]) == 1
    after = _report(tmp_path, str(rejudged), capsys=capsys)
    (event,) = after["episodes"]
    assert (event["sites"], event["finding"], event["key"], event["measurements"]) == (
        ["news.example"], "tls_mitm", "zz-national-root", 2,
    )  # fmt: skip


def test_show_reads_compressed_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--compress` writes .jsonl.gz and .jsonl.zst: `probe show` reads them as it reads plain files."""
    import zstandard

    line = (json.dumps(record("twitter.com", "2020-12-06T10:00:00Z", "AS9198", PROBES[0], "tls_mitm")) + "\n").encode()
    (tmp_path / "run.jsonl.gz").write_bytes(gzip.compress(line))
    (tmp_path / "run.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(line))
    for name in ("run.jsonl.gz", "run.jsonl.zst"):
        assert main(["show", str(tmp_path / name)]) == 0
        shown = capsys.readouterr().out
        assert "twitter.com" in shown and "verdict:   tls_mitm" in shown and "1 records" in shown


def test_a_log_beside_its_compressed_copy_is_counted_once(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """x.jsonl and x.jsonl.gz in one folder: the same measurements, counted once, and said so."""
    before = _report(logs, str(logs), capsys=capsys)["summary"]["measurements"]
    first = sorted(logs.rglob("*.jsonl"))[0]
    first.with_name(first.name + ".gz").write_bytes(gzip.compress(first.read_bytes()))
    report = _report(logs, str(logs), capsys=capsys)
    assert report["summary"]["measurements"] == before
    assert any("read more than once" in p for p in report["summary"]["problems"])


def test_a_report_on_offline_measurements_says_they_say_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with no network is 76 measurements of nothing: the report must not read as 76 sites
    measured with nothing blocked."""
    log = tmp_path / "offline.jsonl"
    lines = []
    bench = Path(__file__).resolve().parents[1] / "bench" / "data" / "lab-records.jsonl"
    for line in bench.read_text(encoding="utf-8").splitlines()[:4]:
        record = json.loads(line)
        record.update(blocking="offline", anomalies=["network.offline"], observations=None, confidence="unconfirmed",
                      confidence_basis=[], interceptor=None, blockpage=None)  # fmt: skip
        lines.append(json.dumps(record))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = _report(tmp_path, str(log), capsys=capsys)
    assert any("4 measurements were made offline" in p for p in report["summary"]["problems"])
