"""`probe show`: records printed for a person."""

from __future__ import annotations

import argparse
import sys

from probe.cli.commands import EXIT_OK, EXIT_USAGE, fail


def command_show(args: argparse.Namespace) -> int:
    """Every readable record of a results file or folder; then each line that is not one, by its
    place (exit code 2), after the records before and after it were printed."""
    from probe.results.show import show

    try:
        shown = show(args.file, include_clean=args.all)
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    print(shown.text, end="")
    sys.stdout.flush()
    for place in shown.unreadable:
        print(f"probe: {place}", file=sys.stderr)
    return EXIT_USAGE if shown.unreadable else EXIT_OK
