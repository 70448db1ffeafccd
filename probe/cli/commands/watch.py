"""`probe watch`: follow a results store and alert when blocking episodes start and end (docs/alerts.md)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from probe.cli.commands import EXIT_LOCKED, EXIT_OK, EXIT_UPLOAD_FAILED, fail, state_failed


def _options(args: argparse.Namespace) -> object:
    from probe.publish.identity import state_directory
    from probe.report.alert_text import template
    from probe.report.deliver import Webhook
    from probe.report.follow import is_s3, s3_location
    from probe.report.localtime import zone_exists
    from probe.report.watch import WatchOptions

    store = args.store if is_s3(args.store) else str(Path(args.store).resolve())
    if is_s3(store):
        s3_location(store)  # a bucket is named
    template(args.language)  # an unknown language is said now, with the ones there are
    if args.tz and not zone_exists(args.tz):
        raise ValueError(f"--tz {args.tz!r}: not a time zone (e.g. Asia/Almaty, Europe/Moscow, UTC)")
    url = args.webhook or os.environ.get("PROBE_WATCH_WEBHOOK")
    chat = args.chat_id or os.environ.get("PROBE_WATCH_CHAT_ID")
    webhook = None
    if url:
        if not url.startswith(("http://", "https://")):
            raise ValueError("--webhook: expected an http:// or https:// URL")
        if args.webhook_format == "telegram" and not chat:
            raise ValueError("--webhook-format telegram needs --chat-id (or PROBE_WATCH_CHAT_ID)")
        webhook = Webhook(url, args.webhook_format, chat, timeout=args.timeout, attempts=args.tries)
    elif args.atom is None:
        raise ValueError("nowhere to deliver alerts: give --webhook URL (or PROBE_WATCH_WEBHOOK), --atom FILE, or both")
    digest = hashlib.sha256(store.encode("utf-8")).hexdigest()[:12]
    state = args.state or state_directory() / f"watch-{digest}.json"
    return WatchOptions(store=store, state=state, webhook=webhook, atom=args.atom, language=args.language,
                        evidence=args.evidence, window_days=args.dedupe_days, group_hours=args.group_window,
                        endpoint=args.endpoint, timeout=args.timeout, tz=args.tz)  # fmt: skip


def command_watch(args: argparse.Namespace) -> int:
    from probe.publish.identity import StateError
    from probe.report.follow import StoreUnreachable
    from probe.report.watch import WatchBusy, watch_round
    from probe.vocabulary.errors import InputError

    try:
        options = _options(args)
    except (InputError, ValueError) as exc:
        return fail(f"watch: {exc}")
    except StateError as exc:
        return state_failed(str(exc))
    while True:
        try:
            result = watch_round(options)  # type: ignore[arg-type]
        except WatchBusy as exc:
            print(f"probe: watch: {exc}", file=sys.stderr)
            code = EXIT_LOCKED
        except StoreUnreachable as exc:
            print(f"probe: watch: the store did not answer: {exc} (nothing of this round is kept)", file=sys.stderr)
            code = EXIT_UPLOAD_FAILED
        except InputError as exc:
            return fail(f"watch: {exc}")
        except OSError as exc:
            return state_failed(f"watch: cannot write the state or the feed: {exc}")
        else:
            quiet = args.quiet or (not args.once and not result.read.files_read and not result.alerts)
            code = _said(result, quiet, args.language)
        if args.once:
            return code
        time.sleep(args.interval)


def _said(result: object, quiet: bool, language: str) -> int:
    from probe.report.alert_text import render
    from probe.report.watch import Round

    assert isinstance(result, Round)
    read = result.read
    if read.bad_lines:
        shown = "; ".join(read.places)
        more = read.bad_lines - len(read.places)
        print(f"probe: watch: {read.bad_lines} lines or files not read: {shown}" + (f" (and {more} more)" if more > 0
              else ""), file=sys.stderr)  # fmt: skip
    if not quiet:
        for alert in result.alerts:
            print(render(alert, language)[0])
        print(f"watch: {read.files_read} files read, {result.evidence} measurements as evidence "
              f"({result.duplicates} copies, {result.late} late), {len(result.alerts)} alerts, "
              f"{result.sent} sent, {result.pending} pending", file=sys.stderr)  # fmt: skip
    if result.failure:
        print(f"probe: watch: delivery failed: {result.failure}; tried again next round", file=sys.stderr)
        return EXIT_UPLOAD_FAILED
    return EXIT_OK
