"""The real web's mess is not censorship: rules fed with recorded observations (issue 10).

The lab proves the same rules against real servers (tests/test_lab.py); these cover the cases a lab
server cannot easily show: OONI's whole fingerprint table, its false-positive and vague scopes,
suspected blockpages against login redirects and CDN pages, DNS64, and chains judged by cause.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import ipaddress
from pathlib import Path

import pytest

from probe.analyze.chain import FailureCause, analyze_chain
from probe.analyze.dnssigns import embedded_ipv4
from probe.analyze.fingerprints import FingerprintTables, add_dns_table, add_http_table
from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from tests import pki
from tests.conftest import PkiFixture

ROOT = Path(__file__).resolve().parents[1]

AT = dt.datetime.now(dt.UTC)
DATA = Path(__file__).resolve().parents[1] / "probe" / "data" / "ooni"
HOST = "site.example"


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


def _lookup(resolver: str, addresses: list[str], failure: str | None = None) -> dict:
    return {"resolver": resolver, "transport": "udp", "hostname": HOST, "addresses": addresses, "failure": failure,
            "queries": []}  # fmt: skip


def _response(url: str, status: int, address: str, index: int, *, location: str | None = None,
              body: str = "", title: str | None = None) -> dict:  # fmt: skip
    headers = [["Location", location]] if location else []
    return {"request": {"method": "GET", "host": url.split("/")[2], "path": "/"}, "status": status,
            "headers": headers, "location": location, "title": title, "body_length": len(body),
            "body_sha256": None, "body_prefix": body, "body_truncated": False, "failure": None, "t0": 0.0,
            "t": 0.1, "address": address, "url": url, "redirect_index": index}  # fmt: skip


def _http_observations(responses: list[dict], resolver: str = "udp://192.0.2.53:53") -> dict:
    return {
        "dns": {"system": _lookup(resolver, ["198.51.100.7"]), "control": _lookup("control", ["198.51.100.7"])},
        "tcp_connect": [
            {"address": "198.51.100.7", "port": 80, "failure": None, "t0": 0, "t": 0.1, "purpose": "target"}
        ],  # fmt: skip
        "tls_handshakes": [],
        "http_requests": responses,
        "addresses_from": "system",
    }


def _handshake(chain: list, purpose: str = "target", server_name: str = HOST) -> dict:
    return {"address": "198.51.100.7", "port": 443, "server_name": server_name, "tls_version": "TLSv1.3",
            "cipher_suite": "x", "negotiated_protocol": None, "alert": None, "failure": None, "t0": 0.0, "t": 0.1,
            "purpose": purpose, "os_store_valid": None,
            "peer_certificates": [base64.b64encode(pki.der(c)).decode() for c in chain]}  # fmt: skip


def _tls_observations(*handshakes: dict) -> dict:
    return {
        "dns": {"system": _lookup("system", ["198.51.100.7"]), "control": _lookup("control", ["198.51.100.7"])},
        "tcp_connect": [
            {"address": "198.51.100.7", "port": 443, "failure": None, "t0": 0, "t": 0.1, "purpose": h["purpose"]}
            for h in handshakes
        ],  # fmt: skip
        "tls_handshakes": list(handshakes),
        "http_requests": [],
        "addresses_from": "system",
    }


# --- OONI's fingerprint tables -------------------------------------------------------------------


def test_every_row_of_the_shipped_tables_loads_or_is_rejected_with_a_reason() -> None:
    tables = FingerprintTables()
    http_text = (DATA / "fingerprints_http.csv").read_text(encoding="utf-8")
    dns_text = (DATA / "fingerprints_dns.csv").read_text(encoding="utf-8")
    add_http_table(tables, http_text)
    add_dns_table(tables, dns_text)
    assert len(tables.http) + sum(r["source"].endswith("http.csv") for r in tables.rejected) == 1729
    assert len(tables.dns) + sum(r["source"].endswith("dns.csv") for r in tables.rejected) == 226
    assert all(r["reason"] and r["line"] > 1 for r in tables.rejected)
    catalogs = load_catalogs()
    assert len(catalogs.fingerprints.http) == len(tables.http)
    assert any("ooni-blocking-fingerprints@171641e" in v for v in catalogs.describe()["blockpages"])


def test_a_bad_row_is_rejected_with_its_place_and_reason() -> None:
    tables = FingerprintTables()
    header = "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,source\n"
    add_http_table(tables, header + "x.bad,nat,,body,regexp,(unclosed,5,ZZ,test\nx.ok,nat,,body,contains,ok,5,ZZ,t\n")
    add_dns_table(tables, header.replace("body", "dns") + "x.weird,isp,,dns,full,not a name!,5,ZZ,test\n")
    assert [r["name"] for r in tables.rejected] == ["x.bad", "x.weird"]
    assert tables.rejected[0]["line"] == 2 and "regular expression" in tables.rejected[0]["reason"]
    assert "missing )" in tables.rejected[0]["reason"]  # RE2's own reason, not only that it failed


def test_a_pattern_re2_parses_but_cannot_compile_is_rejected_alone() -> None:
    """Parsing is not enough: a pattern too big to compile would fail the whole set at the first body
    matched, and every record with a page would be judged with an error."""
    tables = FingerprintTables()
    header = "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,source\n"
    add_http_table(tables, header + "x.huge,nat,,body,regexp,\\pL{1000},5,ZZ,t\nx.ok,nat,,body,contains,ok,5,ZZ,t\n")
    assert [r["name"] for r in tables.rejected] == ["x.huge"]
    assert [row.name for row in tables.match_response("it is ok", {})] == ["x.ok"]
    assert [row.name for row in tables.http] == ["x.ok"]


def test_patterns_that_compile_alone_but_not_together_are_rejected_at_load_not_at_the_first_page() -> None:
    """Two patterns that each compile alone but are too big for a set: matching would raise at the
    first page judged (every such record an error); they are rejected when the table is loaded,
    with why, and the rest of their place and the other places still match."""
    tables = FingerprintTables()
    header = "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,source\n"
    rows = "x.big1,nat,,body,regexp,\\pL{200}a,5,ZZ,t\nx.big2,nat,,body,regexp,\\pL{200}b,5,ZZ,t\n"
    rows += "x.ok,nat,,body,contains,blocked by order,5,ZZ,t\nx.server,nat,,header.server,contains,blocker,5,ZZ,t\n"
    add_http_table(tables, header + rows)
    assert [(r["name"], r["line"]) for r in tables.rejected] == [("x.big1", 2), ("x.big2", 3)]
    assert all("too big for one RE2 set" in r["reason"] for r in tables.rejected)
    page = tables.match_response("page blocked by order", {"server": "blocker 1.0"})
    assert sorted(row.name for row in page) == ["x.ok", "x.server"]
    assert [row.name for row in tables.http] == ["x.ok", "x.server"]


def test_one_pattern_too_big_for_the_shipped_body_set_costs_only_itself() -> None:
    """Added to OONI's table (1,311 body patterns), one pattern that compiles alone but not with
    them is the only row rejected: the body's fingerprints still match."""
    text = (ROOT / "probe" / "data" / "ooni" / "fingerprints_http.csv").read_text(encoding="utf-8")
    header = next(csv.reader(io.StringIO(text)))
    row = dict.fromkeys(header, "")
    row.update(name="x.big", scope="nat", location_found="body", pattern_type="regexp", pattern="\\pL{300}a",
               confidence_no_fp="5", expected_countries="ZZ", source="t")  # fmt: skip
    extra = io.StringIO()
    csv.DictWriter(extra, header).writerow(row)
    tables = FingerprintTables()
    add_http_table(tables, text.rstrip("\n") + "\n" + extra.getvalue())
    assert [r["name"] for r in tables.rejected] == ["x.big"]
    assert sum(row.location == "body" for row in tables.http) == 1311


