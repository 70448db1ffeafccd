"""The helper refuses what it must refuse: private destinations, other ports, strangers, floods.

The helper runs here for real (`probe helper serve` in a subprocess, HTTPS on 127.0.0.1); the
requests that it must refuse are refused before it sends a single packet anywhere. Names that
resolve to private addresses are refused in the lab (tests/test_lab.py), where a resolver is ours.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from probe.helper.ratelimit import Lease, PerClient, RateLimiter, client_key
from probe.netx.clock import Clock
from probe.netx.pools import Pools
from probe.observe.helperclient import ask_helper
from probe.vocabulary.observations import HelperAnswer
from tests.conftest import PkiFixture
from tests.dnsmasq import free_udp_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-test-token"


def _serve(test_pki: PkiFixture, *extra: str, log: Path | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """The helper in a subprocess on loopback, its output (stdout and stderr) in `log` if given."""
    cert, key = test_pki.leaf_files(test_pki.public_intermediate, [host], f"helper-{len(extra)}")
    port = free_udp_port()  # free for TCP as well, in practice, on loopback
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    output = open(log, "w", encoding="utf-8") if log is not None else subprocess.PIPE  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "probe", "helper", "serve", "--listen", listen,
         "--tls-cert", str(cert), "--tls-key", str(key), "--roots", str(test_pki.roots_pem), "--timeout", "1", *extra],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    url = f"https://{listen}/"
    try:
        for _ in range(100):
            try:
                requests.get(url + "v1/health", verify=str(test_pki.roots_pem), timeout=1)
                break
            except requests.exceptions.ConnectionError:
                if process.poll() is not None:
                    said = log.read_text() if log is not None else process.stdout.read() if process.stdout else ""
                    raise RuntimeError(f"helper exited: {said}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if log is not None:
            output.close()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def helper(test_pki: PkiFixture) -> Iterator[str]:
    yield from _serve(test_pki, "--token", TOKEN, "--rate", "600")


def _ask(helper: str, test_pki: PkiFixture, url: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(
        helper + "v1/measure", json={"url": url}, headers=headers, verify=str(test_pki.roots_pem), timeout=10
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",  # loopback
        "https://10.1.2.3/",  # private
        "https://192.168.1.1/",  # private
        "https://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "https://[::1]/",  # loopback
        "https://[fd00::1]/",  # unique local
        "https://0.0.0.0/",  # unspecified
        "https://240.0.0.1/",  # reserved
        "https://203.0.113.10/",  # documentation: refused unless the lab flag is given
    ],
)
def test_refuses_destinations_that_are_not_public(helper: str, test_pki: PkiFixture, url: str) -> None:
    reply = _ask(helper, test_pki, url)
    assert reply.status_code == 403
    assert "is not a public address" in reply.json()["error"]


def test_refuses_other_ports(helper: str, test_pki: PkiFixture) -> None:
    reply = _ask(helper, test_pki, "https://192.0.2.1:22/")
    assert reply.status_code == 403 and "port 22 is not allowed" in reply.json()["error"]


def test_needs_the_token(helper: str, test_pki: PkiFixture) -> None:
    assert _ask(helper, test_pki, "https://10.1.2.3/", token=None).status_code == 401
    assert _ask(helper, test_pki, "https://10.1.2.3/", token="wrong").status_code == 401


def test_rejects_bad_requests(helper: str, test_pki: PkiFixture) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    post = lambda body: requests.post(  # noqa: E731
        helper + "v1/measure", data=body, headers=headers, verify=str(test_pki.roots_pem), timeout=10
    )
    assert post(b"not json").status_code == 400
    assert post(b"[1, 2]").status_code == 400
    assert post(b'{"url": "ftp://x.example/"}').status_code == 400
    assert post(b"x" * 5000).status_code == 413


def test_limits_requests_per_client(test_pki: PkiFixture) -> None:
    limited = _serve(test_pki, "--rate", "1", "--burst", "30")  # one a minute, bursts of 30
    url = next(limited)
    try:
        codes = [_ask(url, test_pki, "https://10.1.2.3/", token=None).status_code for _ in range(32)]
    finally:
        limited.close()
    assert codes[:30] == [403] * 30
    assert codes[30:] == [429, 429]


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(rate_per_minute=60_000, burst=2)
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a")] == [True, True, False]
    assert limiter.allow("b")  # per client
    time.sleep(0.01)  # 60,000 a minute: ten tokens come back in 10 ms
    assert limiter.allow("a")


def test_probe_records_a_refusal_and_an_unreachable_helper(helper: str, test_pki: PkiFixture) -> None:
    async def ask(helper_url: str, target_url: str, token: str | None) -> HelperAnswer:
        async with Pools() as pools:  # outside a run: pools of its own, closed at its end
            return (await ask_helper(helper_url, target_url, token, 2, str(test_pki.roots_pem), Clock(), pools))[0]

    refused = asyncio.run(ask(helper, "https://10.1.2.3/", TOKEN))
    assert refused.status == 403 and refused.response is None
    assert refused.failure is not None and refused.failure.startswith("helper_refused: HTTP 403")
    closed = f"https://127.0.0.1:{free_udp_port()}/"
    unreachable = asyncio.run(ask(closed, "https://example.org/", None))
    assert (unreachable.status, unreachable.failure) == (None, "connection_refused")


def test_the_rate_limit_comes_before_the_token(test_pki: PkiFixture) -> None:
    """A wrong token is refused, and so is the guesser after a few tries: no unthrottled guessing."""
    guarded = _serve(test_pki, "--token", TOKEN, "--rate", "1", "--burst", "3")
    url = next(guarded)
    try:
        codes = [_ask(url, test_pki, "https://example.org/", token=f"guess-{n}").status_code for n in range(5)]
    finally:
        guarded.close()
    assert codes == [401, 401, 401, 429, 429]


def test_an_ipv6_client_is_its_64() -> None:
    """A host picks addresses in its /64 at will: the /64 is the client, for every limit."""
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7") == "198.51.100.7"  # mapped: IPv4
    assert client_key("198.51.100.8") != client_key("198.51.100.7")  # IPv4: the address
    limiter = RateLimiter(rate_per_minute=1, burst=2)
    assert [limiter.allow("2001:db8::1"), limiter.allow("2001:db8::2"), limiter.allow("2001:db8::3")] == [
        True,
        True,
        False,  # a new address in the same /64: the same bucket, empty
    ]
    assert limiter.allow("2001:db8:0:1::1")  # another /64: another client
    assert limiter.allow("192.0.2.1") and limiter.allow("192.0.2.2")


def test_a_client_holds_at_most_its_share() -> None:
    table = PerClient(cap=2)
    first, second = table.take("2001:db8::1"), table.take("2001:db8::2")
    assert first is not None and second is not None
    assert table.take("2001:db8::3") is None  # the same /64: its share is taken
    assert table.take("2001:db8:0:1::1") is not None  # another client
    first()
    first()  # given back once, however often called
    assert table.held("2001:db8::9") == 1
    assert table.take("2001:db8::3") is not None


def test_a_slot_is_given_back_when_the_last_hold_ends() -> None:
    given_back: list[bool] = []
    lease = Lease(lambda: given_back.append(True))
    let_go = lease.hold()  # a lookup that outlives its measurement
    lease.release()
    assert given_back == []  # the lookup still runs: the client's slot stays taken
    let_go()
    let_go()
    assert given_back == [True]


def test_the_rate_table_forgets_the_least_recent_client_first() -> None:
    limiter = RateLimiter(rate_per_minute=1, burst=1, max_clients=2)
    assert [limiter.allow("a"), limiter.allow("b"), limiter.allow("a")] == [True, True, False]
    assert limiter.allow("c")  # the table is full: "b" (seen least recently) is forgotten, not "a"
    assert not limiter.allow("a")  # still remembered, still throttled
    assert limiter.allow("b")  # forgotten: a fresh bucket


@pytest.mark.timeout(20)
def test_a_client_dripping_its_request_is_cut_at_the_deadline(test_pki: PkiFixture) -> None:
    import socket
    import ssl

    served = _serve(test_pki, "--request-deadline", "2")
    url = next(served)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        context = ssl.create_default_context(cafile=str(test_pki.roots_pem))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            cut = False
            for byte in b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n":  # one byte a second: slowloris
                try:
                    tls.sendall(bytes([byte]))
                    time.sleep(1)
                    tls.settimeout(0.01)
                    if tls.recv(1) == b"":
                        cut = True
                        break
                except (TimeoutError, ssl.SSLWantReadError):
                    tls.settimeout(10)
                    continue
                except (OSError, ssl.SSLError):
                    cut = True
                    break
        assert cut  # the helper closed it long before the request was whole
    finally:
        served.close()


@pytest.mark.timeout(30)
def test_connections_past_the_bound_are_closed_at_once(test_pki: PkiFixture) -> None:
    import socket

    served = _serve(test_pki, "--connections", "2", "--connections-per-client", "1", "--request-deadline", "8")
    url = next(served)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    try:
        held = [  # idle, from two clients (each within its share), holding both
            socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{n}", 0))
            for n in (2, 3)
        ]
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.4", 0)) as third:
            assert third.recv(1) == b""  # closed by the helper: no thread, no handshake for it
        for sock in held:
            sock.close()
        # Served again once they are gone: the helper notices the closed connections within moments
        # (its threads see the EOF), so a few tries, bounded, are given for that.
        answered = None
        for _ in range(20):
            try:
                answered = _ask(url, test_pki, "https://10.1.2.3/").status_code
                break
            except requests.exceptions.ConnectionError:
                time.sleep(0.25)
        assert answered == 403
    finally:
        served.close()


def test_a_probe_asks_a_helper_on_a_few_kept_connections(helper: str, test_pki: PkiFixture) -> None:
    """Twenty questions at once reach the helper on at most four connections, kept and reused: fifty
    probes are then two hundred connections at most, within the helper's bound."""
    import socket
    import threading
    from urllib.parse import urlsplit

    from probe.observe.helperclient import HELPER_CONNECTIONS, HelperQuestions

    upstream = urlsplit(helper)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def relay() -> None:  # counts the connections the probe opens
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            accepted.append(client)
            server = socket.create_connection((upstream.hostname, upstream.port))
            threading.Thread(target=pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    relayed = f"https://127.0.0.1:{listener.getsockname()[1]}/"

    async def ask_twenty() -> list[HelperAnswer]:
        async with Pools() as pools:  # the run's pools: one client for the helper, on its few connections
            questions = [
                HelperQuestions([relayed], f"https://10.0.0.{n}/", TOKEN, 2, str(test_pki.roots_pem), Clock(), pools)
                for n in range(20)
            ]
            return [(await q.collected())[0][0] for q in questions]

    try:
        answers = asyncio.run(ask_twenty())
    finally:
        listener.close()
    assert [a.status for a in answers] == [403] * 20  # every one asked and answered (a refused address)
    assert 1 <= len(accepted) <= HELPER_CONNECTIONS == 4
