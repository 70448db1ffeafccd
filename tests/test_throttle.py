"""Throttling, proven against a control: the rule's look-alikes in-process, then the real thing in a
lab (tests/lab/throttle.py) whose ISP polices and freezes flows by the name in their ClientHello.

Look-alikes that must never be `throttled`: a slow server (the helper serves every flow alike), a
congested uplink (every flow slow alike), a lossy link (the healthy flows differ among themselves
as much), a helper under load (every flow slow, or refused), one slow round only, and the site's
own download without a helper (at most unconfirmed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.common import AnalysisContext, Judgement, RuleContext
from probe.analyze.throttle import judge_throttle
from probe.helper.measure import HelperConfig
from probe.netx.bulk import download
from probe.netx.clock import Clock
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.observations_codec import decode, encode
from probe.vocabulary.throughput import BulkFlow
from tests.conftest import PkiFixture, by_host, read_results
from tests.lab.lab import missing_prerequisites

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256 << 10


def _flow(kind: str, number: int, seconds: float, got: int = SIZE, *, stalled: int | None = None,
          wire: int | None = None, status: int | None = 200, failure: str | None = None) -> dict[str, Any]:  # fmt: skip
    if stalled is not None:
        got, failure = stalled, "generic_timeout_error"
    return {"kind": kind, "round": number, "address": "203.0.113.90", "port": 443,
            "server_name": {"target": "site.example", "control": "example.org"}.get(kind), "status": status,
            "failure": failure, "bytes": got, "content_length": SIZE, "samples": [[seconds, got]],
            "stalled_at": stalled, "stalled_at_wire": wire, "tcp_info": None, "t_connect": 0.01,
            "t_handshake": 0.02, "t_request": 0.03, "t0": 0.0, "t": seconds}  # fmt: skip


def _observations(rounds: list[tuple[dict, ...]], source: str = "helper") -> dict[str, Any]:
    flows = [flow for made in rounds for flow in made]
    throughput = {"source": source, "url": "https://203.0.113.90/v1/bulk", "size": SIZE, "control_sni": "example.org",
                  "flows": flows, "rounds": len(rounds)}  # fmt: skip
    return {
        "dns": None,
        "tcp_connect": [],
        "tls_handshakes": [],
        "http_requests": [],
        "addresses_from": None,
        "helpers": [],
        "throughput": throughput,
    }


def _judge(rounds: list[tuple[dict, ...]], source: str = "helper") -> Judgement:
    j = Judgement()
    context = AnalysisContext(roots=None, catalogs=None)  # type: ignore[arg-type]  # neither is read here
    finding = judge_throttle(
        decode(_observations(rounds, source)), RuleContext("site.example", context, lambda _: {}, None), j
    )
    if finding.outcome != "ok":
        j.blocking, j.confidence = finding.stage, "confirmed" if finding.confirmed else "unconfirmed"  # type: ignore[assignment]
    return j


def _round(number: int, target: float, control: float = 0.05, none: float = 0.05, **target_kw: Any) -> tuple:
    return (_flow("target", number, target, **target_kw), _flow("control", number, control),
            _flow("none", number, none))  # fmt: skip


def test_the_throughput_observation_round_trips() -> None:
    made = _observations([_round(0, 8.0, stalled=16000, wire=20000), _round(1, 0.1)])
    made["throughput"]["flows"][0]["tcp_info"] = {"rtt_us": 900, "rttvar_us": 300, "total_retrans": 0,
                                                  "bytes_received": 20000, "segs_in": 20, "rcv_ooopack": 3}  # fmt: skip
    assert encode(decode(made)) == made


def test_a_name_slowed_in_every_round_is_throttled_and_confirmed() -> None:
    j = _judge([_round(n, 5.0, got=160_000) for n in range(3)])
    assert (j.blocking, j.confidence) == (Blocking.THROTTLED, "confirmed")
    assert Anomaly.THROUGHPUT_THROTTLED in j.anomalies
    assert j.throttle is not None and j.throttle["kind"] == "slowdown" and j.throttle["share"] < 0.25


def test_a_freeze_at_one_offset_is_named_with_it() -> None:
    j = _judge([_round(n, 3.0, stalled=16_000 + 700 * n, wire=20_100 + 700 * n) for n in range(3)])
    assert (j.blocking, j.confidence) == (Blocking.THROTTLED, "confirmed")
    assert j.throttle == {"kind": "freeze", "source": "helper", "rounds": 3, "offset": 20_800,
                          "offset_counts": "wire", "body_offset": 16_700}  # fmt: skip


def test_stalls_at_different_offsets_are_no_freeze() -> None:
    j = _judge([_round(n, 3.0, stalled=offset) for n, offset in enumerate((16_000, 90_000, 200_000))])
    assert j.blocking == Blocking.NONE and j.throttle is None


def test_a_congested_uplink_slows_every_flow_alike() -> None:
    j = _judge([_round(n, 6.0, 6.5, 5.5, got=SIZE) for n in range(3)])
    assert j.blocking == Blocking.NONE and not j.anomalies


def test_a_slow_server_or_a_helper_under_load_slows_every_name_alike() -> None:
    # The helper serves every flow: slow for all (its load), or refusing all (503): nothing to compare.
    assert _judge([_round(n, 4.0, 4.2, 3.9, got=120_000) for n in range(2)]).blocking == Blocking.NONE
    refused = [(_flow("target", n, 0.01, 0, status=503), _flow("control", n, 0.01, 0, status=503),
                _flow("none", n, 0.01, 0, status=503)) for n in range(2)]  # fmt: skip
    assert _judge(refused).blocking == Blocking.NONE


def test_a_lossy_link_whose_healthy_flows_differ_as_much_is_no_verdict() -> None:
    # The target a fifth of the others' speed each time, but the others themselves swing fivefold
    # between rounds (fast, then 2.5 s for 256 KiB): a link that unsteady cannot blame the name.
    rounds = [_round(0, 2.5, 0.1, 0.1), _round(1, 5.0, 2.5, 2.4, got=20_000 * 5), _round(2, 2.5, 0.1, 0.1)]
    j = _judge(rounds)
    assert j.blocking == Blocking.NONE
    assert Anomaly.THROUGHPUT_UNSTABLE in j.anomalies  # a hint: the name slow every time, the link too variable


def test_one_slow_round_is_not_throttling() -> None:
    assert _judge([_round(0, 5.0, got=160_000), _round(1, 0.06), _round(2, 0.05)]).blocking == Blocking.NONE


def test_a_failed_control_flow_proves_nothing() -> None:
    rounds = [(_flow("target", n, 5.0, 160_000), _flow("control", n, 0.01, 0, failure="connection_reset"),
               _flow("none", n, 0.05)) for n in range(3)]  # fmt: skip
    assert _judge(rounds).blocking == Blocking.NONE


def test_fast_links_are_compared_at_what_the_flow_can_measure() -> None:
    # 256 KiB in 10 ms and in 80 ms: both faster than a flow this size can tell apart, both "fast".
    assert _judge([_round(n, 0.08, 0.01, 0.01) for n in range(3)]).blocking == Blocking.NONE


def test_the_sites_own_download_is_at_most_unconfirmed() -> None:
    rounds = [(_flow("target", n, 5.0, 160_000), _flow("control", n, 0.05)) for n in range(3)]
    j = _judge(rounds, source="site")
    assert (j.blocking, j.confidence) == (Blocking.THROTTLED, "unconfirmed")


# --- the helper's bulk endpoint, in-process ----------------------------------------------------------


@pytest.fixture
def bulk_helper(test_pki: PkiFixture) -> Iterator[tuple[int, HelperConfig]]:
    from probe.helper.server import HelperServer
    from probe.loaders.roots import load_roots

    cert, key = test_pki.leaf_files(test_pki.public_intermediate, ["helper.example", "127.0.0.1"], "bulk")
    # A download far larger than any socket buffer: a reader that stops reading holds its slot.
    config = HelperConfig(timeout=2, roots=load_roots(test_pki.roots_pem), token="t0ken", bulk_bytes=64 << 20)
    server = HelperServer(("127.0.0.1", 0), config, str(cert), str(key))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], config
    finally:
        server.shutdown()
        server.server_close()


def _bulk(port: int, sni: str | None, size: int, token: str | None = "t0ken") -> BulkFlow:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return asyncio.run(download("127.0.0.1", port, sni, "helper.example", "/v1/bulk", size=size, bound=10, stall=3,
                                step_timeout=3, clock=Clock(), headers=headers))  # fmt: skip


def test_the_bulk_endpoint_answers_any_name_and_none(bulk_helper: tuple[int, HelperConfig]) -> None:
    port, config = bulk_helper
    for sni in ("site.example", "example.org", None):  # names the helper's certificate does not carry, and none
        flow = _bulk(port, sni, 256 << 10)
        assert (flow.status, flow.failure, flow.bytes) == (200, None, 256 << 10), flow
        assert flow.content_length == config.bulk_bytes and flow.samples[-1][1] == 256 << 10
        assert flow.tcp_info is not None and flow.tcp_info.bytes_received > 256 << 10
    assert _bulk(port, None, 1024, token=None).status == 401  # the helper's token applies


def test_the_bulk_endpoint_bounds_what_one_client_holds(bulk_helper: tuple[int, HelperConfig]) -> None:
    port, config = bulk_helper
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    readers = []
    try:
        for _ in range(config.max_bulk_per_client):  # downloads that stop being read: each holds its slot
            reader = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
            reader.sendall(b"GET /v1/bulk HTTP/1.1\r\nHost: helper.example\r\nAuthorization: Bearer t0ken\r\n\r\n")
            reader.recv(100)
            readers.append(reader)
        assert _bulk(port, None, 1024).status == 429  # one more from the same client: refused at once
    finally:
        for reader in readers:  # a reset, as the probe ends an unfinished flow: the slots come back
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            reader.close()
    for _ in range(50):
        if _bulk(port, None, 1024).status == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the slots were not given back after the readers reset their connections")


# --- the lab ---------------------------------------------------------------------------------------

_REASON = missing_prerequisites()


@pytest.fixture(scope="module")
def throttle_lab() -> Iterator:
    if _REASON:
        pytest.skip(_REASON)
    from tests.lab.chainworld import running
    from tests.lab.throttle import ThrottleLab

    with running(ThrottleLab(f"thr{os.getpid() % 100000}")) as lab:
        yield lab


@pytest.fixture(scope="module")
def with_helper(throttle_lab) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    from tests.lab import throttle as t

    result = throttle_lab.run("helper", [t.THROTTLED_NAME, t.FROZEN_NAME, t.CLEAN_NAME], "--helper", t.HELPER_URL)
    assert result.returncode == 1, result.stderr[-3000:]  # throttling found
    return by_host(read_results(throttle_lab.directory / "helper"))


@pytest.mark.lab
def test_a_throttled_name_is_throttled_confirmed_against_the_control(with_helper: dict) -> None:
    from tests.lab import throttle as t

    record = with_helper[t.THROTTLED_NAME]
    assert (record["blocking"], record["confidence"]) == ("throttled", "confirmed"), record["anomalies"]
    assert record["confidence_basis"] == ["control_flows"]
    assert "throughput.throttled" in record["anomalies"]
    throttle = record["analysis"]["throttle"]
    assert throttle["kind"] == "slowdown" and throttle["share"] <= 0.25 and throttle["rounds"] == 3
    flows = record["observations"]["throughput"]["flows"]
    assert {(f["kind"], f["server_name"]) for f in flows} == {
        ("target", t.THROTTLED_NAME), ("control", t.CONTROL_NAME), ("none", None)
    }  # fmt: skip
    assert all(f["bytes"] == 256 << 10 for f in flows if f["kind"] != "target")  # the controls came whole


@pytest.mark.lab
def test_an_unthrottled_name_on_the_same_server_is_none(with_helper: dict) -> None:
    from tests.lab import throttle as t

    record = with_helper[t.CLEAN_NAME]
    assert record["blocking"] == "none", record["anomalies"]
    throughput = record["observations"]["throughput"]
    assert (throughput["rounds"], throughput["stopped"]) == (1, "healthy")  # one round was enough
    assert record["analysis"]["throttle"] is None


@pytest.mark.lab
def test_a_frozen_flow_is_named_with_its_byte_offset(with_helper: dict) -> None:
    from tests.lab import throttle as t

    record = with_helper[t.FROZEN_NAME]
    assert (record["blocking"], record["confidence"]) == ("throttled", "confirmed"), record["anomalies"]
    assert "throughput.frozen" in record["anomalies"]
    throttle = record["analysis"]["throttle"]
    assert throttle["kind"] == "freeze" and throttle["offset_counts"] == "wire"
    # The censor drops the connection's packets toward the client once it has brought FREEZE_BYTES
    # (IP and TCP headers counted): the TCP payload received stops a little short of it.
    assert t.FREEZE_BYTES - 4096 <= throttle["offset"] <= t.FREEZE_BYTES, throttle


@pytest.mark.lab
def test_without_a_helper_a_slowdown_is_at_most_unconfirmed(throttle_lab) -> None:  # type: ignore[no-untyped-def]
    from tests.lab import throttle as t

    target = f"https://{t.THROTTLED_NAME}{t.BIG_PAGE}"
    result = throttle_lab.run("alone", [target], "--throughput", "on")
    assert result.returncode in (0, 1), result.stderr[-3000:]
    (record,) = read_results(throttle_lab.directory / "alone")
    assert record["observations"]["throughput"]["source"] == "site"
    assert (record["blocking"], record["confidence"]) == ("throttled", "unconfirmed"), record["anomalies"]


def test_a_throttled_site_is_an_episode_in_the_report_in_english_and_russian(tmp_path: Path) -> None:
    """The lab's records (tests/data/throttle-lab-records.jsonl): the confirmed throttled and frozen
    names are one episode, said in words; the unconfirmed one without a helper is not published."""
    shutil.copy(ROOT / "tests" / "data" / "throttle-lab-records.jsonl", tmp_path)
    said = {}
    for language in ("en", "ru"):
        ran = subprocess.run([sys.executable, "-m", "probe", "report", str(tmp_path), "--format", "text",
                              "--language", language], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
        said[language] = ran.stdout
    assert "were throttled" in said["en"] and "frozen.lab and throttled.lab" in said["en"]
    assert "stopped after the same number of bytes" in said["en"]
    assert "замедлялись" in said["ru"] and "замирали после одного и того же объёма данных" in said["ru"]


def test_a_control_name_that_gets_another_smaller_page_is_no_contrast() -> None:
    # Without a helper, the control name may get the server's default page: a few bytes, quickly.
    rounds = [(_flow("target", n, 1.2, 80_000, status=206), _flow("control", n, 0.01, 900)) for n in range(3)]
    assert _judge(rounds, source="site").blocking == Blocking.NONE


def test_a_confirmed_throttling_is_alerted_in_every_language() -> None:
    from probe.report.alert_text import render
    from tests.reportdata import PROBES, record
    from tests.test_watch import _alerts, _at

    records = [record("twitter.com", _at(hour, n), "AS9198", PROBES[n]) for hour in range(12) for n in range(3)]
    for made in records[:18]:  # the first six hours: throttled, confirmed against the control
        made.update(blocking="throttled", anomalies=["throughput.throttled"], confidence_basis=["control_flows"])
    start, end = _alerts(records)
    assert (start["type"], start["blocking"], end["type"]) == ("start", "throttled", "end")
    assert "throttled (connections naming the site slowed or frozen" in render(start, "en")[1]
    assert "замедление соединений с именем сайта" in render(start, "ru")[1]
    assert "баяулату" in render(start, "kk")[1]


def test_probe_show_names_the_slowdown_and_the_freezes_offset() -> None:
    from probe.results.show import show

    shown = show(ROOT / "tests" / "data" / "throttle-lab-records.jsonl").text
    assert "verdict:   throttled (confirmed by the same server's flows for the control name and for none" in shown
    assert "throttled: the name's flows froze after 18,5" in shown
    assert "throttled: the name's flows at 6% of the control's speed at most, in each of 3 rounds" in shown
    assert "round 2 sni=control.lab (control): 262,144 bytes" in shown
