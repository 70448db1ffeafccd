"""A TLS server on 127.0.0.1 that behaves per SNI: serves a chain, resets, or goes silent.

It reads the ClientHello before deciding, as an SNI-filtering middlebox does, so "reset" and
"silence" happen after the ClientHello, like the Kazakhstan blocking OONI reported in 2024.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

SILENCE_LIMIT = 30.0  # the server never holds a connection longer than this


def client_hello_sni(data: bytes) -> str | None:
    """The server_name in a TLS ClientHello record, if complete and present."""
    try:
        if len(data) < 5 or data[0] != 0x16:
            return None
        (record_length,) = struct.unpack("!H", data[3:5])
        body = data[5 : 5 + record_length]
        if len(body) < record_length or body[0] != 0x01:
            return None
        pos = 4 + 2 + 32
        pos += 1 + body[pos]
        (suites,) = struct.unpack("!H", body[pos : pos + 2])
        pos += 2 + suites
        pos += 1 + body[pos]
        (ext_total,) = struct.unpack("!H", body[pos : pos + 2])
        pos += 2
        end = pos + ext_total
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack("!HH", body[pos : pos + 4])
            pos += 4
            if ext_type == 0:
                name_len = struct.unpack("!H", body[pos + 3 : pos + 5])[0]
                return body[pos + 5 : pos + 5 + name_len].decode("ascii")
            pos += ext_len
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


class TlsServer:
    """`behaviours` maps an SNI to a (cert, key) pair, "reset", "silence" or "close" (after the
    ClientHello), or (cert, key, "close-after-request") or (cert, key, "redirect:URL"); `default` for
    the rest."""

    def __init__(
        self, behaviours: dict[str, tuple[Path, ...] | str], default: tuple[Path, ...] | str = "reset"
    ) -> None:
        self.behaviours, self.default = behaviours, default
        self.contexts: dict[tuple[Path, Path], ssl.SSLContext] = {}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.seen_sni: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()

    def _context(self, pair: tuple[Path, Path]) -> ssl.SSLContext:
        if pair not in self.contexts:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(pair[0]), str(pair[1]))
            context.set_alpn_protocols(["http/1.1"])
            self.contexts[pair] = context
        return self.contexts[pair]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            hello = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                hello = conn.recv(16384, socket.MSG_PEEK)
                if not hello or client_hello_sni(hello) is not None or len(hello) > 2048:
                    break
                time.sleep(0.02)
            sni = client_hello_sni(hello)
            self.seen_sni.append(sni)
            behaviour = self.behaviours.get(sni or "", self.default)
            if behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if behaviour == "close":  # FIN after the ClientHello
                conn.recv(16384)
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                return
            if behaviour == "silence":
                conn.recv(16384)  # take the ClientHello and say nothing
                self._stop.wait(SILENCE_LIMIT)
                conn.close()
                return
            assert isinstance(behaviour, tuple)
            close_after_request = len(behaviour) == 3 and behaviour[2] == "close-after-request"
            tls = self._context((behaviour[0], behaviour[1])).wrap_socket(conn, server_side=True)
            if close_after_request:  # the handshake completes; the request is met with a close
                tls.recv(4096)
                conn.shutdown(socket.SHUT_RDWR)
                tls.close()
                return
            with contextlib.suppress(OSError, ssl.SSLError):
                request = tls.recv(4096)
                redirect = (
                    behaviour[2][len("redirect:") :]
                    if len(behaviour) == 3 and behaviour[2].startswith("redirect:")
                    else None
                )
                if request.startswith(b"GET ") and redirect:
                    tls.sendall(f"HTTP/1.1 302 Found\r\nLocation: {redirect}\r\nContent-Length: 0\r\n\r\n".encode())
                elif request.startswith(b"GET "):
                    page = f"<html><head><title>{sni}</title></head><body>The real {sni}.</body></html>".encode()
                    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(page)}\r\n"
                    tls.sendall(head.encode() + b"Connection: close\r\n\r\n" + page)
            tls.close()
        except (OSError, ssl.SSLError):
            conn.close()
