"""The public blocking-fingerprint tables (OONI's, with Censored Planet's and Citizen Lab's merged),
as a catalog: parsed from their CSV text, checked row by row, matched in linear time.

Scopes are honoured: `fp` rows describe pages that are *not* blockpages (they veto vague matches),
`vbw` rows (vague blocking words) are a weak signal only, every other scope names a blockpage.
Patterns are matched with RE2 (one set per place in the response), so that no body, however
hostile, makes matching slower than linear. A row that cannot be used is rejected with its reason,
and the catalog keeps the list.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import re2

HTTP_SOURCE = "ooni-blocking-fingerprints/fingerprints_http.csv"
DNS_SOURCE = "ooni-blocking-fingerprints/fingerprints_dns.csv"
SCOPES = frozenset({"nat", "isp", "prod", "inst", "vbw", "fp", "injb", "prov"})
WEAK, FALSE_POSITIVE = "vbw", "fp"
TOO_BIG = "pattern is too big for one RE2 set with its place's other patterns"
_PATTERN_TYPES = frozenset({"full", "prefix", "contains", "regexp"})
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re2.compile(rf"^({_LABEL}\.)*{_LABEL}\.?$")


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a rejected row is recorded in the catalog, not printed
    return options


@dataclass(frozen=True)
class Fingerprint:
    """One row of a table."""

    name: str
    scope: str
    location: str  # "body", "header:<name>" or "dns"
    pattern_type: str
    pattern: str
    confidence: int | None
    countries: tuple[str, ...]
    source: str
    example: str | None  # an OONI Explorer measurement showing it
    notes: str

    def describe(self) -> dict[str, Any]:
        """The record's `blockpage` for a match."""
        return {
            "id": self.name,
            "name": self.notes or f"OONI fingerprint {self.name}",
            "country": ",".join(self.countries) or None,
            "scope": self.scope,
            "catalog": "ooni-blocking-fingerprints",
            "example": self.example,
        }

    def regex(self) -> str:
        if self.pattern_type == "regexp":
            return self.pattern
        text = re2.escape(self.pattern)
        return {"full": f"^{text}$", "prefix": f"^{text}", "contains": text}[self.pattern_type]


@dataclass
class FingerprintTables:
    http: list[Fingerprint] = field(default_factory=list)
    dns: list[Fingerprint] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {source, line, name, reason}
    _sets: dict[str, tuple[Any, list[Fingerprint]]] | None = None

    def _index(self) -> dict[str, tuple[Any, list[Fingerprint]]]:
        """One compiled RE2 set per place (body, each header), built once."""
        if self._sets is None:
            for row, reason in self.compile_sets():  # rows added without a table's checks
                _reject(self, row.source, None, row.name, reason)
        assert self._sets is not None
        return self._sets

    def compile_sets(self) -> list[tuple[Fingerprint, str]]:
        """Every place's set compiled now; the rows no set can hold are dropped from `http` and
        returned with why (RE2's reason when the pattern cannot be compiled alone). A set is
        compiled whole first (a third of the time of each pattern alone); only one that fails is
        searched, by halving, for the patterns that break it: each costs itself, not its place."""
        grouped: dict[str, list[Fingerprint]] = {}
        for row in self.http:
            grouped.setdefault(row.location, []).append(row)
        sets: dict[str, tuple[Any, list[Fingerprint]]] = {}
        unusable: list[tuple[Fingerprint, str]] = []
        for location, rows in grouped.items():
            matcher, kept, left_out = _fitting(rows)
            unusable += [(row, _unusable(row) or TOO_BIG) for row in left_out]
            if matcher is not None:
                sets[location] = (matcher, kept)
        if unusable:
            dropped = {id(row) for row, _ in unusable}
            self.http = [row for row in self.http if id(row) not in dropped]
        self._sets = sets
        return unusable

    def match_response(self, body: str | None, headers: dict[str, str]) -> list[Fingerprint]:
        """Every HTTP row the response matches (body and headers)."""
        found: list[Fingerprint] = []
        for location, (matcher, rows) in self._index().items():
            value = body if location == "body" else headers.get(location.split(":", 1)[1])
            if value:
                found += [rows[index] for index in sorted(matcher.Match(value) or [])]
        return found

    def match_dns(self, answers: set[str]) -> Fingerprint | None:
        """The first DNS row naming one of `answers` (addresses, or names a CNAME points to)."""
        normal = {answer.lower().rstrip(".") for answer in answers}
        for row in self.dns:
            if row.scope != WEAK and row.pattern.lower() in normal:
                return row
        return None


def _compiled_set(rows: list[Fingerprint]) -> Any | None:
    """The rows' patterns as one compiled RE2 search set, or None if one is refused or the set fails."""
    matcher = re2.Set.SearchSet(_options())
    try:
        for row in rows:
            matcher.Add(row.regex())
        matcher.Compile()
    except re2.error:
        return None
    return matcher


