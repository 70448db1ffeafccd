"""End-to-end `probe run` against TLS servers and real resolvers (dnsmasq) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from tests import pki
from tests.conftest import PkiFixture, by_host, qaznet_root, read_results
from tests.dnsmasq import Dnsmasq
from tests.tlsserver import TlsServer
from tests.unbound import Unbound

NAMES = [
    "valid.test",
    "isca.test",
    "kzroot.test",
    "antivirus.test",
    "reset.test",
    "blocked.test",
    "silent.test",
    "closed.test",
    "http-closed.test",
    "redirects-inward.test",
]


@pytest.fixture(scope="module")
def world(test_pki: PkiFixture) -> Iterator[dict]:
    directory = test_pki.directory
    isca_root = pki.make_root(pki.name(C="KZ", O="ISCA", CN="Information Security Certification Authority CA"))
    isca_sub = pki.make_intermediate(isca_root, pki.name(C="KZ", CN="Security Certificate"))
    # The real Qaznet root cannot sign (no key): a look-alike intermediate carries its name,
    # and the server presents the real root certificate after it, as interceptors do.
    real_root = qaznet_root()
    qaznet_like = pki.make_root(real_root.subject)
    antivirus_root = pki.make_root(pki.name(CN="ESET SSL Filter CA", O="ESET, spol. s r. o.", C="SK"))
    valid = test_pki.leaf_files(test_pki.public_intermediate, ["valid.test"], "valid")
    behaviours = {
        "valid.test": valid,
        "blocked.test": test_pki.leaf_files(test_pki.public_intermediate, ["blocked.test"], "blocked"),
        "isca.test": pki.make_leaf(isca_sub, ["isca.test"], rsa_exponent=3, stripped=True).write(directory, "isca"),
        "kzroot.test": pki.make_leaf(qaznet_like, ["kzroot.test"], extra_chain=[real_root]).write(directory, "kzroot"),
        "antivirus.test": pki.make_leaf(antivirus_root, ["antivirus.test"]).write(directory, "antivirus"),
        "reset.test": "reset",
        "silent.test": "silence",
        "closed.test": "close",
        "redirects-inward.test": (
            *test_pki.leaf_files(test_pki.public_intermediate, ["redirects-inward.test"], "ri"),
            "redirect:http://169.254.169.254/latest/meta-data/",
        ),
        "http-closed.test": (
            *test_pki.leaf_files(test_pki.public_intermediate, ["http-closed.test"], "hc"),
            "close-after-request",
        ),
    }
    system = Dnsmasq({**{n: "127.0.0.1" for n in NAMES if n != "blocked.test"}, "blocked.test": None})
    control = Dnsmasq({n: "127.0.0.1" for n in NAMES})
    try:
        with TlsServer(behaviours, default=valid) as server:
            yield {"server": server, "system": system, "control": control}
    finally:
        system.stop()
        control.stop()


def _targets(tmp_path: Path, port: int, hosts: list[str]) -> Path:
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"{host}:{port} NEWS\n" for host in hosts), encoding="utf-8")
    return path


def _args(world: dict, test_pki: PkiFixture, targets: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--targets", str(targets),
        "--out", str(out),
        "--roots", str(test_pki.roots_pem),
        "--resolver", f"127.0.0.1:{world['system'].port}",
        "--control-resolver", f"udp://127.0.0.1:{world['control'].port}",
        "--timeout", "2",
        "--dns-window", "0.3",
        # The injection probe would ask 127.0.0.1:53, where the machine may run its own resolver.
        "--no-injection-check",
        "--yes",  # unattended: consent given (tests/test_consent.py)
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def verdicts(world: dict, test_pki: PkiFixture, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One run over every name: the records, by host."""
    tmp = tmp_path_factory.mktemp("run")
    hosts = [n for n in NAMES if n != "silent.test"]
    code = main(_args(world, test_pki, _targets(tmp, world["server"].port, hosts), tmp / "out"))
    records = by_host(read_results(tmp / "out"))
    assert code == 1  # blocking found
    assert set(records) == set(hosts)
    return records


