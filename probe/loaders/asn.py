"""Reading an ip2asn table (`--asn-db FILE`); see `probe.analyze.asn` for the format."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any

from probe.analyze.asn import AsnTable, AsnTableError


def load_asn_table(path: Path) -> AsnTable | MaxMindTable:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AsnTableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if _is_mmdb(data):
        return MaxMindTable(path)
    rows: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
    names: dict[int, tuple[str | None, str | None]] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            start, end = ipaddress.ip_address(fields[0].strip()), ipaddress.ip_address(fields[1].strip())
            asn = int(fields[2].strip().upper().removeprefix("AS"))
        except (IndexError, ValueError):
            raise AsnTableError(f"{path}:{number}: expected 'start<TAB>end<TAB>AS number<TAB>...'") from None
        if start.version != end.version or int(start) > int(end):
            raise AsnTableError(f"{path}:{number}: the range's ends do not match")
        if asn:
            rows[start.version].append((int(start), int(end), asn))
            country = fields[3].strip().upper() if len(fields) > 3 and fields[3].strip() not in ("", "None") else None
            names[asn] = (fields[4].strip() if len(fields) > 4 and fields[4].strip() else None, country)
    for version in rows:
        rows[version].sort()
    starts = {version: [row[0] for row in found] for version, found in rows.items()}
    return AsnTable(path.name, hashlib.sha256(data).hexdigest(), starts, rows, names)  # a name, never a path


_MMDB_MARKER = b"\xab\xcd\xefMaxMind.com"


def _is_mmdb(data: bytes) -> bool:
    return _MMDB_MARKER in data[-128 * 1024 :]


class MaxMindTable:
    """A MaxMind database (GeoLite2-ASN, or an ASN and country database such as ipinfo's), read
    with MaxMind's own reader. Fields: `autonomous_system_number`, `autonomous_system_organization`
    and, when present, `country.iso_code` or `country`."""

    def __init__(self, path: Path) -> None:
        import maxminddb

        self.source = path.name
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            self._reader = maxminddb.open_database(str(path))
        except (OSError, ValueError) as exc:
            raise AsnTableError(f"{path}: not a usable MaxMind database ({exc})") from None

    def _get(self, address: str) -> dict[str, Any] | None:
        try:
            found = self._reader.get(address)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def lookup(self, address: str) -> int | None:
        found = self._get(address)
        number = found.get("autonomous_system_number") if found else None
        return int(number) if isinstance(number, int) and number else None

    def network(self, address: str) -> tuple[int, str | None, str | None] | None:
        found = self._get(address)
        asn = self.lookup(address)
        if found is None or asn is None:
            return None
        country = found.get("country")
        if isinstance(country, dict):
            country = country.get("iso_code")
        name = found.get("autonomous_system_organization")
        return asn, name if isinstance(name, str) else None, country if isinstance(country, str) else None

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "sha256": self.sha256, "format": "maxmind"}
