"""An alert in plain words: the templates are data (`templates/alerts/<language>.json`), so that a
language is a file; verdict kinds are said in words, never as codes. Times are the network's local
time, named (`6 December 2020, 00:10 (Asia/Almaty, UTC+6)`), as the report's days are; UTC, said,
when the network's country is not known. Places are in the language's own form, from the report's
gazetteer (`templates/<language>.json`, `page.place_names`), others as the operator wrote them; an
unknown network is named as the report names it ("an unknown network (probe <last 8>)")."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from probe.report.changepoint import parse_time
from probe.vocabulary.anomalies import Blocking
from probe.vocabulary.errors import InputError

MAX_NAMED_SITES = 30
_REQUIRED = ("months", "date", "network", "network_without_name", "network_unknown", "kinds", "short", "words", "and",
             "and_more", "titles", "texts", "seen_in", "seen", "counted", "plural_rule", "feed_title")  # fmt: skip
_UNKNOWN = ("unknown:", "probe:")  # a network with no AS: the report's key; "probe:" in older state files


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


@cache
def place_names(language: str) -> dict[str, str]:
    """The report's gazetteer for a language (`templates/<language>.json`: `page.place_names`), so that
    an alert names a place as the page does; empty when the report has none for it."""
    path = resources.files("probe.report") / "templates" / f"{language}.json"
    try:
        names = json.loads(path.read_text(encoding="utf-8")).get("page", {}).get("place_names", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k).lower(): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def plural(rule: str, count: int) -> str:
    """CLDR's plural category: Russian's one, few and many; Kazakh nouns do not change after a numeral."""
    if rule == "ru":
        if count % 10 == 1 and count % 100 != 11:
            return "one"
        if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
            return "few"
        return "many"
    if rule == "kk":
        return "other"
    return "one" if count == 1 else "other"


def _word(words: dict[str, dict[str, str]], rule: str, name: str, count: int) -> str:
    forms = words.get(name, {})
    return forms.get(plural(rule, count)) or forms.get("other") or forms.get("many") or name


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    sign, minutes = ("+" if minutes >= 0 else "-"), abs(minutes)
    return f"UTC{sign}{minutes // 60}" + (f":{minutes % 60:02d}" if minutes % 60 else "")


def when(moment: str | None, t: dict[str, Any], zone: str | None = None) -> str:
    """A UTC instant in the zone's local time, the zone named: "(Asia/Almaty, UTC+6)"; "UTC" for UTC."""
    if not moment:
        return "?"
    at = parse_time(moment).replace(tzinfo=UTC)
    named = "UTC"
    if zone and zone != "UTC":
        try:
            at = at.astimezone(ZoneInfo(zone))
            named = f"({zone}, {_offset(at.utcoffset() or timedelta())})"
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return str(t["date"]).format(day=at.day, month=t["months"][at.month - 1], year=at.year,
                                 hh=f"{at.hour:02d}", mm=f"{at.minute:02d}", zone=named)  # fmt: skip


def _from(moment: str | None, t: dict[str, Any], zone: str | None) -> str:
    """The word for "from" before a date where the language's depends on the day (Russian: "со 2")."""
    words = t.get("from_word") or {}
    if not moment or not words:
        return str(words.get("default", ""))
    day = str(int(when(moment, {"date": "{day}", "months": [""] * 12}, zone)))
    return str(words.get(day, words.get("default", "")))


def network_words(alert: dict[str, Any], t: dict[str, Any]) -> str:
    network = str(alert["network"])
    if network.startswith(_UNKNOWN):
        return str(t["network_unknown"]).format(probe=network.partition(":")[2][-8:])
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


def _join(items: list[str], t: dict[str, Any]) -> str:
    """`a`, `a and b`, `a, b and c` in the template's words."""
    return ", ".join(items[:-1]) + str(t["and"]) + items[-1] if len(items) > 1 else "".join(items)


def places(names: list[str], language: str, t: dict[str, Any]) -> str:
    """The places in the language's form (the report's gazetteer first, then the others as written),
    in the order of their names as written, the same in every language."""
    gazetteer = place_names(language)
    written = {name.strip().lower(): name for name in names}
    keys = sorted(written.items(), key=lambda item: (item[0] not in gazetteer, item[0]))
    return _join([gazetteer.get(key, name) for key, name in keys], t)


def _sites(sites: list[str], t: dict[str, Any]) -> str:
    named = ", ".join(sites[:MAX_NAMED_SITES])
    if len(sites) > MAX_NAMED_SITES:
        named += " " + str(t["and_more"]).format(count=len(sites) - MAX_NAMED_SITES)
    return named


def render(alert: dict[str, Any], language: str = "en") -> tuple[str, str]:
    """(title, text) of an alert in a language."""
    t = template(language)
    rule, words = str(t["plural_rule"]), t["words"]
    kind, kind_of_alert, zone = kind_name(alert), str(alert["type"]), alert.get("time_zone")
    count, total = len(alert["sites"]), len(alert.get("all_sites") or alert["sites"])
    forms = {name: _word(words, rule, name, count) for name in words}  # every word agrees with the sites
    probes, measurements = int(alert.get("probes") or 0), int(alert.get("measurements") or 0)
    counts = {f"{name}{case}": _word(words, rule, name + case, n) for name, n in
              (("probe", probes), ("measurement", measurements)) for case in ("", "_ins", "_loc")}  # fmt: skip
    seen = str(t["seen_in"] if alert.get("places") else t["seen"]).format(
        places=places(alert.get("places") or [], language, t), probes=probes, measurements=measurements,
        counted=t["counted"][kind_of_alert], **counts,
    )  # fmt: skip
    values = {
        **forms, "network": network_words(alert, t), "count": count, "total": total, "seen": seen,
        "kind": str(t["kinds"].get(kind, kind)).format(by=alert.get("by") or "", **forms),
        "short": str(t["short"].get(kind.replace("_unnamed", ""), kind)), "list": _sites(alert["sites"], t),
        "since": when(alert.get("since"), t, zone), "until": when(alert.get("until"), t, zone),
        "opened": when(alert.get("opened") or alert.get("since"), t, zone),
        "from_since": _from(alert.get("since"), t, zone), "from_opened": _from(alert.get("opened"), t, zone),
        "From_since": _from(alert.get("since"), t, zone).capitalize(),
        "total_site": _word(words, rule, "site", total), "total_site_gen": _word(words, rule, "site_gen", total),
    }  # fmt: skip
    titles, texts = t["titles"], t["texts"]
    if kind in t.get("network_kinds", ()):  # issue 22: the network's own state, said without sites
        titles, texts = t["network_titles"], t["network_texts"]
    return str(titles[kind_of_alert]).format(**values), str(texts[kind_of_alert]).format(**values)
