"""QUIC rules (issue 22): HTTP/3's handshake over UDP/443, judged against TLS over TCP and the
control name at the same address.

The stage runs after the redirect hops: only a record whose DNS, TCP, TLS and HTTP stages passed
reaches it, so the site works over TCP. The target's QUIC handshake met silence or a refusal (ICMP)
where TLS over TCP with the name completed at the same address:
- the control name reached a QUIC server there (its handshake completed, or the server closed it
  with an error of its own, as TLS's SNI contrast counts an alert): the name triggers it
  (`quic.sni_triggered`), `quic`, confirmed (`quic_control_sni_completed`). QUIC retransmits its
  first flight within the step, so one handshake is already several tries;
- the control name failed too (`quic.fails_for_any_name`), or was not asked: `quic`, unconfirmed: an
  address whose UDP/443 is dropped looks like a server that advertises h3 and does not serve it, and
  like a network or home firewall that drops all UDP/443 (docs/verdicts.md).
A peer that closed the handshake (an alert, a QUIC error) answered over QUIC: `quic.failure`, a hint
only. A record without QUIC observations (not advertised, not asked) passes untouched.
"""

from __future__ import annotations

from probe.analyze.common import Finding, Judgement, Outcome, RuleContext, by_purpose, proven
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import Observations
from probe.vocabulary.observations_quic import QuicHandshake
from probe.vocabulary.proofs import Proof
from probe.vocabulary.purposes import Purpose

# What the path does to a datagram: dropped (silence, or a timeout after the first replies) or refused.
_CUT: dict[str, Anomaly] = {
    Failure.GENERIC_TIMEOUT: Anomaly.QUIC_TIMEOUT,
    Failure.CONNECTION_REFUSED: Anomaly.QUIC_REFUSED,
    Failure.HOST_UNREACHABLE: Anomaly.QUIC_REFUSED,
}


def judge_quic(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    ok = Finding(Outcome.OK, rules.confirmed, Blocking.QUIC)
    if obs.quic is None:
        return ok
    targets = obs.quic.by_purpose(Purpose.TARGET)
    if not targets or any(h.completed for h in targets):
        return ok
    target = targets[0]
    code = _CUT.get(target.failure or "")
    if code is None:
        j.add(Anomaly.QUIC_FAILURE)  # the server (or something speaking QUIC) answered and closed it
        return ok
    j.add(code)
    tls_works = any(h.completed and h.address == target.address for h in by_purpose(obs.tls_handshakes, Purpose.TARGET))
    if not tls_works:
        return ok  # nothing says the address serves this name over TCP: recorded, not judged
    controls = [h for h in obs.quic.by_purpose(Purpose.CONTROL_SNI) if h.address == target.address]
    if any(_reached(h) for h in controls):
        j.add(Anomaly.QUIC_SNI_TRIGGERED)
        return proven(Outcome.BLOCKED, Blocking.QUIC, Proof.QUIC_CONTROL_SNI_COMPLETED)
    if controls:
        j.add(Anomaly.QUIC_FAILS_FOR_ANY_NAME)
    return Finding(Outcome.BLOCKED, False, Blocking.QUIC)


def _reached(handshake: QuicHandshake) -> bool:
    """The control name reached a QUIC server: it completed, or the server closed it with an error
    of its own (a CDN refusing an unknown name, as TLS's SNI contrast counts an alert)."""
    return handshake.completed or (handshake.datagrams_received > 0 and handshake.error_code is not None)
