"""Asking a control vantage (`probe helper serve`) what a target looks like from outside.

Only the target's URL is sent. An unreachable or refusing helper is recorded as such, and the
verdicts then rest on what the probe knows alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import requests

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.vocabulary.failures import Failure, helper_refused, unknown

API_PATH = "v1/measure"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.Timeout):
        return Failure.GENERIC_TIMEOUT
    if isinstance(exc, requests.exceptions.SSLError):
        return Failure.SSL_FAILED_HANDSHAKE
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        for needle, failure in (
            ("Network is unreachable", Failure.NETWORK_UNREACHABLE),
            ("Connection refused", Failure.CONNECTION_REFUSED),
            ("Connection reset", Failure.CONNECTION_RESET),
            ("No route to host", Failure.HOST_UNREACHABLE),
        ):
            if needle in text:
                return failure
        return unknown(text)
    return errors.classify(exc)


_LOCAL = threading.local()


def _session() -> requests.Session:
    """One pooled session per worker thread: the helper's TLS connection is kept and reused across
    targets (a Session is not safe to share between threads; one a thread is)."""
    session = getattr(_LOCAL, "session", None)
    if session is None:
        session = _LOCAL.session = requests.Session()
    return session


def ask_helper(
    helper_url: str, target_url: str, token: str | None, step_timeout: float, roots: str, clock: Clock
) -> dict[str, Any]:
    """One question to one helper, recorded whatever happens."""
    record: dict[str, Any] = {
        "helper": helper_url,
        "status": None,
        "failure": None,
        "response": None,
        "t0": clock.now(),
        "t": None,
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = helper_url.rstrip("/") + "/" + API_PATH
    try:
        # The helper takes up to four steps (DNS, TCP, TLS, HTTP), each bounded by the same timeout.
        reply = _session().post(
            endpoint,
            json={"url": target_url},
            headers=headers,
            timeout=(step_timeout, 4 * step_timeout + 5),
            verify=roots,
            allow_redirects=False,
        )
        record["status"] = reply.status_code
        body = reply.json() if reply.headers.get("Content-Type", "").startswith("application/json") else None
        if reply.status_code == 200 and isinstance(body, dict):
            record["response"] = body
        else:
            reason = body.get("error") if isinstance(body, dict) else None
            record["failure"] = helper_refused(reply.status_code, reason)
    except (requests.exceptions.RequestException, ValueError) as exc:
        record["failure"] = _classify(exc)
    record["t"] = clock.now()
    return record


# Questions one probe has in flight to one helper at once: a polite client, whose few connections
# are kept (each worker thread keeps its session), so that fifty probes are two hundred
# connections at most, not one per target.
HELPER_CONNECTIONS = 4


class _HelperLine:
    """Long-lived daemon workers asking one helper, in the order questions came."""

    def __init__(self, workers: int) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True, name="helper").start()

    def _work(self) -> None:
        while True:
            self.jobs.get()()


_LINES: dict[str, _HelperLine] = {}
_LINES_LOCK = threading.Lock()


def _line(helper_url: str) -> _HelperLine:
    with _LINES_LOCK:
        line = _LINES.get(helper_url)
        if line is None:
            line = _LINES[helper_url] = _HelperLine(HELPER_CONNECTIONS)
        return line


class HelperQuestions:
    """Ask every helper in the background while the probe measures; collect the answers after.

    A question waits for one of the helper's few connections, then takes at most its own deadline:
    collecting waits at most twice that from the moment it was asked."""

    def __init__(
        self, helpers: list[str], target_url: str, token: str | None, step_timeout: float, roots: str, clock: Clock
    ) -> None:
        self.results: list[dict[str, Any] | None] = [None] * len(helpers)
        self.answered: list[Future[None]] = [Future() for _ in helpers]
        self.helpers = helpers
        self.bound = 2 * (4 * step_timeout + 10)
        self.until = time.monotonic() + self.bound
        for index, helper in enumerate(helpers):
            _line(helper).jobs.put(
                functools.partial(self._ask, index, helper, target_url, token, step_timeout, roots, clock)
            )

    def _ask(self, index: int, *args: Any) -> None:
        try:
            self.results[index] = ask_helper(*args)
        finally:
            self.answered[index].set_result(None)

    def waits(self) -> list[Future[None]]:
        return list(self.answered)

    def collect(self) -> list[dict[str, Any]]:
        for answered in self.answered:
            with contextlib.suppress(FutureTimeout):
                answered.result(max(0.0, self.until - time.monotonic()))
        return self._answers()

    async def collected(self) -> list[dict[str, Any]]:
        """`collect` on the run's event loop: the answers are awaited, no thread waits for them."""
        waits = [asyncio.wrap_future(answered) for answered in self.answered]
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, self.until - time.monotonic()))
        return self._answers()

    def _answers(self) -> list[dict[str, Any]]:
        collected = []
        for index, helper in enumerate(self.helpers):
            result = self.results[index]
            if result is None:
                result = {"helper": helper, "status": None, "failure": Failure.GENERIC_TIMEOUT,
                          "response": None, "t0": None, "t": None}  # fmt: skip
            collected.append(result)
        return collected


def ask_address(helper_url: str, token: str | None, timeout: float, roots: str) -> str | None:
    """Where a helper sees this probe come from (`GET /v1/address`), or None. Never recorded: the
    caller looks up its network's AS and country, then scrubs the address."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = _session().get(
            helper_url.rstrip("/") + "/v1/address", headers=headers, timeout=timeout, verify=roots,
            allow_redirects=False,
        )  # fmt: skip
        body = reply.json() if reply.status_code == 200 else None
    except (requests.exceptions.RequestException, ValueError):
        return None
    address = body.get("client_address") if isinstance(body, dict) else None
    return address if isinstance(address, str) else None
