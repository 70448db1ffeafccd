"""Reading the reference endpoints: the shipped `probe/data/reference_endpoints.json`, or the file
`--reference-endpoints FILE` names instead (a lab, another country, a monitoring group's own list).

The document holds `countries` (per ISO 3166 code: its `domestic` endpoints, with the sources that
make them domestic) and `foreign` endpoints; every entry names its `sources`. Every error names the
file and the entry (`countries.KZ.domestic[2]`), never a traceback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from probe.vocabulary.errors import InputError
from probe.vocabulary.netstate import Endpoint, Kind, Side

RESOLVER_SCHEMES = ("udp://", "tcp://", "tls://", "https://")


class ReferenceEndpointsError(InputError):
    """A reference endpoints file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class ReferenceEndpoints:
    """The catalog: domestic endpoints per country, foreign ones for all, and where it came from."""

    countries: dict[str, tuple[Endpoint, ...]]
    foreign: tuple[Endpoint, ...]
    origin: str  # "builtin:reference_endpoints@VERSION", or "NAME sha256:PREFIX" for a file given

    def for_country(self, country: str | None) -> tuple[Endpoint, ...]:
        """The endpoints a run in `country` asks: that country's domestic ones (none for a country the
        catalog does not know, or when the country is not known), then the foreign ones."""
        domestic = self.countries.get(country.upper(), ()) if country else ()
        return (*domestic, *self.foreign)

    def describe(self) -> dict[str, Any]:
        return {"catalog": self.origin, "countries": sorted(self.countries), "foreign": len(self.foreign)}


def _text(entry: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ReferenceEndpointsError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _endpoint(entry: Any, side: Side, where: str) -> Endpoint:
    if not isinstance(entry, dict):
        raise ReferenceEndpointsError(f"{where}: an endpoint must be an object")
    name = _text(entry, "name", where, required=True)
    assert name is not None
    sources = entry.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
        raise ReferenceEndpointsError(f"{where} ({name}): 'sources' must list where the endpoint comes from")
    try:
        kind = Kind(str(entry.get("kind")))
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise ReferenceEndpointsError(f"{where} ({name}): 'kind' must be one of {kinds}") from None
    host, address = _text(entry, "host", where), _text(entry, "address", where)
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ReferenceEndpointsError(f"{where} ({name}): 'address' is not an IP address: {address!r}") from None
    port = entry.get("port", 443)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ReferenceEndpointsError(f"{where} ({name}): 'port' must be a port number")
    resolver = _text(entry, "resolver", where)
    query = _text(entry, "query", where) or "example.org"
    if kind == Kind.HTTPS and host is None and address is None:
        raise ReferenceEndpointsError(f"{where} ({name}): an https endpoint needs a 'host' or an 'address'")
    if kind == Kind.DNS and (resolver is None or not resolver.lower().startswith(RESOLVER_SCHEMES)):
        raise ReferenceEndpointsError(
            f"{where} ({name}): a dns endpoint needs a 'resolver' URL ({', '.join(RESOLVER_SCHEMES)})"
        )
    if kind == Kind.SYSTEM_RESOLVER and side != Side.DOMESTIC:
        raise ReferenceEndpointsError(f"{where} ({name}): the system resolver is a domestic endpoint")
    return Endpoint(name, side, kind, host=host, address=address, port=port, resolver=resolver, query=query)


def _endpoints(entries: Any, side: Side, where: str) -> tuple[Endpoint, ...]:
    if not isinstance(entries, list):
        raise ReferenceEndpointsError(f"{where}: must be a list of endpoints")
    return tuple(_endpoint(entry, side, f"{where}[{index}]") for index, entry in enumerate(entries))


def parse_reference_endpoints(document: Any, origin: str, place: str) -> ReferenceEndpoints:
    """The catalog in `document` (parsed JSON); errors name `place` (the file as the user gave it)."""
    if not isinstance(document, dict):
        raise ReferenceEndpointsError(f"{place}: the document must be a JSON object")
    countries: dict[str, tuple[Endpoint, ...]] = {}
    given = document.get("countries", {})
    if not isinstance(given, dict):
        raise ReferenceEndpointsError(f"{place}: 'countries' must be an object of country codes")
    for code, country in given.items():
        where = f"{place}: countries.{code}"
        if not (isinstance(code, str) and len(code) == 2 and code.isalpha()):
            raise ReferenceEndpointsError(f"{where}: a country is named by its two-letter ISO 3166 code")
        if not isinstance(country, dict):
            raise ReferenceEndpointsError(f"{where}: must be an object with 'domestic' endpoints")
        countries[code.upper()] = _endpoints(country.get("domestic", []), Side.DOMESTIC, f"{where}.domestic")
    foreign = _endpoints(document.get("foreign", []), Side.FOREIGN, f"{place}: foreign")
    names = [e.name for e in foreign] + [e.name for c in countries.values() for e in c]
    return ReferenceEndpoints(countries, foreign, origin) if names else _empty(place)


def _empty(place: str) -> ReferenceEndpoints:
    raise ReferenceEndpointsError(f"{place}: no endpoint at all (neither 'countries' nor 'foreign' lists one)")


def load_reference_endpoints(path: Path | None = None) -> ReferenceEndpoints:
    """The shipped catalog, or the file `path` instead of it."""
    if path is None:
        text = (resources.files("probe") / "data" / "reference_endpoints.json").read_text(encoding="utf-8")
        document = json.loads(text)
        return parse_reference_endpoints(
            document, f"builtin:reference_endpoints@{document.get('version')}", "reference_endpoints.json"
        )
    try:
        content = path.read_bytes()
        document = json.loads(content.decode("utf-8"))
    except FileNotFoundError:
        raise ReferenceEndpointsError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ReferenceEndpointsError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceEndpointsError(f"{path}: cannot read: {exc}") from None
    # The record names the file and its SHA-256, never where it lives (a home directory names its owner).
    return parse_reference_endpoints(
        document, f"{path.name} sha256:{hashlib.sha256(content).hexdigest()[:16]}", str(path)
    )
