"""The `probe` command: `probe run` measures, `probe show` prints records readably.

Exit codes (docs/operating.md): 0 measured and nothing found, 1 blocking found, 2 usage or input
error, 3 offline (no network: nothing claimed), 4 interrupted (finished records kept), 5 the
results could not be written.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe import __version__
from probe.signals import Interrupted, raise_interrupted

if TYPE_CHECKING:
    from probe.observe.dns import ResolverSpec

# Each command imports what it needs when it runs: `probe show` and `probe --version` must not pay
# for the network stack (dnspython's DoH transport alone takes a fifth of a second to import).

EXIT_OK, EXIT_BLOCKING, EXIT_USAGE, EXIT_OFFLINE, EXIT_INTERRUPTED, EXIT_WRITE_FAILED = 0, 1, 2, 3, 4, 5
DEFAULT_CONTROL_RESOLVER = "https://1.1.1.1/dns-query"
DEFAULT_CONTROL_SNI = "example.org"


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description="Find TLS interception, lying DNS and blocking.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="measure every target and write a results file")
    run.add_argument("--targets", type=Path, default=Path("targets.txt"), help="targets file or Citizen Lab CSV")
    run.add_argument("--out", type=Path, default=Path("results"), help="directory for the results file")
    run.add_argument("--roots", type=Path, help="PEM bundle of reference roots (default: Mozilla's, from certifi)")
    run.add_argument(
        "--os-store",
        default="system",
        help="the machine's trust store, asked as a second opinion ('system', a PEM file, or 'none')",
    )
    run.add_argument("--resolver", help="ask this resolver (IP[:port]) instead of the system resolver")
    run.add_argument(
        "--control-resolver",
        default=DEFAULT_CONTROL_RESOLVER,
        help="control resolver: udp://IP[:port], tcp://, tls://IP[:port][#name], or a DoH https:// URL "
        f"(default {DEFAULT_CONTROL_RESOLVER}); 'none' for no control",
    )
    run.add_argument("--control-sni", default=DEFAULT_CONTROL_SNI, help="SNI for the control handshake; 'none' to skip")
    run.add_argument(
        "--catalog", type=Path, action="append", default=[], help="catalog file adding entries (repeatable)"
    )
    run.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds for each network step")
    run.add_argument("--concurrency", type=_positive(int), default=8, help="targets measured at once")
    run.add_argument(
        "--dns-window", type=_positive(float), default=1.0, help="seconds to keep listening for more DNS replies"
    )
    run.add_argument("--injection-address", help="an address that runs no resolver, for the DNS injection probe")
    run.add_argument("--no-injection-check", action="store_true", help="skip the DNS injection probe")
    run.add_argument(
        "--helper", action="append", default=[], help="URL of a control vantage (probe helper serve); repeatable"
    )
    run.add_argument("--helper-token", help="bearer token for the helpers (or PROBE_HELPER_TOKEN)")
    run.add_argument("--asn-db", type=Path, help="ip2asn TSV table: answers in the control's AS count as consistent")
    run.add_argument("--asn", help="the network's AS number, when the operator knows it (e.g. AS9198)")
    run.add_argument("--country", help="the network's country code, when the operator knows it (e.g. KZ)")
    run.add_argument("--as-name", help="the network's AS name, when the operator knows it (e.g. Kazakhtelecom)")
    run.add_argument(
        "--region", help="where people were cut off, as the operator wants it said (a city or region; never finer)"
    )
    run.add_argument(
        "--nat64-prefix",
        action="append",
        default=[],
        help="a local NAT64 /96 prefix besides 64:ff9b::/96 (DNS64 answers are judged by the IPv4 they embed)",
    )
    run.add_argument(
        "--lab",
        action="store_true",
        help="treat the documentation address ranges as public (only for the censorship lab)",
    )

    helper = commands.add_parser("helper", help="the control vantage's side")
    helper_commands = helper.add_subparsers(dest="helper_command", required=True)
    serve = helper_commands.add_parser("serve", help="serve the helper's HTTPS JSON API")
    serve.add_argument("--listen", required=True, help="ADDR:PORT to listen on")
    serve.add_argument("--tls-cert", required=True, type=Path, help="PEM certificate chain")
    serve.add_argument("--tls-key", required=True, type=Path, help="PEM private key")
    serve.add_argument("--token", help="require this bearer token (or PROBE_HELPER_TOKEN)")
    serve.add_argument("--roots", type=Path, help="reference roots for judging chains (default: certifi)")
    serve.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds for each step")
    serve.add_argument("--ports", default="80,443", help="destination ports allowed (default 80,443)")
    serve.add_argument("--rate", type=_positive(float), default=60.0, help="requests a minute per client")
    serve.add_argument(
        "--allow-documentation-addresses",
        action="store_true",
        help="accept destinations in the documentation ranges (only for the censorship lab)",
    )

    report = commands.add_parser("report", help="turn result logs into events, sentences and a page to cite")
    report.add_argument("paths", nargs="+", type=Path, help="results files (.jsonl, .jsonl.gz, .jsonl.zst) or folders")
    report.add_argument("--since", type=_date, help="first day (YYYY-MM-DD, UTC)")
    report.add_argument("--until", type=_date, help="last day, included (YYYY-MM-DD, UTC)")
    report.add_argument("--month", help="one month for the monthly record (YYYY-MM)")
    report.add_argument("--network", help="one network (AS number, e.g. AS9198)")
    report.add_argument("--target", help="one target (host name)")
    report.add_argument("--all-confidence", action="store_true", help="also show unconfirmed findings")
    report.add_argument("--format", choices=("html", "md", "csv", "json", "parquet"), default="html")
    report.add_argument("--out", type=Path, help="file (folder for parquet); default: stdout, report.html for html")
    report.add_argument("--language", action="append", default=[], help="sentence languages (default: en and ru)")

    analyze = commands.add_parser("analyze", help="re-judge results files with the current rules and catalogs")
    analyze.add_argument("paths", nargs="+", type=Path, help="results files or folders")
    analyze.add_argument("--catalog", type=Path, action="append", default=[], help="catalog file adding entries")
    analyze.add_argument("--roots", type=Path, help="reference roots (default: Mozilla's, from certifi)")
    analyze.add_argument("--asn-db", type=Path, help="ip2asn TSV table, as for probe run")

    show = commands.add_parser("show", help="print the records of a results file readably")
    show.add_argument("file", type=Path)
    show.add_argument("--all", action="store_true", help="also print records with nothing found")
    return parser


def _date(text: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _fail(message: str) -> int:
    print(f"probe: {message}", file=sys.stderr)
    return EXIT_USAGE


def _system_nameserver() -> ResolverSpec | None:
    """The first nameserver in resolv.conf, to ask directly over UDP beside getaddrinfo."""
    from probe.observe.dns import ResolverSpecError, parse_resolver, system_resolver_addresses

    for address in system_resolver_addresses():
        try:
            return parse_resolver(f"udp://{address}" if ":" not in address else f"udp://[{address}]")
        except ResolverSpecError:
            continue
    return None


def _plain_udp_of(control: ResolverSpec | None) -> ResolverSpec | None:
    """The control's own address over plain UDP, to compare with its encrypted answers."""
    from probe.observe.dns import ResolverSpec

    if control is None or control.transport == "udp" or control.route_address is None:
        return None
    return ResolverSpec("udp", control.route_address, 53)