def test_matching_is_linear_on_a_hostile_body() -> None:
    """RE2 does not backtrack: a megabyte of near-matches is matched at once (not a timing assertion:
    the same body would hang a backtracking engine on `.*` patterns, and this test with it)."""
    tables = load_catalogs().fingerprints
    body = "URL " + "Sp" * 500_000
    assert [row.name for row in tables.match_response(body, {}) if row.scope == "prod"] == []


def test_oonis_false_positive_scope_is_never_a_blockpage_and_vague_words_are_only_recorded(
    ctx: AnalysisContext,
) -> None:
    nginx_default = "<html><body><p><em>Thank you for using nginx.</em></p></body></html>"  # cp.fp_x_fpru_nginx
    j = judge({"host": HOST}, _http_observations([_response("http://site.example/", 200, "198.51.100.7", 0,
                                                            body=nginx_default)]), AT, False, ctx)  # fmt: skip
    assert (j.blocking, j.anomalies, j.blockpage) == ("none", [], None)
    vague_row = next(row for row in ctx.catalogs.fingerprints.http if row.scope == "vbw" and row.location == "body"
                     and row.pattern_type == "contains")  # fmt: skip
    vague = judge({"host": HOST}, _http_observations([_response("http://site.example/", 200, "198.51.100.7", 0,
                                                                body=vague_row.pattern)]), AT, False, ctx)  # fmt: skip
    assert (vague.blocking, vague.anomalies) == ("none", ["http.blockpage_vague"])


