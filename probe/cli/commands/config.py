"""`probe config show`: the effective settings, and where each came from; and the check of a
resolver option's value, shared by the command line and the configuration file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from probe.cli.commands import EXIT_OK, EXIT_USAGE

SECRET = ("helper_token",)


def resolver_option(none_allowed: bool) -> Any:
    """`--resolver` and `--control-resolver` (and the file's keys): a value parse_resolver takes,
    or `none` where no control is allowed. The text is kept as given; `probe run` parses it again."""

    def convert(text: str) -> str:
        if none_allowed and text.strip().lower() == "none":
            return text
        from probe.netx.dns import parse_resolver  # the network stack: only when a value is checked

        try:
            parse_resolver(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return convert


def command_config_show(args: argparse.Namespace) -> int:
    """Every setting, even when the file has problems: they are named after the table (exit 2), and
    the table shows what the rest of the file and the command line give."""
    width = max(len(key) for key in args.sources)
    for key, source in args.sources.items():
        value = getattr(args, key, None) if "." not in key else getattr(args, "upload_" + key.split(".")[1], None)
        if key in SECRET and value:
            value = "(set, not shown)"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "[]"
        print(f"{key:<{width}}  {value!s:<40}  ({source})")
    problems = getattr(args, "config_problems", [])
    if problems:  # on the table's own stream too: a wrong line must not read as a setting that took
        print(
            f"\nNOT VALID: {len(problems)} line(s) of the file were refused; the table shows the defaults "
            "instead, and `probe run` refuses to start with this file:"
        )
        for problem in problems:
            print(f"  {problem}")
    for problem in problems:
        print(f"probe: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK
