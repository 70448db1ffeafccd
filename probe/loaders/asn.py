"""Reading an ip2asn table (`--asn-db FILE`); see `probe.analyze.asn` for the format."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

from probe.analyze.asn import AsnTable, AsnTableError


def load_asn_table(path: Path) -> AsnTable:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AsnTableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    rows: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
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
    for version in rows:
        rows[version].sort()
    starts = {version: [row[0] for row in found] for version, found in rows.items()}
    return AsnTable(path.name, hashlib.sha256(data).hexdigest(), starts, rows)  # never a local path in a record
