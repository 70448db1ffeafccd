"""`probe run`: measure every target and write a results file."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from probe.cli.commands import (
    EXIT_BLOCKING,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_UPLOAD_FAILED,
    EXIT_USAGE,
    EXIT_WRITE_FAILED,
    fail,
    state_failed,
)
from probe.run.lock import Locked, RunLock
from probe.run.signals import Interrupted, raise_interrupted

if TYPE_CHECKING:
    from probe.analyze.asn import AsNumbers
    from probe.forensics.examine import Forensics
    from probe.loaders.reference_endpoints import ReferenceEndpoints
    from probe.netx.dns import ResolverSpec
    from probe.netx.own_addresses import OwnAddresses
    from probe.observe.measure import MeasureConfig
    from probe.observe.network_state import NetworkChecks
    from probe.run.execute import RunSummary


def _system_nameserver() -> ResolverSpec | None:
    """The first nameserver in resolv.conf, to ask directly over UDP beside getaddrinfo."""
    from probe.netx.dns import ResolverSpecError, parse_resolver, system_resolver_addresses

    for address in system_resolver_addresses():
        try:
            return parse_resolver(f"udp://{address}" if ":" not in address else f"udp://[{address}]")
        except ResolverSpecError:
            continue
    return None


def _plain_udp_of(control: ResolverSpec | None) -> ResolverSpec | None:
    """The control's own address over plain UDP, to compare with its encrypted answers."""
    from probe.netx.dns import ResolverSpec

    if control is None or control.transport == "udp" or control.route_address is None:
        return None
    return ResolverSpec("udp", control.route_address, 53)


