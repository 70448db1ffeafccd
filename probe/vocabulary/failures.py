"""Failure strings: what went wrong in a network step, as stable strings (OONI's spec df-007).

Observations store these, never exception text alone, so that old records can be compared with
new ones and re-judged. A failure outside this list is recorded as
`unknown_failure: <type>: <detail>` (see `unknown`). Mapping exceptions to these strings is
observe's job (`probe.netx.classify`); analysis only compares them.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
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
    HTTP_INVALID_RESPONSE = "http_invalid_response"
    HTTP_STATUS = "http_status_not_ok"  # a fetch that needed a 200 got another status
    UNSUPPORTED_URL = "unsupported_url"  # a URL the probe will not fetch (scheme, or an address on this machine)
    NO_CERTIFICATE = "no_certificate"  # an AIA URL answered with something that holds no certificate
    QUIC_CLOSED = "quic_connection_closed"  # the QUIC peer closed the connection (an error that is no TLS alert)


UNKNOWN_PREFIX = "unknown_failure: "
HELPER_REFUSED_PREFIX = "helper_refused: "


def unknown(detail: str) -> str:
    """A failure the vocabulary has no name for, with its detail, bounded in length."""
    return f"{UNKNOWN_PREFIX}{detail}"[:200]


def helper_refused(status: int, reason: str | None) -> str:
    return f"{HELPER_REFUSED_PREFIX}HTTP {status}" + (f": {reason}" if reason else "")


DENIALS = frozenset({Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER})
