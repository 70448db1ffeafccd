"""TLS rules: a failed handshake against the control SNI, and a chain that does not validate.

Interception needs evidence, and the record says which: a catalog match, the control SNI's
contrast at the same address, or a helper that sees another leaf key. A chain that fails for a
reason no forger could make (a public CA's signature on an expired certificate, or on one for
another name of the same site) is the site's own fault. docs/verdicts.md states each rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probe.analyze.chain import CAUSE_CODES, PUBLICLY_SIGNED, FailureCause, describe_interceptor
from probe.analyze.common import ChainAnalyzer, Finding, Judgement, Outcome, helper_contrast, helper_view, hop_items
from probe.analyze.sites import same_site
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure

_HANDSHAKE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.TLS_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.TLS_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.TLS_EOF,
}
TARGET_PURPOSES = (("target", "target_retry"), ("control_sni",))
REDIRECT_PURPOSES = (("redirect", "redirect_retry"), ("redirect_control_sni",))


@dataclass(frozen=True)
class Hop:
    """The handshakes of one hop: the target itself, or one redirect."""

    host: str
    handshakes: list[dict[str, Any]]  # the name's own, a retry last
    controls: list[dict[str, Any]]  # with the control SNI, at the same address
    control_connects: list[dict[str, Any]]
    is_target: bool

    @property
    def control(self) -> dict[str, Any] | None:
        return self.controls[-1] if self.controls else None


def hop_of(obs: dict[str, Any], host: str, index: int | None) -> Hop:
    """The target's handshakes (index None) or those of redirect hop `index`."""
    own, control = TARGET_PURPOSES if index is None else REDIRECT_PURPOSES
    handshakes = hop_items(obs["tls_handshakes"], own, index)
    name = next((h["server_name"] for h in handshakes if h.get("server_name")), host)
    return Hop(
        name,
        handshakes,
        hop_items(obs["tls_handshakes"], control, index),
        hop_items(obs["tcp_connect"], control, index),
        index is None,
    )


def _failure_code(handshake: dict[str, Any]) -> Anomaly:
    if handshake.get("alert"):
        return Anomaly.TLS_ALERT
    return _HANDSHAKE_CODES.get(handshake["failure"], Anomaly.TLS_FAILURE)


def _reached_server(handshake: dict[str, Any] | None) -> bool:
    """A ServerHello, or an alert the server sent: the control name reached a TLS server."""
    return handshake is not None and (handshake["failure"] is None or bool(handshake.get("alert")))


def judge_tls(obs: dict[str, Any], analysis_of: ChainAnalyzer, confirmed: bool, host: str, j: Judgement) -> Finding:
    return judge_hop(hop_of(obs, host, None), analysis_of, confirmed, helper_view(obs), j)


def judge_hop(
    hop: Hop, analysis_of: ChainAnalyzer, confirmed: bool, helper: dict[str, Any] | None, j: Judgement
) -> Finding:
    if not hop.handshakes:
        return Finding(Outcome.OK, confirmed, Blocking.TLS)
    handshake = hop.handshakes[-1]
    if handshake["failure"] is not None:
        return _judge_failed_handshake(handshake, hop, helper, confirmed, j)
    return _judge_chain(handshake, hop, analysis_of, helper, confirmed, j)


