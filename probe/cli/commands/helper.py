"""`probe helper serve`: the control vantage."""

from __future__ import annotations

import argparse
import os
import signal
import ssl

from probe.cli.commands import EXIT_OK, fail
from probe.run.signals import Interrupted, raise_interrupted


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
        return fail(f"--listen ADDR:PORT and --ports 80,443 expected ({exc})")
    except RootsError as exc:
        return fail(str(exc))
    for path in (args.tls_cert, args.tls_key):
        if not path.is_file():
            return fail(f"{path}: no such file")
    # One client's share of the connections: never all of them (a probe keeps four to a helper).
    per_client = args.connections_per_client or min(16, max(1, args.connections // 4))
    if per_client > args.connections:
        return fail(f"--connections-per-client {per_client} is more than --connections {args.connections}")
    at_once = HelperConfig.max_concurrent  # measurements the helper runs at once
    if args.measurements_per_client > at_once:
        return fail(f"--measurements-per-client {args.measurements_per_client} is more than the {at_once} at once")
    config = HelperConfig(
        timeout=args.timeout,
        roots=roots,
        token=args.token or os.environ.get("PROBE_HELPER_TOKEN") or None,
        allow_documentation=args.allow_documentation_addresses,
        ports=ports,
        rate_per_minute=args.rate,
        burst=args.burst,
        request_deadline=args.request_deadline,
        max_connections=args.connections,
        max_connections_per_client=per_client,
        max_concurrent_per_client=args.measurements_per_client,
    )
    try:
        server = HelperServer((host.strip("[]"), port), config, str(args.tls_cert), str(args.tls_key))
    except (OSError, ssl.SSLError) as exc:
        return fail(f"cannot serve on {args.listen}: {exc}")
    signal.signal(signal.SIGTERM, raise_interrupted)
    print(f"helper listening on https://{args.listen}/ (POST /v1/measure)", flush=True)
    try:
        server.serve_forever()
    except (Interrupted, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return EXIT_OK
