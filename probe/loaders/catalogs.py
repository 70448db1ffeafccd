"""Reading the catalogs: the shipped data files in `probe/data/`, then every `--catalog FILE`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from probe.analyze.catalog import KINDS, CatalogError, Catalogs, add_document


def load_catalogs(extra_files: list[Path] | None = None) -> Catalogs:
    """The shipped catalogs, plus every `--catalog FILE` given."""
    catalogs = Catalogs()
    data = resources.files("probe") / "data"
    for kind in KINDS:
        document = json.loads((data / f"{kind}.json").read_text(encoding="utf-8"))
        add_document(catalogs, document, f"builtin:{kind}")
    for path in extra_files or []:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CatalogError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path}: cannot read: {exc}") from None
        add_document(catalogs, document, str(path))
    return catalogs
