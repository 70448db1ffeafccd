"""`probe run`: measure every target and write a results file."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from probe.commands import EXIT_BLOCKING, EXIT_INTERRUPTED, EXIT_OFFLINE, EXIT_OK, EXIT_WRITE_FAILED, fail
from probe.signals import Interrupted, raise_interrupted

if TYPE_CHECKING:
    from probe.observe.dns import ResolverSpec


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
        return fail(str(exc))
    try:
        injection_address = str(ipaddress.ip_address(args.injection_address)) if args.injection_address else None
    except ValueError:
        return fail(f"--injection-address: not an IP address: {args.injection_address!r}")
    os_store = None
    if args.os_store != "none":
        os_store = load_os_store(None if args.os_store == "system" else Path(args.os_store))
        if os_store is None and args.os_store != "system":
            return fail(f"--os-store {args.os_store}: no certificates could be read")
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
        return fail(f"--nat64-prefix: not an IPv6 prefix: {exc}")
    if any(ipaddress.IPv6Network(p).prefixlen != 96 for p in nat64):
        return fail("--nat64-prefix: only /96 prefixes embed an IPv4 address at the end")
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