def _judge_failed_handshake(
    handshake: dict[str, Any], hop: Hop, helper: dict[str, Any] | None, confirmed: bool, j: Judgement
) -> Finding:
    """The name was cut (reset, silence, close) where the control name reached the server, even if
    only to be refused with an alert, as CDNs refuse unknown names: an SNI-triggered block. The
    name was tried once more after the control, so that one lost packet is not called a block."""
    j.add(_failure_code(handshake))
    control = hop.control
    if _reached_server(control) and not handshake.get("alert"):
        j.add(Anomaly.TLS_SNI_TRIGGERED)
        return Finding(Outcome.BLOCKED, True, Blocking.TLS)
    control_failed = (control is not None and control["failure"] is not None) or (
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


def _judge_chain(
    handshake: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    helper: dict[str, Any] | None,
    confirmed: bool,
    j: Judgement,
) -> Finding:
    analysis = analysis_of(handshake)
    if hop.is_target:
        j.tls = analysis
    if analysis["completed_from_aia"]:
        j.add(Anomaly.TLS_CHAIN_COMPLETED)
    mismatch = _leaf_mismatch(analysis, helper) if hop.is_target else None
    if mismatch == "decisive":
        j.add(Anomaly.TLS_CERT_MISMATCH)
    elif mismatch == "informational":
        j.add(Anomaly.TLS_LEAF_KEY_DIFFERS)
    interceptor = analysis["interceptor"]
    if interceptor is None:
        if mismatch != "decisive":
            return Finding(Outcome.OK, confirmed, Blocking.TLS)
        # A publicly trusted forged certificate: only the helper's view from outside shows it.
        j.interceptor = describe_interceptor(
            analysis["certificates"][0]["issuer"], analysis["certificates"][-1]["issuer"]
        )
        return Finding(Outcome.BLOCKED, True, Blocking.TLS_MITM)
    if not analysis["valid"]:
        j.add(Anomaly.TLS_UNTRUSTED_CHAIN)
    catalog = interceptor["catalog"]
    if catalog == "local_interceptors":
        j.interceptor = interceptor
        j.add(Anomaly.TLS_LOCAL_INTERCEPTOR, *analysis["evidence"])
        return Finding(Outcome.LOCAL, True, Blocking.LOCAL_INTERCEPTION)
    if catalog == "interception_cas":
        strong = interceptor["matched_by"] in ("sha256_der", "sha256_spki")
        j.add(Anomaly.TLS_KNOWN_INTERCEPTION_CA if strong else Anomaly.TLS_INTERCEPTION_CA_NAME)
        return _intercepted(interceptor, analysis, hop, analysis_of, j)
    if handshake.get("os_store_valid"):
        j.add(Anomaly.TLS_TRUSTED_BY_OS_STORE)
        if _forges_every_name(hop.control, interceptor, analysis_of):
            # A root the machine's owner installed, forging even the control name: their own
            # antivirus or gateway, not a network that targets names.
            j.interceptor = {**interceptor, "matched_by": "os_store"}
            return Finding(Outcome.LOCAL, True, Blocking.LOCAL_INTERCEPTION)
    if _helper_sees_same_bad_chain(analysis, helper):
        # The site presents this untrusted chain to everyone: a broken site, not interception.
        j.add(Anomaly.HELPER_SAME_FAILURE)
        return Finding(Outcome.DOWN, True, Blocking.TLS)
    if mismatch == "decisive":
        return _intercepted(interceptor, analysis, hop, analysis_of, j)
    return _judge_cause(FailureCause(analysis["failure_cause"]), interceptor, analysis, hop, analysis_of, confirmed, j)


def _judge_cause(
    cause: FailureCause,
    interceptor: dict[str, Any],
    analysis: dict[str, Any],
    hop: Hop,
    analysis_of: ChainAnalyzer,
    confirmed: bool,
    j: Judgement,
) -> Finding:
    """No catalog and no helper spoke: the chain's failure cause, and the control SNI, decide."""
    if cause in (FailureCause.EXPIRED, FailureCause.NOT_YET_VALID):
        j.add(Anomaly.TLS_EXPIRED_CERTIFICATE)  # a public CA's signature: the site's own certificate
        return Finding(Outcome.DOWN, True, Blocking.TLS)
    if cause == FailureCause.NAME_MISMATCH:
        names = analysis["certificates"][0]["dns_names"]
        if same_site(hop.host, names):
            j.add(Anomaly.TLS_WRONG_NAME_SAME_SITE)
            return (
                Finding(Outcome.DOWN, True, Blocking.TLS)
                if confirmed
                else Finding(Outcome.UNKNOWN, False, Blocking.TLS)
            )
        # Another site's valid certificate: the connection reached another server. DNS was judged
        # first; at an address the control confirms, the path diverted the connection.
        j.add(Anomaly.TLS_OTHER_SITE_CERTIFICATE)
        return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.TLS)
    code = CAUSE_CODES.get(cause)
    if code is not None:
        j.add(code)
    if cause == FailureCause.CHAIN_TOO_LONG:
        return Finding(Outcome.UNKNOWN, False, Blocking.TLS)
    # A forger issues from a CA; a leaf that signs itself is a site's own, whatever the control says.
    if cause != FailureCause.SELF_SIGNED and _control_contrast(analysis, hop, interceptor, analysis_of):
        j.add(Anomaly.TLS_CONTROL_SNI_CONTRAST)
        return _intercepted(interceptor, analysis, hop, analysis_of, j)
    return Finding(Outcome.UNKNOWN, False, Blocking.TLS)


def _intercepted(
    interceptor: dict[str, Any], analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer, j: Judgement
) -> Finding:
    """Interception, with its evidence recorded: confirmed by construction."""
    j.interceptor = interceptor
    j.add(*analysis["evidence"])
    control = hop.control
    control_answered = control is not None and control["failure"] is None and bool(control["peer_certificates"])
    if control_answered and not _forges_every_name(control, interceptor, analysis_of):
        j.add(Anomaly.TLS_SNI_TRIGGERED)
    return Finding(Outcome.BLOCKED, True, Blocking.TLS_MITM)


def _control_contrast(
    analysis: dict[str, Any], hop: Hop, interceptor: dict[str, Any], analysis_of: ChainAnalyzer
) -> bool:
    """The control SNI at the same address got another leaf with a publicly signed chain (the path
    forges only the target's name), or a leaf from the same untrusted issuer (it forges any name)."""
    control = hop.control
    if control is None or control["failure"] is not None or not control["peer_certificates"]:
        return False
    if _forges_every_name(control, interceptor, analysis_of):
        return True
    theirs = analysis_of(control)
    if not theirs["certificates"] or not analysis["certificates"]:
        return False
    different = theirs["certificates"][0]["sha256_der"] != analysis["certificates"][0]["sha256_der"]
    return different and (theirs["valid"] or theirs["failure_cause"] in PUBLICLY_SIGNED)


def _forges_every_name(control: dict[str, Any] | None, interceptor: dict[str, Any], analysis_of: ChainAnalyzer) -> bool:
    """The control SNI's chain came from the same untrusted issuer as the target's."""
    if control is None or control["failure"] is not None or not control["peer_certificates"]:
        return False
    theirs = analysis_of(control)
    certificates = theirs["certificates"]
    return bool(certificates) and not theirs["valid"] and certificates[0]["issuer"] == interceptor["issuer"]


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
    """Addresses that presented a chain valid for the name: their DNS answers are consistent.

    An http:// target's answer is checked with a handshake on port 443 (`dns_check`)."""
    handshakes = hop_items(obs["tls_handshakes"], ("target", "target_retry", "dns_check"), None)
    return {h["address"] for h in handshakes if h["failure"] is None and analysis_of(h)["valid"]}
