"""DNS rules: the system resolver's answers against the control's, injection, proxies."""

from __future__ import annotations

import ipaddress
from typing import Any

from probe.analyze.bogons import is_bogon
from probe.analyze.common import AnalysisContext, Finding, Judgement, Outcome, RuleContext, proven
from probe.analyze.dnssigns import embedded_ipv4, injection_signs, transparent_proxy
from probe.analyze.tls import tls_valid_addresses
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import DENIALS, Failure
from probe.vocabulary.observations import DnsObservations, Observations
from probe.vocabulary.proofs import Proof

_DNS_FAILURE_CODES: dict[str, Anomaly] = {
    Failure.DNS_NXDOMAIN: Anomaly.DNS_NXDOMAIN,
    Failure.DNS_NO_ANSWER: Anomaly.DNS_NO_ANSWER,
    Failure.DNS_SERVFAIL: Anomaly.DNS_SERVFAIL,
    Failure.DNS_REFUSED: Anomaly.DNS_REFUSED,
    Failure.GENERIC_TIMEOUT: Anomaly.DNS_TIMEOUT,
    Failure.DNS_TEMPORARY: Anomaly.DNS_TIMEOUT,
}


def _system_failure(dns: DnsObservations) -> str | None:
    """getaddrinfo cannot tell SERVFAIL from a timeout; the same nameserver asked directly can."""
    direct = dns.system_udp
    if dns.system.transport == "system" and direct is not None and direct.failure is not None:
        return direct.failure
    return dns.system.failure


def _same_network(addresses: list[str], control_addresses: set[str], ctx: AnalysisContext) -> bool:
    if ctx.asn is None:
        return False
    ours = {ctx.asn.lookup(a) for a in addresses} - {None}
    theirs = {ctx.asn.lookup(a) for a in control_addresses} - {None}
    return bool(ours & theirs)


def _blockpage_answer(
    dns: DnsObservations, addresses: list[str], control_addresses: set[str], ctx: AnalysisContext
) -> dict[str, Any] | None:
    """An answer the catalog or OONI's DNS fingerprints name as a censor's (the control's own
    answers excepted): by address, or by the name a CNAME points to."""
    for address in addresses:
        if address in control_addresses:
            continue
        for fingerprint in ctx.catalogs.dns_blockpages:
            if ipaddress.ip_address(address) in fingerprint.network:
                return {
                    "id": fingerprint.id,
                    "name": fingerprint.name,
                    "country": fingerprint.country,
                    "matched": address,
                }
    answers = set(addresses) - control_addresses
    for lookup in dns.lookups("system", "system_udp"):
        for query in lookup.queries:
            answers |= {a.data for a in query.answers if a.type == "CNAME"}
    row = ctx.catalogs.fingerprints.match_dns(answers)
    if row is not None:
        return {**row.describe(), "matched": row.pattern}
    return None


DENIAL_CODES = frozenset({Anomaly.DNS_NXDOMAIN, Anomaly.DNS_NO_ANSWER, Anomaly.DNS_REFUSED})


