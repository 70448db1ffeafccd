"""TLS rules: a failed handshake against the control SNI, and a chain that does not validate.

Interception needs evidence, and the record says which: a catalog match, the control SNI's
contrast at the same address, or a helper that sees another leaf key. A chain that fails for a
reason no forger could make (a public CA's signature on an expired certificate, or on one for
another name of the same site) is the site's own fault. docs/verdicts.md states each rule.
"""

from __future__ import annotations

from typing import Any

from probe.analyze.chain import CAUSE_CODES, PUBLICLY_SIGNED, FailureCause, describe_interceptor
from probe.analyze.common import (
    ChainAnalyzer,
    Finding,
    Judgement,
    Outcome,
    RuleContext,
    helper_contrast,
    hop_items,
    proven,
)
from probe.analyze.sites import same_site
from probe.analyze.tls_evidence import (
    Hop,
    control_contrast,
    control_covers_name,
    forges_every_name,
    helper_leaf,
    hop_of,
    minted,
    other_issuer_for_control,
)
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import HelperResponse, Observations, TlsHandshake
from probe.vocabulary.proofs import Proof
from probe.vocabulary.purposes import Purpose

_HANDSHAKE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.TLS_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.TLS_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.TLS_EOF,
}
# Catalog matches by the CA's very key: its DER, its public key, or its signature on a presented one.
STRONG_MATCHES = ("sha256_der", "sha256_spki", "signature")


def _failure_code(handshake: TlsHandshake) -> Anomaly:
    if handshake.alert:
        return Anomaly.TLS_ALERT
    return _HANDSHAKE_CODES.get(handshake.failure or "", Anomaly.TLS_FAILURE)


def _reached_server(handshake: TlsHandshake | None) -> bool:
    """A ServerHello, or an alert the server sent: the control name reached a TLS server."""
    return handshake is not None and handshake.reached_server


def judge_tls(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    return judge_hop(hop_of(obs, rules.host, None), rules.analysis_of, rules.confirmed, rules.helper, j)


def judge_hop(
    hop: Hop, analysis_of: ChainAnalyzer, confirmed: bool, helper: HelperResponse | None, j: Judgement
) -> Finding:
    if not hop.handshakes:
        return Finding(Outcome.OK, confirmed, Blocking.TLS)
    handshake = hop.handshakes[-1]
    if handshake.failure is not None:
        return _judge_failed_handshake(handshake, hop, helper, confirmed, j)
    return _judge_chain(handshake, hop, analysis_of, helper, confirmed, j)


def _judge_failed_handshake(
    handshake: TlsHandshake, hop: Hop, helper: HelperResponse | None, confirmed: bool, j: Judgement
) -> Finding:
    """The name was cut (reset, silence, close) where the control name reached the server, even if
    only to be refused with an alert, as CDNs refuse unknown names: an SNI-triggered block. The
    name was tried once more after the control, so that one lost packet is not called a block;
    the control once more after that (the "sandwich"): failing then, the censor's block outlives
    the name (residual blocking), which the record says."""
    j.add(_failure_code(handshake))
    control = hop.control
    if _reached_server(control) and not handshake.alert:
        j.add(Anomaly.TLS_SNI_TRIGGERED)
        if hop.control_after_failed:
            j.add(Anomaly.TLS_RESIDUAL_BLOCKING)
        if _cut_twice(hop):
            return proven(Outcome.BLOCKED, Blocking.TLS, Proof.CONTROL_SNI_REACHED_SERVER)
        # Once only (the retry could not connect), or closed (an honest SNI-routing proxy whose
        # backend for the name is down closes the connection too): a finding, not a proof.
        return Finding(Outcome.BLOCKED, False, Blocking.TLS)
    control_failed = (control is not None and control.failure is not None) or (
        control is None and bool(hop.control_connects)
    )
    if control_failed:
        j.add(Anomaly.TLS_FAILS_FOR_ANY_NAME)
    said = helper_contrast(helper if hop.is_target else None, "tls", Blocking.TLS, j)
    if said is not None:
        return said
    if control is not None or hop.control_connects:
        return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
    return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.TLS)


