"""Map every network error to a stable failure string (OONI's vocabulary, spec df-007).

Observations store these strings, never exception text alone, so that old records can be
compared with new ones and re-judged.
"""

from __future__ import annotations

import errno
import socket
import ssl

CONNECTION_RESET = "connection_reset"
CONNECTION_REFUSED = "connection_refused"
GENERIC_TIMEOUT = "generic_timeout_error"
EOF_ERROR = "eof_error"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_REFUSED = "dns_refused_error"
DNS_SERVFAIL = "dns_servfail_error"
DNS_TEMPORARY = "dns_temporary_failure"
DNS_BOGUS_REPLY = "dns_bogus_reply"

_ERRNO_FAILURES = {
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.EPIPE: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_RESET,
}

# The network itself is missing: nothing can be said about the site.
LOCAL_NETWORK_FAILURES = frozenset({NETWORK_UNREACHABLE})


def classify(exc: BaseException) -> str:
    """Return the stable failure string for an exception raised by a network operation."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return GENERIC_TIMEOUT
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return EOF_ERROR
    if isinstance(exc, ssl.SSLError):
        if "UNEXPECTED_EOF" in str(exc) or "EOF occurred" in str(exc):
            return EOF_ERROR
        return SSL_FAILED_HANDSHAKE
    if isinstance(exc, socket.gaierror):
        return classify_gai(exc.errno)
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]
    if isinstance(exc, ConnectionResetError):
        return CONNECTION_RESET
    if isinstance(exc, EOFError):
        return EOF_ERROR
    name = type(exc).__name__
    detail = str(exc).strip() or name
    return f"unknown_failure: {name}: {detail}"[:200]


def classify_gai(code: int | None) -> str:
    """getaddrinfo's error codes, as far as glibc tells them apart."""
    if code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return DNS_NXDOMAIN if code == socket.EAI_NONAME else DNS_NO_ANSWER
    if code == socket.EAI_AGAIN:
        return DNS_TEMPORARY
    if code == socket.EAI_FAIL:
        return DNS_SERVFAIL
    return f"unknown_failure: getaddrinfo error {code}"


_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")
_TLSV1_ALERTS = frozenset(
    {"UNRECOGNIZED_NAME", "CERTIFICATE_UNOBTAINABLE", "UNSUPPORTED_EXTENSION", "BAD_CERTIFICATE_STATUS_RESPONSE"}
)


def alert_description(exc: BaseException) -> str | None:
    """The TLS alert a peer sent, when the handshake ended with one (e.g. `handshake_failure`)."""
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = (getattr(exc, "reason", None) or "").upper()
    for prefix in _ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix) :].lower()
    if reason.startswith("TLSV1_") and reason[6:] in _TLSV1_ALERTS:
        return reason[6:].lower()
    return None