def judge_dns(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    """The stage's finding; `confirmed` also says whether a control confirmed the name's addresses,
    which the later stages need: a failure at an unconfirmed address proves nothing."""
    dns, ctx = obs.dns, rules.analysis
    if dns is None:  # an IP literal: nothing to resolve (no DNS, no claim about it)
        return Finding(Outcome.OK, True, Blocking.DNS)
    nat64 = ctx.nat64_prefixes
    system, control = dns.system, dns.control
    helper_dns = rules.helper.dns if rules.helper is not None else None
    helper_addresses = {embedded_ipv4(a, nat64) for a in helper_dns.addresses} if helper_dns else set()
    control_ok = control is not None and bool(control.addresses)
    if control is not None and not control_ok and control.failure not in DENIALS:
        j.add(Anomaly.DNS_CONTROL_FAILED)
    control_denies = (control is not None and control.failure in DENIALS) or (
        helper_dns is not None and not helper_addresses and helper_dns.failure in DENIALS
    )
    # The control resolver's answers and the helper's (seen from outside) both confirm addresses.
    control_addresses = helper_addresses | (
        {embedded_ipv4(a, nat64) for a in control.addresses} if control is not None and control_ok else set()
    )
    control_ok = bool(control_addresses)
    control_denies = control_denies and not control_ok
    validated = {embedded_ipv4(a, nat64) for a in tls_valid_addresses(obs, rules.analysis_of)}
    addresses = [embedded_ipv4(a, nat64) for a in system.addresses]
    proxied = transparent_proxy(dns, control_addresses, validated)
    signs = injection_signs(dns, control_addresses | validated, proxied, nat64)

    def finish(outcome: Outcome, confirmed: bool, *basis: Proof) -> Finding:
        if signs.injected:
            j.add(Anomaly.DNS_INJECTED)
        if signs.proxy_answered_probe:
            j.add(Anomaly.DNS_PROXY_ANSWERED_INJECTION_PROBE)
        if proxied:
            j.add(Anomaly.DNS_TRANSPARENT_PROXY)
        if signs.ip_ttl_differs:
            j.add(Anomaly.DNS_IP_TTL_DIFFERS)
        # A wrong answer injected for the name blocks it, even when the resolver's won this race.
        # (A correct answer, whoever sent it, is no injection: see dnssigns.)
        if signs.injected and outcome in (Outcome.OK, Outcome.UNKNOWN):
            if control_ok:
                return proven(Outcome.BLOCKED, Blocking.DNS, Proof.CONTROL_RESOLVER)
            return Finding(Outcome.BLOCKED, False, Blocking.DNS)
        if confirmed:
            return proven(outcome, Blocking.DNS, *(basis or (Proof.CONTROL_RESOLVER,)))
        return Finding(outcome, False, Blocking.DNS)

    if system.failure is not None:
        if control_ok:
            code = _DNS_FAILURE_CODES.get(_system_failure(dns) or "", Anomaly.DNS_FAILURE)
            j.add(code)
            # A denial (NXDOMAIN, no answer, REFUSED) is the resolver's statement about the name; a
            # SERVFAIL or a timeout is what a struggling resolver also gives: not a proof.
            return finish(Outcome.BLOCKED, code in DENIAL_CODES)
        if control_denies and system.failure in DENIALS:
            j.add(Anomaly.DNS_NAME_DOES_NOT_EXIST)
            return finish(Outcome.DOWN, True)
        return finish(Outcome.UNKNOWN, False)

    blocked = False
    bogons = [a for a in addresses if a not in control_addresses and is_bogon(a, ctx.documentation_is_public)]
    if bogons:
        j.add(Anomaly.DNS_BOGON)
        blocked = True
    blockpage = _blockpage_answer(dns, addresses, control_addresses, ctx)
    if blockpage is not None:
        j.add(Anomaly.DNS_BLOCKPAGE_IP)
        j.blockpage = j.blockpage or blockpage
        blocked = True
    if blocked:
        fingerprinted = (Proof.DNS_BLOCKPAGE_FINGERPRINT,) if blockpage is not None else ()
        return finish(Outcome.BLOCKED, control_ok or blockpage is not None,
                      *fingerprinted, *((Proof.CONTROL_RESOLVER,) if control_ok else ()))  # fmt: skip
    consistent = bool(control_addresses & set(addresses) or validated & set(addresses))
    if consistent or (control_ok and _same_network(addresses, control_addresses, ctx)):
        agreed = (Proof.CONTROL_RESOLVER,) if control_ok else ()
        chained = (Proof.VALID_CHAIN,) if validated & set(addresses) else ()
        return finish(Outcome.OK, control_ok or consistent, *agreed, *chained)
    if not control_ok:
        if control_denies:  # the control says the name does not exist, yet the resolver answers
            return finish(Outcome.UNKNOWN, False)
        return finish(Outcome.OK, False)  # unchecked, but nothing wrong is shown; later stages must not blame it
    j.add(Anomaly.DNS_INCONSISTENT)
    # Other addresses, not validated by TLS or the AS: a GeoDNS answer looks the same. A finding,
    # not a proof.
    return finish(Outcome.BLOCKED, False)
