"""Analysis: observations + catalogs -> anomalies, interceptor and verdict. Pure and repeatable.

The verdict is the earliest stage (dns, then tcp, then tls, then http) that failed in a way the
control did not. Where no control could speak for a stage, the verdict is `inconclusive`, never a
claim; with no network at all it is `offline`. docs/verdicts.md states the rules in prose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from probe import failures
from probe.asn import AsnTable
from probe.bogons import is_bogon
from probe.catalog import Catalogs
from probe.certs import ReferenceRoots, analyze_chain

# Stage outcomes, in the order they decide the verdict.
OK, BLOCKED, DOWN, UNKNOWN, OFFLINE, LOCAL = "ok", "blocked", "down", "inconclusive", "offline", "local"

_DNS_FAILURE_CODES = {
    failures.DNS_NXDOMAIN: "dns.nxdomain",
    failures.DNS_NO_ANSWER: "dns.no_answer",
    failures.DNS_SERVFAIL: "dns.servfail",
    failures.DNS_REFUSED: "dns.refused",
    failures.GENERIC_TIMEOUT: "dns.timeout",
    failures.DNS_TEMPORARY: "dns.timeout",
}
_CONNECT_CODES = {
    failures.GENERIC_TIMEOUT: "timeout",
    failures.CONNECTION_REFUSED: "refused",
    failures.CONNECTION_RESET: "reset",
    failures.HOST_UNREACHABLE: "unreachable",
}
_STREAM_CODES = {
    failures.CONNECTION_RESET: "reset",
    failures.GENERIC_TIMEOUT: "timeout",
    failures.EOF_ERROR: "eof",
}
_DENIALS = (failures.DNS_NXDOMAIN, failures.DNS_NO_ANSWER)


@dataclass
class Judgement:
    blocking: str = "none"
    anomalies: list[str] = field(default_factory=list)
    interceptor: dict[str, Any] | None = None
    blockpage: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None  # the certificate analysis of the target's handshake

    def add(self, *codes: str) -> None:
        for code in codes:
            if code not in self.anomalies:
                self.anomalies.append(code)


@dataclass(frozen=True)
class AnalysisContext:
    roots: ReferenceRoots
    catalogs: Catalogs
    documentation_is_public: bool = False
    asn: AsnTable | None = None  # with one, answers in the control's AS count as consistent


def helper_view(obs: dict[str, Any]) -> dict[str, Any] | None:
    """The first helper that answered: how the target looks from outside the network."""
    for asked in obs.get("helpers") or []:
        if isinstance(asked.get("response"), dict):
            return asked["response"]
    return None


def _helper_failed_at(view: dict[str, Any] | None, stage: str) -> bool | None:
    """Whether the helper failed at `stage` too: True, False, or None when it cannot say."""
    if view is None:
        return None
    if stage == "tcp":
        attempts = view.get("tcp") or []
        return all(a.get("failure") for a in attempts) if attempts else None
    part = view.get(stage)
    if not isinstance(part, dict):
        return None
    return part.get("failure") is not None or (stage == "http" and part.get("status") is None)


def _purpose(items: list[dict[str, Any]], purpose: str) -> list[dict[str, Any]]:
    return [item for item in items if item.get("purpose", "target") == purpose]


def _udp_lookups(dns: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key in ("system", "system_udp", "control", "control_plain"):
        lookup = dns.get(key)
        if lookup is not None and lookup["transport"] == "udp":
            found.append(lookup)
    return found


def _reply_addresses(reply: dict[str, Any]) -> set[str]:
    return {a["data"] for a in reply["answers"] if a["type"] in ("A", "AAAA")}


def _injected(dns: dict[str, Any], control_addresses: set[str]) -> bool:
    """A device on the path answers DNS: see docs/verdicts.md for the three signs."""
    probe = dns.get("injection")
    if probe is not None:
        for reply in probe["replies"]:
            # Some sites' addresses do run a DNS server: one that refuses, fails, or tells the
            # truth is no injector. Addresses the control does not give, or a denial, are.
            addresses = _reply_addresses(reply)
            if (addresses and not addresses <= control_addresses) or reply["rcode"] == "NXDOMAIN":
                return True
    for lookup in _udp_lookups(dns):
        for query in lookup["queries"]:
            replies = query.get("replies") or []
            if len(replies) < 2:
                continue
            answers = {(r["rcode"], tuple(sorted(_reply_addresses(r)))) for r in replies}
            if len(answers) > 1 or len({r["ip_ttl"] for r in replies}) > 1:
                return True
    baseline = dns.get("resolver_baseline")
    if baseline and baseline["replies"] and baseline["replies"][0]["ip_ttl"] is not None:
        expected = baseline["replies"][0]["ip_ttl"]
        resolver = baseline["replies"][0]["source"]
        for key in ("system", "system_udp"):
            asked = dns.get(key)
            if asked is None or asked["transport"] != "udp":
                continue
            for query in asked["queries"]:
                for reply in query.get("replies") or []:
                    if reply["source"] == resolver and reply["ip_ttl"] not in (None, expected):
                        return True
    return False


def _identity_texts(query: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(a["data"] for a in query["answers"] if a["type"] == "TXT"))


def _transparent_proxy(dns: dict[str, Any], control_addresses: set[str], validated: set[str]) -> bool:
    """Plain DNS to the control's address is answered by someone else than its encrypted channel."""
    plain = dns.get("control_plain")
    if plain is not None and control_addresses:
        single = all(len(q.get("replies") or []) <= 1 for q in plain["queries"])  # several: injection
        if single and plain["addresses"] and not set(plain["addresses"]) & (control_addresses | validated):
            return True
        if single and plain["failure"] in _DENIALS:
            return True
    identity = dns.get("control_identity")
    if identity and identity.get("plain") and identity.get("encrypted"):
        plain_id, encrypted_id = identity["plain"], identity["encrypted"]
        if encrypted_id["failure"] is None and _identity_texts(encrypted_id) and plain_id["replies"]:
            return plain_id["failure"] is not None or _identity_texts(plain_id) != _identity_texts(encrypted_id)
    return False


