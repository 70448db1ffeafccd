"""End-to-end scenarios in the censorship lab: the real `probe run`, inside the client namespace.

Each test asserts one scenario's verdict and its key evidence; the lab is built once for the
module and torn down afterwards, also when a test fails or the run is interrupted.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import by_host, read_results
from tests.lab import topology as t
from tests.lab.lab import Lab, missing_prerequisites

pytestmark = pytest.mark.lab

_REASON = missing_prerequisites()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so that teardown runs on SIGTERM too
    instance = Lab(f"kz{os.getpid() % 100000}")
    atexit.register(instance.down, True)
    try:
        yield instance.up()
    finally:
        instance.down(quiet=True)
        atexit.unregister(instance.down)
        signal.signal(signal.SIGTERM, previous)


HTTPS_SCENARIOS = [
    "clean.lab",
    "news.lab",
    "dns-bogon.lab",
    "dns-nxdomain.lab",
    "dns-blockpage.lab",
    "rst-syn.lab",
    "blackhole.lab",
    "tls-reset.lab",
    "tls-silence.lab",
    "forged.lab",
    "passed.lab",
    "antivirus.lab",
    "broken.lab",
    "cdn.lab",
    "dns-injected.lab",
    # The real web's certificate mess (issue 10): none of it is censorship.
    "aia.lab",
    "expired.lab",
    "www-only.lab",
    "cdn-strict.lab",
    "cdn-open.lab",
    "late-injected.lab",
    # Confirmed means proven (issue 19): honest look-alikes of interception, and its proofs.
    "national.lab",
    "national-own.lab",
    "reissued.lab",
    "cdn-siblings.lab",
    "minted.lab",
    "unparseable.lab",
    "residual.lab",
]
HTTP_SCENARIOS = [
    "http://http-clean.lab/",
    "http://http-blocked.lab/",
    "http://http-rst.lab/",
    "http://http-silence.lab/",
    "http://http-redirect.lab/news/today",
    "http://redirect-out.lab/",
    "http://login-redirect.lab/",
    "http://http-ooni.lab/",
    "http://loop.lab/",
]


DOT_CONTROL = f"tls://{t.PUBLIC_RESOLVER}#{t.RESOLVER_NAME}"
DOH_CONTROL = f"https://{t.PUBLIC_RESOLVER}/dns-query"


def _run_args(lab: Lab, targets: Path, out: Path, control: str = DOT_CONTROL) -> list[str]:
    return [
        "run",
        "--targets", str(targets),
        "--out", str(out),
        "--roots", str(lab.roots_pem),
        "--control-resolver", control,
        "--catalog", str(lab.catalog),
        "--catalog", str(lab.national_catalog),
        "--lab",
        "--timeout", "3",
        "--concurrency", "16",
        "--yes",  # the lab's runs are unattended: consent given (tests/test_consent.py asks at a terminal)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def records(lab: Lab) -> dict[str, dict]:
    targets = lab.directory / "targets.txt"
    targets.write_text("\n".join(HTTPS_SCENARIOS + HTTP_SCENARIOS) + "\n", encoding="utf-8")
    out = lab.directory / "results"
    result = lab.probe(lab.client, *_run_args(lab, targets, out))
    assert result.returncode == 1, result.stderr  # blocking found
    assert "forged.lab: tls_mitm, issuer CN=Information Security Certification Authority CA" in result.stdout
    found = by_host(read_results(out))
    assert len(found) == len(HTTPS_SCENARIOS + HTTP_SCENARIOS)
    return found


def test_clean_sites_give_none(records: dict[str, dict]) -> None:
    for host in ("clean.lab", "news.lab", "http-clean.lab"):
        assert records[host]["blocking"] == "none", host
        assert records[host]["anomalies"] == [], host
    dns = records["clean.lab"]["observations"]["dns"]
    assert dns["system"]["addresses"] == dns["control"]["addresses"] == [t.CLEAN_SITES]


def test_resolver_bogon_gives_dns(records: dict[str, dict]) -> None:
    record = records["dns-bogon.lab"]
    assert record["blocking"] == "dns"
    assert record["anomalies"][0] == "dns.bogon"
    assert record["observations"]["dns"]["system"]["addresses"] == ["10.10.34.35"]


def test_resolver_nxdomain_gives_dns(records: dict[str, dict]) -> None:
    record = records["dns-nxdomain.lab"]
    assert (record["blocking"], record["anomalies"][0]) == ("dns", "dns.nxdomain")
    # The probe still looked at the real site through the control's address: it is reachable.
    assert record["observations"]["addresses_from"] == "control"
    assert record["observations"]["tls_handshakes"][0]["failure"] is None


def test_resolver_blockpage_address_gives_dns(records: dict[str, dict]) -> None:
    record = records["dns-blockpage.lab"]
    assert (record["blocking"], record["anomalies"][0]) == ("dns", "dns.blockpage_ip")
    assert record["blockpage"]["id"] == "lab-isp-blockpage-address"


def test_rst_on_syn_gives_tcp(records: dict[str, dict]) -> None:
    record = records["rst-syn.lab"]
    assert (record["blocking"], record["anomalies"]) == ("tcp", ["tcp.refused"])
    assert record["observations"]["tcp_connect"][0]["failure"] == "connection_refused"


def test_blackholed_address_gives_tcp(records: dict[str, dict]) -> None:
    record = records["blackhole.lab"]
    assert (record["blocking"], record["anomalies"]) == ("tcp", ["tcp.timeout"])


def test_rst_after_client_hello_gives_tls(records: dict[str, dict]) -> None:
    record = records["tls-reset.lab"]
    assert record["blocking"] == "tls"
    assert record["anomalies"] == ["tls.reset", "tls.sni_triggered", "tls.injected_rst"]
    # The ISP's router (one hop away) sent the reset: it arrives with TTL 64, the server's packets,
    # one hop further, with 63 (the lab runs as root: the packet capture is on).
    marks = record["analysis"]["forensics"]["injected_rst"]
    assert {(m["stage"], m["purpose"], m["rst"]["ip_ttl"], m["server"]["ip_ttl"]) for m in marks} >= {
        ("tls", "target", 64, 63)
    }
    target, control, retry, after = record["observations"]["tls_handshakes"]
    assert (target["server_name"], target["failure"]) == ("tls-reset.lab", "connection_reset")
    # ... and the control once more: the block did not outlive the name (no residual blocking).
    assert (after["purpose"], after["failure"]) == ("control_sni", None)
    assert (control["purpose"], control["failure"], control["address"]) == ("control_sni", None, t.SNI_FILTERED)
    # Tried once more after the control reached the server: one lost packet is not a block.
    assert (retry["purpose"], retry["failure"]) == ("target_retry", "connection_reset")
    assert record["confidence"] == "confirmed"


def test_silence_after_client_hello_gives_tls(records: dict[str, dict]) -> None:
    record = records["tls-silence.lab"]
    assert record["blocking"] == "tls"
    assert record["anomalies"] == ["tls.timeout", "tls.sni_triggered"]
    assert record["observations"]["tls_handshakes"][0]["failure"] == "generic_timeout_error"


def test_sni_triggered_forging_gives_tls_mitm_naming_the_issuer(records: dict[str, dict]) -> None:
    record = records["forged.lab"]
    assert record["blocking"] == "tls_mitm"
    interceptor = record["interceptor"]
    assert interceptor["issuer"] == "CN=Information Security Certification Authority CA,O=ISCA,C=KZ"
    assert (interceptor["catalog_id"], interceptor["matched_by"]) == ("kz-isca", "issuer_name")
    assert {"tls.untrusted_chain", "tls.interception_ca_name", "tls.sni_triggered"} <= set(record["anomalies"])
    # mitmproxy copied the real certificate's name into the forgery.
    assert record["analysis"]["tls"]["certificates"][0]["dns_names"] == ["forged.lab"]


def test_site_behind_the_interceptor_not_on_its_list_gives_none(records: dict[str, dict]) -> None:
    record = records["passed.lab"]
    assert (record["blocking"], record["anomalies"], record["interceptor"]) == ("none", [], None)
    leaf = record["analysis"]["tls"]["certificates"][0]
    assert leaf["issuer"] == "O=Lab Trust Services,CN=Lab Public Issuing CA"


def test_antivirus_named_interceptor_gives_local_interception(records: dict[str, dict]) -> None:
    record = records["antivirus.lab"]
    assert record["blocking"] == "local_interception"
    assert (record["interceptor"]["catalog"], record["interceptor"]["catalog_id"]) == ("local_interceptors", "eset")


def test_plain_http_blockpage_gives_http(records: dict[str, dict]) -> None:
    record = records["http-blocked.lab"]
    assert (record["blocking"], record["anomalies"]) == ("http", ["http.blockpage"])
    assert record["blockpage"]["id"] == "lab-isp-blockpage"
    assert record["observations"]["http_requests"][0]["title"] == t.BLOCKPAGE_TITLE


def test_the_volunteers_address_is_in_no_record(records: dict[str, dict], helped: dict[str, dict]) -> None:
    """The blockpage echoes the client's address and the helper sees it: neither reaches a record."""
    page = records["http-blocked.lab"]["observations"]["http_requests"][0]["body_prefix"]
    assert page.endswith("Your address: [scrubbed]</body></html>")
    for found in (records, helped):
        assert t.CLIENT_ADDRESS not in json.dumps(found)
    assert "client_address" not in json.dumps(helped)


