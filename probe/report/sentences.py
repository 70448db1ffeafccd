"""Ready-to-paste sentences in the monitoring record's style, from the episodes, in each language.

The words are data (`templates/<language>.json`): months, date ranges, plural forms (by the
language's rule), a glossary of kinds, anomaly codes and site categories in plain words (no internal
code reaches a sentence), the cities of Kazakhstan in the language's own form (other places as the
operator wrote them), and one sentence per kind. Episodes of one network, kind and interceptor or
blockpage make one sentence that keeps their gaps ("from 6 to 7 and from 19 to 21 December"); days
are the network's local days. `month_entry` writes the monthly record in the organisation's form.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from importlib import resources
from typing import Any

from probe.report.events import Episode
from probe.vocabulary.errors import InputError

LANGUAGES = ("en", "ru")
NETWORK_KINDS = ("cut_off_abroad", "allow_list")  # the network's own episodes (issue 22): no site is blamed
MAX_SITES = 5  # sites named in a sentence; the rest are counted


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
_KEYS = (
    "months",
    "dates",
    "and",
    "words",
    "sentence",
    "findings",
    "suspected",
    "nothing",
    "zones",
    "kinds",
    "how",
    "plural_rule",
    "month",
)


class TemplateError(InputError):
    """A template file that cannot be used; the message names the file and the key."""


def available_languages() -> list[str]:
    folder = resources.files("probe.report") / "templates"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_template(language: str) -> dict[str, Any]:
    path = resources.files("probe.report") / "templates" / f"{language}.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(
            f"no sentence template for language {language!r}; there are: {', '.join(available_languages())}"
        ) from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"templates/{language}.json:{exc.lineno}: not valid JSON: {exc.msg}") from None
    for key in _KEYS:
        if key not in template:
            raise TemplateError(f"templates/{language}.json: missing {key!r}")
    if template["plural_rule"] not in PLURAL_RULES:
        raise TemplateError(f"templates/{language}.json: unknown plural_rule {template['plural_rule']!r}")
    return template


def common_name(issuer: str | None) -> str | None:
    """`CN=Information Security Certification Authority CA,O=ISCA,C=KZ` -> its CN, as records cite it."""
    if not issuer:
        return None
    for part in issuer.replace("\\,", "\x00").split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN":
            return value.replace("\x00", ",").strip()
    return issuer


def join(items: list[str], template: dict[str, Any]) -> str:
    """`a`, `a and b`, `a, b and c` in the template's words."""
    if len(items) <= 1:
        return "".join(items)
    return template.get("comma", ", ").join(items[:-1]) + template["and"] + items[-1]


def counted(word: str, n: int, template: dict[str, Any]) -> str:
    forms = template["words"][word]
    plural = PLURAL_RULES[template["plural_rule"]](n)
    return f"{n} {forms.get(plural) or forms.get('other') or next(iter(forms.values()))}"


def when(ranges: list[tuple[date, date]], template: dict[str, Any]) -> str:
    """Date ranges in words, gaps kept: "From 6 to 7 and from 19 to 21 December 2020"."""
    dates, months = template["dates"], template["months"]
    same_year = len({d.year for r in ranges for d in r}) == 1
    same_month = same_year and len({d.month for r in ranges for d in r}) == 1
    if same_month and len(ranges) > 1 and any(a == b for a, b in ranges) and dates.get("month_each"):
        same_month = False  # "On 1 December, from 6 to 7 December and ...": never a bare day number

    def day(d: date, with_month: bool) -> str:
        form = "day_month" if with_month else "day"
        return str(dates["day_month_year" if not same_year else form]).format(d=d.day, m=months[d.month - 1], y=d.year)

    pieces = []
    for first, last in ranges:
        if first == last:
            pieces.append(str(dates["single"]).format(a=day(first, not same_month)))
            continue
        word = dates["from_word"].get(str(first.day), dates["from_word"].get("default", ""))
        a = day(first, not same_month and first.month != last.month)
        pieces.append(str(dates["span"]).format(a=a, b=day(last, not same_month), **{"from": word}))
    first = ranges[0][0]
    values = {"m": months[first.month - 1], "mi": template.get("months_in", months)[first.month - 1], "y": first.year}
    head = str(dates["head_year"]).format(**values) if same_year else ""
    tail = dates["tail_month"] if same_month else dates["tail_year"] if same_year else ""
    text = head + join(pieces, template) + str(tail).format(**values)
    return text[:1].upper() + text[1:]