def _system_failure(dns: dict[str, Any]) -> str:
    """getaddrinfo cannot tell SERVFAIL from a timeout; the same nameserver asked directly can."""
    failure = dns["system"]["failure"]
    direct = dns.get("system_udp")
    if dns["system"]["transport"] == "system" and direct is not None and direct["failure"] is not None:
        return direct["failure"]
    return failure


def _same_network(addresses: list[str], control_addresses: set[str], ctx: AnalysisContext) -> bool:
    if ctx.asn is None:
        return False
    ours = {ctx.asn.lookup(a) for a in addresses} - {None}
    theirs = {ctx.asn.lookup(a) for a in control_addresses} - {None}
    return bool(ours & theirs)


def _judge_dns(
    dns: dict[str, Any] | None,
    tls_valid_addresses: set[str],
    helper: dict[str, Any] | None,
    ctx: AnalysisContext,
    j: Judgement,
) -> tuple[str, bool]:
    """Return (stage outcome, whether a control confirmed the name's addresses)."""
    if dns is None:  # an IP literal: nothing to resolve
        return OK, True
    system, control = dns["system"], dns.get("control")
    helper_dns = helper.get("dns") if helper is not None and isinstance(helper.get("dns"), dict) else None
    helper_addresses = set(helper_dns.get("addresses") or []) if helper_dns else set()
    control_ok = control is not None and bool(control["addresses"])
    if control is not None and not control_ok and control["failure"] not in _DENIALS:
        j.add("dns.control_failed")
    control_denies = (control is not None and control["failure"] in _DENIALS) or (
        helper_dns is not None and not helper_addresses and helper_dns.get("failure") in _DENIALS
    )
    # The control resolver's answers and the helper's (seen from outside) both confirm addresses.
    control_addresses = (set(control["addresses"]) if control is not None and control_ok else set()) | helper_addresses
    control_ok = bool(control_addresses)
    control_denies = control_denies and not control_ok
    injected = _injected(dns, control_addresses)
    proxied = _transparent_proxy(dns, control_addresses, tls_valid_addresses)

    def finish(outcome: str, confirmed: bool) -> tuple[str, bool]:
        if injected:
            j.add("dns.injected")
        if proxied:
            j.add("dns.transparent_proxy")
        if injected and outcome in (OK, UNKNOWN):
            return BLOCKED, confirmed
        return outcome, confirmed

    if system["failure"] is not None:
        if system["failure"] in failures.LOCAL_NETWORK_FAILURES:
            return OFFLINE, False
        if control_ok:
            j.add(_DNS_FAILURE_CODES.get(_system_failure(dns), "dns.failure"))
            return finish(BLOCKED, True)
        if control_denies and system["failure"] in _DENIALS:
            j.add("dns.name_does_not_exist")
            return finish(DOWN, True)
        return finish(UNKNOWN, False)

    addresses = system["addresses"]
    blocked = False
    bogons = [a for a in addresses if a not in control_addresses and is_bogon(a, ctx.documentation_is_public)]
    if bogons:
        j.add("dns.bogon")
        blocked = True
    for address in addresses:
        for fingerprint in ctx.catalogs.dns_blockpages:
            if ipaddress.ip_address(address) in fingerprint.network:
                j.add("dns.blockpage_ip")
                j.blockpage = j.blockpage or {
                    "id": fingerprint.id,
                    "name": fingerprint.name,
                    "country": fingerprint.country,
                    "matched": address,
                }
                blocked = True
    if blocked:
        return finish(BLOCKED, control_ok)
    if not control_ok:
        if control_denies:  # the control says the name does not exist, yet the resolver answers
            return finish(UNKNOWN, False)
        return finish(OK, False)  # unchecked, but nothing wrong is shown; later stages must not blame it
    shared = control_addresses & set(addresses) or tls_valid_addresses & set(addresses)
    if shared or _same_network(addresses, control_addresses, ctx):
        return finish(OK, True)
    j.add("dns.inconsistent")
    return finish(BLOCKED, True)


