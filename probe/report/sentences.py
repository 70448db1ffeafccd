"""Ready-to-paste sentences in the monitoring record's style, from the events, in each language.

The words are data (`templates/<language>.json`), so that a Kazakh template can be added without
code: months, date ranges, plural forms (by the language's rule), and one sentence per kind of
finding. Events are grouped by kind, what names the finding (the interception CA, the blockpage),
network and place; a sentence counts the sites and the probes that saw them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from probe.report.events import Event
from probe.vocabulary.errors import InputError

LANGUAGES = ("en", "ru")


def _plural_en(n: int) -> str:
    return "one" if n == 1 else "other"


def _plural_ru(n: int) -> str:
    """CLDR's rule for Russian: 1, 21, 31 (not 11) `one`; 2-4, 22-24 (not 12-14) `few`; else `many`."""
    if n % 10 == 1 and n % 100 != 11:
        return "one"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "few"
    return "many"


def _plural_none(n: int) -> str:
    """Languages whose nouns do not change after a numeral (Kazakh, Turkish)."""
    return "other"


PLURAL_RULES: dict[str, Callable[[int], str]] = {"en": _plural_en, "ru": _plural_ru, "kk": _plural_none}


class TemplateError(InputError):
    """A template file that cannot be used; the message names the file and the key."""


def load_template(language: str) -> dict[str, Any]:
    path = resources.files("probe.report") / "templates" / f"{language}.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"no sentence template for language {language!r} (templates/{language}.json)") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"templates/{language}.json:{exc.lineno}: not valid JSON: {exc.msg}") from None
    for key in ("months", "dates", "place", "network", "network_without_name", "words", "findings", "plural_rule"):
        if key not in template:
            raise TemplateError(f"templates/{language}.json: missing {key!r}")
    if template["plural_rule"] not in PLURAL_RULES:
        raise TemplateError(f"templates/{language}.json: unknown plural_rule {template['plural_rule']!r}")
    return template


@dataclass(frozen=True)
class Group:
    blocking: str
    key: str
    network: str | None
    as_name: str | None
    place: str | None
    first: datetime
    last: datetime
    sites: int
    probes: int
    ongoing: bool
    issuer: str | None
    catalog_id: str | None
    blockpage: str | None
    anomaly: str | None


def group_events(events: list[Event]) -> list[Group]:
    grouped: dict[tuple[str, str, str | None, str | None], list[Event]] = {}
    for event in events:
        grouped.setdefault((event.blocking, event.key, event.network, event.place), []).append(event)
    groups = []
    for (blocking, key, network, place), members in grouped.items():
        evidence = members[0].evidence
        anomalies = evidence.get("anomalies") or []
        groups.append(
            Group(
                blocking=blocking,
                key=key,
                network=network,
                as_name=next((e.as_name for e in members if e.as_name), None),
                place=place,
                first=min(e.first_seen for e in members),
                last=max(e.last_seen for e in members),
                sites=len({e.target for e in members}),
                probes=len({p for e in members for p in e.probes}),
                ongoing=any(e.ended is None for e in members),
                issuer=evidence.get("issuer"),
                catalog_id=evidence.get("catalog_id"),
                blockpage=evidence.get("blockpage_name") or evidence.get("blockpage_id"),
                anomaly=evidence.get("blockpage_id")
                if blocking == "dns" and evidence.get("blockpage_id")
                else (anomalies[0] if anomalies else None),
            )
        )
    return sorted(groups, key=lambda g: (g.first, g.blocking, g.network or "", g.key))


def common_name(issuer: str | None) -> str | None:
    """`CN=Information Security Certification Authority CA,O=ISCA,C=KZ` -> its CN, as records cite it."""
    if not issuer:
        return None
    for part in issuer.replace("\\,", "\x00").split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN":
            return value.replace("\x00", ",").strip()
    return issuer


def _when(template: dict[str, Any], first: datetime, last: datetime) -> str:
    months = template["months"]
    values = {
        "d1": first.day, "m1": months[first.month - 1], "y1": first.year,
        "d2": last.day, "m2": months[last.month - 1], "y2": last.year,
    }  # fmt: skip
    if first.date() == last.date():
        form = "same_day"
    elif (first.year, first.month) == (last.year, last.month):
        form = "same_month"
    elif first.year == last.year:
        form = "same_year"
    else:
        form = "different_years"
    return str(template["dates"][form]).format(**values)


def sentence(group: Group, template: dict[str, Any]) -> str | None:
    kind = "http_blockpage" if group.blocking == "http" and group.blockpage else group.blocking
    pattern = template["findings"].get(kind)
    if pattern is None:
        return None
    plural = PLURAL_RULES[template["plural_rule"]]
    words = {}
    for word, forms in template["words"].items():
        count = group.probes if word.startswith("probe") else group.sites
        form = forms.get(plural(count)) or forms.get("other") or next(iter(forms.values()))
        words[word] = f"{count} {form}"
    if group.network:
        network = template["network" if group.as_name else "network_without_name"].format(
            network=group.network, as_name=group.as_name
        )
    else:
        network = ""
    return str(pattern).format(
        when=_when(template, group.first, group.last),
        place=template["place"].format(place=group.place) if group.place else "",
        network=network,
        issuer=common_name(group.issuer) or "?",
        catalog=template["catalog"].format(catalog_id=group.catalog_id) if group.catalog_id else "",
        blockpage=group.blockpage or "",
        anomaly=group.anomaly or group.blocking,
        ongoing=template["ongoing"] if group.ongoing else "",
        **words,
    )


def sentences(events: list[Event], languages: tuple[str, ...] = LANGUAGES) -> dict[str, list[str]]:
    groups = group_events(events)
    found: dict[str, list[str]] = {}
    for language in languages:
        template = load_template(language)
        found[language] = [s for s in (sentence(g, template) for g in groups) if s]
    return found
