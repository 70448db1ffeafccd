"""DNS rules: the system resolver's answers against the control's, injection, proxies."""

from __future__ import annotations

import ipaddress
from typing import Any

from probe.analyze.bogons import is_bogon
from probe.analyze.common import AnalysisContext, Judgement, Outcome
from probe.vocabulary.anomalies import Anomaly
from probe.vocabulary.failures import DENIALS, LOCAL_NETWORK_FAILURES, Failure

_DNS_FAILURE_CODES: dict[str, Anomaly] = {
    Failure.DNS_NXDOMAIN: Anomaly.DNS_NXDOMAIN,
    Failure.DNS_NO_ANSWER: Anomaly.DNS_NO_ANSWER,
    Failure.DNS_SERVFAIL: Anomaly.DNS_SERVFAIL,
    Failure.DNS_REFUSED: Anomaly.DNS_REFUSED,
    Failure.GENERIC_TIMEOUT: Anomaly.DNS_TIMEOUT,
    Failure.DNS_TEMPORARY: Anomaly.DNS_TIMEOUT,
}


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
        if single and plain["failure"] in DENIALS:
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


def judge_dns(
    dns: dict[str, Any] | None,
    tls_valid_addresses: set[str],
    helper: dict[str, Any] | None,
    ctx: AnalysisContext,
    j: Judgement,
) -> tuple[Outcome, bool]:
    """Return (stage outcome, whether a control confirmed the name's addresses)."""
    if dns is None:  # an IP literal: nothing to resolve
        return Outcome.OK, True
    system, control = dns["system"], dns.get("control")
    helper_dns = helper.get("dns") if helper is not None and isinstance(helper.get("dns"), dict) else None
    helper_addresses = set(helper_dns.get("addresses") or []) if helper_dns else set()
    control_ok = control is not None and bool(control["addresses"])
    if control is not None and not control_ok and control["failure"] not in DENIALS:
        j.add(Anomaly.DNS_CONTROL_FAILED)
    control_denies = (control is not None and control["failure"] in DENIALS) or (
        helper_dns is not None and not helper_addresses and helper_dns.get("failure") in DENIALS
    )
    # The control resolver's answers and the helper's (seen from outside) both confirm addresses.
    control_addresses = (set(control["addresses"]) if control is not None and control_ok else set()) | helper_addresses
    control_ok = bool(control_addresses)
    control_denies = control_denies and not control_ok
    injected = _injected(dns, control_addresses)
    proxied = _transparent_proxy(dns, control_addresses, tls_valid_addresses)

    def finish(outcome: Outcome, confirmed: bool) -> tuple[Outcome, bool]:
        if injected:
            j.add(Anomaly.DNS_INJECTED)
        if proxied:
            j.add(Anomaly.DNS_TRANSPARENT_PROXY)
        if injected and outcome in (Outcome.OK, Outcome.UNKNOWN):
            return Outcome.BLOCKED, confirmed
        return outcome, confirmed

    if system["failure"] is not None:
        if system["failure"] in LOCAL_NETWORK_FAILURES:
            return Outcome.OFFLINE, False
        if control_ok:
            j.add(_DNS_FAILURE_CODES.get(_system_failure(dns), Anomaly.DNS_FAILURE))
            return finish(Outcome.BLOCKED, True)
        if control_denies and system["failure"] in DENIALS:
            j.add(Anomaly.DNS_NAME_DOES_NOT_EXIST)
            return finish(Outcome.DOWN, True)
        return finish(Outcome.UNKNOWN, False)

    addresses = system["addresses"]
    blocked = False
    bogons = [a for a in addresses if a not in control_addresses and is_bogon(a, ctx.documentation_is_public)]
    if bogons:
        j.add(Anomaly.DNS_BOGON)
        blocked = True
    for address in addresses:
        for fingerprint in ctx.catalogs.dns_blockpages:
            if ipaddress.ip_address(address) in fingerprint.network:
                j.add(Anomaly.DNS_BLOCKPAGE_IP)
                j.blockpage = j.blockpage or {
                    "id": fingerprint.id,
                    "name": fingerprint.name,
                    "country": fingerprint.country,
                    "matched": address,
                }
                blocked = True
    if blocked:
        return finish(Outcome.BLOCKED, control_ok)
    if not control_ok:
        if control_denies:  # the control says the name does not exist, yet the resolver answers
            return finish(Outcome.UNKNOWN, False)
        return finish(Outcome.OK, False)  # unchecked, but nothing wrong is shown; later stages must not blame it
    shared = control_addresses & set(addresses) or tls_valid_addresses & set(addresses)
    if shared or _same_network(addresses, control_addresses, ctx):
        return finish(Outcome.OK, True)
    j.add(Anomaly.DNS_INCONSISTENT)
    return finish(Outcome.BLOCKED, True)
