"""QUIC (HTTP/3) blocking (issue 22): the handshake primitive against a real aioquic server on
127.0.0.1, the Alt-Svc reading, the `quic` stage's rules, and the lab (tests/lab/quicworld.py): an
ISP that drops UDP/443 to one address, and a censor that drops the QUIC flows naming one site.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx.clock import Clock
from probe.netx.quic import quic_handshake
from probe.observe.quic import alt_svc_h3
from probe.results.show import format_record
from probe.vocabulary.observations_codec import decode, encode
from probe.vocabulary.observations_quic import QuicHandshake
from tests import pki
from tests.conftest import PkiFixture, by_host, read_results
from tests.lab.lab import missing_prerequisites
from tests.quicserver import serve_h3

AT = dt.datetime.now(dt.UTC)
HOST, CONTROL, ADDRESS = "site.example", "control.example", "198.51.100.7"


# --- the primitive, against a real HTTP/3 server on 127.0.0.1 --------------------------------------


@pytest.fixture(scope="module")
def leaf_files(test_pki: PkiFixture) -> tuple[Path, Path, pki.Leaf]:
    leaf = pki.make_leaf(test_pki.public_intermediate, ["h3.test"])
    cert, key = leaf.write(Path(tempfile.mkdtemp(prefix="quic-")), "h3")
    return cert, key, leaf


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _loopback_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_a_completed_handshake_records_version_alpn_chain_and_the_pages_status(leaf_files: Any, address: str) -> None:
    cert, key, leaf = leaf_files
    if address == "::1" and not _loopback_v6():
        pytest.skip("no IPv6 loopback here")

    async def go() -> QuicHandshake:
        server = await serve_h3(address, 0, str(cert), str(key))
        try:
            port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            return await quic_handshake(address, port, "h3.test", 3, Clock(), "/")
        finally:
            server.close()

    record = asyncio.run(go())
    assert (record.failure, record.quic_version, record.negotiated_protocol) == (None, "0x00000001", "h3")
    assert record.peer_certificates == tuple(base64.b64encode(pki.der(c)).decode() for c in leaf.chain)
    assert record.http_status == 200 and record.datagrams_received > 0
    assert record.t_first_reply is not None and record.t is not None
    assert record.t0 <= record.t_first_reply <= record.t


def test_silence_refusal_and_a_peers_alert_are_told_apart(leaf_files: Any) -> None:
    cert, key, _ = leaf_files

    async def go() -> tuple[QuicHandshake, ...]:
        from aioquic.asyncio import serve
        from aioquic.quic.configuration import QuicConfiguration

        refused = await quic_handshake("127.0.0.1", _free_udp_port(), "h3.test", 2, Clock())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:  # reads every datagram, answers none
            quiet.bind(("127.0.0.1", 0))
            silent = await quic_handshake("127.0.0.1", quiet.getsockname()[1], "h3.test", 0.5, Clock())
        other = QuicConfiguration(is_client=False, alpn_protocols=["hq-interop"])  # no h3: the server says so
        other.load_cert_chain(str(cert), str(key))
        server = await serve("127.0.0.1", 0, configuration=other)
        try:
            closed = await quic_handshake("127.0.0.1", server._transport.get_extra_info("sockname")[1], "h3.test",  # type: ignore[union-attr]
                                          2, Clock())  # fmt: skip
        finally:
            server.close()
        return refused, silent, closed

    refused, silent, closed = asyncio.run(go())
    assert (refused.failure, refused.datagrams_received) == ("connection_refused", 0)
    assert (silent.failure, silent.datagrams_received, silent.quic_version) == (
        "generic_timeout_error", 0, None
    )  # fmt: skip
    assert (closed.failure, closed.alert) == ("ssl_failed_handshake", "no_application_protocol")
    assert closed.datagrams_received > 0 and closed.t is not None
    assert closed.t < 1.5  # the peer's close, not aioquic's draining


def test_a_cancelled_handshake_leaves_no_socket_open() -> None:
    async def go() -> tuple[int, int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
            quiet.bind(("127.0.0.1", 0))
            before = _open_fds()
            tasks = [asyncio.create_task(quic_handshake("127.0.0.1", quiet.getsockname()[1], "h3.test", 30, Clock()))
                     for _ in range(5)]  # fmt: skip
            await asyncio.sleep(0.3)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # the transports' close runs on the next turn of the loop
            return before, _open_fds()

    before, after = asyncio.run(go())
    assert after == before


# --- Alt-Svc -------------------------------------------------------------------------------------


def test_alt_svc_names_the_h3_port_of_the_same_host_only() -> None:
    assert alt_svc_h3('h3=":443"; ma=86400', "site.example") == 443
    assert alt_svc_h3('h3-29=":443", h3=":8443"; ma=3600', "site.example") == 8443
    assert alt_svc_h3('h2=":443", h3="site.example:443"', "site.example") == 443
    assert alt_svc_h3('h3="cdn.example:443"', "site.example") is None  # another host: not this address
    assert alt_svc_h3("clear", "site.example") is None
    assert alt_svc_h3('h3-29=":443"', "site.example") is None  # drafts only
    assert alt_svc_h3('h3=":99999"', "site.example") is None
    assert alt_svc_h3('h3=":443;x", h3=":444"', "site.example") == 444  # a quoted comma or semicolon


# --- observing: when QUIC is asked, and what the target's observations get -------------------------


def _observed(mode: str, alt_svc: str | None, port: int) -> Any:
    """One target's draft after its page (TLS completed at 127.0.0.1, the response's headers), then
    the QUIC handshakes made as `_complete` makes them."""
    from probe.netx.deadline import Deadline
    from probe.observe.config import MeasureConfig, Visit
    from probe.observe.draft import Draft
    from probe.observe.quic import QuicInFlight
    from probe.vocabulary.targets import parse_target

    headers = [["Content-Type", "text/html"]] + ([["Alt-Svc", alt_svc]] if alt_svc else [])
    typed = decode({
        "dns": None, "tcp_connect": [],
        "tls_handshakes": [{"address": "127.0.0.1", "port": 443, "server_name": "h3.test", "failure": None,
                            "peer_certificates": [], "t0": 0.0, "t": 0.1, "purpose": "target"}],
        "http_requests": [{"request": {"method": "GET", "host": "h3.test", "path": "/"}, "status": 200,
                           "headers": headers, "t0": 0.1, "t": 0.2, "redirect_index": 0}],
    })  # fmt: skip
    draft = Draft(tls_handshakes=list(typed.tls_handshakes), http_requests=list(typed.http_requests))
    config = MeasureConfig(timeout=2, roots=None, resolver=None, control_resolver=None,  # type: ignore[arg-type]
                           control_sni="control.test", quic=mode)  # fmt: skip
    visit = Visit(config, Deadline(2), Clock(), AT, draft)

    async def go() -> None:
        flight = QuicInFlight.start(parse_target("https://h3.test/", None, 1), visit)
        await flight.finish(draft)

    asyncio.run(go())
    return draft.quic


def test_quic_is_asked_where_h3_is_advertised_or_asked_for(leaf_files: Any) -> None:
    cert, key, _ = leaf_files

    async def serving() -> Any:
        return await serve_h3("127.0.0.1", 0, str(cert), str(key))

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serving())
    port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        advertised = _observed("auto", f'h3=":{port}"; ma=60', port)
        assert (advertised.reason, advertised.alt_svc) == ("alt_svc", f'h3=":{port}"; ma=60')
        target, control = advertised.handshakes
        assert (target.purpose, target.server_name, target.port, target.negotiated_protocol, target.http_status) == (
            "target", "h3.test", port, "h3", 200
        )  # fmt: skip
        assert (control.purpose, control.server_name, control.completed, control.http_status) == (
            "control_sni", "control.test", True, None
        )  # fmt: skip
        assert _observed("auto", None, port) is None  # not advertised: not asked
        assert _observed("auto", 'h3="cdn.example:443"', port) is None  # another host's endpoint
        assert _observed("off", f'h3=":{port}"', port) is None
        asked = _observed("always", None, 443)  # asked on 443, where nothing listens here: refused
        assert (asked.reason, [h.failure for h in asked.handshakes]) == ("asked", ["connection_refused"] * 2)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# --- the rules ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


@pytest.fixture(scope="module")
def chain(test_pki: PkiFixture) -> list[str]:
    leaf = pki.make_leaf(test_pki.public_intermediate, [HOST])
    return [base64.b64encode(pki.der(c)).decode() for c in leaf.chain]


def _quic(purpose: str, name: str, failure: str | None, received: int = 0, code: int | None = None) -> dict:
    return {"address": ADDRESS, "port": 443, "server_name": name, "purpose": purpose,
            "quic_version": "0x00000001" if received else None, "negotiated_protocol": None if failure else "h3",
            "peer_certificates": [], "failure": failure, "alert": None, "error_code": code,
            "datagrams_received": received, "t0": 1.0, "t_first_reply": 1.01 if received else None, "t": 2.0,
            "http_status": None if failure else 200, "http_failure": None}  # fmt: skip


def _observations(chain: list[str], *quic: dict, tls_failure: str | None = None) -> dict:
    lookup = {"resolver": "r", "transport": "udp", "hostname": HOST, "addresses": [ADDRESS], "failure": None,
              "queries": []}  # fmt: skip
    tls = {"address": ADDRESS, "port": 443, "server_name": HOST, "tls_version": "TLSv1.3", "cipher_suite": "x",
           "negotiated_protocol": "http/1.1", "peer_certificates": chain, "failure": tls_failure, "alert": None,
           "os_store_valid": None, "t0": 0.1, "t": 0.2, "purpose": "target"}  # fmt: skip
    observations: dict[str, Any] = {
        "dns": {"system": lookup, "control": {**lookup, "resolver": "control"}},
        "tcp_connect": [{"address": ADDRESS, "port": 443, "failure": None, "t0": 0.0, "t": 0.1, "purpose": "target"}],
        "tls_handshakes": [tls], "http_requests": [], "addresses_from": "system", "helpers": [],
    }  # fmt: skip
    if quic:
        observations["quic"] = {"reason": "alt_svc", "alt_svc": 'h3=":443"', "handshakes": list(quic)}
    return observations


def _judged(ctx: AnalysisContext, observations: dict) -> tuple[str, str, list[str], list[str]]:
    j = judge({"host": HOST}, observations, AT, False, ctx)
    return str(j.blocking), str(j.confidence), [str(a) for a in j.anomalies], [str(p) for p in j.basis]


def test_silence_for_the_name_while_the_control_name_completes_is_confirmed_quic_blocking(
    ctx: AnalysisContext, chain: list[str]
) -> None:
    observations = _observations(
        chain, _quic("target", HOST, "generic_timeout_error"), _quic("control_sni", CONTROL, None, 6)
    )
    assert _judged(ctx, observations) == ("quic", "confirmed", ["quic.timeout", "quic.sni_triggered"],
                                          ["quic_control_sni_completed"])  # fmt: skip
    # A refusal (ICMP port unreachable) for the name only: the same.
    refused = _observations(chain, _quic("target", HOST, "connection_refused"), _quic("control_sni", CONTROL, None, 6))
    assert _judged(ctx, refused)[:3] == ("quic", "confirmed", ["quic.refused", "quic.sni_triggered"])
    # The control's server closing the handshake itself (a CDN refusing an unknown name) reached it too.
    cdn = _observations(chain, _quic("target", HOST, "generic_timeout_error"),
                        _quic("control_sni", CONTROL, "ssl_failed_handshake", 1, 0x178))  # fmt: skip
    assert _judged(ctx, cdn)[:2] == ("quic", "confirmed")


def test_silence_for_every_name_is_unconfirmed(ctx: AnalysisContext, chain: list[str]) -> None:
    """UDP/443 to the address dropped, a server that advertises h3 and does not serve it, a network
    that drops all UDP/443: from here they look alike."""
    both = _observations(chain, _quic("target", HOST, "generic_timeout_error"),
                         _quic("control_sni", CONTROL, "generic_timeout_error"))  # fmt: skip
    assert _judged(ctx, both) == ("quic", "unconfirmed", ["quic.timeout", "quic.fails_for_any_name"], [])
    alone = _observations(chain, _quic("target", HOST, "generic_timeout_error"))  # --control-sni none
    assert _judged(ctx, alone) == ("quic", "unconfirmed", ["quic.timeout"], [])


def test_what_is_no_quic_blocking(ctx: AnalysisContext, chain: list[str]) -> None:
    clean = _judged(ctx, _observations(chain))
    assert clean[:3] == ("none", "confirmed", [])
    worked = _observations(chain, _quic("target", HOST, None, 6), _quic("control_sni", CONTROL, None, 6))
    assert _judged(ctx, worked) == clean
    # The server closed the name's handshake: a QUIC server answered. A hint, no claim.
    closed = _observations(chain, _quic("target", HOST, "ssl_failed_handshake", 2, 0x128),
                           _quic("control_sni", CONTROL, None, 6))  # fmt: skip
    assert _judged(ctx, closed)[:3] == ("none", "unconfirmed", ["quic.failure"])
    # TLS over TCP failed at the address: the earlier stage's verdict, the QUIC stage never reached.
    cut = _observations(chain, _quic("target", HOST, "generic_timeout_error"), _quic("control_sni", CONTROL, None, 6),
                        tls_failure="connection_reset")  # fmt: skip
    assert _judged(ctx, cut)[0] != "quic"


def test_quic_observations_encode_back_to_the_same_json_and_show_in_plain_words(chain: list[str]) -> None:
    observations = _observations(
        chain, _quic("target", HOST, "generic_timeout_error"), _quic("control_sni", CONTROL, None, 6)
    )
    typed = decode(observations)
    assert typed.quic is not None and typed.quic.handshakes[0].silent and typed.quic.handshakes[1].completed
    assert encode(typed)["quic"] == observations["quic"]
    record = {"target": {"input": HOST}, "blocking": "quic", "confidence": "confirmed", "anomalies": [],
              "confidence_basis": ["quic_control_sni_completed"], "measurement_start_time": "t",
              "measurement_id": "m", "observations": observations}  # fmt: skip
    shown = format_record(record)
    assert "the control name's QUIC handshake completing at the same address" in shown
    assert f"quic {ADDRESS}:443 sni={HOST} (target): generic_timeout_error, nothing came back" in shown
    assert f"quic {ADDRESS}:443 sni={CONTROL} (control_sni): h3 (QUIC 0x00000001), HTTP/3 200" in shown


# --- the report and the alerts ----------------------------------------------------------------------

LAB_RECORDS = Path(__file__).parent / "data" / "quic-lab-records.jsonl"  # a run in tests/lab/quicworld.py


def _cli(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_says_quic_blocking_in_each_language() -> None:
    text = _cli("report", str(LAB_RECORDS), "--format", "md", "--language", "en", "--language", "ru",
                "--language", "kk")  # fmt: skip
    assert "| HTTP/3 (QUIC) blocked | 1 | 1 | 1 | 1 | 1 |" in text  # a sentence for the confirmed one only
    assert ("HTTP/3 (QUIC) connections to 1 site (named.quic.lab) were blocked while ordinary connections to the "
            "same servers worked. What was seen: QUIC handshakes went unanswered and the same servers completed "
            "QUIC handshakes naming other sites.") in text  # fmt: skip
    assert "соединения HTTP/3 (QUIC) с 1 сайтом (named.quic.lab) блокировались" in text
    assert "HTTP/3 (QUIC) қосылымдары бұғатталды" in text


def test_an_alert_names_quic_blocking(tmp_path: Path) -> None:
    records = [json.loads(line) for line in LAB_RECORDS.read_text(encoding="utf-8").splitlines()]
    named = by_host(records)["named.quic.lab"]
    store = tmp_path / "store"
    store.mkdir()
    start = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    lines = []
    for hour in range(6):
        at = (start + dt.timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(json.dumps({**named, "measurement_id": f"{hour:032x}", "measurement_start_time": at}))
    (store / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for language, title in (("en", "HTTP/3 (QUIC) blocking, 1 site"), ("ru", "блокировка HTTP/3 (QUIC), 1 сайт")):
        feed = tmp_path / f"{language}.xml"
        _cli("watch", str(store), "--once", "--quiet", "--atom", str(feed), "--language", language, "--state",
             str(tmp_path / f"{language}.json"))  # fmt: skip
        assert title in feed.read_text(encoding="utf-8")


# --- the lab --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quic_lab() -> Iterator[Any]:
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    from tests.lab.chainworld import running
    from tests.lab.quicworld import QuicWorld

    with running(QuicWorld(f"qw{os.getpid() % 100000}")) as lab:
        yield lab


@pytest.fixture(scope="module")
def lab_records(quic_lab: Any) -> dict[str, dict]:
    from tests.lab import quicworld as q

    out = quic_lab.directory / "out"
    targets = quic_lab.directory / "targets.txt"
    targets.write_text("\n".join(q.TARGETS) + "\n", encoding="ascii")
    result = quic_lab.probe("run", "--targets", str(targets), "--out", str(out), "--roots", str(quic_lab.roots_pem),
                            "--control-resolver", f"udp://{q.RESOLVER}", "--control-sni", q.CONTROL_NAME, "--lab",
                            "--os-store", "none", "--no-forensics", "--timeout", "2", "--quiet", "--yes")  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]  # blocking found
    return by_host(read_results(out))


@pytest.mark.lab
def test_quic_blocked_by_name_is_confirmed_while_tcp_works(lab_records: dict[str, dict]) -> None:
    from tests.lab import quicworld as q

    record = lab_records[q.SNI_BLOCKED_NAME]
    assert (record["blocking"], record["confidence"]) == ("quic", "confirmed"), record["anomalies"]
    assert record["confidence_basis"] == ["quic_control_sni_completed"]
    assert "quic.sni_triggered" in record["anomalies"]
    handshakes = {h["purpose"]: h for h in record["observations"]["quic"]["handshakes"]}
    assert (handshakes["target"]["failure"], handshakes["target"]["datagrams_received"]) == ("generic_timeout_error", 0)
    assert handshakes["control_sni"]["negotiated_protocol"] == "h3"
    assert record["observations"]["http_requests"][0]["status"] == 200  # the page came over TCP


@pytest.mark.lab
def test_udp_dropped_to_an_address_is_quic_blocking_unconfirmed(lab_records: dict[str, dict]) -> None:
    from tests.lab import quicworld as q

    record = lab_records[q.UDP_DROPPED_NAME]
    assert (record["blocking"], record["confidence"]) == ("quic", "unconfirmed")
    assert record["anomalies"] == ["quic.timeout", "quic.fails_for_any_name"]
    assert [h["datagrams_received"] for h in record["observations"]["quic"]["handshakes"]] == [0, 0]
    assert record["observations"]["tls_handshakes"][0]["failure"] is None


@pytest.mark.lab
def test_the_other_address_is_none_with_its_quic_handshake_recorded(lab_records: dict[str, dict]) -> None:
    from tests.lab import quicworld as q

    record = lab_records[q.OPEN_NAME]
    assert (record["blocking"], record["anomalies"]) == ("none", [])
    quic = record["observations"]["quic"]
    assert (quic["reason"], quic["alt_svc"]) == ("alt_svc", 'h3=":443"; ma=86400')
    target = next(h for h in quic["handshakes"] if h["purpose"] == "target")
    assert (target["failure"], target["negotiated_protocol"], target["http_status"]) == (None, "h3", 200)
    assert target["quic_version"] == "0x00000001" and target["peer_certificates"]


@pytest.mark.lab
def test_a_site_without_h3_is_not_asked(lab_records: dict[str, dict]) -> None:
    from tests.lab import quicworld as q

    record = lab_records[q.NO_H3_NAME]
    assert record["blocking"] == "none"
    # No Alt-Svc: not asked (nothing serves UDP/443 there: asked, it would be refused), while the sites
    # that advertise h3 were, in the same run.
    assert "quic" not in record["observations"]
    assert all("quic" in lab_records[name]["observations"] for name in q.H3_NAMES)
