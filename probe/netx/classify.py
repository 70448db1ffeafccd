"""Map every exception a network step raises to a stable failure string (the vocabulary's).

Like OONI's netxlite: the primitives below classify their own errors, so that nothing above them
sees an exception's text alone.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
from types import FrameType

from probe.vocabulary.failures import Failure, unknown

_ERRNO_FAILURES = {
    errno.ECONNRESET: Failure.CONNECTION_RESET,
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ETIMEDOUT: Failure.GENERIC_TIMEOUT,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.EPIPE: Failure.CONNECTION_RESET,
    errno.ECONNABORTED: Failure.CONNECTION_RESET,
}


def classify(exc: BaseException) -> str:
    """Return the stable failure string for an exception raised by a network operation."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return Failure.GENERIC_TIMEOUT
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return Failure.EOF_ERROR
    if isinstance(exc, ssl.SSLError):
        if "UNEXPECTED_EOF" in str(exc) or "EOF occurred" in str(exc):
            return Failure.EOF_ERROR
        return Failure.SSL_FAILED_HANDSHAKE
    if isinstance(exc, socket.gaierror):
        return classify_gai(exc.errno)
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAILURES:
        return _ERRNO_FAILURES[exc.errno]
    if isinstance(exc, ConnectionResetError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, EOFError):
        return Failure.EOF_ERROR
    name = type(exc).__name__
    detail = str(exc).strip() or name
    return unknown(f"{name}: {detail}")


def socket_error_under(exc: BaseException) -> OSError | ssl.SSLError | None:
    """The socket's or TLS's own error under a client library's wrappers (httpx's, anyio's), among
    the causes and contexts: the first OSError that is not a wrapper, or a TLS error. A wrapper is an
    OSError without an errno raised `from` another error ("All connection attempts failed"). An
    exception group (several addresses tried) gives its members' error when they all failed alike,
    else None: an IPv6 route missing and an IPv4 refusal are not one failure. None when there is none."""
    cause: BaseException | None = exc
    for _ in range(16):  # a chain is short; a cycle is not followed for ever
        if cause is None:
            return None
        if isinstance(cause, BaseExceptionGroup):
            found = [socket_error_under(member) for member in cause.exceptions]
            alike = {classify(error) for error in found if error is not None}
            return found[0] if found and None not in found and len(alike) == 1 else None
        if isinstance(cause, ssl.SSLError):
            return cause
        wrapper = cause.__cause__ is not None and getattr(cause, "errno", None) is None
        if isinstance(cause, OSError) and not type(cause).__module__.startswith("http") and not wrapper:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def classify_gai(code: int | None) -> str:
    """getaddrinfo's error codes, as far as glibc tells them apart."""
    if code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return Failure.DNS_NXDOMAIN if code == socket.EAI_NONAME else Failure.DNS_NO_ANSWER
    if code == socket.EAI_AGAIN:
        return Failure.DNS_TEMPORARY
    if code == socket.EAI_FAIL:
        return Failure.DNS_SERVFAIL
    return unknown(f"getaddrinfo error {code}")


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


MAX_ERROR_CHARS = 1000
_FRAMES = 4  # the innermost frames: where a bug is
# An absolute path (POSIX or Windows) up to its last part: a home directory names its owner.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^/\s'\"()<>,;]+/)+|\b[A-Za-z]:\\(?:[^\\\s'\"()<>,;]+\\)+")


def short_traceback(exc: BaseException) -> str:
    """A probe bug as a record may keep it: the innermost frames, each named by its module
    (`probe/observe/http.py:123 in read_body`), then `Type: message`; never an absolute path, so
    never the name of the volunteer's home directory, wherever the probe is installed."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(f"  {_module_path(tb.tb_frame)}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}")
        tb = tb.tb_next
    message = _without_paths(" ".join(str(exc).split()))[:600]
    lines = [*frames[-_FRAMES:], f"{type(exc).__name__}: {message}" if message else type(exc).__name__]
    return "\n".join(lines)[-MAX_ERROR_CHARS:]


def _module_path(frame: FrameType) -> str:
    """`probe/observe/http.py`: the frame's module as a path inside its package, however and
    wherever the package was installed; the file's name alone for code that is no module."""
    filename = frame.f_code.co_filename.replace("\\", "/")
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str) or not module or module == "__main__" or not filename.endswith(".py"):
        return filename.rsplit("/", 1)[-1]
    return module.replace(".", "/") + ("/__init__.py" if filename.endswith("/__init__.py") else ".py")


def _without_paths(text: str) -> str:
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        text = text.replace(home, "~")
    return _ABSOLUTE_PATH.sub("", text)
