"""Asking a control vantage (`probe helper serve`) what a target looks like from outside.

Only the target's URL is sent. An unreachable or refusing helper is recorded as such, and the
verdicts then rest on what the probe knows alone. The questions are coroutines on the run's loop:
one pooled HTTP client per helper, on a few kept connections (`HELPER_CONNECTIONS`), made on first
use and held by the run's pools (`netx.pools`), which close with the run. Where the helper saw us
come from (`client_address` in its answer) is ours, never the record's: it is taken out of the
answer here.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.dns import _verifying_context
from probe.netx.pools import Pools
from probe.vocabulary.failures import Failure, helper_refused, unknown
from probe.vocabulary.observations import HelperAnswer
from probe.vocabulary.observations_codec import helper_response

if TYPE_CHECKING:
    import httpx2

API_PATH = "v1/measure"
# Questions one probe has in flight to one helper at once: a polite client, whose few connections
# are kept, so that fifty probes are two hundred connections at most, not one per target.
HELPER_CONNECTIONS = 4


def _client(helper_url: str, roots: str, pools: Pools) -> httpx2.AsyncClient:
    """The run's pooled client for a helper (and roots file): at most HELPER_CONNECTIONS connections."""

    import httpx2  # here, as in `ask_helper`: a run without a helper never imports it

    def make() -> httpx2.AsyncClient:
        limits = httpx2.Limits(max_connections=HELPER_CONNECTIONS, max_keepalive_connections=HELPER_CONNECTIONS)
        return httpx2.AsyncClient(verify=_verifying_context(roots), limits=limits, http1=True, http2=False,
                                  follow_redirects=False)  # fmt: skip

    return pools.client(("helper", helper_url, roots), make)


def _classify(exc: BaseException) -> str:
    """What failed, in the project's words: the HTTP client's error, or the socket's under it."""
    import httpx2

    if isinstance(exc, (httpx2.TimeoutException, TimeoutError)):
        return Failure.GENERIC_TIMEOUT
    underneath = errors.socket_error_under(exc)  # the client wraps the socket's own error (a refusal, a handshake)
    if underneath is not None and underneath is not exc:
        if isinstance(underneath, ssl.SSLError):
            return Failure.SSL_FAILED_HANDSHAKE
        return errors.classify(underneath)
    if isinstance(exc, httpx2.HTTPError):
        return unknown(str(exc) or type(exc).__name__)
    return errors.classify(exc)


async def ask_helper(
    helper_url: str, target_url: str, token: str | None, step_timeout: float, roots: str, clock: Clock, pools: Pools
) -> tuple[HelperAnswer, str | None]:
    """One question to one helper (on the run's pooled client for it, in `pools`), recorded whatever
    happens; and where the helper saw us come from."""
    import httpx2  # here: 20 ms of every run's start otherwise, for runs with a helper only

    t0 = clock.now()
    status: int | None = None
    failure: str | None = None
    body: Any = None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = helper_url.rstrip("/") + "/" + API_PATH
    # The helper takes up to four steps (DNS, TCP, TLS, HTTP), each bounded by the same timeout; a
    # question may first wait for one of the few connections.
    timeout = httpx2.Timeout(connect=step_timeout, read=4 * step_timeout + 5, write=step_timeout,
                             pool=4 * step_timeout + 10)  # fmt: skip
    try:  # no pools (a RuntimeError) is a bug, never an observation: not caught here
        reply = await _client(helper_url, roots, pools).post(
            endpoint, json={"url": target_url}, headers=headers, timeout=timeout
        )
        status = reply.status_code
        if reply.headers.get("Content-Type", "").startswith("application/json"):
            body = reply.json()
        if status != 200 or not isinstance(body, dict):
            reason = body.get("error") if isinstance(body, dict) else None
            failure, body = helper_refused(status, reason if isinstance(reason, str) else None), None
    except (httpx2.HTTPError, OSError, ValueError) as exc:
        failure, body = _classify(exc), None
    seen = body.pop("client_address", None) if isinstance(body, dict) else None
    answer = HelperAnswer(helper_url, status, failure, helper_response(body), t0, clock.now())
    return answer, seen if isinstance(seen, str) else None


class HelperQuestions:
    """Ask every helper in the background while the probe measures; collect the answers after.

    A question waits for one of the helper's few connections, then takes at most its own deadline:
    collecting waits at most `bound` seconds from the moment it was asked."""

    def __init__(
        self, helpers: list[str], target_url: str, token: str | None, step_timeout: float, roots: str, clock: Clock,
        pools: Pools,
    ) -> None:  # fmt: skip
        self.helpers = helpers
        self.bound = 2 * (4 * step_timeout + 10)
        loop = asyncio.get_running_loop()
        self._asked = [
            loop.create_task(ask_helper(helper, target_url, token, step_timeout, roots, clock, pools))
            for helper in helpers
        ]

    async def collected(self) -> tuple[list[HelperAnswer], list[str]]:
        """Every helper's answer (a timeout for one that did not answer within the bound), and where
        the helpers saw this probe come from (never for the record)."""
        if self._asked:
            await asyncio.wait(self._asked, timeout=self.bound)
        answers, seen = [], []
        for helper, asked in zip(self.helpers, self._asked, strict=True):
            if asked.done() and not asked.cancelled() and asked.exception() is None:
                answer, address = asked.result()
                answers.append(answer)
                if address is not None:
                    seen.append(address)
                continue
            asked.cancel()
            if asked.done() and not asked.cancelled() and asked.exception() is not None:
                raise asked.exception()  # type: ignore[misc]  # a bug: the record's error
            answers.append(HelperAnswer(helper, None, Failure.GENERIC_TIMEOUT, None, None, None))
        return answers, seen

    def cancel(self) -> None:
        for asked in self._asked:
            asked.cancel()


def ask_address(helper_url: str, token: str | None, timeout: float, roots: str) -> str | None:
    """Where a helper sees this probe come from (`GET /v1/address`), or None. Never recorded: the
    caller looks up its network's AS and country, then scrubs the address. Asked once a helper
    before the run: a session of its own, closed after."""
    import requests  # here: 30 ms of every run's start otherwise, for a question asked only with a helper

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with requests.Session() as session:
            reply = session.get(
                helper_url.rstrip("/") + "/v1/address", headers=headers, timeout=timeout, verify=roots,
                allow_redirects=False,
            )  # fmt: skip
            body = reply.json() if reply.status_code == 200 else None
    except (requests.exceptions.RequestException, ValueError):
        return None
    address = body.get("client_address") if isinstance(body, dict) else None
    return address if isinstance(address, str) else None