def _fitting(rows: list[Fingerprint]) -> tuple[Any | None, list[Fingerprint], list[Fingerprint]]:
    """The rows one set holds, in order, compiled (None when it holds none), and those it cannot:
    each time the set fails, the first row that breaks it (found by halving: the rows before it
    compile together) is left out."""
    kept: list[Fingerprint] = []
    left_out: list[Fingerprint] = []
    rest = rows
    while rest:
        matcher = _compiled_set(kept + rest)
        if matcher is not None:
            return matcher, kept + rest, left_out
        fits, breaks = 0, len(rest)  # kept + rest[:fits] compiles, kept + rest[:breaks] does not
        while breaks - fits > 1:
            middle = (fits + breaks) // 2
            if _compiled_set(kept + rest[:middle]) is not None:
                fits = middle
            else:
                breaks = middle
        kept += rest[:fits]
        left_out.append(rest[fits])
        rest = rest[fits + 1 :]
    return (_compiled_set(kept) if kept else None), kept, left_out


def _unusable(row: Fingerprint) -> str | None:
    """Why a row's pattern cannot be compiled alone (RE2's own reason), or None."""
    try:  # compiled, not only parsed: a pattern RE2 parses but cannot compile would fail its set
        re2.compile(row.regex(), _options())
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        return f"pattern is not a usable regular expression: {detail}"
    return None


def _reject(tables: FingerprintTables, source: str, line: int | None, name: str, reason: str) -> None:
    tables.rejected.append({"source": source, "line": line, "name": name, "reason": reason})


def _row(values: dict[str, str], source: str, location: str) -> Fingerprint:
    confidence = values.get("confidence_no_fp", "").strip()
    countries = tuple(c.strip().upper() for c in values.get("expected_countries", "").split(",") if c.strip())
    return Fingerprint(
        name=values["name"].strip(),
        scope=values["scope"].strip(),
        location=location,
        pattern_type=values["pattern_type"].strip(),
        pattern=values["pattern"],
        confidence=int(confidence) if confidence.isdigit() else None,
        countries=countries,
        source=f"{source} ({values.get('source', '').strip() or 'unknown'})",
        example=values.get("exp_url", "").strip() or None,
        notes=" ".join(values.get("notes", "").split()),
    )


def _check(values: dict[str, str]) -> str | None:
    """Why a row cannot be used, or None."""
    if not values.get("name", "").strip():
        return "no name"
    if values.get("scope", "").strip() not in SCOPES:
        return f"unknown scope {values.get('scope')!r}"
    if values.get("pattern_type", "").strip() not in _PATTERN_TYPES:
        return f"unknown pattern_type {values.get('pattern_type')!r}"
    if not values.get("pattern"):
        return "empty pattern"
    return None


def add_http_table(tables: FingerprintTables, text: str, source: str = HTTP_SOURCE) -> None:
    """The table's rows, each checked; every pattern compiled now, in its place's set (the sets the
    judge matches with, made once). Rows that cannot be used are rejected, in the table's order."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    refused: list[tuple[str, int | None, str, str]] = []  # source, line (None: an earlier table's), name, reason
    lines: dict[int, int] = {}  # id(row): its line
    for values in reader:
        line = reader.line_num
        reason = _check(values)
        where = values.get("location_found", "").strip().lower()
        if reason is None and where != "body" and not where.startswith("header."):
            reason = f"unknown location_found {where!r}"
        if reason is not None:
            refused.append((source, line, values.get("name", ""), reason))
            continue
        location = "body" if where == "body" else "header:" + where.split(".", 1)[1]
        row = _row(values, source, location)
        tables.http.append(row)
        lines[id(row)] = line
    for row, reason in tables.compile_sets():  # a row of an earlier table only if the sets no longer fit together
        refused.append(
            (source, lines[id(row)], row.name, reason) if id(row) in lines else (row.source, None, row.name, reason)
        )
    for where, at, name, reason in sorted(refused, key=lambda refusal: (refusal[1] is None, refusal[1] or 0)):
        _reject(tables, where, at, name, reason)


def add_dns_table(tables: FingerprintTables, text: str, source: str = DNS_SOURCE) -> None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for values in reader:
        line = reader.line_num
        reason = _check(values)
        if reason is None and values.get("location_found", "").strip() != "dns":
            reason = f"unknown location_found {values.get('location_found')!r}"
        if reason is None and values["pattern_type"].strip() != "full":
            reason = "only full matches of an answer are supported for DNS"
        if reason is None:
            pattern = values["pattern"].strip()
            try:
                values["pattern"] = str(ipaddress.ip_address(pattern))
            except ValueError:
                if not _HOST_NAME.match(pattern):
                    reason = f"neither an address nor a host name: {pattern!r}"
        if reason is not None:
            _reject(tables, source, line, values.get("name", ""), reason)
            continue
        tables.dns.append(_row(values, source, "dns"))
