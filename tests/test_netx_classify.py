"""Failure classification (`probe.netx.classify`) from real exceptions, produced in-process on loopback.

Each failure a censor (or a broken site) causes is made for real on 127.0.0.1 (tests/inprocess.py)
and met by each client: blocking sockets with `ssl.SSLSocket`, and asyncio (`open_connection` with
ssl under `wait_for`; `open_connection` then `start_tls` under `asyncio.timeout`). Every client must
get the same failure string, the one the lab expects (tests/test_lab.py, tests/test_hostile.py),
and the same TLS alert, so that moving the primitives onto asyncio changes no verdict.

Not produced here: `host_unreachable` (it takes an ICMP host-unreachable or an `unreachable`
route: root, or another network than loopback). `network_unreachable` is the kernel's own refusal
to route (a TCP connect to the broadcast address, or to an IPv4-mapped address from an IPv6-only
socket): no packet is sent.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from probe.netx.classify import alert_description, classify
from probe.vocabulary.failures import Failure
from tests import inprocess
from tests.conftest import PkiFixture
from tests.inprocess import Attempt, Behaviour, Client

TIMEOUT = 0.3  # small: the silent scenarios wait this long, once per client

BLOCKING = pytest.param(inprocess.blocking_handshake, id="blocking")
OPEN_CONNECTION = pytest.param(inprocess.asyncio_open_connection, id="asyncio-open_connection")
START_TLS = pytest.param(inprocess.asyncio_start_tls, id="asyncio-start_tls")
CLIENTS = [BLOCKING, OPEN_CONNECTION, START_TLS]

ASYNCIO_EOF = (
    "asyncio's SSLProtocol ends a handshake cut by a clean FIN with a bare ConnectionResetError() "
    "(sslproto's eof_received), which classify maps to connection_reset; the blocking path raises "
    "SSLEOFError (eof_error, as tests/test_probe_local.py expects). On asyncio, tls.eof would read "
    "as tls.reset and forensics would look for an injected reset."
)
HANDSHAKE_TIMEOUT = (
    "asyncio's ssl_handshake_timeout aborts with ConnectionAbortedError('SSL handshake is taking "
    "longer than ...') and no errno, which classify makes unknown_failure, not generic_timeout_error."
)


@dataclass(frozen=True)
class Certificate:
    cert: str
    key: str


@pytest.fixture(scope="module")
def leaf(test_pki: PkiFixture) -> Certificate:
    cert, key = test_pki.leaf_files(test_pki.public_intermediate, [inprocess.SERVER_NAME], "netx-classify")
    return Certificate(str(cert), str(key))


def _attempt(
    client: Client, behaviour: Behaviour, wait_for_server: bool = False, maximum: ssl.TLSVersion | None = None
) -> BaseException:
    """What `client` raised against a peer that behaves so (it must raise something)."""
    with inprocess.peer(behaviour) as server:
        ready = server.handled if wait_for_server else None
        raised = client(Attempt(server.port, inprocess.client_context(maximum), TIMEOUT, ready))
    assert raised is not None, "the handshake succeeded"
    return raised


def _assert_classified(raised: BaseException, failure: str, alert: str | None = None) -> None:
    found = (classify(raised), alert_description(raised))
    assert found == (failure, alert), f"{type(raised).__name__}: {raised!r}"


# --- refused, timed out, unreachable: the TCP connect -------------------------------------------

CONNECTS = [
    pytest.param(inprocess.blocking_connect, id="blocking"),
    pytest.param(inprocess.asyncio_connect, id="asyncio-sock_connect"),
]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("connect", CONNECTS)
def test_a_closed_port_is_connection_refused(connect: Callable[..., BaseException | None]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # held, never listening: the kernel answers the SYN with a RST
        raised = connect(socket.socket(socket.AF_INET, socket.SOCK_STREAM), closed.getsockname(), TIMEOUT)
    assert raised is not None
    _assert_classified(raised, Failure.CONNECTION_REFUSED)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("connect", CONNECTS)
def test_a_connect_that_gets_no_answer_is_a_timeout(connect: Callable[..., BaseException | None]) -> None:
    """A listener whose accept queue is full drops the SYN, as a blackhole does."""
    with inprocess.full_listener() as port:
        raised = connect(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("127.0.0.1", port), TIMEOUT)
    assert raised is not None
    _assert_classified(raised, Failure.GENERIC_TIMEOUT)


def _v6only() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


@pytest.mark.timeout(5)
@pytest.mark.parametrize("connect", CONNECTS)
@pytest.mark.parametrize(
    ("make", "address"),
    [
        pytest.param(
            lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("255.255.255.255", 443), id="broadcast"
        ),
        pytest.param(_v6only, ("::ffff:127.0.0.1", 443), id="v4-mapped-from-v6only"),
    ],
)
def test_an_address_the_kernel_will_not_route_is_network_unreachable(
    connect: Callable[..., BaseException | None], make: Callable[[], socket.socket], address: tuple[str, int]
) -> None:
    raised = connect(make(), address, TIMEOUT)
    assert raised is not None
    _assert_classified(raised, Failure.NETWORK_UNREACHABLE)


# --- the TLS handshake --------------------------------------------------------------------------


@pytest.mark.timeout(5)
@pytest.mark.parametrize("client", CLIENTS)
def test_a_reset_before_the_handshake_is_connection_reset(client: Client) -> None:
    """The server accepts and aborts (SO_LINGER 0) before the ClientHello is sent (the one-step
    asyncio client cannot wait: its ClientHello may cross the RST)."""
    _assert_classified(_attempt(client, inprocess.reset_at_accept, wait_for_server=True), Failure.CONNECTION_RESET)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("client", CLIENTS)
def test_a_reset_after_the_client_hello_is_connection_reset(client: Client) -> None:
    """What an SNI filter does: read the ClientHello, then abort the connection."""
    _assert_classified(_attempt(client, inprocess.reset_after_hello), Failure.CONNECTION_RESET)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "client",
    [
        BLOCKING,
        pytest.param(inprocess.asyncio_open_connection, id="asyncio-open_connection",
                     marks=pytest.mark.xfail(strict=True, reason=ASYNCIO_EOF)),
        pytest.param(inprocess.asyncio_start_tls, id="asyncio-start_tls",
                     marks=pytest.mark.xfail(strict=True, reason=ASYNCIO_EOF)),
    ],
)  # fmt: skip
def test_a_clean_close_during_the_handshake_is_eof(client: Client) -> None:
    """The server reads the whole ClientHello and closes with a FIN: an EOF, not a reset."""
    _assert_classified(_attempt(client, inprocess.close_after_hello), Failure.EOF_ERROR)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "client",
    [
        *CLIENTS,
        pytest.param(inprocess.asyncio_handshake_timeout, id="asyncio-ssl_handshake_timeout",
                     marks=pytest.mark.xfail(strict=True, reason=HANDSHAKE_TIMEOUT)),
    ],
)  # fmt: skip
def test_silence_after_the_client_hello_is_a_timeout(client: Client) -> None:
    _assert_classified(_attempt(client, inprocess.silent_after_hello), Failure.GENERIC_TIMEOUT)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("client", CLIENTS)
def test_an_http_response_instead_of_a_server_hello_is_a_failed_handshake(client: Client) -> None:
    """Garbage where the ServerHello should be: a failed handshake, and no alert was sent."""
    _assert_classified(_attempt(client, inprocess.http_after_hello), Failure.SSL_FAILED_HANDSHAKE)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("client", CLIENTS)
def test_a_server_that_demands_a_version_the_client_refuses_sends_protocol_version(
    client: Client, leaf: Certificate
) -> None:
    context = inprocess.server_context(leaf.cert, leaf.key, minimum=ssl.TLSVersion.TLSv1_3)
    raised = _attempt(client, inprocess.tls_server(context), maximum=ssl.TLSVersion.TLSv1_2)
    _assert_classified(raised, Failure.SSL_FAILED_HANDSHAKE, "protocol_version")


@pytest.mark.timeout(5)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("alert", "description"),
    [
        (ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE, "handshake_failure"),  # OpenSSL: SSLV3_ALERT_...
        (ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME, "unrecognized_name"),  # OpenSSL: TLSV1_UNRECOGNIZED_NAME
        (ssl.ALERT_DESCRIPTION_INTERNAL_ERROR, "internal_error"),  # OpenSSL: TLSV1_ALERT_...
    ],
)
def test_a_servers_alert_is_a_failed_handshake_with_its_description(
    client: Client, leaf: Certificate, alert: int, description: str
) -> None:
    """The lab's broken server answers unrecognized_name (tests/test_lab.py); each OpenSSL
    spelling of an alert's reason is named by the alert's own description."""
    context = inprocess.server_context(leaf.cert, leaf.key, alert=alert)
    raised = _attempt(client, inprocess.tls_server(context))
    _assert_classified(raised, Failure.SSL_FAILED_HANDSHAKE, description)


# --- errors under a client library's wrappers (DoH, the helpers) ---------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_doh_resolver_is_connection_refused() -> None:
    """httpx wraps a refused connect in a bare OSError ("All connection attempts failed"): the
    refusal under it is what the record says, never an unknown failure."""
    import asyncio

    import certifi

    from probe.netx.clock import Clock
    from probe.netx.dns import parse_resolver
    from probe.netx.dnsloop import query_stream
    from probe.netx.pools import Pools

    async def ask() -> str | None:
        async with Pools() as pools:
            spec = parse_resolver(f"https://127.0.0.1:{_closed_port()}/dns-query")
            query = await query_stream(spec, "site.example", "A", 2.0, certifi.where(), Clock(), pools=pools)
            return query.failure

    assert asyncio.run(ask()) == Failure.CONNECTION_REFUSED


def test_the_error_under_wrappers_is_found_in_causes_contexts_and_groups() -> None:
    from probe.netx.classify import socket_error_under

    refused = ConnectionRefusedError(111, "Connect call failed")
    wrapper = OSError("All connection attempts failed")
    wrapper.__cause__ = ExceptionGroup("attempts", [refused, ConnectionRefusedError(111, "again")])
    outer = RuntimeError("a client's own error")
    outer.__context__ = wrapper
    assert socket_error_under(outer) is refused
    assert classify(socket_error_under(outer) or outer) == Failure.CONNECTION_REFUSED
    # Addresses that failed differently (no IPv6 route, IPv4 refused) are no one failure.
    wrapper.__cause__ = ExceptionGroup("attempts", [OSError(101, "Network is unreachable"), refused])
    assert socket_error_under(outer) is None
    # A wrapper of its own class (anyio's ConnectionFailed is an OSError without an errno) is looked under.
    wrapped = type("ConnectionFailed", (OSError,), {})("All connection attempts failed")
    wrapped.__cause__ = refused
    assert socket_error_under(wrapped) is refused
    reset = ConnectionResetError()  # no errno, no cause: its class is the failure
    assert socket_error_under(reset) is reset
    tls = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")
    outer.__context__ = tls
    assert socket_error_under(outer) is tls