def test_server_broken_for_every_name_is_not_called_censorship(records: dict[str, dict]) -> None:
    record = records["broken.lab"]
    assert record["blocking"] == "inconclusive"
    assert record["anomalies"] == ["tls.alert", "tls.fails_for_any_name"]
    assert record["observations"]["tls_handshakes"][0]["alert"] == "unrecognized_name"


def test_no_network_gives_offline_and_no_claim(lab: Lab) -> None:
    targets = lab.directory / "offline-targets.txt"
    targets.write_text("clean.lab\ntls-reset.lab\n", encoding="utf-8")
    out = lab.directory / "offline-results"
    result = lab.probe(lab.offline, *_run_args(lab, targets, out))
    assert result.returncode == 3, result.stderr
    assert "No network" in result.stdout
    found = read_results(out)
    assert [r["blocking"] for r in found] == ["offline", "offline"]
    assert all(r["observations"] is None and r["interceptor"] is None for r in found)
    assert json.dumps(found).count("tls.reset") == 0


def test_on_path_injector_gives_dns_injected(records: dict[str, dict]) -> None:
    record = records["dns-injected.lab"]
    assert record["blocking"] == "dns"
    assert "dns.injected" in record["anomalies"]
    probe = record["observations"]["dns"]["injection"]
    assert probe["address"] == t.CLEAN_SITES  # the site's own address, which runs no resolver
    forged = [r for r in probe["replies"] if r["answers"]]
    assert forged and forged[0]["answers"][0]["data"] == t.INJECTED_ANSWER
    assert forged[0]["ip_ttl"] == t.INJECTED_IP_TTL
    # The packet capture (the lab runs as root) saw the same forged reply on the wire, with its IP ID.
    (seen,) = probe["wire_replies"]
    assert (seen["source"], seen["ip_ttl"]) == (t.CLEAN_SITES, t.INJECTED_IP_TTL) and isinstance(seen["ip_id"], int)
    # The direct query to the ISP resolver got two replies: the real one and the forged one.
    (a_query,) = [q for q in record["observations"]["dns"]["system_udp"]["queries"] if q["query_type"] == "A"]
    assert {r["ip_ttl"] for r in a_query["replies"]} >= {t.INJECTED_IP_TTL}
    assert len(a_query["replies"]) == 2


