"""Analysis is pure: the same observations and catalogs always give the same verdict.

These tests feed recorded observations to `judge` directly, for the rules that need no server:
honest verdicts without a control, bogons, a name gone everywhere, offline, and re-judging an old
record when the catalog grows.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from probe.analyze.catalog import add_document
from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.results.record import load_schema
from probe.vocabulary.anomalies import ANOMALIES, BLOCKING_VALUES
from tests import pki
from tests.conftest import KZ_ROOTS, PkiFixture

AT = dt.datetime.now(dt.UTC)


def _lookup(resolver: str, addresses: list[str], failure: str | None = None) -> dict:
    return {
        "resolver": resolver,
        "transport": "udp",
        "hostname": "site.example",
        "addresses": addresses,
        "failure": failure,
        "queries": [],
    }


def _observations(
    system: dict, control: dict | None, tcp: list[dict] | None = None, tls: list[dict] | None = None
) -> dict:
    return {
        "dns": {"system": system, "control": control},
        "tcp_connect": tcp or [],
        "tls_handshakes": tls or [],
        "http_requests": [],
        "addresses_from": "system",
    }


def _tcp(failure: str | None, address: str = "198.51.100.7") -> dict:
    return {"address": address, "port": 443, "failure": failure, "t0": 0.0, "t": 1.0, "purpose": "target"}


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    # Addresses here are from the documentation ranges, so they count as public, as in the lab.
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


def test_name_gone_everywhere_is_down_not_dns(ctx: AnalysisContext) -> None:
    obs = _observations(_lookup("system", [], "dns_nxdomain_error"), _lookup("control", [], "dns_nxdomain_error"))
    j = judge({"host": "site.example"}, obs, AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("down", ["dns.name_does_not_exist"])


def test_no_control_makes_dns_failure_inconclusive(ctx: AnalysisContext) -> None:
    obs = _observations(_lookup("system", [], "dns_nxdomain_error"), _lookup("control", [], "generic_timeout_error"))
    j = judge({"host": "site.example"}, obs, AT, False, ctx)
    assert j.blocking == "inconclusive"
    assert j.anomalies == ["dns.control_failed"]


def test_tcp_failure_without_control_claims_nothing(ctx: AnalysisContext) -> None:
    obs = _observations(_lookup("system", ["198.51.100.7"]), None, tcp=[_tcp("generic_timeout_error")])
    assert judge({"host": "site.example"}, obs, AT, False, ctx).blocking == "inconclusive"
    confirmed = _observations(
        _lookup("system", ["198.51.100.7"]), _lookup("control", ["198.51.100.7"]), tcp=[_tcp("connection_refused")]
    )
    j = judge({"host": "site.example"}, confirmed, AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("tcp", ["tcp.refused"])


def test_bogon_answer_is_dns(ctx: AnalysisContext) -> None:
    obs = _observations(
        _lookup("system", ["10.10.34.35"]),
        _lookup("control", ["198.51.100.7"]),
        tcp=[_tcp("generic_timeout_error", "10.10.34.35")],
    )
    j = judge({"host": "site.example"}, obs, AT, False, ctx)
    assert j.blocking == "dns"
    assert j.anomalies[0] == "dns.bogon"


def test_documentation_ranges_are_bogons_outside_the_lab(test_pki: PkiFixture) -> None:
    obs = _observations(_lookup("system", ["203.0.113.9"]), _lookup("control", ["198.51.100.7"]))
    outside = AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs())
    lab = AnalysisContext(roots=outside.roots, catalogs=outside.catalogs, documentation_is_public=True)
    assert "dns.bogon" in judge({"host": "site.example"}, obs, AT, False, outside).anomalies
    in_lab = judge({"host": "site.example"}, obs, AT, False, lab)
    assert "dns.bogon" not in in_lab.anomalies and "dns.inconsistent" in in_lab.anomalies


def test_no_network_is_offline(ctx: AnalysisContext) -> None:
    unreachable = _observations(
        _lookup("system", [], "network_unreachable"), _lookup("control", [], "network_unreachable")
    )
    # A route existed when the run began (observations were made): "network unreachable" from one
    # lookup is not taken for a dead uplink, and with no control it proves nothing either way.
    assert judge({"host": "site.example"}, unreachable, AT, False, ctx).blocking == "inconclusive"
    j = judge({"host": "site.example"}, None, AT, True, ctx)
    assert (j.blocking, j.anomalies, j.interceptor) == ("offline", ["network.offline"], None)


def test_old_record_is_rejudged_when_the_catalog_grows(ctx: AnalysisContext, tmp_path: Path) -> None:
    """A chain under an unknown root proves nothing alone (inconclusive); once catalogued, it is named."""
    root = pki.make_root(pki.name(CN="Unnamed National Root", C="ZZ"))
    leaf = pki.make_leaf(root, ["site.example"])
    chain = [base64.b64encode(pki.der(c)).decode() for c in leaf.chain + [root.cert]]
    handshake = {
        "address": "198.51.100.7",
        "port": 443,
        "server_name": "site.example",
        "tls_version": "TLSv1.3",
        "cipher_suite": "TLS_AES_128_GCM_SHA256",
        "negotiated_protocol": None,
        "peer_certificates": chain,
        "failure": None,
        "alert": None,
        "t0": 0.0,
        "t": 0.1,
        "purpose": "target",
    }
    obs = _observations(
        _lookup("system", ["198.51.100.7"]), _lookup("control", ["198.51.100.7"]), tcp=[_tcp(None)], tls=[handshake]
    )
    before = judge({"host": "site.example"}, obs, AT, False, ctx)
    # An unknown root with no proof either way is a suspected interception: seen, not published.
    assert (before.blocking, before.confidence, before.basis) == ("tls_mitm", "unconfirmed", [])
    assert before.interceptor is not None and before.interceptor["catalog"] is None
    assert "tls.unknown_issuer" in before.anomalies
    grown = load_catalogs()
    add_document(
        grown,
        {
            "catalog": "interception_cas",
            "version": "test",
            "certificates": [
                {
                    "id": "zz-root",
                    "name": "ZZ national root",
                    "country": "ZZ",
                    "sha256_spki": pki.spki_sha256(root.cert),
                    "sources": ["this test"],
                }
            ],
        },
        "grown.json",
    )
    after = judge(
        {"host": "site.example"},
        json.loads(json.dumps(obs)),
        AT,
        False,
        AnalysisContext(roots=ctx.roots, catalogs=grown, documentation_is_public=True),
    )
    assert after.blocking == "tls_mitm"
    assert (after.interceptor["catalog_id"], after.interceptor["matched_by"]) == ("zz-root", "sha256_spki")
    assert "tls.known_interception_ca" in after.anomalies


def test_every_anomaly_is_in_the_schema_and_documented() -> None:
    schema = load_schema()
    assert schema["properties"]["anomalies"]["items"]["enum"] == sorted(ANOMALIES)
    assert schema["properties"]["blocking"]["enum"] == list(BLOCKING_VALUES)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "anomalies.md").read_text(encoding="utf-8")
    for code in ANOMALIES:
        assert f"`{code}`" in doc, f"{code} is not documented in docs/anomalies.md"


def test_catalog_fingerprints_are_those_of_the_real_roots() -> None:
    from cryptography import x509

    catalog = load_catalogs()
    by_der = {entry.sha256_der: entry for entry in catalog.interception_certificates}
    files = sorted(KZ_ROOTS.glob("*.pem"))
    assert len(files) == 10
    for path in files:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        import hashlib

        entry = by_der[hashlib.sha256(pki.der(cert)).hexdigest()]
        assert entry.sha256_spki == pki.spki_sha256(cert)
        assert entry.country == "KZ"


def test_answers_in_the_controls_as_are_consistent(ctx: AnalysisContext, tmp_path: Path) -> None:
    from probe.analyze.asn import AsnTableError
    from probe.loaders.asn import load_asn_table

    table = tmp_path / "ip2asn.tsv"
    table.write_text(
        "198.51.100.0\t198.51.100.255\t64500\tZZ\tEXAMPLE-CDN\n203.0.113.0\t203.0.113.255\t64501\tZZ\tOTHER\n",
        encoding="utf-8",
    )
    asn = load_asn_table(table)
    assert (asn.lookup("198.51.100.9"), asn.lookup("203.0.113.1"), asn.lookup("192.0.2.1")) == (64500, 64501, None)
    same_as = _observations(_lookup("system", ["198.51.100.9"]), _lookup("control", ["198.51.100.7"]))
    other_as = _observations(_lookup("system", ["203.0.113.9"]), _lookup("control", ["198.51.100.7"]))
    with_asn = AnalysisContext(roots=ctx.roots, catalogs=ctx.catalogs, documentation_is_public=True, asn=asn)
    assert judge({"host": "site.example"}, same_as, AT, False, with_asn).blocking == "none"
    assert judge({"host": "site.example"}, same_as, AT, False, ctx).anomalies == ["dns.inconsistent"]
    assert judge({"host": "site.example"}, other_as, AT, False, with_asn).anomalies == ["dns.inconsistent"]
    table.write_text("198.51.100.0\tnot-an-address\t64500\n", encoding="utf-8")
    with pytest.raises(AsnTableError, match=r"ip2asn.tsv:1: expected"):
        load_asn_table(table)


def _udp_query(replies: list[tuple[str, int, list[str]]]) -> dict:
    rows = [
        {"source": source, "ip_ttl": ttl, "t": 0.1, "raw_reply": "", "rcode": "NOERROR", "failure": None,
         "answers": [{"name": "site.example", "type": "A", "ttl": 60, "data": a} for a in answers]}
        for source, ttl, answers in replies
    ]  # fmt: skip
    first = rows[0] if rows else {"answers": [], "rcode": None}
    return {"resolver": "udp://192.0.2.53:53", "transport": "udp", "hostname": "site.example", "query_type": "A",
            "answers": first["answers"], "rcode": first["rcode"], "failure": None, "raw_reply": None,
            "replies": rows, "t0": 0.0, "t": 0.1}  # fmt: skip


def test_a_reply_with_another_ip_ttl_than_the_resolvers_is_a_hint_only(ctx: AnalysisContext) -> None:
    def observations(ttl: int) -> dict:
        obs = _observations(_lookup("system", ["198.51.100.7"]), _lookup("control", ["198.51.100.7"]))
        obs["dns"]["system_udp"] = {**_lookup("udp://192.0.2.53:53", ["198.51.100.7"]),
                                    "queries": [_udp_query([("192.0.2.53", ttl, ["198.51.100.7"])])]}  # fmt: skip
        obs["dns"]["resolver_baseline"] = _udp_query([("192.0.2.53", 64, ["192.0.2.99"])])
        return obs

    assert judge({"host": "site.example"}, observations(64), AT, False, ctx).blocking == "none"
    hinted = judge({"host": "site.example"}, observations(201), AT, False, ctx)
    # Anycast paths vary: another IP TTL is recorded as a hint, never a verdict on its own.
    assert (hinted.blocking, hinted.anomalies) == ("none", ["dns.ip_ttl_differs"])


def test_a_truthful_answer_from_the_probe_address_is_not_injection(ctx: AnalysisContext) -> None:
    """Some targets' addresses do run a DNS server: a true answer or a refusal is no injection."""
    obs = _observations(_lookup("system", ["198.51.100.7"]), _lookup("control", ["198.51.100.7"]))
    obs["dns"]["injection"] = {
        "address": "198.51.100.7",
        "port": 53,
        **_udp_query([("198.51.100.7", 57, ["198.51.100.7"])]),
    }
    assert judge({"host": "site.example"}, obs, AT, False, ctx).blocking == "none"
    obs["dns"]["injection"] = {
        "address": "198.51.100.7",
        "port": 53,
        **_udp_query([("198.51.100.7", 57, ["198.51.100.66"])]),
    }
    assert judge({"host": "site.example"}, obs, AT, False, ctx).anomalies == ["dns.injected"]


