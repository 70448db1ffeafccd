"""Local days: each network's measurements counted on the days of its own time zone.

A record at 2020-11-30T23:30Z was made on 1 December in Almaty: a monthly record in local time
counts it in December. The offsets come from zoneinfo (the system's tz database), which knows that
Kazakhstan moved to UTC+5 on 1 March 2024; the engine applies them as a CASE over UTC instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def literal(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"


# Days are the network's local days. A country with one zone has it; Kazakhstan is read as Almaty's
# zone (the east's; the west is an hour behind until March 2024, when the whole country moved to
# UTC+5); Russia's region is not knowable from a record: Moscow, unless --tz says otherwise.
COUNTRY_ZONES = {"KZ": "Asia/Almaty", "RU": "Europe/Moscow"}
_ZONE_TABLE = Path("/usr/share/zoneinfo/zone1970.tab")


def zone_for(country: str | None, override: str | None = None) -> str:
    if override:
        return override
    if country in COUNTRY_ZONES:
        return COUNTRY_ZONES[country]
    try:
        rows = [line.split("\t") for line in _ZONE_TABLE.read_text(encoding="utf-8").splitlines()]
    except OSError:
        return "UTC"
    zones = [row[2] for row in rows if len(row) > 2 and not row[0].startswith("#") and country in row[0].split(",")]
    return zones[0] if len(zones) == 1 else "UTC"


def zone_exists(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _changes(zone: str, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """The zone's UTC offset (seconds) at `start` and at each change up to `end`, from zoneinfo."""
    info = ZoneInfo(zone)

    def offset(moment: datetime) -> int:
        delta = moment.replace(tzinfo=UTC).astimezone(info).utcoffset()
        return int(delta.total_seconds()) if delta else 0

    start = max(start, datetime(1970, 1, 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = min(max(end, start), datetime(2100, 1, 1))
    found = [(start, offset(start))]
    moment = start
    while moment < end:
        following = moment + timedelta(days=1)
        if offset(following) != found[-1][1]:
            low, high = 0, 86400  # seconds after `moment`: the first second of the new offset
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (
                    (middle, high) if offset(moment + timedelta(seconds=middle)) == found[-1][1] else (low, middle)
                )
            change = moment + timedelta(seconds=high)
            found.append((change, offset(change)))
        moment = following
    return found


def local_time_sql(zones: dict[str | None, str], start: datetime | None, end: datetime | None) -> tuple[str, str]:
    """SQL for each row's zone (from `country`) and its offset from UTC in seconds (from `time` and `tz`)."""
    zone_sql = (
        "CASE "
        + "".join(
            f"WHEN country IS NOT DISTINCT FROM {literal(c) if c else 'NULL'} THEN {literal(z)} "
            for c, z in zones.items()
        )
        + "ELSE 'UTC' END"
        if zones
        else "'UTC'"
    )
    if start is None or end is None or not zones:
        return zone_sql, "0"
    offset_sql = "CASE tz "
    for zone in sorted(set(zones.values())):
        changes = _changes(zone, start, end)
        cases = " ".join(f"WHEN time < TIMESTAMP '{at:%Y-%m-%d %H:%M:%S}' THEN {before}"
                         for (at, _), (_, before) in zip(changes[1:], changes, strict=False))  # fmt: skip
        offset_sql += (
            f"WHEN {literal(zone)} THEN CASE {cases} ELSE {changes[-1][1]} END "
            if cases
            else (f"WHEN {literal(zone)} THEN {changes[0][1]} ")
        )
    return zone_sql, f"{offset_sql} ELSE 0 END"