def test_no_injection_where_nobody_injects(records: dict[str, dict]) -> None:
    for host in ("clean.lab", "cdn.lab", "tls-reset.lab"):
        probe = records[host]["observations"]["dns"]["injection"]
        assert probe["replies"] == [] and probe["failure"] is None, host
        assert probe["wire_replies"] == [], host  # nothing on the wire either
        assert "dns.injected" not in records[host]["anomalies"]


def test_cdn_answers_that_differ_but_serve_a_valid_certificate_give_none(records: dict[str, dict]) -> None:
    record = records["cdn.lab"]
    dns = record["observations"]["dns"]
    assert dns["system"]["addresses"] == [t.CDN_EDGE_B]
    assert dns["control"]["addresses"] == [t.CDN_EDGE_A]
    assert (record["blocking"], record["anomalies"]) == ("none", [])


def test_encrypted_control_and_its_plain_twin_agree_on_an_honest_path(records: dict[str, dict]) -> None:
    dns = records["clean.lab"]["observations"]["dns"]
    assert dns["control"]["transport"] == "tls"
    assert dns["control_plain"]["addresses"] == dns["control"]["addresses"]
    identity = dns["control_identity"]
    assert identity["plain"]["answers"][0]["data"] == identity["encrypted"]["answers"][0]["data"]
    assert "dns.transparent_proxy" not in records["clean.lab"]["anomalies"]


@pytest.mark.parametrize("control", [DOT_CONTROL, DOH_CONTROL], ids=["dot", "doh"])
def test_isp_rewriting_plain_dns_is_a_transparent_proxy(lab: Lab, control: str) -> None:
    targets = lab.directory / "hijacked-targets.txt"
    targets.write_text("clean.lab\ndns-bogon.lab\n", encoding="utf-8")
    out = lab.directory / f"hijacked-{control.split(':')[0]}"
    result = lab.probe(lab.hijacked, *_run_args(lab, targets, out, control))
    assert result.returncode == 1, result.stderr
    found = by_host(read_results(out))
    clean, lied = found["clean.lab"], found["dns-bogon.lab"]
    # The ISP's resolver answers as itself for the control's address: its identity gives it away.
    assert (clean["blocking"], clean["anomalies"]) == ("none", ["dns.transparent_proxy"])
    identity = clean["observations"]["dns"]["control_identity"]
    assert identity["encrypted"]["answers"][0]["data"] == f'"{t.RESOLVER_IDENTITY}"'
    assert identity["plain"]["rcode"] != "NOERROR" or identity["plain"]["answers"] != identity["encrypted"]["answers"]
    # For a name it lies about, the plain answer is the lie, while the encrypted control is not fooled.
    assert lied["blocking"] == "dns"
    assert {"dns.bogon", "dns.transparent_proxy"} <= set(lied["anomalies"])
    assert lied["observations"]["dns"]["control_plain"]["addresses"] == ["10.10.34.35"]
    assert lied["observations"]["dns"]["control"]["addresses"] == [t.CLEAN_SITES]


