"""`probe run`'s options for what is measured beyond the page: QUIC handshakes and throughput flows."""

from __future__ import annotations

import argparse


def add_path_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quic",
        choices=("auto", "always", "off"),
        default="auto",
        help="QUIC (HTTP/3) handshakes where the site advertises h3 (default), for every https:// target, or never",
    )
    parser.add_argument(
        "--throughput",
        choices=("auto", "on", "off"),
        default="auto",
        help="throughput flows by name, for throttling (auto: on with a --helper, whose bulk endpoint is the control)",
    )