CUTS = (Failure.CONNECTION_RESET, Failure.GENERIC_TIMEOUT)  # what censors do to a ClientHello


def _cut_twice(hop: Hop) -> bool:
    """The name's handshake and its retry were both reset or silenced (never an alert, never a
    close: a server or an honest proxy closes; a censor resets or drops)."""
    if len(hop.handshakes) < 2:
        return False
    first, retry = hop.handshakes[0], hop.handshakes[-1]
    return all(h.failure in CUTS and not h.alert for h in (first, retry))


def _judge_chain(
    handshake: TlsHandshake,
    hop: Hop,
    analysis_of: ChainAnalyzer,
    helper: HelperResponse | None,
    confirmed: bool,
    j: Judgement,
) -> Finding:
    analysis = analysis_of(handshake)
    if hop.is_target:
        j.tls = analysis
    if analysis["completed_from_aia"]:
        j.add(Anomaly.TLS_CHAIN_COMPLETED)
    seen_outside = helper_leaf(analysis, helper) if hop.is_target else None
    interceptor = analysis["interceptor"]
    if analysis["valid"] and (interceptor is None or interceptor["catalog"] != "interception_cas"):
        if seen_outside == "other_public_leaf":
            # CDN edges serve sibling certificates (another key, another public CA): both valid.
            j.add(Anomaly.TLS_LEAF_KEY_DIFFERS)
        return Finding(Outcome.OK, confirmed, Blocking.TLS)
    if not analysis["valid"]:
        j.add(Anomaly.TLS_UNTRUSTED_CHAIN)
    cause = FailureCause(analysis["failure_cause"]) if analysis["failure_cause"] else None
    catalog = interceptor["catalog"] if interceptor is not None else None
    if catalog == "local_interceptors":
        assert interceptor is not None
        j.interceptor = interceptor
        j.add(Anomaly.TLS_LOCAL_INTERCEPTOR, *analysis["evidence"])
        return proven(Outcome.LOCAL, Blocking.LOCAL_INTERCEPTION, Proof.LOCAL_INTERCEPTOR_CATALOG)
    if catalog == "interception_cas" and interceptor is not None and interceptor["matched_by"] in STRONG_MATCHES:
        j.add(Anomaly.TLS_KNOWN_INTERCEPTION_CA)
        if cause != FailureCause.UNUSABLE:
            return _intercepted(interceptor, analysis, hop, analysis_of, j, Proof.CATALOG_FINGERPRINT)
        # The catalogued certificate is there, but what it signed cannot be read: named, suspected.
        j.add(Anomaly.TLS_UNPARSEABLE_CERTIFICATE)
        j.interceptor = interceptor
        return Finding(Outcome.BLOCKED, False, Blocking.TLS_MITM)
    if cause == FailureCause.UNUSABLE:
        j.add(Anomaly.TLS_UNPARSEABLE_CERTIFICATE)
    proofs = _proofs_of_interception(analysis, hop, analysis_of, seen_outside, cause, j)
    if analysis["national_ca"] is not None:
        return _judge_national(analysis, hop, analysis_of, proofs, seen_outside, j)
    if handshake.os_store_valid:
        j.add(Anomaly.TLS_TRUSTED_BY_OS_STORE)
        if forges_every_name(hop.control, analysis, analysis_of):
            # A root the machine's owner installed, forging even the control name: their own
            # antivirus or gateway, not a network that targets names.
            assert interceptor is not None
            j.interceptor = {**interceptor, "matched_by": "os_store"}
            return proven(Outcome.LOCAL, Blocking.LOCAL_INTERCEPTION, Proof.OS_STORE_FORGES_EVERY_NAME)
    if seen_outside == "same_leaf":
        if helper is not None and helper.tls is not None and helper.tls.valid is False:
            # The site presents this chain to everyone: a broken site, not interception.
            j.add(Anomaly.HELPER_SAME_FAILURE)
            return proven(Outcome.DOWN, Blocking.TLS, Proof.HELPER_SAME_CHAIN)
        # The site's own key, which the helper's roots accept and ours do not: not interception
        # (the server holds the site's key), but nothing to conclude either.
        return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
    if cause in PUBLICLY_SIGNED:
        # A public CA's signature, certificate by certificate: no forger made it, whatever else differs.
        return _judge_public_cause(cause, analysis, hop, confirmed, j)
    if proofs:
        return _intercepted(interceptor, analysis, hop, analysis_of, j, *proofs)
    return _suspected(cause, interceptor, analysis, hop, analysis_of, j)


