"""Throughput flows, typed: the `throughput` part of a record's observations (docs/results.md).

With a helper, flows to the helper's bulk endpoint that differ only in their SNI (the target's
name, the control name, none), in rounds; without one, the site's own bounded download with the
target's name and with the control name at the same address. Raw facts: bytes, times, samples,
where a flow stalled, what the kernel saw; `probe/analyze/throttle.py` judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct, field

NO_EXTRA: Mapping[str, Any] = {}  # shared, never written to (Mapping: read-only); a plain dict pickles

# Which name a flow's ClientHello carried.
FLOW_TARGET, FLOW_CONTROL, FLOW_NONE = "target", "control", "none"
FLOW_KINDS = (FLOW_TARGET, FLOW_CONTROL, FLOW_NONE)


class TcpInfo(Struct, frozen=True):
    """Linux's TCP_INFO at a flow's end (netx/bulk.py names each)."""

    rtt_us: int
    rttvar_us: int
    total_retrans: int
    bytes_received: int
    segs_in: int
    min_rtt_us: int | None = None
    rcv_ooopack: int | None = None


class BulkFlow(Struct, frozen=True):
    """One download: one connection, one SNI, one GET, read until the size, a stall or its bound
    (made by netx/bulk.py)."""

    kind: str  # target, control, none
    round: int
    address: str
    port: int
    server_name: str | None
    status: int | None
    failure: str | None
    bytes: int
    content_length: int | None
    samples: tuple[tuple[float, int], ...]  # (seconds since the request, body bytes by then)
    stalled_at: int | None  # body bytes when no byte came for the stall's time
    stalled_at_wire: int | None  # TCP payload bytes received on the connection by then
    tcp_info: TcpInfo | None
    t_connect: float | None
    t_handshake: float | None
    t_request: float | None
    t0: float
    t: float | None

    @property
    def seconds(self) -> float | None:
        """Seconds from the request to the last byte counted (the last sample)."""
        return self.samples[-1][0] if self.samples else None


class Throughput(Struct, frozen=True):
    """One target's throughput flows and how they were made."""

    source: str  # helper: the helper's bulk endpoint; site: the site's own download
    url: str  # what was downloaded (the helper's bulk URL, or the target's)
    size: int  # bytes asked of each flow
    control_sni: str | None
    flows: tuple[BulkFlow, ...]
    rounds: int  # rounds made
    stopped: str | None = None  # why fewer rounds than the most were made (healthy, bound)
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)
