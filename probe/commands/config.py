"""`probe config show`: the effective settings, and where each came from."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.commands import EXIT_OK

SECRET = ("helper_token",)


def command_config_show(args: argparse.Namespace) -> int:
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
    return EXIT_OK
