"""The `probe` command line: its options, and which command runs (`probe.cli.commands`).

Exit codes are in `probe/cli/commands/__init__.py` and docs/operating.md.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
from pathlib import Path
from typing import Any

from probe import __version__
from probe.cli.options_network import add_network_state_options
from probe.cli.options_paths import add_path_options
from probe.cli.options_report import add_engine_options
from probe.cli.options_watch import add_watch_command
from probe.cli.settings import DAY, as_number, country_code, duration
from probe.cli.settings import positive as _positive

# Each command imports what it needs when it runs: `probe show` and `probe --version` must not pay
# for the network stack (dnspython's DoH transport alone takes a fifth of a second to import).

atexit.register(gc.freeze)  # all written and closed: the last collection (0.1 s after 1,000 targets) is skipped

DEFAULT_CONTROL_RESOLVER = "https://1.1.1.1/dns-query"
DEFAULT_CONTROL_SNI = "example.org"


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default (unless its text already says it, or it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: its help shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="probe", description="Find TLS interception, lying DNS and blocking.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="measure every target and write a results file",
        description="Measure every target and write a results file. Before the first measurement, the person at "
        "the terminal is told what is measured, what is recorded and what never is, the legal risk, and where the "
        "results go, and answers yes or no; a yes is kept in the probe's state directory (asked again when that "
        "text changes). Unattended runs (cron, systemd) consent with --yes or `consent = true` in the "
        "configuration file; without a terminal and without consent the run stops before measuring (exit 2).",
    )
    add_run_options(run)

    config = commands.add_parser("config", help="the configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show_config = config_commands.add_parser("show", help="print the effective settings and where each came from")
    add_run_options(show_config)

    upload = commands.add_parser("upload", help="send finished results files to an S3-compatible object store")
    upload.add_argument("paths", nargs="*", type=Path, help="results files or folders (default: the run's --out)")
    add_upload_options(upload)
    helper = commands.add_parser("helper", help="the control vantage's side")
    helper_commands = helper.add_subparsers(dest="helper_command", required=True)
    serve = helper_commands.add_parser("serve", help="serve the helper's HTTPS JSON API")
    serve.add_argument("--listen", required=True, help="ADDR:PORT to listen on")
    serve.add_argument("--tls-cert", required=True, type=Path, help="PEM certificate chain")
    serve.add_argument("--tls-key", required=True, type=Path, help="PEM private key")
    serve.add_argument("--token", help="require this bearer token (or PROBE_HELPER_TOKEN)")
    serve.add_argument("--roots", type=Path, help="reference roots for judging chains (default: certifi)")
    serve.add_argument(
        "--timeout", type=_positive(float, DAY), default=10.0, metavar="SECONDS", help="seconds for each step"
    )
    serve.add_argument("--ports", default="80,443", help="destination ports allowed (default 80,443)")
    serve.add_argument("--rate", type=_positive(float), default=600.0, metavar="N", help="requests a minute per client")
    serve.add_argument(
        "--burst", type=_positive(int), default=120, metavar="N", help="requests a client may make at once"
    )
    serve.add_argument("--connections", type=_positive(int), default=256, help="connections served at once")
    serve.add_argument(
        "--connections-per-client",
        type=_positive(int),
        help="connections one client (an address, an IPv6 /64) may hold (default: --connections/4, at most 16)",
    )
    serve.add_argument(
        "--measurements-per-client", type=_positive(int), default=4, help="measurements one client may have at once"
    )
    serve.add_argument(
        "--request-deadline",
        type=_positive(float, DAY),
        default=10.0,
        metavar="SECONDS",
        help="seconds for a whole request to arrive",
    )
    serve.add_argument(
        "--allow-documentation-addresses",
        action="store_true",
        help="accept destinations in the documentation ranges (only for the censorship lab)",
    )

    report = commands.add_parser("report", help="turn result logs into events, sentences and a page to cite")
    report.add_argument("paths", nargs="+", type=Path, help="results files (.jsonl, .jsonl.gz, .jsonl.zst) or folders")
    report.add_argument("--since", type=_date, help="first day (YYYY-MM-DD, the network's local day)")
    report.add_argument("--until", type=_date, help="last day, included (YYYY-MM-DD, the network's local day)")
    report.add_argument("--month", help="one month for the monthly record (YYYY-MM)")
    report.add_argument("--network", help="one network (AS number, e.g. AS9198, or its AS name)")
    report.add_argument("--target", help="one target (host name)")
    report.add_argument("--all-confidence", action="store_true", help="also show unconfirmed findings")
    report.add_argument("--format", choices=("html", "md", "csv", "json", "parquet", "text"), default="html")
    report.add_argument("--out", type=Path, help="file (folder for parquet); default: stdout, report.html for html")
    report.add_argument("--language", action="append", default=[], help="sentence languages: en ru kk (default en, ru)")
    report.add_argument("--tz", help="count every network's days in this time zone (default: from its country)")
    add_engine_options(report)

    analyze = commands.add_parser("analyze", help="re-judge results files with the current rules and catalogs")
    analyze.add_argument("paths", nargs="+", type=Path, help="results files or folders")
    analyze.add_argument("--catalog", type=Path, action="append", default=[], help="catalog file adding entries")
    analyze.add_argument("--roots", type=Path, help="reference roots (default: Mozilla's, from certifi)")
    analyze.add_argument("--asn-db", type=Path, help="ip2asn TSV table, as for probe run")

    targets = commands.add_parser(
        "targets", help="show the default list of targets; check list files; build one from downloaded lists"
    )
    targets.add_argument("files", nargs="*", type=Path, help="list files to check (default: show the shipped list)")
    sources_help = "build a list from downloaded ones: Citizen Lab CSVs, OONI Run v2 descriptors (.json), plain lists"
    targets.add_argument("--from", dest="sources", nargs="+", type=Path, default=[], metavar="FILE", help=sources_help)
    targets.add_argument("--out", type=Path, metavar="FILE", help="--from writes here: FILE.csv (Citizen Lab) or plain")
    targets.add_argument("--skip-bad", action="store_true", help="with --from: leave bad entries out, not refuse")

    add_watch_command(commands)

    show = commands.add_parser("show", help="print the records of a results file readably")
    show.add_argument("file", type=Path)
    show.add_argument("--all", action="store_true", help="also print records with nothing found")
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """`probe run`'s options: every one can also be set in the configuration file (probe.cli.settings)."""
    from probe.cli.commands.config import resolver_option

    parser.add_argument("--config", type=Path, help="configuration file (default: ~/.config/kz-probe/config.toml)")
    from probe.cli.commands.targets import default_targets

    parser.add_argument(
        "--targets",
        type=Path,
        default=default_targets(),
        help="targets file or Citizen Lab CSV (default: ./targets.txt if there is one, else the project's list "
        "shipped in the package, probe/data/targets.txt: `probe targets` shows where it is and checks lists)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), metavar="DIR", help="directory for the results file"
    )
    parser.add_argument("--roots", type=Path, help="PEM bundle of reference roots (default: Mozilla's, from certifi)")
    parser.add_argument(
        "--os-store",
        default="system",
        help="the machine's trust store, asked as a second opinion ('system', a PEM file, or 'none')",
    )
    parser.add_argument(
        "--resolver",
        type=resolver_option(none_allowed=False),
        metavar="IP[:PORT]",
        help="ask this resolver (IP[:port], or udp://, tcp://, tls://, https:// as below) instead of the system's",
    )
    parser.add_argument(
        "--control-resolver",
        default=DEFAULT_CONTROL_RESOLVER,
        type=resolver_option(none_allowed=True),
        metavar="URL",
        help="control resolver: udp://IP[:port], tcp://, tls://IP[:port][#name], or a DoH https:// URL "
        f"(default {DEFAULT_CONTROL_RESOLVER}); 'none' for no control",
    )
    parser.add_argument(
        "--control-sni", default=DEFAULT_CONTROL_SNI, help="SNI for the control handshake; 'none' to skip"
    )
    parser.add_argument(
        "--catalog", type=Path, action="append", default=[], help="catalog file adding entries (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=_positive(float, DAY), default=10.0, metavar="SECONDS", help="seconds for each network step"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive(int, 1024),
        default=8,
        metavar="N",
        help="targets measured at once (at most 1024)",
    )
    parser.add_argument(
        "--target-deadline",
        type=_positive(float, DAY),
        metavar="SECONDS",
        help="seconds for the whole of one target (default: six times --timeout); each step gets what is left",
    )
    parser.add_argument(
        "--dns-window",
        type=_positive(float, DAY),
        default=1.0,
        metavar="SECONDS",
        help="seconds to keep listening for more DNS replies",
    )
    parser.add_argument("--injection-address", help="an address that runs no resolver, for the DNS injection probe")
    parser.add_argument("--no-injection-check", action="store_true", help="skip the DNS injection probe")
    parser.add_argument(
        "--no-minting-test",
        action="store_true",
        help="for a chain that does not validate, do not ask the same address for a random .invalid name",
    )
    parser.add_argument(
        "--forensics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="packet forensics where CAP_NET_RAW allows: injected resets, the censor's hop (default: on)",
    )
    parser.add_argument(
        "--forensics-limit",
        type=_positive(int),
        default=3,
        metavar="N",
        help="TTL sweeps (locating the censor) per run",
    )
    parser.add_argument(
        "--helper", action="append", default=[], help="URL of a control vantage (probe helper serve); repeatable"
    )
    parser.add_argument("--helper-token", help="bearer token for the helpers (or PROBE_HELPER_TOKEN)")
    add_path_options(parser)  # QUIC and throughput flows
    add_network_state_options(parser)  # the network's state
    parser.add_argument("--asn-db", type=Path, help="ip2asn TSV table: answers in the control's AS count as consistent")
    parser.add_argument(
        "--asn",
        type=as_number,
        metavar="AS",
        help="the network's AS number, when the operator knows it (AS9198 or 9198)",
    )
    parser.add_argument(
        "--country",
        type=country_code,
        metavar="CC",
        help="the network's country, when the operator knows it: an ISO 3166 two-letter code (KZ)",
    )
    parser.add_argument("--as-name", help="the network's AS name, when the operator knows it (e.g. Kazakhtelecom)")
    parser.add_argument(
        "--region", help="where people were cut off, as the operator wants it said (a city or region; never finer)"
    )
    parser.add_argument(
        "--nat64-prefix",
        action="append",
        default=[],
        help="a local NAT64 /96 prefix besides 64:ff9b::/96 (DNS64 answers are judged by the IPv4 they embed)",
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="treat the documentation address ranges as public (only for the censorship lab)",
    )
    parser.add_argument(
        "--yes",
        dest="consent",
        action="store_true",
        help="consent without being asked, for unattended runs: you have read what the probe measures, records "
        "and risks (docs/volunteers.md, 'Consent'); kept in the state directory, so later runs need no flag "
        "(in the configuration file: consent = true)",
    )
    parser.add_argument("--quiet", action="store_true", help="print errors only (for cron and timers)")
    parser.add_argument("--json", action="store_true", help="print one machine-readable summary on stdout")
    parser.add_argument(
        "--deadline",
        type=duration,
        metavar="DURATION",
        help="bound the whole run: a number and its unit, s, m or h (90s, 50m, 2h; at most 168h); "
        "unfinished targets are recorded as not measured",
    )
    parser.add_argument("--compress", choices=("none", "gzip", "zstd"), default="none", help="compress finished files")
    parser.add_argument("--lock", type=Path, help="lock file (default: .probe.run.lock in the results directory)")
    parser.add_argument("--upload", action="store_true", help="upload the results file after the run")
    add_upload_options(parser, prefix="upload-")