def _proofs_of_interception(
    analysis: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    seen_outside: str | None,
    cause: FailureCause | None,
    j: Judgement,
) -> list[Proof]:
    """Evidence, beside the catalog, that the untrusted chain was substituted on the way; each kind
    is one no honest server produces (docs/verdicts.md gives the argument for each)."""
    if cause in PUBLICLY_SIGNED or cause == FailureCause.UNUSABLE:
        return []  # a public CA signed it; or, unparseable, nobody can say what signed it
    proofs = []
    # Not for a leaf that signs itself (a node's snakeoil default) or a chain missing an
    # intermediate it names that could not be fetched (a node's misconfiguration): the helper may
    # have met another node. An intermediate fetched from the leaf's AIA URL that did not sign it
    # is no misconfiguration: the leaf only copies a public CA's name.
    issuer_unknown = cause == FailureCause.UNKNOWN_ISSUER or (
        cause == FailureCause.INCOMPLETE_CHAIN and analysis.get("aia_brought")
    )
    if seen_outside == "other_public_leaf" and issuer_unknown:
        j.add(Anomaly.TLS_CERT_MISMATCH)
        proofs.append(Proof.HELPER_PUBLIC_CHAIN)
    if minted(analysis, hop, analysis_of):
        j.add(Anomaly.TLS_MINTED_CERTIFICATE)
        proofs.append(Proof.MINTED_CERTIFICATE)
    if control_covers_name(analysis, hop, analysis_of):
        j.add(Anomaly.TLS_CONTROL_COVERS_NAME)
        proofs.append(Proof.CONTROL_COVERS_NAME)
    return proofs


def _judge_national(
    analysis: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    proofs: list[Proof],
    seen_outside: str | None,
    j: Judgement,
) -> Finding:
    """The chain verifies, by key, to a national CA that sites really use: the site's own choice.
    A state can intercept with its own CA, so a proof of another kind still makes it interception."""
    national = analysis["national_ca"]
    j.add(Anomaly.TLS_NATIONAL_CA)
    if hop.is_target:
        j.national_ca = national
    if proofs:
        described = describe_interceptor(
            analysis["certificates"][0]["issuer"], analysis["certificates"][-1]["issuer"], "national_cas"
        )
        return _intercepted({**described, "name": national["name"], "country": national["country"],
                             "catalog_id": national["id"], "matched_by": "signature"},
                            analysis, hop, analysis_of, j, *proofs)  # fmt: skip
    if national["dates"] is not None:
        j.add(Anomaly.TLS_EXPIRED_CERTIFICATE)
        return Finding(Outcome.DOWN, False, Blocking.TLS)
    if not national["hostname_matches"]:
        j.add(Anomaly.TLS_HOSTNAME_MISMATCH)
        return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
    if seen_outside == "same_leaf":
        return proven(Outcome.OK, Blocking.TLS, Proof.HELPER_SAME_CHAIN)
    return Finding(Outcome.OK, False, Blocking.TLS)


