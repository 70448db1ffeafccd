"""The evidence one hop's handshakes hold about a chain that does not validate: the helper's view,
the control SNI's chain, the minting test. Each function answers one question; `tls` weighs them
(docs/verdicts.md says which answers prove interception, and which are hints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probe.analyze.certs import name_covers
from probe.analyze.common import ChainAnalyzer, hop_items
from probe.vocabulary.observations import HelperResponse, Observations, TcpConnect, TlsHandshake
from probe.vocabulary.purposes import REDIRECT_HOP, TARGET_HOP


@dataclass(frozen=True)
class Hop:
    """The handshakes of one hop: the target itself, or one redirect."""

    host: str
    handshakes: list[TlsHandshake]  # the name's own, a retry last
    controls: list[TlsHandshake]  # with the control SNI, at the same address, in the order made
    control_connects: list[TcpConnect]
    minting: list[TlsHandshake]  # with a random name that cannot exist, at the same address
    is_target: bool

    @property
    def control(self) -> TlsHandshake | None:
        """The control name's first handshake: the one asked right after the target's."""
        return self.controls[0] if self.controls else None

    @property
    def control_after_failed(self) -> bool:
        """The control name, asked again after the target's retry (the sandwich's second slice),
        was cut: its connect failed, or its handshake failed without the server's alert."""
        if len(self.control_connects) < 2:
            return False
        if self.control_connects[1].failure is not None:
            return True
        after = self.controls[1] if len(self.controls) > 1 else None
        return after is not None and after.failure is not None and not after.alert


def hop_of(obs: Observations, host: str, index: int | None) -> Hop:
    """The target's handshakes (index None) or those of redirect hop `index`."""
    purposes = TARGET_HOP if index is None else REDIRECT_HOP
    handshakes = hop_items(obs.tls_handshakes, purposes.own, index)
    name = next((h.server_name for h in handshakes if h.server_name), host)
    return Hop(
        name,
        handshakes,
        hop_items(obs.tls_handshakes, purposes.control, index),
        hop_items(obs.tcp_connect, purposes.control, index),
        hop_items(obs.tls_handshakes, purposes.minting, index),
        index is None,
    )


def completed(handshake: TlsHandshake | None) -> bool:
    return handshake is not None and handshake.completed


def leaf_of(analysis: dict[str, Any]) -> dict[str, Any] | None:
    return analysis["certificates"][0] if analysis["certificates"] else None


def control_contrast(analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer) -> bool:
    """The control SNI at the same address got another leaf, with a chain valid for the control
    name under the reference roots. A hint only: one address serving a certificate per name
    (virtual hosting) gives the same picture. The same chain for both names is no contrast."""
    control, ours = hop.control, leaf_of(analysis)
    if control is None or not completed(control) or ours is None:
        return False
    theirs = analysis_of(control)
    if not theirs["valid"] or not theirs["certificates"]:
        return False
    return bool(theirs["certificates"][0]["sha256_der"] != ours["sha256_der"])


def control_covers_name(analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer) -> bool:
    """The control SNI got a publicly valid chain whose leaf covers the target's name as well: the
    server at this address holds a public certificate for the name, yet the name got an untrusted
    chain. Virtual hosting serves one certificate per name; it does not hide a valid one."""
    control = hop.control
    if control is None or not control_contrast(analysis, hop, analysis_of):
        return False
    names = analysis_of(control)["certificates"][0]["dns_names"]
    return any(name_covers(name, hop.host) for name in names)


def minted(analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer) -> bool:
    """The minting test: a random name that cannot exist, asked at the same address, got a leaf
    naming exactly that name from the same issuer as the target's untrusted leaf (not a leaf
    that signs itself, not a chain valid under the reference roots)."""
    ours = leaf_of(analysis)
    if ours is None or ours["issuer"] == ours["subject"]:
        return False
    for handshake in hop.minting:
        name = (handshake.server_name or "").lower().rstrip(".")
        if not name or not completed(handshake):
            continue
        theirs = analysis_of(handshake)
        leaf = leaf_of(theirs)
        if theirs["valid"] or leaf is None or leaf["issuer"] != ours["issuer"]:
            continue
        if any(n.lower().rstrip(".") == name for n in leaf["dns_names"]):
            return True
    return False


def forges_every_name(control: TlsHandshake | None, analysis: dict[str, Any], analysis_of: ChainAnalyzer) -> bool:
    """The control SNI's leaf names the control name, from the same untrusted issuer as the target's."""
    ours = leaf_of(analysis)
    if control is None or not completed(control) or ours is None:
        return False
    theirs = analysis_of(control)
    leaf = leaf_of(theirs)
    if theirs["valid"] or leaf is None or leaf["issuer"] != ours["issuer"]:
        return False
    name = control.server_name or ""
    return any(name_covers(n, name) for n in leaf["dns_names"])


def helper_leaf(analysis: dict[str, Any], helper: HelperResponse | None) -> str | None:
    """What the helper, outside the network, was presented for the name, against the leaf here:
    "same_leaf" (the same key), "other_public_leaf" (another key, in a chain valid for the name
    under the helper's reference roots), or None (no usable view)."""
    tls = helper.tls if helper is not None else None
    if tls is None or tls.failure is not None:
        return None
    leaf = leaf_of(analysis)
    spki = leaf["sha256_spki"] if leaf is not None else (analysis.get("leaf_fingerprints") or {}).get("sha256_spki")
    if spki is None or tls.leaf_spki_sha256 is None:
        return None
    if tls.leaf_spki_sha256 == spki:
        return "same_leaf"
    return "other_public_leaf" if tls.valid else None


def other_issuer_for_control(analysis: dict[str, Any], hop: Hop, analysis_of: ChainAnalyzer) -> bool:
    """The control name, at the same address, got a leaf from another issuer than the target's
    untrusted one: the substitution is for the target's name (`tls.sni_triggered`). The same chain,
    or the same issuer, for both names shows no such thing."""
    ours, control = leaf_of(analysis), hop.control
    if ours is None or control is None or not completed(control):
        return False
    theirs = leaf_of(analysis_of(control))
    return theirs is not None and theirs["issuer"] != ours["issuer"]
