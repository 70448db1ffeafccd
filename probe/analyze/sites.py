"""Which names belong to one site: the registrable domain, from the Public Suffix List.

`tldextract` carries a snapshot of the list in its package and is told never to fetch a newer one
(the probe makes no request of its own); names under no public suffix (a lab's `.lab`, an
intranet) fall back to their last two labels.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tldextract


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    import tldextract  # here: with `requests` under it, 60 ms of a run's start, and most records never ask

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@functools.lru_cache(maxsize=4096)
def registrable_domain(name: str) -> str:
    name = name.lower().rstrip(".").removeprefix("*.")
    parts = _extractor()(name)
    if parts.suffix and parts.domain:
        return f"{parts.domain}.{parts.suffix}"
    return ".".join(name.split(".")[-2:])


def same_site(host: str, names: list[str]) -> bool:
    """Whether any of `names` (a certificate's) is of the same site as `host` (`www.` only, say)."""
    mine = registrable_domain(host)
    return any(registrable_domain(name) == mine for name in names if name.strip())