def test_scrub_replaces_whole_addresses_only() -> None:
    from probe.netx.own_addresses import OwnAddresses
    from probe.results.privacy import scrub

    own = OwnAddresses()
    for address in ("192.0.2.1", "2001:db8::5", "127.0.0.1", "0.0.0.0", "not an address"):
        own.add(address)
    assert own.snapshot() == {"192.0.2.1", "2001:db8::5"}  # loopback and unspecified identify nobody
    record = {"body": "you are 192.0.2.1, not 192.0.2.10 or 10.192.0.2.1", "list": ["2001:db8::5", "2001:db8::50"],
              "n": 3, "192.0.2.1": "keys stay"}  # fmt: skip
    assert scrub(record, own.snapshot()) == {
        "body": "you are [scrubbed], not 192.0.2.10 or 10.192.0.2.1",
        "list": ["[scrubbed]", "2001:db8::50"],
        "n": 3,
        "192.0.2.1": "keys stay",
    }


def test_scrubbing_the_encoded_line_finds_what_scrubbing_each_string_finds() -> None:
    """The run scrubs a record's encoded line in one pass; around JSON's escapes (a form feed, a
    backspace or a control character written as \\u00XX just before an address) it must neither
    miss an address nor take a neighbour's digits."""
    import random

    from probe.results.privacy import scrub, scrubbed_line

    own = frozenset({"192.0.2.1", "2001:db8::5"})
    pieces = ["192.0.2.1", "192.0.2.10", "2001:db8::5", "2001:DB8::5", "::ffff:192.0.2.1", "ip-192-0-2-1", "\f", "\b",
              "\x01", "\x1f", "\n", "\t", '"', "\\", "-", ".", ":", "1", "f", "a", " ", "é", "\u2028"]  # fmt: skip
    chooser = random.Random(15)
    for _ in range(3000):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 6)))
        record = {"body": text, "nested": [{"title": text[::-1]}], "n": 7}
        assert json.loads(scrubbed_line(record, own)) == scrub(record, own), repr(text)
    assert b"192.0.2.1" not in scrubbed_line({"body": "\f192.0.2.1\b192.0.2.1"}, own)
    assert scrubbed_line({"a": "192.0.2.1"}, frozenset()) == b'{"a":"192.0.2.1"}\n'