def command_run(args: argparse.Namespace) -> int:
    from probe.analyze.verdict import RULES_VERSION, AnalysisContext
    from probe.cli.commands.targets import packaged_targets
    from probe.loaders.asn import load_asn_table
    from probe.loaders.catalogs import load_catalogs
    from probe.loaders.roots import load_os_store, load_roots
    from probe.loaders.targets import load_targets
    from probe.netx.dns import parse_resolver, system_resolver_addresses
    from probe.netx.own_addresses import OwnAddresses
    from probe.netx.udpwire import reply_ttl_available
    from probe.observe.aia import IssuerFetcher
    from probe.observe.measure import MeasureConfig
    from probe.publish.identity import StateError, installation_id
    from probe.publish.upload import UploadUsageError, ready
    from probe.results.writer import compress
    from probe.run.execute import execute, format_summary, offline_words
    from probe.vocabulary.errors import InputError

    try:
        targets = load_targets(args.targets)
        roots = load_roots(args.roots)
        catalogs = load_catalogs(args.catalog)
        resolver = parse_resolver(args.resolver) if args.resolver else None
        control = None if args.control_resolver.lower() == "none" else parse_resolver(args.control_resolver)
        asn_table = load_asn_table(args.asn_db) if args.asn_db else None
        endpoints = _reference_endpoints(args.reference_endpoints)
    except InputError as exc:  # a targets file, roots, a catalog, a resolver URL, an AS table
        return fail(str(exc))
    if args.targets == packaged_targets() and not args.quiet:  # no ./targets.txt: say which list is measured
        print(f"probe: measuring the list shipped with the probe ({len(targets)} targets, {args.targets}); "
              "--targets FILE names another", file=sys.stderr)  # fmt: skip
    try:  # before anything is measured: where the records' id is kept, where the upload goes
        probe_id = installation_id()
        if args.upload:
            ready(args.upload_to)
    except UploadUsageError as exc:
        return fail(f"--upload: {exc}")
    except StateError as exc:
        return state_failed(str(exc))
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
        minting_test=not args.no_minting_test,
        quic=args.quic,  # issue 22: QUIC
        helpers=tuple(args.helper),
        os_store=os_store,
        own_addresses=own_addresses,
        issuer_fetcher=IssuerFetcher(args.timeout, own_addresses),
        target_deadline=args.target_deadline or 6 * args.timeout,
        helper_token=args.helper_token or os.environ.get("PROBE_HELPER_TOKEN") or None,
        throughput=args.throughput == "on" or (args.throughput == "auto" and bool(args.helper)),  # issue 22
    )
    try:
        nat64 = ("64:ff9b::/96", *(str(ipaddress.IPv6Network(p)) for p in args.nat64_prefix))
    except ValueError as exc:
        return fail(f"--nat64-prefix: not an IPv6 prefix: {exc}")
    if any(ipaddress.IPv6Network(p).prefixlen != 96 for p in nat64):
        return fail("--nat64-prefix: only /96 prefixes embed an IPv4 address at the end")
    try:  # informed consent (probe/cli/consent.py): the input is checked, nothing is measured yet
        if not _consented(args, len(targets)):
            return EXIT_USAGE
    except StateError as exc:
        return state_failed(str(exc))
    analysis = AnalysisContext(
        roots=roots, catalogs=catalogs, documentation_is_public=args.lab, asn=asn_table, nat64_prefixes=nat64
    )
    asn, as_name, country = args.asn, args.as_name, args.country
    if asn_table is not None and not asn:
        learned = _own_network(args, roots.path, control, own_addresses, asn_table)
        if learned is not None:
            asn, as_name, country = f"AS{learned[0]}", as_name or learned[1], country or learned[2]
    network = {
        "resolver": resolver.url if resolver else "system",
        "system_resolver_addresses": [] if resolver else system_resolver_addresses(),
        "control_resolver": control.url if control else None,
        "helpers": list(args.helper),
        "asn": asn,
        "country": country.upper() if country else None,
        "as_name": as_name,
        "region": args.region,
    }
    insecure = [url for url in args.helper if not url.lower().startswith("https://")]
    if insecure and not args.lab:
        return fail(
            f"--helper {insecure[0]}: a helper is reached over https:// only (its token would travel in the clear)"
        )
    reference = {
        "roots": roots.describe(),
        "os_store": os_store.describe() if os_store else None,
        "catalogs": catalogs.describe(),
        "control_sni": control_sni,
        "documentation_addresses_public": bool(args.lab),
        "asn_table": asn_table.describe() if asn_table else None,
        "timeout": args.timeout,
        "rules_version": RULES_VERSION,
        "features": {"reply_ip_ttl": reply_ttl_available()},  # what this platform could observe
    }
    checks = _network_checks(args, endpoints, config, network["country"])
    if checks is not None and endpoints is not None:
        reference["reference_endpoints"] = endpoints.describe()
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)
    lock = RunLock(args.lock or args.out / ".probe.run.lock")
    try:
        with lock:
            if lock.previous and not args.quiet:
                print(f"probe: a lock left by a run that did not finish ({lock.previous}) was stale; taken over",
                      file=sys.stderr)  # fmt: skip
            summary = execute(
                targets, config, analysis, network, reference, args.out, args.concurrency,
                probe_id=probe_id, deadline=args.deadline, show_progress=False if args.quiet else None,
                forensics=_forensics(args), network_checks=checks,
            )  # fmt: skip
            summary.results_path = compress(summary.results_path, args.compress)
    except Locked as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except Interrupted:  # before measuring began
        print("probe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the results directory or file: every record written so far is kept
        print(f"probe: cannot write results in {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    report = summary.as_dict()
    uploaded = _upload_after(args, summary.results_path, report) if args.upload and not summary.interrupted else True
    code = exit_code(summary, uploaded)
    if summary.offline and (args.quiet or args.json):  # the summary is not printed: say it here
        print(f"probe: {offline_words(summary)}", file=sys.stderr)
    if args.json:
        print(json.dumps({**report, "exit_code": code}, ensure_ascii=False))
    elif not args.quiet:
        print(format_summary(summary))
    if summary.interrupted or summary.deadline_reached:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # measuring threads are bounded, but there is no need to wait for them
    return code


def _reference_endpoints(path: Path | None) -> ReferenceEndpoints | None:
    """The catalog of reference endpoints (`--reference-endpoints FILE` instead of the shipped one;
    'none': no network checks), every resolver URL in it checked now."""
    from probe.loaders.reference_endpoints import ReferenceEndpointsError, load_reference_endpoints
    from probe.netx.dns import ResolverSpecError, parse_resolver

    if path is not None and str(path).lower() == "none":
        return None
    catalog = load_reference_endpoints(path)
    for endpoint in [*catalog.foreign, *(e for c in catalog.countries.values() for e in c)]:
        if endpoint.resolver is not None:
            try:
                parse_resolver(endpoint.resolver)
            except ResolverSpecError as exc:
                raise ReferenceEndpointsError(f"{path or 'reference_endpoints.json'}: {endpoint.name}: {exc}") from None
    return catalog


def _network_checks(
    args: argparse.Namespace, catalog: ReferenceEndpoints | None, config: MeasureConfig, country: str | None
) -> NetworkChecks | None:
    """What the run asks of the network's state: the country's domestic endpoints, the foreign ones,
    the run's control resolver and helpers; asked again every N targets and every so many minutes.
    The shipped catalog is used where it knows the country's domestic services (without them a cut-off
    cannot be told from no internet), never in a lab (`--lab`: public services are not the lab's); a
    file given with --reference-endpoints always is."""
    from probe.observe.network_state import NetworkChecks, run_endpoints

    if catalog is None:
        return None
    shipped = args.reference_endpoints is None
    if shipped and (args.lab or not country or country.upper() not in catalog.countries):
        return None
    endpoints = run_endpoints(catalog.for_country(country), config)
    return NetworkChecks(endpoints, args.network_check_every, args.network_check_minutes * 60)


def _consented(args: argparse.Namespace, count: int) -> bool:
    """Consent kept for the current text, given by --yes or the file's `consent = true` (recorded
    now), or answered yes at a terminal; False (said on stderr) when there is none."""
    from probe.cli.consent import obtain

    source = getattr(args, "sources", {}).get("consent", "command line")
    given = None if not args.consent else "--yes" if source == "command line" else "configuration"
    where = f"uploads them to {args.upload_to}" if args.upload else "sends nothing"
    details = f"This run: {count} sites from {args.targets}; it writes the results in {args.out}/ and {where}."
    return obtain(given, details)


def _forensics(args: argparse.Namespace) -> Forensics:
    """The run's forensic steps: on by default where the capability allows (not the user id)."""
    from probe.forensics.capability import raw_capability
    from probe.forensics.examine import TURNED_OFF, Forensics

    return Forensics(TURNED_OFF if not args.forensics else raw_capability(), args.forensics_limit)


def _own_network(
    args: argparse.Namespace, roots: str, control: ResolverSpec | None, own: OwnAddresses, table: AsNumbers
) -> tuple[int, str | None, str | None] | None:
    """The network's AS, name and country, from the probe's public address in a local table. The
    address is learned from a helper (or is the local one, on a server with a public address), used
    for this lookup only, and scrubbed from every record; never finer than the country."""
    from probe.netx.netcheck import source_address
    from probe.observe.helperclient import ask_address

    token = args.helper_token or os.environ.get("PROBE_HELPER_TOKEN") or None
    public = next((a for a in (ask_address(h, token, args.timeout, roots) for h in args.helper) if a), None)
    if public is None and control is not None and control.route_address is not None:
        local = source_address(control.route_address)
        public = local if local is not None and ipaddress.ip_address(local).is_global else None
    if public is None:
        return None
    own.add(public)
    return table.network(public)


def exit_code(summary: RunSummary, uploaded: bool) -> int:
    """A run's exit code (docs/operating.md): when several apply, the first of interrupted (4),
    offline (3), upload failed (7), blocking found (1); else 0. Only 0 and 1 are a success for the
    systemd unit: findings are results, a run that measured nothing or lost its upload is not."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.offline:
        return EXIT_OFFLINE
    if not uploaded:
        return EXIT_UPLOAD_FAILED
    return EXIT_BLOCKING if summary.blocking_found else EXIT_OK


def _upload_after(args: argparse.Namespace, path: Path, report: dict[str, object]) -> bool:
    """The run's file to the object store (its destination and ledger were checked before measuring)."""
    from probe.publish.identity import StateError
    from probe.publish.upload import UploadError, upload_files

    try:
        sent = upload_files([path], args.upload_to, args.upload_endpoint, quiet=True)
    except (UploadError, StateError) as exc:
        print(f"probe: upload failed: {exc} (what was sent is kept; `probe upload` resumes)", file=sys.stderr)
        report["upload"] = {"failure": str(exc)}
        return False
    report["upload"] = {"sent": [item.key for item in sent]}
    return True
