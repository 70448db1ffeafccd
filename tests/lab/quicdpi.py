"""A QUIC censor for the lab, as DPI boxes do it: it reads the SNI of a QUIC flow's first flight and
drops every packet of the flow whose name is on its list (TSPU and the Great Firewall decrypt QUIC
Initial packets: their keys derive from the client's connection ID, which the packet carries).

    python3 -m tests.lab.quicdpi LISTEN_PORT UPSTREAM_ADDRESS NAME [NAME...]

Runs on the ISP's router behind `iptables -t nat ... -p udp --dport 443 -j REDIRECT --to-ports
LISTEN_PORT` for one server address: each client flow gets its own upstream socket to
UPSTREAM_ADDRESS:443; the first flight is held until its ClientHello is read, then passed or dropped
whole (the client hears nothing back: silence). A flow whose name cannot be read is passed.
"""

from __future__ import annotations

import select
import socket
import sys

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.tls import pull_client_hello

MAX_HELD = 8  # datagrams held before giving up on the name (then the flow passes, as DPIs fail open)
MAX_FLOWS = 4096

PADDING, PING, ACK, ACK_ECN, CRYPTO = 0x00, 0x01, 0x02, 0x03, 0x06


def _crypto_frames(datagram: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO frames of every client Initial packet in a datagram: (offset, data)."""
    found: list[tuple[int, bytes]] = []
    buf = Buffer(data=datagram)
    while not buf.eof():
        start = buf.tell()
        try:
            header = pull_quic_header(buf, host_cid_length=8)
        except (ValueError, BufferReadError):
            break
        end = start + header.packet_length
        if header.packet_type != QuicPacketType.INITIAL or header.version is None:
            buf.seek(end)
            continue
        crypto = CryptoPair()
        crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
        try:
            _, payload, _ = crypto.decrypt_packet(datagram[start:end], buf.tell() - start, 0)
        except Exception:
            break
        found += _frames(payload)
        buf.seek(end)
    return found


def _frames(payload: bytes) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    buf = Buffer(data=payload)
    try:
        while not buf.eof():
            kind = buf.pull_uint_var()
            if kind in (PADDING, PING):
                continue
            if kind in (ACK, ACK_ECN):
                buf.pull_uint_var(), buf.pull_uint_var()
                ranges = buf.pull_uint_var()
                buf.pull_uint_var()
                for _ in range(ranges):
                    buf.pull_uint_var(), buf.pull_uint_var()
                if kind == ACK_ECN:
                    buf.pull_uint_var(), buf.pull_uint_var(), buf.pull_uint_var()
                continue
            if kind != CRYPTO:
                break
            offset, length = buf.pull_uint_var(), buf.pull_uint_var()
            frames.append((offset, buf.pull_bytes(length)))
    except BufferReadError:
        pass
    return frames


class Flow:
    def __init__(self, client: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.client = client
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.connect(upstream)
        self.held: list[bytes] = []
        self.crypto: dict[int, bytes] = {}
        self.verdict: str | None = None  # pass or drop

    def server_name(self) -> str | None:
        """The ClientHello's SNI once its bytes are in ("" when it has none), else None."""
        data = b""
        while len(data) in self.crypto:
            data += self.crypto[len(data)]
        if len(data) < 4 or len(data) < 4 + int.from_bytes(data[1:4], "big"):
            return None
        try:
            return pull_client_hello(Buffer(data=data)).server_name or ""
        except Exception:
            return ""

    def feed(self, datagram: bytes, blocked: set[str]) -> None:
        if self.verdict == "pass":
            self.upstream.send(datagram)
            return
        if self.verdict == "drop":
            return
        self.held.append(datagram)
        for offset, data in _crypto_frames(datagram):
            self.crypto[offset] = data
        name = self.server_name()
        if name is None and len(self.held) < MAX_HELD:
            return
        self.verdict = "drop" if name in blocked else "pass"
        print(f"flow {self.client[0]}:{self.client[1]} sni={name!r}: {self.verdict}", flush=True)
        if self.verdict == "pass":
            for held in self.held:
                self.upstream.send(held)
        self.held.clear()


def serve(listen_port: int, upstream_address: str, blocked: set[str]) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0", listen_port))
    flows: dict[tuple[str, int], Flow] = {}
    by_socket: dict[socket.socket, Flow] = {}
    print("quicdpi ready", flush=True)
    while True:
        readable, _, _ = select.select([listener, *by_socket], [], [], 5.0)
        for sock in readable:
            try:
                if sock is listener:
                    datagram, client = listener.recvfrom(65535)
                    flow = flows.get(client)
                    if flow is None:
                        if len(flows) >= MAX_FLOWS:
                            continue
                        flow = flows[client] = Flow(client, (upstream_address, 443))
                        by_socket[flow.upstream] = flow
                    flow.feed(datagram, blocked)
                else:
                    # The reply leaves from the listener: conntrack gives it the server's address back.
                    listener.sendto(sock.recv(65535), by_socket[sock].client)
            except OSError:
                continue


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], set(sys.argv[3:]))
