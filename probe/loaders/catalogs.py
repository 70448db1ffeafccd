"""Reading the catalogs: the shipped data files in `probe/data/`, then every `--catalog FILE`.

Every kind in `KINDS` has its shipped file, `probe/data/<kind>.json`, read here and checked by
`probe.analyze.catalog.add_document`; `national_cas.json` carries its certificates as PEM inside the
JSON (nothing else to package), and their fingerprints are recomputed from it as it loads.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from probe.analyze.catalog import KINDS, CatalogError, Catalogs, add_document
from probe.analyze.fingerprints import add_dns_table, add_http_table

OONI_COMMIT = "171641e"  # ooni/blocking-fingerprints, October 2024 (probe/data/ooni/README.md)


def load_catalogs(extra_files: list[Path] | None = None) -> Catalogs:
    """The shipped catalogs, plus every `--catalog FILE` given."""
    catalogs = Catalogs()
    data = resources.files("probe") / "data"
    for kind in KINDS:
        document = json.loads((data / f"{kind}.json").read_text(encoding="utf-8"))
        add_document(catalogs, document, f"builtin:{kind}")
    tables = catalogs.fingerprints
    add_http_table(tables, (data / "ooni" / "fingerprints_http.csv").read_text(encoding="utf-8"))
    add_dns_table(tables, (data / "ooni" / "fingerprints_dns.csv").read_text(encoding="utf-8"))
    catalogs.versions.setdefault("blockpages", []).append(
        f"builtin:ooni-blocking-fingerprints@{OONI_COMMIT} ({len(tables.http)} http, {len(tables.dns)} dns, "
        f"{len(tables.rejected)} rejected)"
    )
    for path in extra_files or []:
        try:
            content = path.read_bytes()
            document = json.loads(content.decode("utf-8"))
        except FileNotFoundError:
            raise CatalogError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path}: cannot read: {exc}") from None
        add_document(catalogs, document, str(path))  # errors name the path the user gave
        # The record names the file and its SHA-256, never where it lives (a home directory names its owner).
        _rename_origin(catalogs, str(path), f"{path.name} sha256:{hashlib.sha256(content).hexdigest()[:16]}")
    return catalogs


def _rename_origin(catalogs: Catalogs, origin: str, recorded: str) -> None:
    for versions in catalogs.versions.values():
        for index, version in enumerate(versions):
            if version.startswith(origin + "@"):
                versions[index] = recorded + version[len(origin) :]
