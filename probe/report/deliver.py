"""Delivering alerts: a webhook (HTTP POST of JSON: the alert itself, Slack's `{"text"}` or Telegram's
sendMessage body) and an Atom 1.0 feed file.

Every request has a timeout and a bounded number of tries in a round (a pause between them); what
still fails stays pending in the watch's state and is tried again next round, in order (an alert is
never sent before an older one that failed). A receiver can drop a repeat by the alert's `id`: the
delivery is at least once (a crash after the receiver answered and before the state was written
sends it again).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _escape

from probe import __version__
from probe.report.alert_text import render, template
from probe.report.changepoint import parse_time

FORMATS = ("json", "slack", "telegram")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
USER_AGENT = f"kz-probe/{__version__} (probe watch)"


@dataclass(frozen=True)
class Webhook:
    url: str
    format: str = "json"
    chat_id: str | None = None  # Telegram's chat
    timeout: float = 10.0
    attempts: int = 3
    pause: float = 2.0  # seconds between tries, doubled each time

    @property
    def shown(self) -> str:
        """The URL without its path and query: a Telegram URL holds the bot's token."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}/..."


def body(alert: dict[str, Any], webhook: Webhook, language: str) -> dict[str, Any]:
    title, text = render(alert, language)
    if webhook.format == "slack":
        return {"text": _slack_escape(text)}
    if webhook.format == "telegram":
        return {"chat_id": webhook.chat_id, "text": text, "disable_web_page_preview": True}
    fields = {k: v for k, v in alert.items() if k not in ("delivered",)}
    return {**fields, "language": language, "title": title, "text": text}


def _slack_escape(text: str) -> str:
    """Slack reads `<...>` as links and mentions: names are the sites' and the interceptors' own."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post(webhook: Webhook, payload: dict[str, Any]) -> str | None:
    """POST one alert; None when the receiver took it (2xx), else why not (after every try)."""
    data = json.dumps(payload).encode("ascii")  # \u escapes: a lone surrogate in a name cannot break it
    why = ""
    for attempt in range(max(1, webhook.attempts)):
        if attempt:
            time.sleep(webhook.pause * 2 ** (attempt - 1))
        request = urllib.request.Request(webhook.url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=webhook.timeout) as answer:  # noqa: S310 - the user's URL
                answer.read(65536)
                return None
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                return why  # the receiver refuses this body: trying again now would not help
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            why = str(reason) or type(exc).__name__
    return why


def deliver(alerts: list[dict[str, Any]], webhook: Webhook | None, language: str) -> tuple[int, str | None]:
    """Send the pending alerts in order; (how many were sent, why the first that failed did)."""
    sent = 0
    for alert in alerts:
        if alert.get("delivered"):
            continue
        if webhook is None:
            alert["delivered"] = True
            continue
        failure = post(webhook, body(alert, webhook, language))
        if failure is not None:
            return sent, f"webhook {webhook.shown}: {failure}"
        alert["delivered"] = True
        sent += 1
    return sent, None


def escape(text: str) -> str:
    """Text for XML: escaped, and without the characters XML 1.0 cannot hold (names are attacker-chosen)."""
    return _escape(_NOT_XML.sub("\ufffd", text), {'"': "&quot;"})


def _stamp(moment: str | None) -> str:
    at = parse_time(moment) if moment else datetime.now(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def atom(alerts: list[dict[str, Any]], feed_id: str, language: str) -> str:
    """An Atom 1.0 document (RFC 4287): the feed's id and each entry's stay the same across rounds."""
    t = template(language)
    newest = max((a.get("recorded") or a.get("detected") or "" for a in alerts), default="")
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{escape(language)}">',
        f"  <id>{escape(feed_id)}</id>",
        f"  <title>{escape(str(t['feed_title']))}</title>",
        f"  <updated>{_stamp(newest or None)}</updated>",
        "  <author><name>kz-probe</name></author>",
        f'  <generator version="{escape(__version__)}">kz-probe</generator>',
    ]
    for alert in reversed(alerts):  # newest first
        title, text = render(alert, language)
        lines += [
            "  <entry>",
            f"    <id>urn:kz-probe:alert:{escape(alert['id'])}</id>",
            f"    <title>{escape(title)}</title>",
            f"    <updated>{_stamp(alert.get('recorded') or alert.get('detected'))}</updated>",
            f"    <published>{_stamp(alert.get('detected'))}</published>",
            f'    <category term="{escape(str(alert["type"]))}"/>',
            f'    <content type="text">{escape(text)}</content>',
            "  </entry>",
        ]
    lines.append("</feed>")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write beside, flush to disk, then rename over: a reader sees the old file or the new, whole."""
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