def places(names: set[str], template: dict[str, Any]) -> str:
    """The places in the language's form: the gazetteer's cities, others as the operator wrote them."""
    if not names:
        return ""
    gazetteer = template.get("places", {})
    shown = [gazetteer.get(n.strip().lower()) or str(template["place_other"]).format(place=n) for n in sorted(names)]
    return str(template["places_frame"]).format(list=join(shown, template))


def site_list(sites: set[str], template: dict[str, Any]) -> str:
    names = sorted(sites)
    shown = names[:MAX_SITES]
    if len(names) > MAX_SITES:
        shown.append(str(template["more"]).format(n=len(names) - MAX_SITES))
    return join(shown, template)


def network_name(episode: Episode, template: dict[str, Any]) -> str:
    if episode.network is None:
        return str(template["network_unknown"]).format(probe=episode.network_key[-8:])
    pattern = template["network"] if episode.as_name else template["network_unnamed"]
    return str(pattern).format(network=episode.network, as_name=episode.as_name)


def kind_of(episode: Episode) -> str:
    return "http_blockpage" if episode.blocking == "http" and episode.evidence.get("blockpage_id") else episode.blocking


def kind_words(kind: str, template: dict[str, Any]) -> str:
    return str(template["kinds"].get(kind, template["kinds"].get(kind.split("_")[0], "")))


def how(anomalies: set[str], template: dict[str, Any]) -> str:
    words = sorted({template["how"][a] for a in anomalies if a in template["how"]})
    return str(template["how_frame"]).format(how=join(words, template)) if words else ""


def group(episodes: list[Episode]) -> list[list[Episode]]:
    """Episodes of one network, kind and interceptor or blockpage, in time order; confirmed and
    unconfirmed episodes apart (an unconfirmed one is only suspected)."""
    found: dict[tuple[str, str, str, bool], list[Episode]] = {}
    for episode in sorted(episodes, key=lambda e: e.first_seen):
        found.setdefault((episode.network_key, episode.blocking, episode.key, episode.confirmed), []).append(episode)
    return sorted(found.values(), key=lambda g: (g[0].first_seen, g[0].network_key))


def _values(members: list[Episode], template: dict[str, Any]) -> dict[str, Any]:
    """What every sentence of a group may say, with every counted word in every case the template has."""
    first = members[0]
    sites = {s for e in members for s in e.sites}
    counts = {"site": len(sites), "probe": len({p for e in members for p in e.probes}),
              "measurement": sum(e.measurements for e in members), "episode": len(members), "network": 1}  # fmt: skip
    values: dict[str, Any] = {}
    for word in template["words"]:
        n = counts.get(word.split("_")[0], 0)
        text = counted(word, n, template)
        values[word] = (
            str(template["sites"]).format(count=text, names=site_list(sites, template))
            if (word.startswith("site"))
            else text
        )
    values.update(
        When=when([(e.first_day, e.last_day) for e in members], template),
        network=network_name(first, template),
        places=places({p for e in members for p in e.places}, template),
        issuer=common_name(first.evidence.get("issuer")) or "?",
        catalog=template.get("catalog", "") if first.evidence.get("catalog_id") else "",
        blockpage=first.evidence.get("blockpage_name") or "?",
        how=how({a for e in members for a in e.anomalies}, template) if first.blocking not in NETWORK_KINDS else "",
        ongoing=_ongoing(first, template) if members[-1].ended is None else "",
        sites=len(sites),
    )
    return values


def _ongoing(first: Episode, template: dict[str, Any]) -> str:
    """An episode not ended in the period: no site seen reachable again, or the network never seen whole."""
    if first.blocking in NETWORK_KINDS:
        return str(template.get("ongoing_network", template["ongoing"]))
    return str(template["ongoing"])


def sentence(members: list[Episode], template: dict[str, Any]) -> str | None:
    pattern = template["findings"].get(kind_of(members[0]))
    if pattern is None:
        return None
    values = _values(members, template)
    what = str(pattern).format(**values)
    if not any(e.confirmed for e in members):  # --all-confidence: said as suspected, never as a fact
        what = str(template["suspected"]).format(what=what)
    return str(template["sentence"]).format(what=what, **values)


