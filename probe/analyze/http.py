"""HTTP rules: blockpages anywhere on the way, failures after the request, pages that differ.

Blockpages are matched against the project's own catalog and OONI's public fingerprint tables
(`fingerprints`). Without a fingerprint, a response may still be a suspected blockpage when strong
signs agree (see `_suspected`); that rule is tested against login redirects and CDN pages that
must stay `none`.

A page is compared with the helper's as OONI's web_connectivity does (status, then any of body
length, uncommon header names, title words), after normalising what honest pages vary per visitor
(addresses, times, tokens, numbers: `normalize_page_text`, which the helper applies to its side too).
A difference alone is a hint; it is blocking only with a blockpage's traits (`_blockpage_traits`).
"""

from __future__ import annotations

import html
import ipaddress
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from probe.analyze.bogons import is_bogon
from probe.analyze.common import AnalysisContext, Finding, Judgement, Outcome, RuleContext, helper_contrast, proven
from probe.analyze.fingerprints import FALSE_POSITIVE, WEAK
from probe.analyze.sites import registrable_domain
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import HelperHttp, HttpExchange, Observations
from probe.vocabulary.proofs import Proof

EXCHANGE_CODES: dict[str, Anomaly] = {
    Failure.CONNECTION_RESET: Anomaly.HTTP_RESET,
    Failure.GENERIC_TIMEOUT: Anomaly.HTTP_TIMEOUT,
    Failure.EOF_ERROR: Anomaly.HTTP_EOF,
}
BODY_LENGTH_RATIO = 0.7  # OONI web_connectivity's threshold
MIN_COMPARED_LENGTH = 1024  # two pages smaller than this match in length by chance: not compared
TITLE_WORD_BYTES = 5  # OONI: shorter words of a title are not compared
SCRUBBED = "[scrubbed]"  # where records had the volunteer's own address (probe.netx.own_addresses)
# OONI's common headers (never evidence of the same server), and the framing ones every server sends.
COMMON_HEADERS = frozenset({
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires", "x-powered-by",
    "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options", "etag",
    "x-content-type-options", "age", "via", "p3p", "x-xss-protection", "content-language", "cf-ray",
    "strict-transport-security", "link", "x-varnish",
    "content-length", "connection", "transfer-encoding", "keep-alive",
})  # fmt: skip


def _catalog_match(response: HttpExchange, headers: dict[str, str], ctx: AnalysisContext) -> dict[str, Any] | None:
    for fingerprint in ctx.catalogs.http_blockpages:
        if fingerprint.field == "body":
            value = response.body_prefix
        elif fingerprint.field == "title":
            value = response.title
        else:
            value = headers.get(fingerprint.field.split(":", 1)[1])
        if fingerprint.matches(value):
            return {
                "id": fingerprint.id,
                "name": fingerprint.name,
                "country": fingerprint.country,
                "matched": f"{fingerprint.field} of {response.url or 'the response'}",
            }
    return None


def blockpage_of(
    response: HttpExchange, ctx: AnalysisContext, j: Judgement, vague: list[HttpExchange] | None = None
) -> dict[str, Any] | None:
    """The blockpage a response is, by the catalog or a public fingerprint; a vague match is only
    recorded (and dropped when a known non-blockpage pattern matches too), the response put in `vague`."""
    headers = {name.lower(): value for name, value in response.headers}
    found = _catalog_match(response, headers, ctx)
    if found is not None:
        return found
    matches = ctx.catalogs.fingerprints.match_response(response.body_prefix, headers)
    strong = [row for row in matches if row.scope not in (WEAK, FALSE_POSITIVE)]
    if strong:
        best = max(strong, key=lambda row: row.confidence or 0)
        return {**best.describe(), "matched": f"{best.location} of {response.url or 'the response'}"}
    if any(row.scope == WEAK for row in matches) and not any(row.scope == FALSE_POSITIVE for row in matches):
        j.add(Anomaly.HTTP_BLOCKPAGE_VAGUE)
        if vague is not None:
            vague.append(response)
    return None


