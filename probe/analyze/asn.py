"""Address to AS number, from an ip2asn-style table (`--asn-db FILE`), read offline.

Format, one range a line, tab-separated: `range_start  range_end  AS_number  country  description`
(the iptoasn.com TSV). AS 0 means "not routed" and is skipped. With a table, DNS answers in the
same AS as the control's count as consistent, as OONI does; without one, the rule is not used.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from probe.vocabulary.errors import InputError


class AsnTableError(InputError):
    """A table that cannot be read; the message names `file:line`."""


class AsNumbers(Protocol):
    """Address to AS: an ip2asn table here, or a MaxMind database (probe.loaders.asn)."""

    def lookup(self, address: str) -> int | None: ...

    def network(self, address: str) -> tuple[int, str | None, str | None] | None:
        """(AS number, AS name, country) of an address: only ever used for the probe's own network."""
        ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class AsnTable:
    source: str
    sha256: str
    starts: dict[int, list[int]]  # by IP version: sorted range starts
    rows: dict[int, list[tuple[int, int, int]]]  # by IP version: (start, end, asn), same order
    names: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)  # asn -> (name, country)

    def network(self, address: str) -> tuple[int, str | None, str | None] | None:
        asn = self.lookup(address)
        if asn is None:
            return None
        name, country = self.names.get(asn, (None, None))
        return asn, name, country

    def lookup(self, address: str) -> int | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        starts, rows = self.starts.get(ip.version, []), self.rows.get(ip.version, [])
        index = bisect.bisect_right(starts, int(ip)) - 1
        if index < 0:
            return None
        start, end, asn = rows[index]
        return asn if start <= int(ip) <= end else None

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "sha256": self.sha256, "ranges": sum(len(r) for r in self.rows.values())}