def test_valid_chain_gives_none(verdicts: dict[str, dict]) -> None:
    record = verdicts["valid.test"]
    assert record["blocking"] == "none"
    assert record["anomalies"] == []
    assert record["interceptor"] is None
    handshake = record["observations"]["tls_handshakes"][0]
    assert handshake["server_name"] == "valid.test"
    assert len(handshake["peer_certificates"]) == 2  # leaf and intermediate, as presented
    assert record["analysis"]["tls"]["valid"] is True


def test_isca_named_root_gives_tls_mitm_by_name(verdicts: dict[str, dict]) -> None:
    record = verdicts["isca.test"]
    assert record["blocking"] == "tls_mitm"
    assert record["interceptor"]["catalog"] == "interception_cas"
    assert record["interceptor"]["catalog_id"] == "kz-isca"
    assert record["interceptor"]["matched_by"] == "issuer_name"
    assert record["interceptor"]["issuer"] == "CN=Security Certificate,C=KZ"
    assert "tls.interception_ca_name" in record["anomalies"]
    assert "tls.untrusted_chain" in record["anomalies"]
    # The 2019 forgeries' marks are reported as supporting evidence.
    for code in ("tls.rsa_exponent_3", "tls.no_scts", "tls.extensions_stripped"):
        assert code in record["anomalies"]
    # The same address answered the control SNI with the site's own chain: the name triggers it.
    assert "tls.sni_triggered" in record["anomalies"]
    # A catalogued name on a key nobody catalogued: what any forger can make, so a suspicion.
    assert (record["confidence"], record["confidence_basis"]) == ("unconfirmed", [])
    control = record["observations"]["tls_handshakes"][1]
    assert control["purpose"] == "control_sni" and control["server_name"] == "example.org"


def test_the_real_kazakhstan_root_appended_to_a_look_alikes_chain_is_only_a_name(verdicts: dict[str, dict]) -> None:
    """The server presents the real Qaznet root after a leaf that a root of the same name (another
    key) signed: anyone can append a public certificate, so only the name speaks: a suspicion."""
    record = verdicts["kzroot.test"]
    assert (record["blocking"], record["confidence"]) == ("tls_mitm", "unconfirmed")
    assert record["interceptor"]["matched_by"] in ("issuer_name", "subject_name")
    assert "tls.interception_ca_name" in record["anomalies"]
    assert "tls.known_interception_ca" not in record["anomalies"]
    # The real root is in the record, for an analyst: by its fingerprint.
    assert len(record["analysis"]["tls"]["certificates"]) == 2


def test_antivirus_root_gives_local_interception(verdicts: dict[str, dict]) -> None:
    record = verdicts["antivirus.test"]
    assert record["blocking"] == "local_interception"
    assert record["interceptor"]["catalog"] == "local_interceptors"
    assert record["interceptor"]["catalog_id"] == "eset"
    assert "tls.local_interceptor" in record["anomalies"]


def test_reset_after_client_hello_gives_tls(verdicts: dict[str, dict]) -> None:
    record = verdicts["reset.test"]
    assert record["blocking"] == "tls"
    assert "tls.reset" in record["anomalies"]
    assert "tls.sni_triggered" in record["anomalies"]
    target, control, retry, after = record["observations"]["tls_handshakes"]
    assert target["failure"] == "connection_reset"
    assert control["purpose"] == "control_sni" and control["failure"] is None
    # The control reached the server: the name is tried once more before a block is concluded,
    # and the control once more after it (the server resets only the name: no residual blocking).
    assert (retry["purpose"], retry["failure"]) == ("target_retry", "connection_reset")
    assert (after["purpose"], after["failure"]) == ("control_sni", None)
    assert "tls.residual_blocking" not in record["anomalies"]
    assert (record["confidence"], record["confidence_basis"]) == ("confirmed", ["control_sni_reached_server"])


