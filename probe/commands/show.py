"""`probe show`: records printed for a person."""

from __future__ import annotations

import argparse

from probe.commands import EXIT_OK, fail


def command_show(args: argparse.Namespace) -> int:
    from probe.results.show import show_file

    try:
        print(show_file(args.file, include_clean=args.all), end="")
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    return EXIT_OK