def test_spki_read_from_the_certificate_der_matches_the_parsed_key() -> None:
    """The fingerprint of the key as encoded, so that keys this build cannot load still match."""
    from cryptography.hazmat.primitives import serialization

    from probe.analyze.certs import spki_der

    for key_root in (pki.make_root(pki.name(CN="EC root")), pki.make_root(pki.name(CN="RSA root"), rsa_key=True)):
        leaf = pki.make_leaf(key_root, ["site.example"], rsa_exponent=3).cert
        for cert in (key_root.cert, leaf):
            parsed = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            assert spki_der(cert) == parsed
    from cryptography import x509

    from probe.analyze.certs import spki_sha256

    (path,) = KZ_ROOTS.glob("3472e4*.pem")  # named by the SHA-256 of its SPKI
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert pki.spki_sha256(cert) == path.stem
    assert spki_sha256(cert) == path.stem


def test_own_addresses_are_scrubbed_in_every_form() -> None:
    from probe.results.privacy import scrub

    own = frozenset({"203.0.113.5", "2001:db8::5"})
    texts = {
        "you are 203.0.113.5:4433": "you are [scrubbed]:4433",
        "::ffff:203.0.113.5": "[scrubbed]",
        "host ip-203-0-113-5.example": "host ip-[scrubbed].example",
        "2001:DB8::5": "[scrubbed]",
        "2001:0db8:0000:0000:0000:0000:0000:0005": "[scrubbed]",
        "[2001:db8::5]:443": "[[scrubbed]]:443",
        "203.0.113.50 and 1203.0.113.5 and 2001:db8::50": "203.0.113.50 and 1203.0.113.5 and 2001:db8::50",
    }
    for text, expected in texts.items():
        assert scrub(text, own) == expected, text