def _judge_tcp(obs: dict[str, Any], confirmed: bool, j: Judgement) -> str:
    """Every connect to the target failed: blocked when a control confirmed the address and the
    helper (if any) connected; down when the helper failed too; offline with no route at all."""
    attempts = _purpose(obs["tcp_connect"], "target")
    if not attempts or any(a["failure"] is None for a in attempts):
        return OK
    seen = [a["failure"] for a in attempts]
    if all(f in failures.LOCAL_NETWORK_FAILURES for f in seen):
        return OFFLINE
    first = next(f for f in seen if f not in failures.LOCAL_NETWORK_FAILURES)
    j.add(f"tcp.{_CONNECT_CODES.get(first, 'failure')}")
    helper_failed = _helper_failed_at(helper_view(obs), "tcp")
    if helper_failed:
        j.add("helper.same_failure")
        return DOWN
    return BLOCKED if confirmed or helper_failed is False else UNKNOWN


def _tls_failure_code(handshake: dict[str, Any]) -> str:
    if handshake.get("alert"):
        return "tls.alert"
    return f"tls.{_STREAM_CODES.get(handshake['failure'], 'failure')}"


ChainAnalyzer = Callable[[dict[str, Any]], dict[str, Any]]


def _chain_analyzer(host: str, at: datetime, ctx: AnalysisContext) -> ChainAnalyzer:
    """Analyze each distinct presented chain once per record."""
    cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def analysis(handshake: dict[str, Any]) -> dict[str, Any]:
        key = tuple(handshake["peer_certificates"])
        if key not in cache:
            cache[key] = analyze_chain(list(key), host, at, ctx.roots, ctx.catalogs)
        return cache[key]

    return analysis


