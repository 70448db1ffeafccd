"""`probe watch`'s options (kept apart from probe.cli.main, which holds the other commands')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.cli.settings import DAY
from probe.cli.settings import positive as _positive

WEBHOOK_FORMATS = ("json", "slack", "telegram")


def add_watch_command(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="follow a results store (a folder or s3://BUCKET/PREFIX) and alert when blocking starts and ends",
        description="Follow a results store and raise an alert when a blocking episode starts and when it ends: "
        "a webhook (JSON, Slack or Telegram) and an Atom feed file, each alert delivered once across restarts "
        "(the state file keeps what was read and delivered). docs/alerts.md explains the rule.",
    )
    watch.add_argument("store", help="a results folder (as probe run writes it) or s3://BUCKET/PREFIX (probe upload)")
    watch.add_argument(
        "--state",
        type=Path,
        help="the watch's state file (default: watch-<store digest>.json in the probe's state directory)",
    )
    watch.add_argument("--webhook", metavar="URL", help="POST each alert here (or PROBE_WATCH_WEBHOOK)")
    watch.add_argument("--webhook-format", choices=WEBHOOK_FORMATS, default="json",
                       help="the body: the alert as JSON, Slack's {\"text\"} or Telegram's sendMessage")  # fmt: skip
    watch.add_argument("--chat-id", help="Telegram's chat_id (or PROBE_WATCH_CHAT_ID), with --webhook-format telegram")
    watch.add_argument("--atom", type=Path, metavar="FILE", help="keep an Atom feed of the alerts in this file")
    watch.add_argument("--language", default="en", help="the alerts' language (en, ru, kk)")
    watch.add_argument("--tz", metavar="ZONE",
                       help="give every network's times in this time zone (default: from its country, as probe report "
                       "does; UTC when the country is not known)")  # fmt: skip
    when = watch.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one round, then exit (for cron and timers)")
    when.add_argument("--interval", type=_positive(float, DAY), default=300.0, metavar="SECONDS",
                      help="seconds between rounds when not --once")  # fmt: skip
    watch.add_argument("--evidence", type=_positive(int, 1000), default=3, metavar="N",
                       help="how many more blocked than reachable measurements start an episode, and the reverse "
                       "ends it (the CUSUM's threshold)")  # fmt: skip
    watch.add_argument("--group-window", type=_positive(float, 24 * 30), default=6.0, metavar="HOURS",
                       help="sites starting within this many hours on one network and kind are one alert")  # fmt: skip
    dedupe = "measurement ids kept to drop copies; records older than this, arriving late, are not used"
    watch.add_argument("--dedupe-days", type=_positive(float, 366), default=7.0, metavar="DAYS", help=dedupe)
    watch.add_argument("--endpoint", help="the object store's URL, for s3:// (AWS when not given)")
    watch.add_argument("--timeout", type=_positive(float, DAY), default=10.0, metavar="SECONDS",
                       help="seconds for each HTTP request (the webhook, the object store)")  # fmt: skip
    watch.add_argument("--tries", type=_positive(int, 10), default=3, metavar="N",
                       help="tries for each alert in a round; what still fails waits for the next round")  # fmt: skip
    watch.add_argument("--quiet", action="store_true", help="print errors only")
