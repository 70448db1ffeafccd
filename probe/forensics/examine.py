"""The forensic steps of a run: which targets get them, within what budget, and why not.

Every record of a run with findings says what happened to its forensic steps
(`observations.forensics`): the packet capture ran or was skipped (and why), and for a target
whose finding is `tcp`, `tls` or `tls_mitm`, the TTL sweep ran (`locate`) or was skipped (why:
no CAP_NET_RAW, `--no-forensics`, `--forensics-limit` reached, an IPv6 address). Nothing else
about the record depends on it: without the capability the verdicts are the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

import msgspec

from probe.forensics.capture import PacketCapture
from probe.forensics.locate import locate
from probe.observe.config import TrustAnchors
from probe.vocabulary.anomalies import Blocking
from probe.vocabulary.observations import Forensics as ForensicObservations
from probe.vocabulary.observations import ForensicState, Observations, TtlSweep
from probe.vocabulary.purposes import Purpose

LOCATED = {Blocking.TCP: None, Blocking.TLS: "client_hello", Blocking.TLS_MITM: "client_hello"}
TURNED_OFF = "turned off (--no-forensics)"
DEFAULT_LIMIT = 3  # TTL sweeps per run: each takes a few seconds and a few dozen connections


class Forensics:
    """A run's forensic steps. Forensics never judge: the run judges a suspect target and asks
    `sweep` with its verdict."""

    def __init__(self, unavailable: str | None, limit: int = DEFAULT_LIMIT) -> None:
        self.unavailable, self.limit = unavailable, limit
        self.capture: PacketCapture | None = None
        self._used = 0
        self._lock = threading.Lock()

    def start(self) -> PacketCapture | None:
        """Open the capture (its thread starts now: after the recorder is forked)."""
        if self.unavailable is None and self.capture is None:
            try:
                self.capture = PacketCapture()
            except OSError as exc:  # the capability said yes, the kernel said no (a seccomp filter)
                self.unavailable = f"raw sockets refused: {exc.strerror or exc}"
        return self.capture

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()

    def _take(self) -> bool:
        with self._lock:
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def prepare(
        self, host: str, observations: Observations, started: datetime, roots: TrustAnchors, control_sni: str | None
    ) -> tuple[ForensicObservations, bool]:
        """The record's forensics so far (the capture's state), and whether the target may hold a
        finding to locate: then the run judges it and asks `sweep` with the judgement."""
        capture = _state(self.unavailable)
        if self.unavailable == TURNED_OFF or not _suspect(observations, host, started, roots, control_sni):
            return ForensicObservations(capture, None), False
        if self.unavailable is not None or self.capture is None:
            return ForensicObservations(capture, _state(self.unavailable or "no packet capture")), False
        if self.capture.failure is not None:  # a sweep would see no router: it could only mislead
            return ForensicObservations(capture, _state(self.capture.failure)), False
        return ForensicObservations(capture, None), True

    def sweep(
        self,
        host: str,
        port: int,
        observations: Observations,
        finding: Blocking,
        control_sni: str | None,
        timeout: float,
        ends: float | None,
    ) -> ForensicState | Callable[[], TtlSweep] | None:
        """With the target's judgement (`finding`): the TTL sweep to run, why it is not run (the
        record's `locate`), or None. The sweep blocks for seconds: the run calls it in its threads."""
        if finding not in LOCATED:
            return None
        target = next((t for t in observations.tcp_connect if t.purpose == Purpose.TARGET), None)
        if target is None:
            return None
        if ":" in target.address:
            return _state("an IPv6 address: the TTL sweep is IPv4 only")
        if not self._take():
            return _state(f"--forensics-limit {self.limit} reached in this run")
        capture = self.capture
        assert capture is not None
        server_name = host if LOCATED[finding] == "client_hello" else None
        control = control_sni if server_name is not None else None
        address = target.address

        def located() -> TtlSweep:
            swept = locate(capture, address, port, server_name, control, timeout, ends)  # typed as it is made
            return msgspec.structs.replace(swept, finding=str(finding))

        return located


def _state(reason: str | None) -> ForensicState:
    return ForensicState("done") if reason is None else ForensicState("skipped", reason)


def stopped_capture(reason: str) -> ForensicState:
    """The capture stopped before the target was complete: the record says so."""
    return ForensicState("stopped", reason)


def _suspect(
    observations: Observations, host: str, started: datetime, roots: TrustAnchors, control_sni: str | None
) -> bool:
    """Cheap: a target connection or handshake failed, or a target chain did not validate (the full
    judging, only for these, tells a finding from a site that is down). Measuring asked the control
    SNI for every chain that did not validate: that is read, not verified again."""
    if any(tcp.purpose == Purpose.TARGET and tcp.failure for tcp in observations.tcp_connect):
        return True
    handshakes = observations.tls_handshakes
    if any(h.purpose == Purpose.CONTROL_SNI or h.aia_fetches is not None for h in handshakes):
        return True
    for handshake in handshakes:
        if handshake.purpose != Purpose.TARGET:
            continue
        if handshake.failure:
            return True
        chain = list(handshake.peer_certificates)
        if chain and control_sni is None and not roots.validates(chain, host, started):
            return True  # no control SNI was asked: no sign to read
    return False