def test_a_dns_answer_in_oonis_table_is_a_blockpage_address(ctx: AnalysisContext) -> None:
    row = next(r for r in ctx.catalogs.fingerprints.dns if r.scope == "nat" and ":" not in r.pattern)
    assert ipaddress.ip_address(row.pattern)
    obs = _http_observations([])
    obs["dns"]["system"]["addresses"] = [row.pattern]
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.blockpage["id"], j.confidence) == ("dns", row.name, "confirmed")
    assert "dns.blockpage_ip" in j.anomalies


# --- suspected blockpages ------------------------------------------------------------------------


def test_redirect_carrying_the_url_to_the_resolvers_network_is_a_suspected_blockpage(ctx: AnalysisContext) -> None:
    location = "http://warn.isp.example/?u=http%3A%2F%2Fsite.example%2F"
    obs = _http_observations([
        _response("http://site.example/", 302, "198.51.100.7", 0, location=location),
        _response(location, 200, "192.0.2.80", 1, body="<html>Sorry</html>"),  # the resolver is 192.0.2.53
    ])  # fmt: skip
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.anomalies, j.confidence) == ("http", ["http.blockpage_suspected"], "unconfirmed")


@pytest.mark.parametrize(
    ("location", "address", "body", "status"),
    [
        # A login redirect: another site, carrying the URL, answered from its own public network.
        ("https://accounts.example.net/signin?continue=http%3A%2F%2Fsite.example%2F", "203.0.113.200", "Sign in", 200),
        # The same site's www., under the resolver's network (a small ISP hosting its customers).
        ("http://www.site.example/", "192.0.2.99", "<title>Site</title>", 200),
        # A CDN's interstitial ("checking your browser"), served from the site's own address.
        (None, None, "<title>Just a moment...</title>Checking your browser before accessing site.example.", 503),
    ],
    ids=["login-redirect", "www-redirect-at-isp", "cdn-interstitial"],
)
def test_real_non_blocking_pages_stay_none(
    ctx: AnalysisContext, location: str | None, address: str | None, body: str, status: int
) -> None:
    if location is None:
        responses = [_response("http://site.example/", status, "198.51.100.7", 0, body=body)]
    else:
        responses = [
            _response("http://site.example/", 302, "198.51.100.7", 0, location=location),
            _response(location, status, str(address), 1, body=body),
        ]
    j = judge({"host": HOST}, _http_observations(responses), AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("none", [])


# --- DNS64 and transparent proxies ---------------------------------------------------------------


def test_dns64_answers_are_judged_by_the_ipv4_address_they_embed(ctx: AnalysisContext) -> None:
    assert embedded_ipv4("64:ff9b::c633:6407", ("64:ff9b::/96",)) == "198.51.100.7"
    assert embedded_ipv4("2001:db8::1", ("64:ff9b::/96",)) == "2001:db8::1"
    obs = _http_observations([])
    obs["dns"]["system"]["addresses"] = ["64:ff9b::c633:6407"]
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.anomalies, j.confidence) == ("none", [], "confirmed")
    bogus = _http_observations([])
    bogus["dns"]["system"]["addresses"] = ["64:ff9b::a0a:2223"]  # embeds 10.10.34.35
    assert "dns.bogon" in judge({"host": HOST}, bogus, AT, False, ctx).anomalies


