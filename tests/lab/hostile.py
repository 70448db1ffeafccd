"""Hostile peers in the lab's world: servers that misbehave on purpose (issue 14).

On HOSTILE_SITE: port 443 accepts and never speaks, 444 drips a byte a second, 445 answers the
ClientHello with garbage, 80 sends a body that never ends. On HOSTILE_RESOLVER:53 (UDP), a resolver
that answers `many.*` with thousands of records, `loop.*` with a compression-pointer loop,
`truncated.*` with half a message, and `flood.*` with two hundred replies to one question.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import threading
import time

LIFETIME = 3600.0


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    time.sleep(60)


def _drip(conn: socket.socket) -> None:
    conn.recv(65536)
    for _ in range(60):
        conn.sendall(b"\x16")
        time.sleep(1)


def _garbage(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"\x16\x03\x03\x00\x10" + b"\xff" * 16 + b"no ServerHello here" * 20)
    time.sleep(5)


def _endless_body(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1073741824\r\n\r\n")
    block = b"<p>" + b"x" * 65533
    for _ in range(16384):  # a gigabyte, as long as the client keeps reading
        conn.sendall(block)


def _tcp(address: str, port: int, behaviour) -> None:  # type: ignore[no-untyped-def]
    listener = socket.create_server((address, port))
    while True:
        conn, _ = listener.accept()
        conn.settimeout(70)

        def run(c: socket.socket = conn) -> None:
            with contextlib.suppress(OSError), c:
                behaviour(c)

        threading.Thread(target=run, daemon=True).start()


def _answer(query: bytes, count: int) -> bytes:
    """A reply with `count` A records for the question (name compressed to the question's)."""
    qend = 12
    while query[qend] != 0:
        qend += 1 + query[qend]
    question = query[12 : qend + 5]
    header = query[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, count, 0, 0)
    records = b"".join(
        b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 1, i // 250, i % 250]) for i in range(count)
    )
    return header + question + records


def _dns(address: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    while True:
        query, source = sock.recvfrom(4096)
        name = query[12:].split(b"\x00", 1)[0].lower()
        if len(query) < 17:
            continue
        if name.startswith(b"\x04many"):
            sock.sendto(_answer(query, 2000), source)
        elif name.startswith(b"\x04loop"):
            loop = query[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
            sock.sendto(loop, source)
        elif name.startswith(b"\x09truncated"):
            sock.sendto(_answer(query, 3)[:-7], source)
        elif name.startswith(b"\x05flood"):
            reply = _answer(query, 1)
            for _ in range(200):
                sock.sendto(reply, source)
        else:
            sock.sendto(_answer(query, 1), source)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", required=True)
    parser.add_argument("--resolver", required=True)
    args = parser.parse_args()
    for port, behaviour in ((443, _silent), (444, _drip), (445, _garbage), (80, _endless_body)):
        threading.Thread(target=_tcp, args=(args.site, port, behaviour), daemon=True).start()
    threading.Thread(target=_dns, args=(args.resolver,), daemon=True).start()
    print("hostile ready", flush=True)
    time.sleep(LIFETIME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
