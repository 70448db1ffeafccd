"""The commands behind `probe`: each module holds one command and imports what it needs when it runs.

Exit codes (docs/operating.md): 0 measured and nothing found, 1 blocking found, 2 usage or input
error, 3 offline (no network: nothing claimed), 4 interrupted (finished records kept), 5 the
results could not be written, 6 another run holds the lock, 7 an upload failed.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_BLOCKING, EXIT_USAGE, EXIT_OFFLINE, EXIT_INTERRUPTED, EXIT_WRITE_FAILED = 0, 1, 2, 3, 4, 5
EXIT_LOCKED, EXIT_UPLOAD_FAILED = 6, 7


def fail(message: str) -> int:
    print(f"probe: {message}", file=sys.stderr)
    return EXIT_USAGE
