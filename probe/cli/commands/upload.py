"""`probe upload`: send finished results files to an S3-compatible object store."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from probe.cli.commands import EXIT_OK, EXIT_UPLOAD_FAILED, fail, state_failed

LOCK_NAME = ".probe.run.lock"  # a run's lock in its results directory (probe run --lock's default)
_SINCE = re.compile(r"since (\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z")
_STARTED = re.compile(r"^(\d{8}T\d{6}Z)-")


def written_by_a_run() -> Callable[[Path], str | None]:
    """For `upload_files`' `skip`: who may still be writing a file. A plain `.jsonl` is a run's file
    being written when a results directory above it holds a run's lock, held now, and the file
    started when that run did or later (compressed files appear whole, when their run has ended)."""
    from probe.run.lock import holder

    held: dict[Path, str | None] = {}

    def who(path: Path) -> str | None:
        if not path.name.endswith(".jsonl"):
            return None
        for folder in list(path.resolve().parents)[:5]:  # DIR/YYYY/MM/DD/file
            lock = folder / LOCK_NAME
            if lock not in held:
                held[lock] = holder(lock)
            running = held[lock]
            if running is None:
                continue
            since, started = _SINCE.search(running), _STARTED.match(path.name)
            if since is None or started is None:
                return running  # cannot tell which file is the run's: every plain file waits
            if started[1] >= "{}{}{}T{}{}{}Z".format(*since.groups()):
                return running
        return None

    return who


def command_upload(args: argparse.Namespace) -> int:
    from probe.publish.identity import StateError
    from probe.publish.upload import UploadError, UploadUsageError, upload_files

    paths = args.paths or [Path("results")]
    try:
        sent = upload_files(paths, args.to, args.endpoint, skip=written_by_a_run())
    except UploadUsageError as exc:
        return fail(f"upload: {exc}")
    except StateError as exc:
        return state_failed(str(exc))
    except UploadError as exc:
        print(f"probe: upload failed: {exc} (what was sent is kept; run again to resume)", file=sys.stderr)
        return EXIT_UPLOAD_FAILED
    waiting = [item for item in sent if item.held]
    for item in waiting:
        print(f"probe: {item.path}: not sent, a run is still writing it ({item.held}); it goes next time",
              file=sys.stderr)  # fmt: skip
    fresh = sum(1 for item in sent if not item.skipped and not item.held)
    print(f"{fresh} files sent, {len(sent) - fresh - len(waiting)} already there"
          + (f", {len(waiting)} still being written" if waiting else ""))  # fmt: skip
    return EXIT_OK