def test_a_transparent_proxys_own_answer_to_the_injection_probe_is_not_injection(ctx: AnalysisContext) -> None:
    def reply(addresses: list[str]) -> dict:
        answers = [{"name": HOST, "type": "A", "ttl": 60, "data": a} for a in addresses]
        return {"source": "198.51.100.7", "ip_ttl": 63, "t": 0.1, "raw_reply": "", "rcode": "NOERROR",
                "failure": None, "answers": answers}  # fmt: skip

    def query(addresses: list[str]) -> dict:
        return {"resolver": "udp://192.0.2.53:53", "transport": "udp", "hostname": HOST, "query_type": "A",
                "answers": reply(addresses)["answers"], "rcode": "NOERROR", "failure": None, "raw_reply": None,
                "replies": [reply(addresses)], "t0": 0.0, "t": 0.1}  # fmt: skip

    obs = _http_observations([])
    dns = obs["dns"]
    dns["system"]["addresses"] = ["203.0.113.61"]  # the proxy's answer, unlike the control's
    dns["control"]["addresses"] = ["198.51.100.7"]
    dns["control_plain"] = {**_lookup("udp://198.51.100.53:53", ["203.0.113.61"]), "queries": [query(["203.0.113.61"])]}
    dns["system_udp"] = {**_lookup("udp://192.0.2.53:53", ["203.0.113.61"]), "queries": [query(["203.0.113.61"])]}
    dns["injection"] = {**query(["203.0.113.61"]), "address": "198.51.100.7", "port": 53}
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert "dns.injected" not in j.anomalies
    assert {"dns.transparent_proxy", "dns.proxy_answered_injection_probe"} <= set(j.anomalies)
    # Its answer is not the control's and nothing validated it: that is what is judged, not the proxy.
    assert (j.blocking, j.anomalies[0]) == ("dns", "dns.inconsistent")


# --- chains judged by cause ----------------------------------------------------------------------


