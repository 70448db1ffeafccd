"""An alert in plain words: the templates are data (`templates/alerts/<language>.json`), so that a
language is a file; verdict kinds are said in words, never as codes. Times are UTC, and say so."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from probe.report.changepoint import parse_time
from probe.vocabulary.anomalies import Blocking
from probe.vocabulary.errors import InputError

MAX_NAMED_SITES = 30
_REQUIRED = ("months", "date", "network", "network_without_name", "network_unknown", "kinds", "short", "words",
             "and_more", "titles", "texts", "seen_in", "seen", "plural_rule", "feed_title")  # fmt: skip


class AlertTemplateError(InputError):
    """No template for a language, or a broken one."""


def languages() -> list[str]:
    folder = resources.files("probe.report") / "templates" / "alerts"
    return sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".json"))


@cache
def template(language: str) -> dict[str, Any]:
    path = resources.files("probe.report") / "templates" / "alerts" / f"{language}.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlertTemplateError(
            f"no alert template for language {language!r}; there are: {', '.join(languages())}"
        ) from None
    except ValueError as exc:
        raise AlertTemplateError(f"templates/alerts/{language}.json: not valid JSON ({exc})") from None
    missing = [key for key in _REQUIRED if key not in loaded]
    if missing:
        raise AlertTemplateError(f"templates/alerts/{language}.json: missing {', '.join(missing)}")
    return loaded


def plural(rule: str, count: int) -> str:
    if rule == "ru":
        if count % 10 == 1 and count % 100 != 11:
            return "one"
        if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
            return "few"
        return "many"
    return "one" if count == 1 else "other"


def _word(words: dict[str, dict[str, str]], rule: str, name: str, count: int) -> str:
    forms = words.get(name, {})
    return forms.get(plural(rule, count)) or forms.get("other") or forms.get("many") or name


def when(moment: str | None, t: dict[str, Any]) -> str:
    if not moment:
        return "?"
    at = parse_time(moment)
    return str(t["date"]).format(day=at.day, month=t["months"][at.month - 1], year=at.year,
                                 hh=f"{at.hour:02d}", mm=f"{at.minute:02d}")  # fmt: skip


def network_words(alert: dict[str, Any], t: dict[str, Any]) -> str:
    network = str(alert["network"])
    if network.startswith("probe:"):
        return str(t["network_unknown"]).format(probe=network[6:])
    if alert.get("as_name"):
        return str(t["network"]).format(network=network, as_name=alert["as_name"])
    return str(t["network_without_name"]).format(network=network)


def kind_name(alert: dict[str, Any]) -> str:
    """The template's key for the alert's kind."""
    blocking = str(alert.get("blocking") or "")
    if blocking == Blocking.TLS_MITM and not alert.get("by"):
        return "tls_mitm_unnamed"
    if blocking == Blocking.HTTP and alert.get("by"):
        return "http_blockpage"
    return blocking


def _sites(sites: list[str], t: dict[str, Any]) -> str:
    named = ", ".join(sites[:MAX_NAMED_SITES])
    if len(sites) > MAX_NAMED_SITES:
        named += " " + str(t["and_more"]).format(count=len(sites) - MAX_NAMED_SITES)
    return named


def render(alert: dict[str, Any], language: str = "en") -> tuple[str, str]:
    """(title, text) of an alert in a language."""
    t = template(language)
    rule, words = str(t["plural_rule"]), t["words"]
    kind = kind_name(alert)
    count = len(alert["sites"])
    total = len(alert.get("all_sites") or alert["sites"])
    phrase = str(t["kinds"].get(kind, kind)).format(by=alert.get("by") or "")
    short = str(t["short"].get(kind.replace("_unnamed", ""), kind))
    network = network_words(alert, t)
    probes, measurements = int(alert.get("probes") or 0), int(alert.get("measurements") or 0)
    seen_template = t["seen_in"] if alert.get("places") else t["seen"]
    seen = str(seen_template).format(
        places=", ".join(alert.get("places") or []), probes=probes, measurements=measurements,
        probe=_word(words, rule, "probe", probes), measurement=_word(words, rule, "measurement", measurements),
    )  # fmt: skip
    values = {
        "network": network, "count": count, "site": _word(words, rule, "site", count), "kind": phrase,
        "short": short, "since": when(alert.get("since"), t), "until": when(alert.get("until"), t),
        "opened": when(alert.get("opened") or alert.get("since"), t), "list": _sites(alert["sites"], t),
        "total": total, "total_site": _word(words, rule, "site", total), "seen": seen,
        "have": _word(words, rule, "have", count), "were": _word(words, rule, "were", count),
    }  # fmt: skip
    kind_of_alert = str(alert["type"])
    return str(t["titles"][kind_of_alert]).format(**values), str(t["texts"][kind_of_alert]).format(**values)