def _judge_tls(obs: dict[str, Any], analysis_of: ChainAnalyzer, confirmed: bool, j: Judgement) -> str:
    targets = _purpose(obs["tls_handshakes"], "target")
    helper = helper_view(obs)
    if not targets:
        return OK
    handshake = targets[-1]
    controls = _purpose(obs["tls_handshakes"], "control_sni")
    control_tcp = _purpose(obs["tcp_connect"], "control_sni")
    control = controls[-1] if controls else None

    if handshake["failure"] is not None:
        j.add(_tls_failure_code(handshake))
        if control is not None and control["failure"] is None:
            j.add("tls.sni_triggered")
            return BLOCKED
        if control is not None or control_tcp:
            j.add("tls.fails_for_any_name")
        helper_failed = _helper_failed_at(helper, "tls")
        if helper_failed:
            j.add("helper.same_failure")
            return DOWN
        if helper_failed is False:  # the site answers from outside: this path breaks it
            return BLOCKED
        if control is not None or control_tcp:
            return UNKNOWN
        return BLOCKED if confirmed else UNKNOWN

    analysis = analysis_of(handshake)
    j.tls = analysis
    interceptor = analysis["interceptor"]
    if interceptor is not None and interceptor["catalog"] is None and _helper_sees_same_bad_chain(analysis, helper):
        # The site presents this untrusted chain to everyone: a broken site, not interception.
        j.add("tls.untrusted_chain", "helper.same_failure")
        return DOWN
    mismatch = _leaf_mismatch(analysis, helper)
    if mismatch == "decisive":
        j.add("tls.cert_mismatch")
    elif mismatch == "informational":
        j.add("tls.leaf_key_differs")
    if interceptor is None:
        if mismatch != "decisive":
            return OK
        leaf = analysis["certificates"][0]
        interceptor = {
            "catalog": None,
            "catalog_id": None,
            "name": None,
            "country": None,
            "issuer": leaf["issuer"],
            "chain_top_issuer": analysis["certificates"][-1]["issuer"],
            "matched_by": None,
            "matched_certificate": None,
        }
    j.interceptor = interceptor
    if not analysis["valid"]:
        j.add("tls.untrusted_chain")
    if interceptor["catalog"] is None and handshake.get("os_store_valid"):
        j.add("tls.trusted_by_os_store")
        if _intercepts_every_name(control, interceptor, analysis_of):
            # A root the machine's owner installed, forging even the control name: their own
            # antivirus or gateway, not a network that targets names.
            j.interceptor = {**interceptor, "matched_by": "os_store"}
            return LOCAL
    if interceptor["catalog"] == "local_interceptors":
        j.add("tls.local_interceptor", *analysis["evidence"])
        return LOCAL
    if interceptor["catalog"] == "interception_cas":
        strong = interceptor["matched_by"] in ("sha256_der", "sha256_spki")
        j.add("tls.known_interception_ca" if strong else "tls.interception_ca_name")
    j.add(*analysis["evidence"])
    control_answered = control is not None and control["failure"] is None and bool(control["peer_certificates"])
    if control_answered and not _intercepts_every_name(control, interceptor, analysis_of):
        j.add("tls.sni_triggered")
    return BLOCKED


def _intercepts_every_name(
    control: dict[str, Any] | None, interceptor: dict[str, Any], analysis_of: ChainAnalyzer
) -> bool:
    """The control SNI's chain came from the same issuer as the target's substituted one."""
    if control is None or control["failure"] is not None or not control["peer_certificates"]:
        return False
    certificates = analysis_of(control)["certificates"]
    return bool(certificates) and certificates[0]["issuer"] == interceptor["issuer"]


def _helper_sees_same_bad_chain(analysis: dict[str, Any], helper: dict[str, Any] | None) -> bool:
    tls = helper.get("tls") if helper is not None else None
    if not isinstance(tls, dict) or tls.get("failure") is not None or tls.get("valid") is not False:
        return False
    return bool(analysis["certificates"]) and tls.get("leaf_spki_sha256") == analysis["certificates"][0]["sha256_spki"]


def _leaf_mismatch(analysis: dict[str, Any], helper: dict[str, Any] | None) -> str | None:
    """Compare the probe's leaf with the one the helper saw, when the helper's chain was valid.

    A different key under another issuer, or under a chain that does not validate here, is
    decisive: interception, even with a publicly trusted forged certificate. A different key under
    the same issuer, both valid, is only recorded: sites rotate keys and serve several certificates.
    """
    tls = helper.get("tls") if helper is not None else None
    if not isinstance(tls, dict) or not tls.get("valid") or not analysis["certificates"]:
        return None
    leaf = analysis["certificates"][0]
    if tls.get("leaf_spki_sha256") in (None, leaf["sha256_spki"]):
        return None
    if not analysis["valid"] or tls.get("leaf_issuer") != leaf["issuer"]:
        return "decisive"
    return "informational"