def test_every_namespace_has_its_own_resolver_and_no_route_out(lab: Lab) -> None:
    import ipaddress
    import subprocess

    lab_networks = [ipaddress.ip_network(n) for n in t.LAB_NETWORKS]
    for namespace in lab.namespaces:
        conf = Path("/etc/netns") / namespace / "resolv.conf"
        servers = [line.split()[1] for line in conf.read_text().splitlines() if line.startswith("nameserver")]
        assert servers and all(any(ipaddress.ip_address(s) in n for n in lab_networks) for s in servers)
        routes = subprocess.run(
            ["ip", "netns", "exec", namespace, "ip", "-4", "route", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert "default" not in routes, f"{namespace} has a default route: {routes}"


def test_https_page_is_fetched_over_the_handshake(records: dict[str, dict]) -> None:
    (request,) = records["clean.lab"]["observations"]["http_requests"]
    assert (request["status"], request["title"], request["address"]) == (200, "clean.lab", t.CLEAN_SITES)
    assert request["body_length"] > 0 and len(request["body_sha256"]) == 64


def test_rst_on_a_host_keyword_gives_http_reset(records: dict[str, dict]) -> None:
    record = records["http-rst.lab"]
    assert (record["blocking"], record["anomalies"]) == ("http", ["http.reset"])
    assert record["observations"]["http_requests"][0]["failure"] == "connection_reset"
    assert record["observations"]["tcp_connect"][0]["failure"] is None  # the connect itself worked


def test_silence_after_the_request_gives_http_timeout(records: dict[str, dict]) -> None:
    record = records["http-silence.lab"]
    assert (record["blocking"], record["anomalies"]) == ("http", ["http.timeout"])


def test_redirect_to_a_blockpage_host_gives_http_blockpage(records: dict[str, dict]) -> None:
    record = records["http-redirect.lab"]
    assert (record["blocking"], record["anomalies"]) == ("http", ["http.blockpage"])
    assert record["blockpage"]["id"] == "lab-isp-redirect"
    first, followed = record["observations"]["http_requests"]
    assert (first["status"], first["redirect_index"]) == (302, 0)
    assert first["location"] == f"http://{t.BLOCKPAGE_HOST}/blocked.html?host=http-redirect.lab"
    assert (followed["redirect_index"], followed["address"], followed["title"]) == (
        1,
        t.BLOCKPAGE_SERVER,
        t.BLOCKPAGE_TITLE,
    )


HELPER = f"https://{t.HELPER_ADDRESS}/"
HELPER_SCENARIOS = [
    "clean.lab",
    "selfsigned.lab",
    "down.lab",
    "forged.lab",
    "broken.lab",
    "tls-reset.lab",
    "dns-nxdomain.lab",
    "cdn-siblings.lab",
    "national.lab",
    "http://http-clean.lab/",
    "http://http-altered.lab/",
    t.VISITOR_SITE,
]


@pytest.fixture(scope="module")
def helped(lab: Lab) -> dict[str, dict]:
    """The same probe, asking the helper in the world while it measures."""
    targets = lab.directory / "helper-targets.txt"
    targets.write_text("\n".join(HELPER_SCENARIOS) + "\n", encoding="utf-8")
    out = lab.directory / "helper-results"
    asn_table = lab.directory / "ip2asn.tsv"
    asn_table.write_text("192.0.2.0\t192.0.2.255\t64500\tKZ\tLAB-ISP\n", encoding="utf-8")
    result = lab.probe(lab.client, *_run_args(lab, targets, out), "--helper", HELPER, "--asn-db", str(asn_table))
    assert result.returncode == 1, result.stderr
    found = by_host(read_results(out))
    for record in found.values():
        (asked,) = record["observations"]["helpers"]
        assert (asked["helper"], asked["status"], asked["failure"]) == (HELPER, 200, None)
    return found


def test_helper_confirms_a_clean_site(helped: dict[str, dict]) -> None:
    for host in ("clean.lab", "http-clean.lab"):
        assert (helped[host]["blocking"], helped[host]["anomalies"]) == ("none", []), host
    view = helped["clean.lab"]["observations"]["helpers"][0]["response"]
    assert view["tls"]["valid"] is True and view["http"]["title"] == "clean.lab"
    assert "body" not in json.dumps(view["http"]).replace("body_length", "").replace("body_sha256", "")


def test_site_down_for_everyone_is_down(helped: dict[str, dict], records: dict[str, dict]) -> None:
    record = helped["down.lab"]
    assert (record["blocking"], record["anomalies"]) == ("down", ["tcp.refused", "helper.same_failure"])
    assert record["observations"]["helpers"][0]["response"]["tcp"][0]["failure"] == "connection_refused"


def test_broken_server_is_down_when_the_helper_fails_too(helped: dict[str, dict]) -> None:
    record = helped["broken.lab"]
    assert record["blocking"] == "down"
    assert record["anomalies"] == ["tls.alert", "tls.fails_for_any_name", "helper.same_failure"]


def test_forged_chain_is_confirmed_by_the_helpers_fingerprint(helped: dict[str, dict]) -> None:
    record = helped["forged.lab"]
    assert record["blocking"] == "tls_mitm"
    assert "tls.cert_mismatch" in record["anomalies"]
    ours = record["analysis"]["tls"]["certificates"][0]
    theirs = record["observations"]["helpers"][0]["response"]["tls"]
    assert theirs["valid"] is True and theirs["leaf_spki_sha256"] != ours["sha256_spki"]
    assert theirs["leaf_issuer"] == "O=Lab Trust Services,CN=Lab Public Issuing CA"


def test_a_sites_own_untrusted_certificate_is_not_interception(helped: dict[str, dict]) -> None:
    record = helped["selfsigned.lab"]
    assert (record["blocking"], record["interceptor"]) == ("down", None)
    assert record["anomalies"][:2] == ["tls.untrusted_chain", "helper.same_failure"]
    assert record["observations"]["helpers"][0]["response"]["tls"]["valid"] is False


def test_blocking_confirmed_by_the_helper_stays_blocking(helped: dict[str, dict]) -> None:
    assert (helped["tls-reset.lab"]["blocking"], helped["dns-nxdomain.lab"]["blocking"]) == ("tls", "dns")


def test_page_unlike_the_helpers_is_http_diff(helped: dict[str, dict]) -> None:
    """The ISP's own page ("Notice / This page is not available."), which no fingerprint knows: unlike
    the helper's, with blocking words and not the site's title: `http`, unconfirmed (a site's own
    geo-block would look alike)."""
    record = helped["http-altered.lab"]
    assert (record["blocking"], record["confidence"]) == ("http", "unconfirmed")
    assert record["anomalies"] == ["http.diff", "http.blockpage_traits"]
    assert record["observations"]["http_requests"][0]["title"] == "Notice"
    assert record["observations"]["helpers"][0]["response"]["http"]["title"] == "http-altered.lab"


def test_a_page_that_prints_the_visitor_is_the_same_as_the_helpers(helped: dict[str, dict]) -> None:
    """The page prints the visitor's address (in its title too), the time and a token: the probe's
    visit and the helper's, from another address at another time, are the same page."""
    record = helped[t.VISITOR_SITE]
    assert (record["blocking"], record["anomalies"]) == ("none", [])
    ours = record["observations"]["http_requests"][0]
    theirs = record["observations"]["helpers"][0]["response"]["http"]
    assert ours["title"] == f"Your address is [scrubbed] - {t.VISITOR_SITE}"
    assert theirs["title"].startswith("Your address is 203.0.113.") and theirs["body_sha256"] != ours["body_sha256"]
    assert "server" in theirs["header_names"] and theirs["body_length_normalized"] > 2048


def test_unreachable_helper_is_recorded_and_verdicts_fall_back(lab: Lab) -> None:
    targets = lab.directory / "unreachable-helper-targets.txt"
    targets.write_text("tls-reset.lab\ndown.lab\n", encoding="utf-8")
    out = lab.directory / "unreachable-helper"
    result = lab.probe(lab.client, *_run_args(lab, targets, out), "--helper", f"https://{t.UNREACHABLE_HELPER}/")
    assert result.returncode == 1, result.stderr
    found = by_host(read_results(out))
    assert found["tls-reset.lab"]["blocking"] == "tls"
    assert found["down.lab"]["blocking"] == "tcp"  # without the helper, the probe cannot know better
    for record in found.values():
        assert "helper.failed" in record["anomalies"]
        assert record["observations"]["helpers"][0]["failure"] == "connection_refused"


def test_helper_refuses_a_private_address_or_a_name_that_resolves_to_one(lab: Lab) -> None:
    import subprocess
    import sys

    code = (
        "import requests, sys\n"
        f"r = requests.post('{HELPER}v1/measure', json={{'url': sys.argv[1]}}, verify=sys.argv[2], timeout=10)\n"
        "print(r.status_code, r.json()['error'])\n"
    )
    names = [f"https://{name}/" for name in t.WORLD_PRIVATE_NAMES]  # names that resolve to private addresses
    for url in ("https://10.0.0.1/", "https://127.0.0.1/", "https://169.254.169.254/", *names):
        result = subprocess.run(
            ["ip", "netns", "exec", lab.client, sys.executable, "-c", code, url, str(lab.roots_pem)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.startswith("403 destination"), result.stdout + result.stderr


# --- Claims that hold on the real web (issue 10) ---------------------------------------------------


def test_leaf_only_chain_is_completed_from_its_aia_url(records: dict[str, dict]) -> None:
    """A small site sends its leaf without the intermediate; browsers fetch it, and so does the probe."""
    record = records["aia.lab"]
    assert (record["blocking"], record["anomalies"], record["confidence"]) == (
        "none",
        ["tls.chain_completed"],
        "confirmed",
    )
    (handshake,) = record["observations"]["tls_handshakes"]
    assert len(handshake["peer_certificates"]) == 1  # the leaf only, as the server sent it
    (fetch,) = handshake["aia_fetches"]
    assert (fetch["url"], fetch["status"], fetch["failure"]) == (t.AIA_URL, 200, None)
    assert fetch["address"] == t.CLEAN_SITES and len(fetch["certificates"]) == 1
    assert record["analysis"]["tls"]["valid"] is True and record["analysis"]["tls"]["completed_from_aia"] is True


def test_expired_public_certificate_is_the_sites_fault(records: dict[str, dict]) -> None:
    record = records["expired.lab"]
    assert (record["blocking"], record["interceptor"], record["confidence"]) == ("down", None, "confirmed")
    assert record["anomalies"] == ["tls.untrusted_chain", "tls.expired_certificate"]
    assert record["analysis"]["tls"]["failure_cause"] == "expired"


def test_certificate_for_www_only_is_the_sites_fault(records: dict[str, dict]) -> None:
    record = records["www-only.lab"]
    assert (record["blocking"], record["interceptor"]) == ("down", None)
    assert record["anomalies"] == ["tls.untrusted_chain", "tls.wrong_name_same_site"]
    assert record["analysis"]["tls"]["certificates"][0]["dns_names"] == ["www.www-only.lab"]


def test_sni_reset_behind_a_cdn_that_refuses_unknown_names_is_proven(records: dict[str, dict]) -> None:
    """The control name gets an alert from the CDN, which is an answer: the server was reached."""
    record = records["cdn-strict.lab"]
    assert (record["blocking"], record["confidence"]) == ("tls", "confirmed")
    assert record["anomalies"] == ["tls.reset", "tls.sni_triggered", "tls.injected_rst"]
    target, control, retry, after = record["observations"]["tls_handshakes"]
    assert (target["failure"], retry["failure"]) == ("connection_reset", "connection_reset")
    assert (control["purpose"], control["alert"]) == ("control_sni", "unrecognized_name")
    assert (after["purpose"], after["alert"]) == ("control_sni", "unrecognized_name")  # refused, not cut
    open_site = records["cdn-open.lab"]
    assert (open_site["blocking"], open_site["anomalies"]) == ("none", [])


def test_redirect_to_a_reset_host_is_a_finding_with_the_hop_named(records: dict[str, dict]) -> None:
    record = records["redirect-out.lab"]
    assert (record["blocking"], record["confidence"]) == ("tls", "confirmed")
    assert record["anomalies"] == ["tls.reset", "tls.sni_triggered", "http.redirect_hop", "tls.injected_rst"]
    assert record["analysis"]["redirect_hop"] == {"index": 1, "url": "https://tls-reset.lab/", "stage": "tls"}
    hop = [h for h in record["observations"]["tls_handshakes"] if h.get("hop") == 1]
    assert [h["purpose"] for h in hop] == ["redirect", "redirect_control_sni", "redirect_retry", "redirect_control_sni"]


def test_login_redirect_to_another_site_stays_none(records: dict[str, dict]) -> None:
    record = records["login-redirect.lab"]
    assert (record["blocking"], record["anomalies"], record["blockpage"]) == ("none", [], None)
    first, login = record["observations"]["http_requests"]
    assert first["location"] == t.LOGIN_URL and login["status"] == 200


def test_page_known_to_oonis_fingerprints_is_a_blockpage(records: dict[str, dict]) -> None:
    record = records["http-ooni.lab"]
    assert (record["blocking"], record["anomalies"], record["confidence"]) == ("http", ["http.blockpage"], "confirmed")
    assert record["blockpage"]["id"] == t.OONI_BLOCKPAGE_ID
    assert record["blockpage"]["catalog"] == "ooni-blocking-fingerprints"


def test_every_clean_verdict_is_confirmed_and_every_finding_says_how_sure(records: dict[str, dict]) -> None:
    for host, record in records.items():
        assert record["confidence"] in ("confirmed", "unconfirmed"), host
    assert records["clean.lab"]["confidence"] == "confirmed"
    assert records["blackhole.lab"]["confidence"] == "unconfirmed"  # a timeout, with no helper to contrast


def test_transparent_dns_proxy_with_a_cdn_answer_that_validates_is_not_blocking(lab: Lab) -> None:
    """The ISP rewrites every UDP query to port 53: the injection probe is answered by its resolver,
    with another CDN edge than the control's, which serves a valid certificate for the name."""
    targets = lab.directory / "hijacked-cdn-targets.txt"
    targets.write_text("cdn.lab\nhttp://cdn.lab/\n", encoding="utf-8")
    out = lab.directory / "hijacked-cdn"
    result = lab.probe(lab.hijacked, *_run_args(lab, targets, out))
    assert result.returncode == 0, result.stdout + result.stderr
    found = {record["target"]["input"]: record for record in read_results(out)}
    for name in ("cdn.lab", "http://cdn.lab/"):
        record = found[name]
        assert (record["blocking"], record["anomalies"]) == ("none", ["dns.transparent_proxy"]), name
        dns = record["observations"]["dns"]
        assert dns["system"]["addresses"] == [t.CDN_EDGE_B] and dns["control"]["addresses"] == [t.CDN_EDGE_A]
        (reply,) = dns["injection"]["replies"]  # the proxy's own resolver answered for a silent address
        assert reply["answers"][0]["data"] == t.CDN_EDGE_B
    # The http:// target's answer was checked with a handshake for the name on port 443.
    (check,) = found["http://cdn.lab/"]["observations"]["tls_handshakes"]
    assert (check["purpose"], check["address"], check["failure"]) == ("dns_check", t.CDN_EDGE_B, None)


# --- Running it for real (issue 12) ----------------------------------------------------------------


def test_the_network_is_named_from_a_local_table_and_the_address_is_dropped(helped: dict[str, dict]) -> None:
    """The helper tells the probe where it comes from; the probe looks it up and scrubs it."""
    for record in helped.values():
        assert (record["network"]["asn"], record["network"]["as_name"], record["network"]["country"]) == (
            "AS64500", "LAB-ISP", "KZ",
        )  # fmt: skip
        assert t.CLIENT_ADDRESS not in json.dumps(record)
        assert len(record["probe_id"]) == 32


def test_no_record_holds_a_local_path(records: dict[str, dict], lab: Lab) -> None:
    text = json.dumps(records)
    assert str(lab.directory) not in text and "/tmp/" not in text
    reference = records["clean.lab"]["reference"]
    assert reference["roots"]["source"] == lab.roots_pem.name and len(reference["roots"]["sha256"]) == 64
    assert any(v.startswith(f"{lab.catalog.name} sha256:") for v in reference["catalogs"]["blockpages"])


def test_a_deadline_ends_a_slow_run_and_keeps_every_finished_record(lab: Lab) -> None:
    targets = lab.directory / "deadline-targets.txt"
    targets.write_text("clean.lab\n" + "blackhole.lab\n" * 6, encoding="utf-8")
    out = lab.directory / "deadline"
    args = _run_args(lab, targets, out)
    args[args.index("--concurrency") + 1] = "1"
    result = lab.probe(lab.client, *args, "--deadline", "4s", "--json", "--compress", "gzip", timeout=60)
    summary = json.loads(result.stdout)
    assert result.returncode in (0, 1), result.stderr  # a blackholed target may finish before the deadline
    assert summary["exit_reason"] == "deadline" and summary["exit_code"] == result.returncode
    assert summary["targets"] == 7 and summary["measured"] + summary["not_measured"] == 7
    assert summary["measured"] >= 1 and summary["not_measured"] >= 4
    assert summary["results_file"].endswith(".jsonl.gz")
    import gzip

    path = Path(summary["results_file"])
    assert path.relative_to(out).parts[:3] == tuple(summary["started"][:10].split("-"))  # results/YYYY/MM/DD
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["target"]["host"] == "clean.lab" and records[0]["blocking"] == "none"
    skipped = [r for r in records if r.get("not_measured")]
    assert len(skipped) == summary["not_measured"]
    assert all(r["not_measured"] == "deadline" and r["observations"] is None for r in skipped)
    assert set(summary) >= {"run_id", "verdicts", "confirmed", "findings", "started", "duration_s"}


def test_a_volunteer_sees_progress_and_findings_on_a_terminal(lab: Lab) -> None:
    """The real display, captured from a pseudo-terminal: counts, rate, time left, findings, and the
    summary in plain words. (Every run above went to a pipe: no progress there.)"""
    import pty
    import select
    import subprocess
    import sys
    import time

    targets = lab.directory / "tty-targets.txt"
    targets.write_text("clean.lab\ntls-reset.lab\nforged.lab\nnews.lab\n", encoding="utf-8")
    out = lab.directory / "tty"
    master, slave = pty.openpty()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "HOME": str(lab.directory), "TERM": "xterm-256color", "COLUMNS": "160"}  # fmt: skip
    process = subprocess.Popen(
        ["ip", "netns", "exec", lab.client, sys.executable, "-m", "probe", *_run_args(lab, targets, out)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=lab.directory, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    ends = time.monotonic() + 90
    try:
        while time.monotonic() < ends:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the run is over
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 1
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = seen.decode("utf-8", errors="replace")
    assert "measuring" in text and "targets/s" in text and "left" in text
    assert "tls-reset.lab" in text and "cut the connection when it saw the site's name" in text
    assert "forged.lab" in text and "presented a certificate the site did not issue" in text
    assert "2 sites reachable, nothing found" in text
    assert "They never hold your IP address" in text


def test_runs_to_a_pipe_show_no_progress(records: dict[str, dict], lab: Lab) -> None:
    targets = lab.directory / "pipe-targets.txt"
    targets.write_text("clean.lab\n", encoding="utf-8")
    result = lab.probe(lab.client, *_run_args(lab, targets, lab.directory / "pipe"))
    assert "measuring" not in result.stdout + result.stderr and "\x1b[" not in result.stdout + result.stderr
    assert "1 site reachable, nothing found" in result.stdout
    quiet = lab.probe(lab.client, *_run_args(lab, targets, lab.directory / "quiet"), "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


# --- Fast at scale (issue 13) -------------------------------------------------------------------------


def test_a_reply_that_arrives_after_the_handshake_still_lands_in_the_record(records: dict[str, dict]) -> None:
    """The connection no longer waits for the DNS window; the listening goes on meanwhile and its
    replies join the record before it is written."""
    record = records["late-injected.lab"]
    assert record["blocking"] == "dns" and "dns.injected" in record["anomalies"]
    (handshake,) = record["observations"]["tls_handshakes"]
    assert handshake["failure"] is None  # the real answer won the race: the site itself was reached
    (a_query,) = [q for q in record["observations"]["dns"]["system_udp"]["queries"] if q["query_type"] == "A"]
    real, forged = a_query["replies"]
    assert [a["data"] for a in real["answers"]] == [t.CLEAN_SITES]
    assert [a["data"] for a in forged["answers"]] == [t.INJECTED_ANSWER] and forged["ip_ttl"] == t.INJECTED_IP_TTL
    assert forged["t"] > handshake["t"]  # it came after the handshake had finished


def test_endless_redirects_stop_at_five(records: dict[str, dict]) -> None:
    record = records["loop.lab"]
    assert [r["redirect_index"] for r in record["observations"]["http_requests"]] == [0, 1, 2, 3, 4, 5]
    assert (record["blocking"], record["anomalies"]) == ("none", [])


# --- Hostile peers in the lab (issue 14) ----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_hostile_servers_in_the_world_end_classified_within_their_bounds(lab: Lab) -> None:
    targets = lab.directory / "hostile-targets.txt"
    targets.write_text("hostile.lab:443\nhostile.lab:444\nhostile.lab:445\nhttp://hostile.lab/\n", encoding="utf-8")
    out = lab.directory / "hostile"
    args = _run_args(lab, targets, out)
    args[args.index("--timeout") + 1] = "2"
    result = lab.probe(lab.client, *args, "--target-deadline", "6", timeout=90)
    assert result.returncode in (0, 1), result.stderr
    found = {r["target"]["input"]: r for r in read_results(out)}
    silent, drip, garbage, body = (found[k] for k in ("hostile.lab:443", "hostile.lab:444", "hostile.lab:445",
                                                      "http://hostile.lab/"))  # fmt: skip
    for record in (silent, drip):
        first = record["observations"]["tls_handshakes"][0]
        assert first["failure"] == "generic_timeout_error"
        assert first["t"] - first["t0"] < 2 + 1  # its step's bound plus a second, dripping or not
    assert garbage["observations"]["tls_handshakes"][0]["failure"] == "ssl_failed_handshake"
    (page,) = body["observations"]["http_requests"]
    assert page["body_truncated"] is True and page["body_length"] == 1 << 20  # a gigabyte offered, 1 MiB read
    for record in found.values():
        assert record["observations"]["tls_handshakes"] == [] or record["blocking"] in ("inconclusive", "tls")
        last = max([h["t"] for h in record["observations"]["tls_handshakes"]] + [0])
        assert last < 6 + 1  # the target's deadline plus a second


@pytest.mark.timeout(120)
def test_a_hostile_resolver_is_classified_and_its_flood_capped(lab: Lab) -> None:
    targets = lab.directory / "hostile-dns-targets.txt"
    names = ["many.hostile.lab", "loop.hostile.lab", "truncated.hostile.lab", "flood.hostile.lab"]
    targets.write_text("".join(f"http://{name}/\n" for name in names), encoding="utf-8")
    out = lab.directory / "hostile-dns"
    args = _run_args(lab, targets, out)
    args[args.index("--timeout") + 1] = "2"
    result = lab.probe(lab.client, *args, "--resolver", f"{t.HOSTILE_RESOLVER}", "--no-injection-check", timeout=90)
    assert result.returncode in (0, 1, 3), result.stderr
    found = {r["target"]["host"]: r for r in read_results(out)}
    assert set(found) == set(names)  # every target has its record
    queries = {h: {q["query_type"]: q for q in found[h]["observations"]["dns"]["system"]["queries"]} for h in names}
    assert len(queries["many.hostile.lab"]["A"]["answers"]) == 2000
    assert queries["loop.hostile.lab"]["A"]["failure"] == "dns_bogus_reply"
    assert queries["truncated.hostile.lab"]["A"]["failure"] == "dns_bogus_reply"
    flood = queries["flood.hostile.lab"]["A"]
    assert len(flood["replies"]) == 16 and flood["replies_dropped"] > 0


# --- Confirmed means proven (issue 19) --------------------------------------------------------------


def test_a_national_ca_site_is_never_interception_on_a_shared_host_or_its_own_address(
    records: dict[str, dict], helped: dict[str, dict]
) -> None:
    """A chain that verifies, by key, to a catalogued national CA is the site's own choice: on a
    shared host (the control name gets the host's public default) and on an address of its own
    (the control name gets the identical chain). Clean, and confirmed clean only from outside."""
    for host in ("national.lab", "national-own.lab"):
        record = records[host]
        assert (record["blocking"], record["interceptor"]) == ("none", None), host
        assert "tls.national_ca" in record["anomalies"] and "tls.control_sni_contrast" not in record["anomalies"]
        assert record["analysis"]["national_ca"]["id"] == "lab-national-root"
        assert record["confidence"] == "unconfirmed"
    own = records["national-own.lab"]["observations"]["tls_handshakes"]
    assert own[0]["peer_certificates"] == next(h for h in own if h["purpose"] == "control_sni")["peer_certificates"]
    seen_outside = helped["national.lab"]
    assert (seen_outside["blocking"], seen_outside["confidence"]) == ("none", "confirmed")
    assert "helper_same_chain" in seen_outside["confidence_basis"]


def test_an_expired_certificate_served_with_its_reissued_intermediate_is_down(records: dict[str, dict]) -> None:
    record = records["reissued.lab"]
    assert (record["blocking"], record["interceptor"], record["confidence"]) == ("down", None, "confirmed")
    assert "tls.expired_certificate" in record["anomalies"] and record["confidence_basis"] == ["publicly_signed"]
    assert record["analysis"]["tls"]["failure_cause"] == "expired"


def test_cdn_edges_under_sibling_public_cas_are_not_interception(helped: dict[str, dict]) -> None:
    record = helped["cdn-siblings.lab"]
    assert (record["blocking"], record["interceptor"]) == ("none", None)
    assert "tls.leaf_key_differs" in record["anomalies"] and "tls.cert_mismatch" not in record["anomalies"]
    ours = record["analysis"]["tls"]["certificates"][0]["issuer"]
    theirs = record["observations"]["helpers"][0]["response"]["tls"]["leaf_issuer"]
    assert (ours, theirs) == ("O=Lab Trust Services,CN=Lab Public Issuing CA 2",
                              "O=Lab Trust Services,CN=Lab Public Issuing CA")  # fmt: skip


def test_an_interceptor_that_mints_for_any_name_is_proven_without_a_helper(records: dict[str, dict]) -> None:
    """mitmproxy bumping every name at an address, under a root no catalog names: the minting
    test's random name comes back in a leaf from the same issuer."""
    record = records["minted.lab"]
    assert (record["blocking"], record["confidence"]) == ("tls_mitm", "confirmed")
    assert "minted_certificate" in record["confidence_basis"] and "tls.minted_certificate" in record["anomalies"]
    assert record["interceptor"]["issuer"] == f"O=Some Network,CN={t.LAB_GATEWAY_ROOT}"
    (minting,) = [h for h in record["observations"]["tls_handshakes"] if h["purpose"] == "minting"]
    assert minting["server_name"].endswith(".minted.lab.invalid")
    # The name-list interceptor does not mint (it passes names it does not target): a suspicion only.
    forged = records["forged.lab"]
    assert (forged["blocking"], forged["confidence"], forged["confidence_basis"]) == ("tls_mitm", "unconfirmed", [])
    assert "tls.minted_certificate" not in forged["anomalies"]


def test_a_bumped_target_whose_leaf_cannot_be_parsed_is_not_clean(records: dict[str, dict]) -> None:
    record = records["unparseable.lab"]
    assert record["blocking"] != "none" and record["confidence"] == "unconfirmed"
    assert "tls.unparseable_certificate" in record["anomalies"]


def test_residual_blocking_is_said_when_the_control_fails_right_after_the_name(records: dict[str, dict]) -> None:
    record = records["residual.lab"]
    assert (record["blocking"], record["confidence"]) == ("tls", "confirmed")
    assert {"tls.reset", "tls.sni_triggered", "tls.residual_blocking"} <= set(record["anomalies"])
    purposes = [(c["purpose"], c["failure"]) for c in record["observations"]["tcp_connect"]]
    assert purposes[:3] == [("target", None), ("control_sni", None), ("target_retry", None)]
    assert purposes[3] == ("control_sni", "connection_refused")  # the SYN itself reset: the address is blocked


def test_every_confirmed_record_names_its_basis(records: dict[str, dict], helped: dict[str, dict]) -> None:
    for found in (records, helped):
        for host, record in found.items():
            assert bool(record["confidence_basis"]) == (record["confidence"] == "confirmed"), host
