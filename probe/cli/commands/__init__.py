"""The commands behind `probe`: each module holds one command and imports what it needs when it runs.

Exit codes, the same for every command (docs/operating.md has the table): 0 done, nothing found;
1 blocking found; 2 usage or input error (nothing was done); 3 offline: no route, or no internet
(nothing claimed); 4 interrupted (finished records kept); 5 the results could not be written;
6 another run holds the lock; 7 an upload failed; 8 no writable state directory (the installation
id, the upload ledger); 70 an internal error (a bug in the probe). A systemd unit treats 0 and 1
as success (`SuccessExitStatus=1`), every other code as a failure.
"""

from __future__ import annotations

import sys
import traceback

EXIT_OK, EXIT_BLOCKING, EXIT_USAGE, EXIT_OFFLINE, EXIT_INTERRUPTED, EXIT_WRITE_FAILED = 0, 1, 2, 3, 4, 5
EXIT_LOCKED, EXIT_UPLOAD_FAILED, EXIT_STATE, EXIT_INTERNAL = 6, 7, 8, 70


def fail(message: str) -> int:
    print(f"probe: {message}", file=sys.stderr)
    return EXIT_USAGE


def state_failed(message: str) -> int:
    print(f"probe: {message}", file=sys.stderr)
    return EXIT_STATE


def crashed() -> int:
    """An exception no command expected (a bug): said as such, with its traceback, and an exit code
    of its own (Python's own, 1, would read as "blocking found", which a unit counts as success)."""
    print("probe: internal error (a bug in the probe; please report it with what follows):", file=sys.stderr)
    traceback.print_exc(limit=8, file=sys.stderr)
    return EXIT_INTERNAL