def sentences(episodes: list[Episode], languages: tuple[str, ...] = LANGUAGES) -> dict[str, list[str]]:
    groups = group(episodes)
    found: dict[str, list[str]] = {}
    for language in languages:
        template = load_template(language)
        found[language] = [s for s in (sentence(g, template) for g in groups) if s]
    return found


def zones_phrase(zones: dict[str, list[str]], template: dict[str, Any]) -> str:
    """Which local time the days are in, in the template's words: "days are in Asia/Almaty time";
    networks in several zones are named per zone, probes with no network recorded said in words."""
    words = template["zones"]
    if len(zones) == 1:
        zone = next(iter(zones))
        return str(words["utc"] if zone == "UTC" else words["one"]).format(zone=zone)
    items = [
        str(words["item"]).format(
            zone=zone, networks=", ".join(words["unknown"] if n == "unknown" else n for n in networks)
        )
        for zone, networks in sorted(zones.items())
    ]
    return str(words["many"]).format(list="; ".join(items))


def month_entry(
    episodes: list[Episode],
    year_episodes: list[Episode],
    month: date,
    zones: dict[str, list[str]],
    template: dict[str, Any],
) -> list[str]:
    """The monthly record in the organisation's form: one paragraph per network and kind, then the
    counts since 1 January. Only confirmed episodes: it is published as it stands."""
    episodes = [e for e in episodes if e.confirmed]
    year_episodes = [e for e in year_episodes if e.confirmed]
    words = template["month"]
    months = template["months_nominative"] if "months_nominative" in template else template["months"]
    name, within = months[month.month - 1], template.get("months_in", template["months"])[month.month - 1]
    month_values = {"month": name, "Month": name.capitalize(), "month_in": within, "year": month.year}
    lines = [str(words["title"]).format(zones=zones_phrase(zones, template), **month_values)]
    for members in group(episodes):
        values = _values(members, template)
        first = members[0]
        if first.network and first.as_name:
            values["network"] = str(words["network"]).format(network=first.network, as_name=first.as_name)
        elif first.network is None:
            values["network"] = str(words["network_unknown"]).format(probe=first.network_key[-8:])
        categories = sorted({c for e in members for c in e.categories if c in template.get("categories", {})})
        if categories:
            names = join([template["categories"][c] for c in categories], template)
            for word in [w for w in template["words"] if w.startswith("site")]:
                values[word] = str(words["categories"]).format(
                    count=counted(word, values["sites"], template),
                    categories=names,
                    names=site_list({s for e in members for s in e.sites}, template),
                )
        values["kind"] = kind_words(kind_of(first), template)
        kind = first.blocking if first.blocking in ("tls_mitm", *NETWORK_KINDS) else "unavailable"
        lines.append(str(words[kind]).format(**values))
    if len(lines) == 1:
        lines.append(str(words["none"]).format(**month_values))
    # The year's count is of blocking and interception: a cut-off is the network's, said above, not counted.
    lines.append(_year_line([e for e in year_episodes if e.blocking not in NETWORK_KINDS], month, month_values,
                            template))  # fmt: skip
    return lines


def _year_line(
    year_episodes: list[Episode], month: date, month_values: dict[str, Any], template: dict[str, Any]
) -> str:
    """The counts since 1 January: "8 episodes ..., 7 of which began in December, affected 5 sites"."""
    words = template["month"]
    values = {**month_values, "month_gen": template["months"][month.month - 1]}
    if not year_episodes:
        return str(words["year_none"]).format(**values)
    total, networks = len(year_episodes), len({e.network_key for e in year_episodes})
    sites = {s for e in year_episodes for s in e.sites}
    in_month = sum(1 for e in year_episodes if (e.first_day.year, e.first_day.month) == (month.year, month.month))
    began = words["began"]["many" if total > 1 and in_month else "none" if total > 1 else
                           "one" if in_month else "one_before"]  # fmt: skip
    plural = PLURAL_RULES[template["plural_rule"]](total)
    recorded = words.get("recorded", {})
    values.update(
        episode=counted("episode", total, template),
        network=counted("network", networks, template) if "network" in template["words"] else "",
        network_loc=counted("network_loc", networks, template) if "network_loc" in template["words"] else "",
        networks=networks,
        site=counted("site", len(sites), template),
        sites=len(sites),
        recorded=recorded.get(plural) or recorded.get("other") or "",
        began=str(began).format(n=in_month, **values),
    )
    return str(words["year"]).format(**values)