def _judge_public_cause(
    cause: FailureCause, analysis: dict[str, Any], hop: Hop, confirmed: bool, j: Judgement
) -> Finding:
    """A chain signed up to a reference root that fails all the same: the site's own mess."""
    if cause in (FailureCause.EXPIRED, FailureCause.NOT_YET_VALID):
        j.add(Anomaly.TLS_EXPIRED_CERTIFICATE)  # a public CA's signature: the site's own certificate
        return proven(Outcome.DOWN, Blocking.TLS, Proof.PUBLICLY_SIGNED)
    if cause == FailureCause.NAME_MISMATCH:
        names = analysis["certificates"][0]["dns_names"]
        if same_site(hop.host, names):
            j.add(Anomaly.TLS_WRONG_NAME_SAME_SITE)
            if confirmed:
                return proven(Outcome.DOWN, Blocking.TLS, Proof.PUBLICLY_SIGNED)
            return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
        # Another site's valid certificate: the connection reached another server. DNS was judged
        # first; at an address the control confirms, the path diverted the connection.
        j.add(Anomaly.TLS_OTHER_SITE_CERTIFICATE)
        return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.TLS)
    code = CAUSE_CODES.get(cause)
    if code is not None:
        j.add(code)
    return Finding(Outcome.UNKNOWN, False, Blocking.TLS)


def _suspected(
    cause: FailureCause | None,
    interceptor: dict[str, Any] | None,
    analysis: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    j: Judgement,
) -> Finding:
    """An untrusted chain with no proof either way. Under an unknown CA (not self-signed, not a
    recognised national CA) it is a suspected interception: `tls_mitm`, unconfirmed; the
    volunteer sees it, and the report publishes it only when proven."""
    code = CAUSE_CODES.get(cause) if cause is not None else None
    if code is not None:
        j.add(code)
    if interceptor is not None and interceptor["catalog"] == "interception_cas":
        j.add(Anomaly.TLS_INTERCEPTION_CA_NAME)
    if interceptor is not None and interceptor["catalog"] == "national_cas":
        j.add(Anomaly.TLS_NATIONAL_CA_NAME)
    if control_contrast(analysis, hop, analysis_of):
        j.add(Anomaly.TLS_CONTROL_SNI_CONTRAST)  # a hint: virtual hosting looks alike
    if cause in (FailureCause.SELF_SIGNED, FailureCause.UNUSABLE) or interceptor is None:
        return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
    _name_interceptor(interceptor, analysis, hop, analysis_of, j)
    return Finding(Outcome.BLOCKED, False, Blocking.TLS_MITM)


def _intercepted(
    interceptor: dict[str, Any] | None,
    analysis: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    j: Judgement,
    *basis: Proof,
) -> Finding:
    """Interception, proven by `basis`, with its evidence recorded."""
    if interceptor is None:  # a publicly trusted forgery has no catalog entry: name its issuer
        certificates = analysis["certificates"]
        interceptor = describe_interceptor(
            certificates[0]["issuer"] if certificates else "(unparseable)",
            certificates[-1]["issuer"] if certificates else "(unparseable)",
        )
    _name_interceptor(interceptor, analysis, hop, analysis_of, j)
    return proven(Outcome.BLOCKED, Blocking.TLS_MITM, *basis)


def _name_interceptor(
    interceptor: dict[str, Any], analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer, j: Judgement
) -> None:
    """A substitution, proven or suspected: who issued it, the forgery's marks, and whether the
    control name at the same address got another issuer's leaf (the name is the trigger)."""
    j.interceptor = interceptor
    j.add(*analysis["evidence"])
    if other_issuer_for_control(analysis, hop, analysis_of):
        j.add(Anomaly.TLS_SNI_TRIGGERED)


VALIDATING = (Purpose.TARGET, Purpose.TARGET_RETRY, Purpose.DNS_CHECK)


def tls_valid_addresses(obs: Observations, analysis_of: ChainAnalyzer) -> set[str]:
    """Addresses that presented a chain valid for the name: their DNS answers are consistent.

    An http:// target's answer is checked with a handshake on port 443 (`dns_check`)."""
    handshakes = hop_items(obs.tls_handshakes, VALIDATING, None)
    return {h.address for h in handshakes if h.failure is None and analysis_of(h)["valid"]}