def test_name_denied_by_system_resolver_gives_dns(verdicts: dict[str, dict]) -> None:
    record = verdicts["blocked.test"]
    assert record["blocking"] == "dns"
    assert "dns.nxdomain" in record["anomalies"]
    dns = record["observations"]["dns"]
    assert dns["system"]["failure"] == "dns_nxdomain_error"
    assert dns["system"]["queries"][0]["rcode"] == "NXDOMAIN"
    assert dns["control"]["addresses"] == ["127.0.0.1"]
    assert record["observations"]["addresses_from"] == "control"


def test_record_keeps_input_and_category(verdicts: dict[str, dict]) -> None:
    record = verdicts["valid.test"]
    assert record["target"]["input"] == f"valid.test:{record['target']['port']}"
    assert (record["target"]["category"], record["target"]["line"]) == ("NEWS", 1)
    assert record["network"]["resolver"].startswith("udp://127.0.0.1:")


def test_show_prints_certificates(verdicts: dict[str, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(verdicts["kzroot.test"]) + "\n", encoding="utf-8")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tls_mitm" in out
    assert "CN=Qaznet Trust Network,C=KZ" in out
    assert "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2" in out


def test_silence_after_client_hello_is_tls_timeout(world: dict, test_pki: PkiFixture, tmp_path: Path) -> None:
    targets = _targets(tmp_path, world["server"].port, ["silent.test"])
    assert main(_args(world, test_pki, targets, tmp_path / "out", "--timeout", "1")) == 1
    (record,) = read_results(tmp_path / "out")
    assert record["blocking"] == "tls"
    assert record["anomalies"][:2] == ["tls.timeout", "tls.sni_triggered"]


def test_sigterm_midway_keeps_every_finished_record(world: dict, test_pki: PkiFixture, tmp_path: Path) -> None:
    hosts = ["valid.test"] * 3 + ["silent.test"] * 6
    targets = _targets(tmp_path, world["server"].port, hosts)
    out = tmp_path / "out"
    args = _args(world, test_pki, targets, out, "--concurrency", "1", "--timeout", "3")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "probe", *args], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = list(out.rglob("*.jsonl"))
            if files and files[0].read_text().count("\n") >= 4:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 4
        assert "The run was interrupted" in (process.stdout.read() if process.stdout else "")
    finally:
        if process.poll() is None:
            process.kill()
    records = read_results(out)
    assert 4 <= len(records) < len(hosts)
    assert [r["blocking"] for r in records[:3]] == ["none"] * 3


@pytest.fixture(scope="module")
def failing_resolvers() -> Iterator[dict]:
    """A resolver that refuses (dnsmasq), one that fails (unbound forwarding to the refusing one),
    and one with no address for a name."""
    refusing = Dnsmasq({"known.test": "127.0.0.1"})  # no upstream: other names are REFUSED
    dead_upstream = Unbound("servfail.test", refusing.port)
    no_address = Dnsmasq({"known.test": "127.0.0.1"}, ["--local=/noaddr.test/", "--txt-record=noaddr.test,text-only"])
    control = Dnsmasq({n: "127.0.0.1" for n in ("known.test", "refused.test", "servfail.test", "noaddr.test")})
    try:
        yield {"refusing": refusing, "dead_upstream": dead_upstream, "no_address": no_address, "control": control}
    finally:
        for server in (refusing, dead_upstream, no_address, control):
            server.stop()


def _dns_only_run(tmp_path: Path, resolver_port: int, control_port: int, host: str) -> dict:
    targets = tmp_path / "targets.txt"
    targets.write_text(f"{host}:9\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main([
        "run", "--targets", str(targets), "--out", str(out),
        "--resolver", f"127.0.0.1:{resolver_port}", "--control-resolver", f"udp://127.0.0.1:{control_port}",
        "--timeout", "1", "--dns-window", "0.2", "--control-sni", "none", "--no-injection-check", "--yes",
    ])  # fmt: skip
    (record,) = read_results(out)
    assert code == 1
    return record


