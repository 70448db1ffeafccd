"""HTTP rules: blockpages anywhere on the way, failures after the request, pages that differ."""

from __future__ import annotations

from typing import Any

from probe.analyze.common import AnalysisContext, Judgement, Outcome, helper_failed_at, helper_view
from probe.vocabulary.anomalies import Anomaly
from probe.vocabulary.failures import Failure

_EXCHANGE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.HTTP_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.HTTP_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.HTTP_EOF,
}


def _blockpage_match(response: dict[str, Any], ctx: AnalysisContext) -> dict[str, Any] | None:
    headers = {name.lower(): value for name, value in response["headers"]}
    for fingerprint in ctx.catalogs.http_blockpages:
        if fingerprint.field == "body":
            value = response.get("body_prefix")
        elif fingerprint.field == "title":
            value = response.get("title")
        else:
            value = headers.get(fingerprint.field.split(":", 1)[1])
        if fingerprint.matches(value):
            return {
                "id": fingerprint.id,
                "name": fingerprint.name,
                "country": fingerprint.country,
                "matched": f"{fingerprint.field} of {response.get('url') or 'the response'}",
            }
    return None


def judge_http(obs: dict[str, Any], confirmed: bool, ctx: AnalysisContext, j: Judgement) -> Outcome:
    """The target's request and each redirect after it: a blockpage anywhere on the way, or a
    failure of the target's own request."""
    requests = obs["http_requests"]
    if not requests:
        return Outcome.OK
    for response in requests:
        if response["status"] is None:
            continue
        found = _blockpage_match(response, ctx)
        if found is not None:
            j.add(Anomaly.HTTP_BLOCKPAGE)
            j.blockpage = found
            return Outcome.BLOCKED
    first = requests[0]
    helper = helper_view(obs)
    if first["status"] is None:
        j.add(_EXCHANGE_CODES.get(first["failure"], Anomaly.HTTP_FAILURE))
        helper_failed = helper_failed_at(helper, "http")
        if helper_failed:
            j.add(Anomaly.HELPER_SAME_FAILURE)
            return Outcome.DOWN
        return Outcome.BLOCKED if confirmed or helper_failed is False else Outcome.UNKNOWN
    page = helper.get("http") if helper is not None else None
    if isinstance(page, dict) and page.get("status") is not None and _pages_differ(first, page):
        j.add(Anomaly.HTTP_DIFF)
        return Outcome.BLOCKED
    return Outcome.OK


BODY_LENGTH_RATIO = 0.7  # OONI web_connectivity's threshold


def _pages_differ(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """OONI's comparison: status, title, and body length (shorter over longer below 0.7)."""
    if ours["status"] != theirs["status"]:
        return True
    if ours.get("title") and theirs.get("title") and ours["title"] != theirs["title"]:
        return True
    lengths = (ours.get("body_length") or 0, theirs.get("body_length") or 0)
    return bool(max(lengths) > 0 and min(lengths) / max(lengths) < BODY_LENGTH_RATIO)
