"""`probe upload`: send finished results files to an S3-compatible object store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probe.commands import EXIT_OK, EXIT_UPLOAD_FAILED


def command_upload(args: argparse.Namespace) -> int:
    from probe.upload import UploadError, upload_files

    paths = args.paths or [Path("results")]
    try:
        sent = upload_files(paths, args.to, args.endpoint)
    except UploadError as exc:
        print(f"probe: upload failed: {exc} (what was sent is kept; run again to resume)", file=sys.stderr)
        return EXIT_UPLOAD_FAILED
    fresh = sum(1 for item in sent if not item.skipped)
    print(f"{fresh} files sent, {len(sent) - fresh} already there")
    return EXIT_OK