def command_run(args: argparse.Namespace) -> int:
    from probe.analyze.asn import AsnTableError
    from probe.analyze.catalog import CatalogError
    from probe.analyze.verdict import RULES_VERSION, AnalysisContext
    from probe.identity import installation_id
    from probe.loaders.asn import load_asn_table
    from probe.loaders.catalogs import load_catalogs
    from probe.loaders.roots import RootsError, load_os_store, load_roots
    from probe.observe.aia import IssuerFetcher
    from probe.observe.dns import ResolverSpecError, parse_resolver, system_resolver_addresses
    from probe.observe.measure import MeasureConfig
    from probe.observe.own_addresses import OwnAddresses
    from probe.run import execute, format_summary
    from probe.targets import TargetError, load_targets

    try:
        targets = load_targets(args.targets)
        roots = load_roots(args.roots)
        catalogs = load_catalogs(args.catalog)
        resolver = parse_resolver(args.resolver) if args.resolver else None
        control = None if args.control_resolver.lower() == "none" else parse_resolver(args.control_resolver)
        asn_table = load_asn_table(args.asn_db) if args.asn_db else None
    except (TargetError, RootsError, CatalogError, ResolverSpecError, AsnTableError) as exc:
        return _fail(str(exc))
    try:
        injection_address = str(ipaddress.ip_address(args.injection_address)) if args.injection_address else None
    except ValueError:
        return _fail(f"--injection-address: not an IP address: {args.injection_address!r}")
    os_store = None
    if args.os_store != "none":
        os_store = load_os_store(None if args.os_store == "system" else Path(args.os_store))
        if os_store is None and args.os_store != "system":
            return _fail(f"--os-store {args.os_store}: no certificates could be read")
    control_sni = None if args.control_sni.lower() == "none" else args.control_sni
    own_addresses = OwnAddresses()  # learned while measuring, scrubbed from every record
    config = MeasureConfig(
        timeout=args.timeout,
        roots=roots,
        resolver=resolver,
        control_resolver=control,
        control_sni=control_sni,
        dns_window=args.dns_window,
        system_udp=None if resolver else _system_nameserver(),
        control_plain=_plain_udp_of(control),
        injection_address=injection_address,
        injection_check=not args.no_injection_check,
        helpers=tuple(args.helper),
        os_store=os_store,
        own_addresses=own_addresses,
        issuer_fetcher=IssuerFetcher(args.timeout, own_addresses),
        helper_token=args.helper_token or os.environ.get("PROBE_HELPER_TOKEN") or None,
    )
    try:
        nat64 = ("64:ff9b::/96", *(str(ipaddress.IPv6Network(p)) for p in args.nat64_prefix))
    except ValueError as exc:
        return _fail(f"--nat64-prefix: not an IPv6 prefix: {exc}")
    if any(ipaddress.IPv6Network(p).prefixlen != 96 for p in nat64):
        return _fail("--nat64-prefix: only /96 prefixes embed an IPv4 address at the end")
    analysis = AnalysisContext(
        roots=roots, catalogs=catalogs, documentation_is_public=args.lab, asn=asn_table, nat64_prefixes=nat64
    )
    network = {
        "resolver": resolver.url if resolver else "system",
        "system_resolver_addresses": [] if resolver else system_resolver_addresses(),
        "control_resolver": control.url if control else None,
        "helpers": list(args.helper),
        "asn": args.asn,
        "country": args.country.upper() if args.country else None,
        "as_name": args.as_name,
        "region": args.region,
    }
    reference = {
        "roots": roots.describe(),
        "os_store": os_store.describe() if os_store else None,
        "catalogs": catalogs.describe(),
        "control_sni": control_sni,
        "documentation_addresses_public": bool(args.lab),
        "asn_table": asn_table.describe() if asn_table else None,
        "timeout": args.timeout,
        "rules_version": RULES_VERSION,
    }
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)
    try:
        summary = execute(
            targets, config, analysis, network, reference, args.out, args.concurrency, probe_id=installation_id()
        )
    except Interrupted:  # before measuring began
        print("probe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the results directory or file: every record written so far is kept
        print(f"probe: cannot write results in {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(format_summary(summary))
    if summary.interrupted:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # measuring threads are bounded, but there is no need to wait for them
    if summary.offline:
        return EXIT_OFFLINE
    return EXIT_BLOCKING if summary.blocking_found else EXIT_OK


def command_show(args: argparse.Namespace) -> int:
    from probe.results.show import show_file

    try:
        print(show_file(args.file, include_clean=args.all), end="")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return EXIT_OK


def command_helper(args: argparse.Namespace) -> int:
    from probe.helper.measure import HelperConfig
    from probe.helper.server import HelperServer
    from probe.loaders.roots import RootsError, load_roots

    host, _, port_text = args.listen.rpartition(":")
    try:
        port = int(port_text)
        ports = frozenset(int(p) for p in args.ports.split(","))
        roots = load_roots(args.roots)
    except ValueError as exc:
        return _fail(f"--listen ADDR:PORT and --ports 80,443 expected ({exc})")
    except RootsError as exc:
        return _fail(str(exc))
    for path in (args.tls_cert, args.tls_key):
        if not path.is_file():
            return _fail(f"{path}: no such file")
    config = HelperConfig(
        timeout=args.timeout,
        roots=roots,
        token=args.token or os.environ.get("PROBE_HELPER_TOKEN") or None,
        allow_documentation=args.allow_documentation_addresses,
        ports=ports,
        rate_per_minute=args.rate,
    )
    try:
        server = HelperServer((host.strip("[]"), port), config, str(args.tls_cert), str(args.tls_key))
    except (OSError, ssl.SSLError) as exc:
        return _fail(f"cannot serve on {args.listen}: {exc}")
    signal.signal(signal.SIGTERM, raise_interrupted)
    print(f"helper listening on https://{args.listen}/ (POST /v1/measure)", flush=True)
    try:
        server.serve_forever()
    except (Interrupted, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return EXIT_OK


def command_report(args: argparse.Namespace) -> int:
    import duckdb

    from probe.report import build_report, write_report
    from probe.report.load import Filters, ReportInputError
    from probe.report.sentences import LANGUAGES, TemplateError

    since, until = args.since, args.until
    try:
        if args.month:
            since, until = Filters.for_month(args.month)
        filters = Filters(since, until, args.network, args.target, args.all_confidence)
        con = duckdb.connect()
        report = build_report(con, args.paths, filters, tuple(args.language) or LANGUAGES)
        text = write_report(report, con, args.format, args.out)
    except (ReportInputError, TemplateError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write the report: {exc}")
    if text is not None:
        sys.stdout.write(text)
    for message in report.problems.messages():
        print(f"probe report: {message}", file=sys.stderr)
    if text is None:
        print(
            f"{len(report.events)} events from {report.measurements} measurements; written to "
            f"{args.out or ('report.html' if args.format == 'html' else 'report-parquet')}",
            file=sys.stderr,
        )
    return EXIT_OK


def command_analyze(args: argparse.Namespace) -> int:
    from probe.analyze.asn import AsnTableError
    from probe.analyze.catalog import CatalogError
    from probe.loaders.asn import load_asn_table
    from probe.loaders.catalogs import load_catalogs
    from probe.loaders.roots import RootsError, load_roots
    from probe.rejudge import RejudgeError, rejudge_paths

    try:
        catalogs = load_catalogs(args.catalog)
        roots = load_roots(args.roots)
        asn_table = load_asn_table(args.asn_db) if args.asn_db else None
        written = rejudge_paths(args.paths, roots, catalogs, asn_table)
    except (CatalogError, RootsError, AsnTableError, RejudgeError) as exc:
        return _fail(str(exc))
    for source, target, counts in written:
        changes = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no record"
        print(f"{source} -> {target} ({changes})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "helper":
        return command_helper(args)
    if args.command == "report":
        return command_report(args)
    if args.command == "analyze":
        return command_analyze(args)
    return command_show(args)


if __name__ == "__main__":
    sys.exit(main())
