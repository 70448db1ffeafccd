"""Identity without identification: a random installation id, so that a report can count vantage
points, and nothing that names the person or the machine.

The id is 32 random hex digits made on the first run and kept in the probe's state directory,
with the upload ledger. It says which records came from the same installation, never who or where
it is; deleting the file starts a new one. The state directory is the first of:
- `$STATE_DIRECTORY` (systemd's `StateDirectory=kz-probe`: `/var/lib/kz-probe`; the first, when it
  lists several), used as it is;
- `$XDG_STATE_HOME/kz-probe`;
- `$XDG_DATA_HOME/kz-probe`;
- `~/.local/share/kz-probe` (where it has always been).
An id that cannot be kept is an error (`StateError`), never a fresh id made silently: records
would then count each run as another vantage point, and uploads would go under another prefix.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from probe.vocabulary.errors import ProbeError

_ID = re.compile(r"^[0-9a-f]{32}$")
HINT = "set STATE_DIRECTORY (or XDG_STATE_HOME) to a writable directory; under systemd, StateDirectory=kz-probe"


class StateError(ProbeError):
    """The state directory cannot be found or written; the message names it and what to do."""


def state_directory() -> Path:
    """Where the installation id and the upload ledger live (the module's docstring says which)."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    for variable in ("XDG_STATE_HOME", "XDG_DATA_HOME"):
        if os.environ.get(variable):
            return Path(os.environ[variable]) / "kz-probe"
    try:
        return Path.home() / ".local" / "share" / "kz-probe"
    except RuntimeError:  # no HOME and no passwd entry
        raise StateError(f"no home directory to keep the probe's state in; {HINT}") from None


data_directory = state_directory  # its name before the state directory was chosen as above


def writable_state(directory: Path | None = None) -> Path:
    """The state directory, made if needed and checked writable now: a run learns it before
    measuring, not after. Raises StateError naming the directory."""
    directory = directory or state_directory()
    probe = directory / f".writable-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StateError(f"cannot write the probe's state in {directory}: {exc.strerror or exc}; {HINT}") from None
    return directory


def installation_id(directory: Path | None = None) -> str:
    """The installation's id, made and kept on first use; StateError when it cannot be kept."""
    directory = directory or state_directory()
    path = directory / "installation-id"
    try:
        text = path.read_text(encoding="ascii").strip()
        if _ID.match(text):
            return text
    except (OSError, UnicodeDecodeError):
        pass  # none yet, or unreadable or damaged: a new one replaces it
    new = secrets.token_hex(16)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(new + "\n", encoding="ascii")
        temporary.replace(path)
    except OSError as exc:
        raise StateError(f"cannot keep the installation id in {directory}: {exc.strerror or exc}; {HINT}") from None
    return new
