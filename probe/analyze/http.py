"""HTTP rules: blockpages anywhere on the way, failures after the request, pages that differ.

Blockpages are matched against the project's own catalog and OONI's public fingerprint tables
(`fingerprints`). Without a fingerprint, a response may still be a suspected blockpage when strong
signs agree (see `_suspected`); that rule is tested against login redirects and CDN pages that
must stay `none`.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from probe.analyze.bogons import is_bogon
from probe.analyze.common import AnalysisContext, Finding, Judgement, Outcome, helper_contrast, helper_view
from probe.analyze.fingerprints import FALSE_POSITIVE, WEAK
from probe.analyze.sites import registrable_domain
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure

EXCHANGE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.HTTP_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.HTTP_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.HTTP_EOF,
}
BODY_LENGTH_RATIO = 0.7  # OONI web_connectivity's threshold


def _catalog_match(response: dict[str, Any], headers: dict[str, str], ctx: AnalysisContext) -> dict[str, Any] | None:
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


def blockpage_of(response: dict[str, Any], ctx: AnalysisContext, j: Judgement) -> dict[str, Any] | None:
    """The blockpage a response is, by the catalog or a public fingerprint; a vague match is only
    recorded (and dropped when a known non-blockpage pattern matches too)."""
    headers = {name.lower(): value for name, value in response["headers"]}
    found = _catalog_match(response, headers, ctx)
    if found is not None:
        return found
    matches = ctx.catalogs.fingerprints.match_response(response.get("body_prefix"), headers)
    strong = [row for row in matches if row.scope not in (WEAK, FALSE_POSITIVE)]
    if strong:
        best = max(strong, key=lambda row: row.confidence or 0)
        return {**best.describe(), "matched": f"{best.location} of {response.get('url') or 'the response'}"}
    if any(row.scope == WEAK for row in matches) and not any(row.scope == FALSE_POSITIVE for row in matches):
        j.add(Anomaly.HTTP_BLOCKPAGE_VAGUE)
    return None


def judge_http(obs: dict[str, Any], confirmed: bool, ctx: AnalysisContext, host: str, j: Judgement) -> Finding:
    """The target's request and each redirect after it: a blockpage anywhere on the way, a failure
    of the target's own request, or a page unlike the helper's."""
    requests = obs["http_requests"]
    if not requests:
        return Finding(Outcome.OK, confirmed, Blocking.HTTP)
    for response in requests:
        if response["status"] is None:
            continue
        found = blockpage_of(response, ctx, j)
        if found is not None:
            j.add(Anomaly.HTTP_BLOCKPAGE)
            j.blockpage = found
            return Finding(Outcome.BLOCKED, True, Blocking.HTTP)
    first = requests[0]
    helper = helper_view(obs)
    if first["status"] is None:
        j.add(EXCHANGE_CODES.get(first["failure"], Anomaly.HTTP_FAILURE))
        said = helper_contrast(helper, "http", Blocking.HTTP, j)
        if said is not None:
            return said
        return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.HTTP)
    page = helper.get("http") if helper is not None else None
    if isinstance(page, dict) and page.get("status") is not None and _pages_differ(first, page):
        j.add(Anomaly.HTTP_DIFF)
        return Finding(Outcome.BLOCKED, True, Blocking.HTTP)
    suspected = _suspected(requests, host, _resolver_addresses(obs), ctx)
    if suspected is not None:
        j.add(Anomaly.HTTP_BLOCKPAGE_SUSPECTED)
        j.blockpage = suspected
        return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
    return Finding(Outcome.OK, confirmed, Blocking.HTTP)


def _pages_differ(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """OONI's comparison: status, title, and body length (shorter over longer below 0.7)."""
    if ours["status"] != theirs["status"]:
        return True
    if ours.get("title") and theirs.get("title") and ours["title"] != theirs["title"]:
        return True
    lengths = (ours.get("body_length") or 0, theirs.get("body_length") or 0)
    return bool(max(lengths) > 0 and min(lengths) / max(lengths) < BODY_LENGTH_RATIO)


def _resolver_addresses(obs: dict[str, Any]) -> list[str]:
    """The addresses of the resolvers the system asked (where an ISP runs its own servers)."""
    found = []
    dns = obs.get("dns") or {}
    for key in ("system_udp", "system"):
        lookup = dns.get(key)
        if lookup is None or "://" not in lookup["resolver"]:
            continue
        host = urlsplit(lookup["resolver"]).hostname
        if host:
            found.append(host)
    return found


def _in_resolver_network(address: str | None, resolvers: list[str], ctx: AnalysisContext) -> bool:
    """A special-purpose address, or one in the /24 (IPv4) or /48 (IPv6) of a resolver the system asks."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if is_bogon(str(ip), ctx.documentation_is_public):
        return True
    for resolver in resolvers:
        try:
            network = ipaddress.ip_network(f"{resolver}/{24 if ':' not in resolver else 48}", strict=False)
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


def _suspected(
    requests: list[dict[str, Any]], host: str, resolvers: list[str], ctx: AnalysisContext
) -> dict[str, Any] | None:
    """A redirect to another site whose URL carries the original host or URL, answered from the
    network of the resolver the system asks (or a private address): how ISPs send visitors to a
    blockpage. A login redirect (another site, carrying the URL) is answered from the site's own
    public network, and a CDN's interstitial comes from the site's own address: neither is one."""
    for previous, response in zip(requests, requests[1:], strict=False):
        location = previous.get("location")
        if not location or response["status"] is None:
            continue
        url = urljoin(previous["url"], location)
        target = urlsplit(url).hostname or ""
        if registrable_domain(target) == registrable_domain(host):
            continue
        carried = unquote(urlsplit(url).query + urlsplit(url).path).lower()
        if host.lower() not in carried:
            continue
        if _in_resolver_network(response.get("address"), resolvers, ctx):
            return {
                "id": "suspected",
                "name": f"redirect to {target}, carrying the original host, served from the resolver's network",
                "country": None,
                "matched": f"redirect {response.get('redirect_index')} to {url}",
            }
    return None
