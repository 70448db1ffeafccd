"""One target's view of the run's packet capture (`probe.forensics.capture`), when there is one.

Observing registers each IPv4 connection and DNS socket of the target before its first packet
leaves (the socket is bound first, so that its port is known), and the capture fills in what
arrives for it. When the target is complete its registrations end together (`close`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

Packets = list[dict[str, Any]]


class PacketWatcher(Protocol):
    """The run's capture, as observing uses it."""

    def watch_tcp(self, sock: socket.socket, address: str, port: int, now: Callable[[], float]) -> Packets: ...

    def watch_icmp(self, sock: socket.socket, address: str, port: int, now: Callable[[], float]) -> Packets: ...

    def watch_udp(self, sock: socket.socket, now: Callable[[], float]) -> Packets: ...

    def forget(self, packets: Packets) -> None: ...


class TargetWatch:
    def __init__(self, capture: PacketWatcher, now: Callable[[], float]) -> None:
        self.capture, self.now = capture, now
        self._watched: list[Packets] = []

    def tcp(self, sock: socket.socket, address: str, port: int) -> Packets | None:
        """What the server (or the path, in its name) sends to this connection; IPv4 only."""
        if sock.family != socket.AF_INET:
            return None
        sock.bind(("0.0.0.0", 0))
        packets = self.capture.watch_tcp(sock, address, port, self.now)
        self._watched.append(packets)
        return packets

    def icmp(self, sock: socket.socket, address: str, port: int) -> Packets:
        """The routers' ICMP errors about this (bound) connection's packets."""
        packets = self.capture.watch_icmp(sock, address, port, self.now)
        self._watched.append(packets)
        return packets

    def udp(self, sock: socket.socket) -> Packets | None:
        if sock.family != socket.AF_INET:
            return None
        sock.bind(("0.0.0.0", 0))
        packets = self.capture.watch_udp(sock, self.now)
        self._watched.append(packets)
        return packets

    def done(self, packets: Packets) -> None:
        """One registration is over before the target is."""
        self.capture.forget(packets)
        self._watched = [p for p in self._watched if p is not packets]

    def close(self) -> None:
        for packets in self._watched:
            self.capture.forget(packets)
        self._watched.clear()