def judge_http(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    """The target's request and each redirect after it: a blockpage anywhere on the way, a failure
    of the target's own request, or a page unlike the helper's with a blockpage's traits."""
    requests, confirmed, ctx = obs.http_requests, rules.confirmed, rules.analysis
    if not requests:
        return Finding(Outcome.OK, confirmed, Blocking.HTTP)
    vague: list[HttpExchange] = []
    helper = rules.helper
    page = helper.http if helper is not None else None
    for response in requests:
        if response.status is None:
            continue
        found = blockpage_of(response, ctx, j, vague)
        if found is not None:
            j.add(Anomaly.HTTP_BLOCKPAGE)
            j.blockpage = found
            if response is requests[0] and _helper_fetched_the_same(response, page):
                # The helper got this very page from outside: the fingerprint matched the site's
                # own content (a page that links a regulator's register, say), not a censor's page.
                return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
            return proven(Outcome.BLOCKED, Blocking.HTTP, Proof.BLOCKPAGE_FINGERPRINT)
    first = requests[0]
    if first.status is None:
        j.add(EXCHANGE_CODES.get(first.failure or "", Anomaly.HTTP_FAILURE))
        said = helper_contrast(helper, "http", Blocking.HTTP, j)
        if said is not None:
            return said
        return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.HTTP)
    if page is not None and page.status is not None:
        # Unlike the helper's: a hint (the site's own variation, a CDN challenge, a geo-block), and
        # a blockpage only with its traits; even then unconfirmed, as a site's own geo-block looks alike.
        if _pages_differ(first, page):
            j.add(Anomaly.HTTP_DIFF)
            if _blockpage_traits(first, page.title):
                j.add(Anomaly.HTTP_BLOCKPAGE_TRAITS)
                return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
    elif any(_blockpage_traits(response, None) for response in vague):
        j.add(Anomaly.HTTP_BLOCKPAGE_TRAITS)  # vague words, blocking words and no helper to contrast
        return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
    suspected = _suspected(requests, rules.host, _resolver_addresses(obs), ctx)
    if suspected is not None:
        j.add(Anomaly.HTTP_BLOCKPAGE_SUSPECTED)
        j.blockpage = suspected
        return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
    return Finding(Outcome.OK, confirmed, Blocking.HTTP)


def _helper_fetched_the_same(ours: HttpExchange, theirs: HelperHttp | None) -> bool:
    """The helper's first response is this page: the same body, or the same page by OONI's measure."""
    if theirs is None or theirs.status is None:
        return False
    if theirs.body_sha256 and theirs.body_sha256 == ours.body_sha256:
        return True
    return not _pages_differ(ours, theirs)


def _pages_differ(ours: HttpExchange, theirs: HelperHttp) -> bool:
    """OONI's web_connectivity comparison: the same page when the status matches and any of body
    length, uncommon header names and title words match (each None when it cannot say)."""
    if ours.status != theirs.status:
        return True
    return not any((_lengths_match(ours, theirs), _headers_match(ours, theirs), _titles_match(ours, theirs)))


def _lengths_match(ours: HttpExchange, theirs: HelperHttp) -> bool | None:
    """Shorter over longer at least 0.7; normalised lengths when both sides have them (ours when the
    record's body prefix is the whole body; older helpers send none)."""
    mine, its = ours.body_length, theirs.body_length
    if ours.body_truncated or mine is None or its is None:
        return None
    if max(mine, its) < MIN_COMPARED_LENGTH or min(mine, its) <= 0:
        return None
    prefix, normalized = ours.body_prefix, theirs.body_length_normalized
    if normalized is not None and normalized > 0 and prefix is not None and len(prefix.encode()) >= mine:
        mine, its = len(normalize_page_text(prefix).encode()), normalized
    return min(mine, its) / max(mine, its, 1) >= BODY_LENGTH_RATIO


def _headers_match(ours: HttpExchange, theirs: HelperHttp) -> bool | None:
    """OONI's rule on header names: one uncommon name in common. Older helpers send no names; pages
    with no uncommon header (most small servers') say nothing."""
    names = theirs.header_names
    if names is None:
        return None
    mine = {str(pair[0]).lower() for pair in ours.headers if pair} - COMMON_HEADERS
    its = {name.lower() for name in names} - COMMON_HEADERS
    if not mine or not its:
        return None
    return bool(mine & its)


def _title_words(title: str) -> set[str]:
    return {word for word in title.split(" ") if len(word.encode()) >= TITLE_WORD_BYTES}


def _titles_match(ours: HttpExchange, theirs: HelperHttp) -> bool | None:
    """The normalised titles are equal, or have the same words of five bytes or more (OONI)."""
    if not ours.title or not theirs.title:
        return None
    mine, its = normalize_page_text(ours.title), normalize_page_text(theirs.title)
    if mine == its:
        return True
    words = _title_words(mine), _title_words(its)
    return words[0] == words[1] if any(words) else None


