"""A small HTTP/3 server (aioquic) for the tests and the QUIC lab: every GET gets a 200 page.

    python3 -m tests.quicserver ADDRESS PORT CERT.pem KEY.pem

prints `quic ready` once it listens. In-process tests start it with `serve()` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent


class _Http3(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for answer in self._h3.handle_event(event):
            if isinstance(answer, HeadersReceived):
                headers = dict(answer.headers)
                body = b"<html><head><title>h3 " + headers.get(b":authority", b"") + b"</title></head></html>"
                self._h3.send_headers(answer.stream_id, [(b":status", b"200"), (b"content-type", b"text/html")])
                self._h3.send_data(answer.stream_id, body, end_stream=True)
                self.transmit()


async def serve_h3(address: str, port: int, cert: str, key: str) -> QuicServer:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=list(H3_ALPN))
    configuration.load_cert_chain(cert, key)
    return await serve(address, port, configuration=configuration, create_protocol=_Http3)


async def _main(address: str, port: int, cert: str, key: str) -> None:
    await serve_h3(address, port, cert, key)
    print("quic ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
