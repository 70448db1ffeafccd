"""`probe run`'s options for the network's state (issue 22), kept apart from probe.cli.main."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.cli.settings import DAY
from probe.cli.settings import positive as _positive


def add_network_state_options(parser: Any) -> None:
    parser.add_argument(
        "--reference-endpoints",
        type=Path,
        metavar="FILE",
        help="reference endpoints that tell the network's state (a cut-off, an allow-list) instead of the shipped "
        "catalog, which is asked where it knows --country's domestic services; 'none' asks none (docs/verdicts.md)",
    )
    parser.add_argument(
        "--network-check-every",
        type=_positive(int),
        default=200,
        metavar="N",
        help="ask the reference endpoints again every N targets (default 200), and every --network-check-minutes",
    )
    parser.add_argument(
        "--network-check-minutes",
        type=_positive(float, DAY),
        default=10.0,
        metavar="MINUTES",
        help="ask the reference endpoints again every so many minutes of a long run (default 10)",
    )