@pytest.mark.parametrize(
    ("resolver", "host", "code", "rcode"),
    [
        ("refusing", "refused.test", "dns.refused", "REFUSED"),
        ("dead_upstream", "servfail.test", "dns.servfail", "SERVFAIL"),
        ("no_address", "noaddr.test", "dns.no_answer", "NOERROR"),
    ],
)
def test_resolver_failures_are_named(
    failing_resolvers: dict, tmp_path: Path, resolver: str, host: str, code: str, rcode: str
) -> None:
    record = _dns_only_run(tmp_path, failing_resolvers[resolver].port, failing_resolvers["control"].port, host)
    assert record["blocking"] == "dns"
    assert record["anomalies"][0] == code
    assert record["observations"]["dns"]["system"]["queries"][0]["rcode"] == rcode


def test_silent_resolver_is_dns_timeout(failing_resolvers: dict, tmp_path: Path) -> None:
    from tests.dnsmasq import free_udp_port

    record = _dns_only_run(tmp_path, free_udp_port(), failing_resolvers["control"].port, "known.test")
    assert (record["blocking"], record["anomalies"][0]) == ("dns", "dns.timeout")
    assert record["observations"]["dns"]["system"]["failure"] == "generic_timeout_error"


def test_close_after_client_hello_is_tls_eof(verdicts: dict[str, dict]) -> None:
    record = verdicts["closed.test"]
    assert (record["blocking"], record["anomalies"]) == ("tls", ["tls.eof", "tls.sni_triggered"])
    assert record["observations"]["tls_handshakes"][0]["failure"] == "eof_error"


def test_close_after_the_http_request_is_http_eof(verdicts: dict[str, dict]) -> None:
    record = verdicts["http-closed.test"]
    assert (record["blocking"], record["anomalies"]) == ("http", ["http.eof"])
    assert record["observations"]["tls_handshakes"][0]["failure"] is None


@pytest.fixture(scope="module")
def unnamed_antivirus(test_pki: PkiFixture) -> Iterator[dict]:
    """A local interceptor whose name no catalog knows: it forges every name, the control's too."""
    root = pki.make_root(pki.name(CN="Contoso Web Shield Root", O="Contoso"))
    forged = pki.make_leaf(root, ["shielded.test", "example.org"]).write(test_pki.directory, "contoso")
    system = Dnsmasq({"shielded.test": "127.0.0.1"})
    control = Dnsmasq({"shielded.test": "127.0.0.1"})
    os_store = pki.write_pem(test_pki.directory / "os-store.pem", [test_pki.public_root.cert, root.cert])
    try:
        with TlsServer({}, default=forged) as server:
            yield {"server": server, "system": system, "control": control, "os_store": os_store}
    finally:
        system.stop()
        control.stop()


@pytest.mark.parametrize("trusted", [True, False], ids=["in-os-store", "not-in-os-store"])
def test_unnamed_interceptor_trusted_by_the_machine_is_local(
    unnamed_antivirus: dict, test_pki: PkiFixture, tmp_path: Path, trusted: bool
) -> None:
    targets = _targets(tmp_path, unnamed_antivirus["server"].port, ["shielded.test"])
    store = unnamed_antivirus["os_store"] if trusted else test_pki.roots_pem
    main(_args(unnamed_antivirus, test_pki, targets, tmp_path / "out", "--os-store", str(store)))
    (record,) = read_results(tmp_path / "out")
    assert record["observations"]["tls_handshakes"][0]["os_store_valid"] is trusted
    if trusted:
        assert record["blocking"] == "local_interception"
        assert "tls.trusted_by_os_store" in record["anomalies"]
        assert record["interceptor"]["matched_by"] == "os_store"
    else:  # a root nobody here trusts, from an unknown issuer: substituted, and said so
        assert record["blocking"] == "tls_mitm"
        assert record["interceptor"]["catalog_id"] is None
        assert "tls.sni_triggered" not in record["anomalies"]  # it forged the control name too


def test_a_redirect_into_the_machines_own_link_is_not_followed(verdicts: dict[str, dict]) -> None:
    record = verdicts["redirects-inward.test"]
    (request,) = record["observations"]["http_requests"]
    assert (request["status"], request["location"]) == (302, "http://169.254.169.254/latest/meta-data/")
    assert record["observations"]["redirect_refused"] == {
        "url": "http://169.254.169.254/latest/meta-data/",
        "address": "169.254.169.254",
    }
    assert not [c for c in record["observations"]["tcp_connect"] if c["address"] == "169.254.169.254"]