def _blockpage_match(response: dict[str, Any], ctx: AnalysisContext) -> dict[str, Any] | None:
    headers = {name.lower(): value for name, value in response["headers"]}
    for fingerprint in ctx.catalogs.http_blockpages:
        if fingerprint.field == "body":
            value = response.get("body_prefix")
        elif fingerprint.field == "title":
            value = response.get("title")
        else:
            value = headers.get(fingerprint.field.split(":", 1)[1])
        if fingerprint.matches(value):
            return {
                "id": fingerprint.id,
                "name": fingerprint.name,
                "country": fingerprint.country,
                "matched": f"{fingerprint.field} of {response.get('url') or 'the response'}",
            }
    return None


def _judge_http(obs: dict[str, Any], confirmed: bool, ctx: AnalysisContext, j: Judgement) -> str:
    """The target's request and each redirect after it: a blockpage anywhere on the way, or a
    failure of the target's own request."""
    requests = obs["http_requests"]
    if not requests:
        return OK
    for response in requests:
        if response["status"] is None:
            continue
        found = _blockpage_match(response, ctx)
        if found is not None:
            j.add("http.blockpage")
            j.blockpage = found
            return BLOCKED
    first = requests[0]
    helper = helper_view(obs)
    if first["status"] is None:
        j.add(f"http.{_STREAM_CODES.get(first['failure'], 'failure')}")
        helper_failed = _helper_failed_at(helper, "http")
        if helper_failed:
            j.add("helper.same_failure")
            return DOWN
        return BLOCKED if confirmed or helper_failed is False else UNKNOWN
    page = helper.get("http") if helper is not None else None
    if isinstance(page, dict) and page.get("status") is not None and _pages_differ(first, page):
        j.add("http.diff")
        return BLOCKED
    return OK


BODY_LENGTH_RATIO = 0.7  # OONI web_connectivity's threshold


def _pages_differ(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """OONI's comparison: status, title, and body length (shorter over longer below 0.7)."""
    if ours["status"] != theirs["status"]:
        return True
    if ours.get("title") and theirs.get("title") and ours["title"] != theirs["title"]:
        return True
    lengths = (ours.get("body_length") or 0, theirs.get("body_length") or 0)
    return bool(max(lengths) > 0 and min(lengths) / max(lengths) < BODY_LENGTH_RATIO)


def _tls_valid_addresses(obs: dict[str, Any], analysis_of: ChainAnalyzer) -> set[str]:
    """Addresses that presented a chain valid for the name: their DNS answers are consistent."""
    handshakes = _purpose(obs["tls_handshakes"], "target")
    return {h["address"] for h in handshakes if h["failure"] is None and analysis_of(h)["valid"]}


def judge(
    target: dict[str, Any], observations: dict[str, Any] | None, at: datetime, offline: bool, ctx: AnalysisContext
) -> Judgement:
    """The record's anomalies, verdict, interceptor and blockpage, from observations alone."""
    j = Judgement()
    if offline or observations is None:
        j.blocking = "offline"
        j.add("network.offline")
        return j
    analysis_of = _chain_analyzer(target["host"], at, ctx)
    helper = helper_view(observations)
    if any(asked.get("failure") for asked in observations.get("helpers") or []):
        j.add("helper.failed")
    valid = _tls_valid_addresses(observations, analysis_of)
    dns_outcome, confirmed = _judge_dns(observations["dns"], valid, helper, ctx, j)
    stages: list[tuple[str, str]] = [("dns", dns_outcome)]
    stages.append(("tcp", _judge_tcp(observations, confirmed, j)))
    tls_outcome = _judge_tls(observations, analysis_of, confirmed, j)
    stages.append(("tls_mitm" if j.interceptor else "tls", tls_outcome))
    stages.append(("http", _judge_http(observations, confirmed, ctx, j)))

    for stage, outcome in stages:
        if outcome == OK:
            continue
        j.blocking = {
            BLOCKED: stage,
            DOWN: "down",
            UNKNOWN: "inconclusive",
            OFFLINE: "offline",
            LOCAL: "local_interception",
        }[outcome]
        if outcome == OFFLINE:
            j.add("network.offline")
        break
    return j
