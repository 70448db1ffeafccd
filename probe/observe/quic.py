"""QUIC (HTTP/3) handshakes of one target (issue 22), made once its page is in, off the critical path.

Asked when the target's HTTPS response advertised h3 for its own host (`Alt-Svc: h3=":443"`), the way
browsers learn it (`--quic auto`, the default), or for every https:// target (`--quic always`); never
with `--quic off`. Two handshakes go at once to the address where TLS over TCP with the name
completed: one with the target's name, one with the control name (`--control-sni`), each within
one step (`--timeout`), then one HTTP/3 GET of the target's path over the target's, if it completed
(two steps in all: within a target's completion bound). The record's `observations.quic` holds why,
the header, and both handshakes (vocabulary/observations_quic.py).
"""

from __future__ import annotations

import asyncio

from probe.observe.config import Visit
from probe.observe.draft import Draft
from probe.vocabulary.observations_quic import QuicObservations
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.targets import Target

MAX_HEADER_CHARS = 500  # the Alt-Svc value kept in the record


def alt_svc_h3(value: str, host: str) -> int | None:
    """The port of the first h3 alternative for the same host in an Alt-Svc value (RFC 7838), or
    None (`clear`, only drafts such as h3-29, or an alternative on another host)."""
    for entry in _split_outside_quotes(value, ","):
        protocol, _, rest = entry.strip().partition("=")
        if protocol.strip().lower() != "h3":
            continue
        rest = rest.strip()
        authority = rest[1:].split('"', 1)[0] if rest.startswith('"') else rest.split(";", 1)[0].strip()
        name, _, port = authority.rpartition(":")
        if name.strip("[]").lower() not in ("", host.lower()) or not port.isdigit():
            continue
        number = int(port)
        if 0 < number < 65536:
            return number
    return None


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _advertised(draft: Draft, host: str) -> tuple[str, int] | None:
    """The target's first response's Alt-Svc header, and the h3 port it names."""
    for exchange in draft.http_requests:
        if exchange.redirect_index not in (None, 0):
            continue
        for name, value in exchange.headers:
            if name.lower() == "alt-svc":
                port = alt_svc_h3(value, host)
                if port is not None:
                    return value[:MAX_HEADER_CHARS], port
    return None


class QuicInFlight:
    """The target's QUIC handshakes, started beside the late DNS replies and the helpers' answers."""

    def __init__(self, task: asyncio.Task[QuicObservations] | None) -> None:
        self._task = task

    @classmethod
    def start(cls, target: Target, visit: Visit) -> QuicInFlight:
        mode = visit.config.quic
        if mode == "off" or target.scheme != "https" or target.is_ip_literal:
            return cls(None)
        draft = visit.draft
        address = draft.reached_address()
        advertised = _advertised(draft, target.host)
        if address is None or (advertised is None and mode != "always"):
            return cls(None)
        reason, header, port = ("alt_svc", *advertised) if advertised else ("asked", None, 443)
        coroutine = _handshakes(target, visit, address, port, reason, header)
        return cls(asyncio.get_running_loop().create_task(coroutine))

    async def finish(self, draft: Draft) -> None:
        """The handshakes, into the target's observations."""
        if self._task is not None:
            draft.quic = await asyncio.shield(self._task)

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def _handshakes(
    target: Target, visit: Visit, address: str, port: int, reason: str, header: str | None
) -> QuicObservations:
    """Both names at once (a censor's residual block after the name fails the control too: the
    conservative side), each handshake and GET one step of its own."""
    step = visit.deadline.untimed().step()
    names = [(Purpose.TARGET, target.host)]
    control = visit.config.control_sni
    if control and control != target.host:
        names.append((Purpose.CONTROL_SNI, control))
    from probe.netx.quic import quic_handshake  # here: aioquic's import is 50 ms of every run's start

    # The target's page once more over HTTP/3 (its status shows h3 is served); the control's is not asked.
    made = await asyncio.gather(*(quic_handshake(address, port, name, step, visit.clock,
                                                 target.path or "/" if purpose == Purpose.TARGET else None, purpose)
                                  for purpose, name in names))  # fmt: skip
    return QuicObservations(reason, header, tuple(made))
