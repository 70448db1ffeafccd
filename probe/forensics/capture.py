"""What arrives on the wire for the probe's own connections, beside what its sockets see.

One thread reads three raw IPv4 sockets (TCP, UDP, ICMP: the kernel gives them a copy of every
incoming packet of the protocol, no libpcap needed) and keeps, for each connection or DNS socket
the probe registered, what came back: each packet's IP TTL, IP ID and TCP flags (a reset injected
by the path arrives with another TTL or IP ID than the server's own packets), and the ICMP "time
exceeded" messages that quote the probe's packets (which router a low-TTL packet died at).
Packets are told apart by their addresses and ports with `struct` (cheap, for every packet); a
server's ordinary packets (SYN-ACK, data) are read with `struct` too; resets, ICMP errors and DNS
replies on the watched sockets are dissected with scapy, loaded the first time one arrives (a run
with no finding never loads it). Never kept: the raw bytes (they hold the probe's address).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from probe.forensics import scapy_quiet

MAX_PACKETS = 16  # kept per connection: a flood cannot grow a record
SERVER_PACKETS = 4  # a connection's first packets (SYN-ACK, data): its TTL and IP ID sequence; resets after
ICMP_TIME_EXCEEDED = 11
ICMP_UNREACHABLE = 3
TCP_SYN, TCP_RST = 0x02, 0x04
HEADERS = 256  # bytes of each packet looked at: IP and TCP/UDP headers, or an ICMP error and what it quotes

TcpKey = tuple[str, int, int]  # remote address, remote port, local port
Clock = Callable[[], float]
Watched = tuple[list[dict[str, Any]], Clock]  # the list a record holds, and its target's clock
Summary = Callable[[bytes], dict[str, Any]]


def _address(data: bytes, offset: int) -> str:
    return socket.inet_ntoa(data[offset : offset + 4])


# Classic BPF run by the kernel on each packet before it is copied to the capture: what the rest of
# the machine receives (a download, a video call) never reaches Python. A raw IPv4 socket's filter
# sees the packet from its IP header; (code, jt, jf, k) rows, as in linux/filter.h.
_LOAD_IP_HEADER_LENGTH = (0xB1, 0, 0, 0)  # X = 4 * (first byte & 0x0f)
_ACCEPT, _DROP = (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)
FILTERS = {
    # TCP: a SYN, a reset or data pushed (a server's SYN-ACK, its first data, any reset).
    socket.IPPROTO_TCP: [_LOAD_IP_HEADER_LENGTH, (0x50, 0, 0, 13), (0x45, 0, 1, 0x0E), _ACCEPT, _DROP],
    # UDP: DNS replies (source port 53).
    socket.IPPROTO_UDP: [_LOAD_IP_HEADER_LENGTH, (0x48, 0, 0, 0), (0x15, 0, 1, 53), _ACCEPT, _DROP],
    # ICMP: time exceeded and destination unreachable.
    socket.IPPROTO_ICMP: [_LOAD_IP_HEADER_LENGTH, (0x50, 0, 0, 0), (0x15, 1, 0, 11), (0x15, 0, 1, 3), _ACCEPT, _DROP],
}
SO_ATTACH_FILTER = 26


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def attach_filter(sock: socket.socket, rows: list[tuple[int, int, int, int]]) -> None:
    """A classic BPF program (rows of code, jt, jf, k) on a socket: the kernel runs it on each packet."""
    instructions = (_Instruction * len(rows))(*(_Instruction(*row) for row in rows))
    program = _Program(len(rows), instructions)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(program))  # the kernel copies it


_FLAG_LETTERS = "FSRPAUEC"  # scapy's order, lowest bit first


def _plain_tcp_summary(data: bytes) -> dict[str, Any]:
    """A server's ordinary packet (SYN-ACK, data) as scapy would summarise it, read with `struct`:
    every connection has some, and a clean run need not load scapy at all."""
    header = (data[0] & 0x0F) * 4
    flags = data[header + 13]
    letters = "".join(letter for bit, letter in enumerate(_FLAG_LETTERS) if flags >> bit & 1)
    (ip_id,) = struct.unpack_from("!H", data, 4)
    return {"flags": letters, "ip_ttl": data[8], "ip_id": ip_id, "payload": _tcp_payload(data)}


def _tcp_payload(data: bytes) -> int:
    """The TCP payload's length, from the IP header's total length (the bytes read may be fewer)."""
    header = (data[0] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", data, 2)
    return max(0, total - header - (data[header + 12] >> 4) * 4)


class PacketCapture:
    """The run's capture thread. `watch_*` register a socket's traffic; `forget` ends it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tcp: dict[TcpKey, Watched] = {}
        self._udp: dict[int, Watched] = {}  # local port -> replies
        self._icmp: dict[TcpKey, Watched] = {}  # the quoted packet's key -> routers
        self._keys: dict[int, tuple[dict[Any, Watched], Any]] = {}  # id of a watched list -> where it is
        self._selector = selectors.DefaultSelector()
        self._sockets = []
        for protocol in (socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMP):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol)
            with contextlib.suppress(OSError):  # without it the Python filter below still decides
                attach_filter(sock, FILTERS[protocol])
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._selector.register(sock, selectors.EVENT_READ, protocol)
            self._sockets.append(sock)
        self._closed = False
        self.failure: str | None = None  # why the capture stopped before the run closed it
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    # --- registering ------------------------------------------------------------------------
    def watch_tcp(self, sock: socket.socket, address: str, port: int, now: Clock) -> list[dict[str, Any]]:
        """Packets from `address:port` to this (bound) socket's port, as they arrive."""
        return self._watch(self._tcp, (address, port, sock.getsockname()[1]), now)

    def watch_icmp(self, sock: socket.socket, address: str, port: int, now: Clock) -> list[dict[str, Any]]:
        """ICMP errors quoting this socket's packets to `address:port` (the routers that dropped them)."""
        return self._watch(self._icmp, (address, port, sock.getsockname()[1]), now)

    def watch_udp(self, sock: socket.socket, now: Clock) -> list[dict[str, Any]]:
        """Every UDP datagram to this (bound) socket's port: DNS replies, with IP TTL and IP ID."""
        return self._watch(self._udp, sock.getsockname()[1], now)

    def _watch(self, table: dict[Any, Watched], key: Any, now: Clock) -> list[dict[str, Any]]:
        packets: list[dict[str, Any]] = []
        with self._lock:
            table[key] = (packets, now)
            self._keys[id(packets)] = (table, key)
        return packets

    def forget(self, packets: list[dict[str, Any]]) -> None:
        """Stop filling a list given by `watch_*` (its connection is over): it is never touched again."""
        with self._lock:
            found = self._keys.pop(id(packets), None)
            if found is not None:
                table, key = found
                if table.get(key, (None,))[0] is packets:
                    del table[key]

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    # --- reading ----------------------------------------------------------------------------
    def _run(self) -> None:
        """Read until closed. Should the capture fail first (a socket's error, a socket closed under
        it), it stops, and `failure` says why: every record completed after that says the capture
        stopped (`observations.forensics.capture`, set by the run), and so does the run's summary."""
        try:
            self._read()
        except Exception as exc:
            if not self._closed:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                self.failure = f"the packet capture stopped mid-run: {reason}"
                self.close()

    def _read(self) -> None:
        buffer = bytearray(65535)  # one buffer, not 64 KiB allocated for every packet of the machine
        view = memoryview(buffer)
        checked = time.monotonic()
        while not self._closed:
            events = self._selector.select(0.5)
            if time.monotonic() - checked >= 0.5:  # a socket closed under the capture would go unseen
                self._check()
                checked = time.monotonic()
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                for _ in range(64):  # drain, bounded per wake-up
                    try:
                        size = sock.recv_into(buffer)
                    except (BlockingIOError, InterruptedError):
                        break
                    with contextlib.suppress(Exception):  # a packet that does not parse is not ours
                        self._dispatch(key.data, bytes(view[: min(size, HEADERS)]))

    def _check(self) -> None:
        """Raises if a capture socket is closed, or holds an error."""
        for sock in self._sockets:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # OSError on a closed socket
            if error:
                raise OSError(error, os.strerror(error))

    def _dispatch(self, protocol: int, data: bytes) -> None:
        """`data`: the packet's first HEADERS bytes (its headers, and a little of what follows)."""
        if len(data) < 20 or data[0] >> 4 != 4:
            return
        header = (data[0] & 0x0F) * 4
        if protocol == socket.IPPROTO_TCP and len(data) >= header + 14:
            sport, dport = struct.unpack_from("!HH", data, header)
            flags = data[header + 13]
            if not flags & (TCP_SYN | TCP_RST) and _tcp_payload(data) <= 0:
                return  # a bare ACK or FIN tells nothing a SYN-ACK, the data and a reset do not
            key = (_address(data, 12), sport, dport)
            if flags & TCP_RST:
                self._keep(self._tcp, key, data, self._tcp_summary)
            else:  # the common case, every connection's SYN-ACK and first data: read without scapy
                self._keep(self._tcp, key, data, _plain_tcp_summary, few=True)
        elif protocol == socket.IPPROTO_UDP and len(data) >= header + 8:
            (dport,) = struct.unpack_from("!H", data, header + 2)
            self._keep(self._udp, dport, data, self._udp_summary)
        elif protocol == socket.IPPROTO_ICMP and len(data) >= header + 8 + 28:
            if data[header] not in (ICMP_TIME_EXCEEDED, ICMP_UNREACHABLE):
                return
            quoted = header + 8
            inner = (data[quoted] & 0x0F) * 4
            if data[quoted + 9] != socket.IPPROTO_TCP or len(data) < quoted + inner + 4:
                return
            sport, dport = struct.unpack_from("!HH", data, quoted + inner)
            self._keep(self._icmp, (_address(data, quoted + 16), dport, sport), data, self._icmp_summary)

    def _keep(self, table: dict[Any, Watched], key: Any, data: bytes, summary: Summary, few: bool = False) -> None:
        """Dissect and keep a packet that is ours; `few`: only a connection's first few (not resets)."""
        with self._lock:
            watched = table.get(key)
            if watched is None or (few and len(watched[0]) >= SERVER_PACKETS):
                return  # not ours; or enough of the server's own packets to compare a reset with
        described = summary(data)  # scapy, outside the lock
        packets, now = watched
        described["t"] = now()
        with self._lock:
            if table.get(key) is watched and len(packets) < MAX_PACKETS:  # forgotten meanwhile: dropped
                packets.append(described)

    def _tcp_summary(self, data: bytes) -> dict[str, Any]:
        layers = scapy_quiet.load()
        packet = layers.IP(data)
        tcp = packet[layers.TCP]
        return {"flags": str(tcp.flags), "ip_ttl": packet.ttl, "ip_id": packet.id, "payload": _tcp_payload(data)}

    def _udp_summary(self, data: bytes) -> dict[str, Any]:
        layers = scapy_quiet.load()
        packet = layers.IP(data)
        payload = bytes(packet[layers.UDP].payload)
        dns_id = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        return {"source": packet.src, "ip_ttl": packet.ttl, "ip_id": packet.id, "dns_id": dns_id}

    def _icmp_summary(self, data: bytes) -> dict[str, Any]:
        layers = scapy_quiet.load()
        packet = layers.IP(data)
        icmp = packet[layers.ICMP]
        return {"router": packet.src, "icmp_type": icmp.type, "icmp_code": icmp.code, "ip_ttl": packet.ttl}