def add_upload_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    if not prefix:
        parser.add_argument("--config", type=Path, help="configuration file (its [upload] table)")
    parser.add_argument(f"--{prefix}to", dest=f"{prefix.replace('-', '_')}to", help="s3://BUCKET/PREFIX")
    parser.add_argument(f"--{prefix}endpoint", dest=f"{prefix.replace('-', '_')}endpoint",
                        help="the object store's URL (AWS when not given)")  # fmt: skip


def _date(text: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _subcommand(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    """A subcommand's own parser (argparse keeps them in a private action)."""
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _settle(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> list[str]:
    """Fill in what the configuration file says and the command line did not; the file's problems.
    `probe config show` shows the settings all the same (the rest of the file, the command line)."""
    from probe.cli.settings import explicit_options, merge, options_of, read_settings

    run = _subcommand(parser, "run")
    options = options_of(run)
    settings, problems = read_settings(args.config, options, required=args.config is not None)
    if problems and args.command != "config":
        return problems
    args.config_problems = problems
    if args.command == "upload":
        merge(args, set(), settings, {})
        return []
    words = argv[argv.index(args.command) + 1 :]
    if args.command == "config":
        words = words[words.index("show") + 1 :]
        run = _subcommand(parser, "config", "show")
    args.sources = merge(args, explicit_options(run, words), settings, options)
    return []


def main(argv: list[str] | None = None) -> int:
    """`probe`: the command's exit code (probe/cli/commands/__init__.py). An exception no command
    expected is a bug: it exits 70, never Python's own 1, which would read as "blocking found"."""
    from probe.cli.commands import EXIT_INTERRUPTED, crashed

    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        return crashed()


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "config", "upload"):
        problems = _settle(parser, args, argv)
        for problem in problems:
            print(f"probe: {problem}", file=sys.stderr)
        if problems:
            return 2
    if args.command == "config":
        from probe.cli.commands.config import command_config_show

        return command_config_show(args)
    if args.command == "upload":
        from probe.cli.commands.upload import command_upload

        return command_upload(args)
    if args.command == "run":
        from probe.cli.commands.run import command_run

        return command_run(args)
    if args.command == "helper":
        from probe.cli.commands.helper import command_helper

        return command_helper(args)
    if args.command in ("report", "analyze"):
        from probe.cli.commands.report import command_analyze, command_report

        return command_report(args) if args.command == "report" else command_analyze(args)
    if args.command == "watch":
        from probe.cli.commands.watch import command_watch

        return command_watch(args)
    if args.command == "targets":
        from probe.cli.commands.targets import command_targets

        return command_targets(args)
    from probe.cli.commands.show import command_show

    return command_show(args)


if __name__ == "__main__":
    sys.exit(main())
