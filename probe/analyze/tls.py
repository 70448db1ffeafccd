"""TLS rules: a failed handshake against the control SNI, and a substituted chain."""

from __future__ import annotations

from typing import Any

from probe.analyze.certs import describe_interceptor
from probe.analyze.common import ChainAnalyzer, Judgement, Outcome, by_purpose, helper_failed_at, helper_view
from probe.vocabulary.anomalies import Anomaly
from probe.vocabulary.failures import Failure

_HANDSHAKE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.TLS_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.TLS_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.TLS_EOF,
}


def _tls_failure_code(handshake: dict[str, Any]) -> Anomaly:
    if handshake.get("alert"):
        return Anomaly.TLS_ALERT
    return _HANDSHAKE_CODES.get(handshake["failure"], Anomaly.TLS_FAILURE)


def judge_tls(obs: dict[str, Any], analysis_of: ChainAnalyzer, confirmed: bool, j: Judgement) -> Outcome:
    targets = by_purpose(obs["tls_handshakes"], "target")
    helper = helper_view(obs)
    if not targets:
        return Outcome.OK
    handshake = targets[-1]
    controls = by_purpose(obs["tls_handshakes"], "control_sni")
    control_tcp = by_purpose(obs["tcp_connect"], "control_sni")
    control = controls[-1] if controls else None

    if handshake["failure"] is not None:
        j.add(_tls_failure_code(handshake))
        if control is not None and control["failure"] is None:
            j.add(Anomaly.TLS_SNI_TRIGGERED)
            return Outcome.BLOCKED
        if control is not None or control_tcp:
            j.add(Anomaly.TLS_FAILS_FOR_ANY_NAME)
        helper_failed = helper_failed_at(helper, "tls")
        if helper_failed:
            j.add(Anomaly.HELPER_SAME_FAILURE)
            return Outcome.DOWN
        if helper_failed is False:  # the site answers from outside: this path breaks it
            return Outcome.BLOCKED
        if control is not None or control_tcp:
            return Outcome.UNKNOWN
        return Outcome.BLOCKED if confirmed else Outcome.UNKNOWN

    analysis = analysis_of(handshake)
    j.tls = analysis
    interceptor = analysis["interceptor"]
    if interceptor is not None and interceptor["catalog"] is None and _helper_sees_same_bad_chain(analysis, helper):
        # The site presents this untrusted chain to everyone: a broken site, not interception.
        j.add(Anomaly.TLS_UNTRUSTED_CHAIN, Anomaly.HELPER_SAME_FAILURE)
        return Outcome.DOWN
    mismatch = _leaf_mismatch(analysis, helper)
    if mismatch == "decisive":
        j.add(Anomaly.TLS_CERT_MISMATCH)
    elif mismatch == "informational":
        j.add(Anomaly.TLS_LEAF_KEY_DIFFERS)
    if interceptor is None:
        if mismatch != "decisive":
            return Outcome.OK
        interceptor = describe_interceptor(
            analysis["certificates"][0]["issuer"], analysis["certificates"][-1]["issuer"]
        )
    j.interceptor = interceptor
    if not analysis["valid"]:
        j.add(Anomaly.TLS_UNTRUSTED_CHAIN)
    if interceptor["catalog"] is None and handshake.get("os_store_valid"):
        j.add(Anomaly.TLS_TRUSTED_BY_OS_STORE)
        if _intercepts_every_name(control, interceptor, analysis_of):
            # A root the machine's owner installed, forging even the control name: their own
            # antivirus or gateway, not a network that targets names.
            j.interceptor = {**interceptor, "matched_by": "os_store"}
            return Outcome.LOCAL
    if interceptor["catalog"] == "local_interceptors":
        j.add(Anomaly.TLS_LOCAL_INTERCEPTOR, *analysis["evidence"])
        return Outcome.LOCAL
    if interceptor["catalog"] == "interception_cas":
        strong = interceptor["matched_by"] in ("sha256_der", "sha256_spki")
        j.add(Anomaly.TLS_KNOWN_INTERCEPTION_CA if strong else Anomaly.TLS_INTERCEPTION_CA_NAME)
    j.add(*analysis["evidence"])
    control_answered = control is not None and control["failure"] is None and bool(control["peer_certificates"])
    if control_answered and not _intercepts_every_name(control, interceptor, analysis_of):
        j.add(Anomaly.TLS_SNI_TRIGGERED)
    return Outcome.BLOCKED


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


def tls_valid_addresses(obs: dict[str, Any], analysis_of: ChainAnalyzer) -> set[str]:
    """Addresses that presented a chain valid for the name: their DNS answers are consistent."""
    handshakes = by_purpose(obs["tls_handshakes"], "target")
    return {h["address"] for h in handshakes if h["failure"] is None and analysis_of(h)["valid"]}