def test_every_failure_cause_is_named(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    issuing = test_pki.public_intermediate

    def cause(leaf: pki.Leaf, host: str = HOST, fetched: list | None = None) -> str | None:
        chain = [base64.b64encode(pki.der(c)).decode() for c in leaf.chain]
        extra = [base64.b64encode(pki.der(c)).decode() for c in fetched or []]
        return analyze_chain(chain, host, AT, ctx.roots, ctx.catalogs, extra)["failure_cause"]

    assert cause(pki.make_leaf(issuing, [HOST])) is None
    assert cause(pki.make_leaf(issuing, [HOST], valid_days=(-90, -1))) == FailureCause.EXPIRED
    assert cause(pki.make_leaf(issuing, [HOST], valid_days=(2, 90))) == FailureCause.NOT_YET_VALID
    assert cause(pki.make_leaf(issuing, ["www.site.example"])) == FailureCause.NAME_MISMATCH
    leaf_only = pki.make_leaf(issuing, [HOST], leaf_only=True)
    assert cause(leaf_only) == FailureCause.INCOMPLETE_CHAIN
    assert cause(leaf_only, fetched=[issuing.cert]) is None  # completed as browsers do
    stranger = pki.make_intermediate(pki.make_root(pki.name(CN="Elsewhere")), pki.name(CN="Not Ours"))
    assert cause(leaf_only, fetched=[stranger.cert]) == FailureCause.INCOMPLETE_CHAIN  # fetched, but not ours
    private = pki.make_root(pki.name(CN="Private CA"))
    assert cause(pki.make_leaf(private, [HOST], extra_chain=[private.cert])) == FailureCause.UNKNOWN_ISSUER
    deep = test_pki.public_root
    for depth in range(9):
        deep = pki.make_intermediate(deep, pki.name(CN=f"Level {depth}"), path_length=None)
    assert cause(pki.make_leaf(deep, [HOST])) == FailureCause.CHAIN_TOO_LONG


def test_a_self_signed_leaf_is_not_interception_whatever_the_control_sni_says(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    own = pki.make_root(pki.name(CN=HOST))
    self_signed = pki.Leaf(own.cert, own.key, [own.cert])
    control = pki.make_leaf(test_pki.public_intermediate, ["default.example"])
    obs = _tls_observations(_handshake(self_signed.chain), _handshake(control.chain, "control_sni", "example.org"))
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.interceptor, j.confidence) == ("inconclusive", None, "unconfirmed")
    assert j.anomalies == ["tls.untrusted_chain", "tls.self_signed"]


def test_an_unknown_issuer_with_the_control_snis_contrast_is_a_suspected_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """Issue 19: virtual hosting gives the same contrast, so it proves nothing on its own."""
    forger = pki.make_root(pki.name(CN="Some Gateway CA"))
    forged = pki.make_leaf(forger, [HOST])
    real_other = pki.make_leaf(test_pki.public_intermediate, ["example.org"])
    contrast = _tls_observations(_handshake(forged.chain), _handshake(real_other.chain, "control_sni", "example.org"))
    j = judge({"host": HOST}, contrast, AT, False, ctx)
    assert (j.blocking, j.confidence) == ("tls_mitm", "unconfirmed")
    assert {"tls.unknown_issuer", "tls.control_sni_contrast"} <= set(j.anomalies)
    assert j.interceptor["issuer"] == "CN=Some Gateway CA"
    # The control name forged by the same untrusted issuer: the path forges any name, not this one.
    every = _tls_observations(
        _handshake(forged.chain), _handshake(pki.make_leaf(forger, ["example.org"]).chain, "control_sni", "example.org")
    )
    j = judge({"host": HOST}, every, AT, False, ctx)
    assert (j.blocking, j.confidence) == ("tls_mitm", "unconfirmed")
    assert "tls.sni_triggered" not in j.anomalies and "tls.control_sni_contrast" not in j.anomalies
    # Alone, the same chain is a suspicion too, never a confirmed finding.
    alone = judge({"host": HOST}, _tls_observations(_handshake(forged.chain)), AT, False, ctx)
    assert (alone.blocking, alone.confidence) == ("tls_mitm", "unconfirmed")


def test_another_sites_valid_certificate_at_a_confirmed_address_is_a_finding(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    blockpage_cert = pki.make_leaf(test_pki.public_intermediate, ["blockpage.isp.example"])
    j = judge({"host": HOST}, _tls_observations(_handshake(blockpage_cert.chain)), AT, False, ctx)
    assert (j.blocking, j.interceptor, j.confidence) == ("tls", None, "unconfirmed")
    assert j.anomalies == ["tls.untrusted_chain", "tls.other_site_certificate"]
    assert j.tls["certificates"][0]["dns_names"] == ["blockpage.isp.example"]