# --- What honest pages vary per visitor, normalised (the helper applies the same to its page) ---

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w)")
_IPV6 = re.compile(r"(?<![\w:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])")
_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|"
    "январ|феврал|март|апрел|ма[йя]|июн|июл|август|сентябр|октябр|ноябр|декабр"
)
_DATETIME = re.compile(
    r"(?<!\w)(?:"
    r"\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:z(?!\w)|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[ap]\.?m(?!\w)\.?)?"
    r"|\d{1,2}[./]\d{1,2}[./]\d{2,4}"
    rf"|(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\w*\.?,?\s+\d{{4}}"
    rf"|(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+)?(?:{_MONTHS})\w*\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    r")"
)
_TOKEN = re.compile(r"(?<![\w+/-])[\w+/-]{16,}={0,2}(?![\w+/=-])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SPACE = re.compile(r"\s+")


def _ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return match.group()
    return "{ip}"


def _token(match: re.Match[str]) -> str:
    text = match.group()
    return "{tok}" if any(c.isdigit() for c in text) and any(c.isalpha() for c in text) else text


def normalize_page_text(text: str) -> str:
    """`text` lowercased with what differs between two honest visits replaced: addresses (IPv4, IPv6,
    and the records' `[scrubbed]` mark), dates and times, long tokens (hex, base64: CSRF tokens,
    request ids, nonces), numbers, runs of white space. Linear: every pattern is bounded."""
    text = text.lower().replace(SCRUBBED, "{ip}")
    text = _IPV6.sub(_ipv6, _IPV4.sub("{ip}", text))
    text = _TOKEN.sub(_token, _DATETIME.sub("{t}", text))
    return _SPACE.sub(" ", _NUMBER.sub("0", text)).strip()


# Words of blockpages, English, Russian and Kazakh (matched in normalised, lowercased text).
_BLOCKING_WORDS = re.compile(
    r"\bblocked\b|\baccess (?:is |has been )?denied\b|\brestricted\b|\bnot available\b|\bprohibited\b"
    r"|заблок|блокировк|ограничен|доступ запрещ|бұғатта|шектелген|тыйым салын|қолжетімсіз"
)


def _visible_text(page: str) -> str:
    """The text of an HTML page without its tags, scripts and styles, in linear time."""
    lower, out, at = page.lower(), [], 0
    while at < len(page):
        start = lower.find("<", at)
        if start < 0:
            out.append(page[at:])
            break
        out.append(page[at:start])
        end = start
        for hidden in ("script", "style"):
            if lower.startswith(hidden, start + 1):
                closing = lower.find("</" + hidden, start)
                end = closing if closing >= 0 else len(page)
        end = lower.find(">", end)
        at = end + 1 if end >= 0 else len(page)
    return html.unescape(" ".join(out))


def _blockpage_traits(response: HttpExchange, site_title: str | None) -> bool:
    """Blocking words in the page's title or text, and none of the site's own content (the site's
    title, as the helper saw it, is not on the page)."""
    page = normalize_page_text(f"{response.title or ''} {_visible_text(response.body_prefix or '')}")
    if not _BLOCKING_WORDS.search(page):
        return False
    own = normalize_page_text(site_title or "")
    return not own or own not in page


def _resolver_addresses(obs: Observations) -> list[str]:
    """The addresses of the resolvers the system asked (where an ISP runs its own servers)."""
    found: list[str] = []
    if obs.dns is None:
        return found
    for lookup in obs.dns.lookups("system_udp", "system"):
        if "://" not in lookup.resolver:
            continue
        host = urlsplit(lookup.resolver).hostname
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
    requests: tuple[HttpExchange, ...], host: str, resolvers: list[str], ctx: AnalysisContext
) -> dict[str, Any] | None:
    """A redirect to another site whose URL carries the original host or URL, answered from the
    network of the resolver the system asks (or a private address): how ISPs send visitors to a
    blockpage. A login redirect (another site, carrying the URL) is answered from the site's own
    public network, and a CDN's interstitial comes from the site's own address: neither is one."""
    for previous, response in zip(requests, requests[1:], strict=False):
        location = previous.location
        if not location or response.status is None:
            continue
        url = str(response.url or "")  # where the probe went, as a browser reads the Location
        target = urlsplit(url).hostname or ""
        if registrable_domain(target) == registrable_domain(host):
            continue
        carried = unquote(urlsplit(url).query + urlsplit(url).path).lower()
        if host.lower() not in carried:
            continue
        if _in_resolver_network(response.address, resolvers, ctx):
            return {
                "id": "suspected",
                "name": f"redirect to {target}, carrying the original host, served from the resolver's network",
                "country": None,
                "matched": f"redirect {response.redirect_index} to {url}",
            }
    return None