def test_a_bug_in_one_stage_keeps_what_the_earlier_stages_observed(
    world: dict, test_pki: PkiFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from probe.observe import measure as measure_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the connection stage")

    monkeypatch.setattr(measure_module, "connect_with_contrast", broken)
    targets = _targets(tmp_path, world["server"].port, ["valid.test"])
    assert main(_args(world, test_pki, targets, tmp_path / "out")) == 0
    (record,) = read_results(tmp_path / "out")
    assert record["blocking"] == "inconclusive" and "a bug in the connection stage" in record["error"]
    assert record["observations"]["dns"]["system"]["addresses"] == ["127.0.0.1"]  # DNS was kept
    assert record["observations"]["addresses_from"] == "system"


def test_an_unparseable_redirect_is_recorded(world: dict, test_pki: PkiFixture, tmp_path: Path) -> None:
    behaviours = {"bad-location.test": (*test_pki.leaf_files(test_pki.public_intermediate, ["bad-location.test"], "bl"),
                                        "redirect:http://[x")}  # fmt: skip
    system = Dnsmasq({"bad-location.test": "127.0.0.1"})
    control = Dnsmasq({"bad-location.test": "127.0.0.1"})
    try:
        with TlsServer(behaviours) as server:
            targets = _targets(tmp_path, server.port, ["bad-location.test"])
            args = _args({"system": system, "control": control}, test_pki, targets, tmp_path / "out")
            assert main(args) == 0
    finally:
        system.stop()
        control.stop()
    (record,) = read_results(tmp_path / "out")
    assert record["blocking"] == "none" and "error" not in record
    assert record["observations"]["redirect_error"]["location"] == "http://[x"
    assert len(record["observations"]["http_requests"]) == 1


def test_the_whole_target_is_bounded_by_its_deadline(world: dict, test_pki: PkiFixture, tmp_path: Path) -> None:
    """Silence after the ClientHello, twice (the name is retried after the control): each step would
    take the full --timeout; the target's deadline gives the retry only what is left."""
    targets = _targets(tmp_path, world["server"].port, ["silent.test"])
    args = _args(world, test_pki, targets, tmp_path / "out", "--timeout", "2", "--target-deadline", "3")
    assert main(args) in (0, 1)
    (record,) = read_results(tmp_path / "out")
    target, control, retry = record["observations"]["tls_handshakes"]
    assert (target["failure"], control["failure"], retry["purpose"]) == ("generic_timeout_error", None, "target_retry")
    assert retry["t"] - retry["t0"] < 1.5  # what was left of 3 s, not another full 2 s step
    assert retry["t"] < 3 + 0.5  # the record's own clock: the target ended at its deadline


def test_the_minting_test_asks_a_name_that_cannot_exist_unless_told_not_to(
    world: dict, test_pki: PkiFixture, tmp_path: Path, verdicts: dict[str, dict]
) -> None:
    """A chain that does not validate: the same address is asked for a random `.invalid` name under
    the target's (this server answers it with its default chain: no minting shown)."""
    (minting,) = [h for h in verdicts["isca.test"]["observations"]["tls_handshakes"] if h["purpose"] == "minting"]
    assert minting["server_name"].endswith(".isca.test.invalid") and len(minting["server_name"]) > 25
    assert "tls.minted_certificate" not in verdicts["isca.test"]["anomalies"]
    assert not [h for h in verdicts["valid.test"]["observations"]["tls_handshakes"] if h["purpose"] == "minting"]
    targets = _targets(tmp_path, world["server"].port, ["isca.test"])
    main(_args(world, test_pki, targets, tmp_path / "out", "--no-minting-test"))
    (record,) = read_results(tmp_path / "out")
    assert "minting" not in [h["purpose"] for h in record["observations"]["tls_handshakes"]]
    assert record["blocking"] == "tls_mitm"
