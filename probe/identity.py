"""Identity without identification: a random installation id, so that a report can count vantage
points, and nothing that names the person or the machine.

The id is 32 random hex digits made on the first run and kept in the user's data directory
(`$XDG_DATA_HOME/kz-probe/installation-id`, by default `~/.local/share/...`). It says which records
came from the same installation, never who or where it is; deleting the file starts a new one.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{32}$")


def data_directory() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kz-probe"


def installation_id(directory: Path | None = None) -> str:
    """The installation's id, made on first use; a fresh one for this run when it cannot be kept."""
    path = (directory or data_directory()) / "installation-id"
    try:
        text = path.read_text(encoding="ascii").strip()
        if _ID.match(text):
            return text
    except (OSError, UnicodeDecodeError):
        pass
    new = secrets.token_hex(16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(new + "\n", encoding="ascii")
        temporary.replace(path)
    except OSError:
        pass  # a read-only home: this run's records share an id, the next run's another
    return new
