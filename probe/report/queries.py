"""The report's aggregation, written once in the SQL that DuckDB and Spark share.

Every query here runs unchanged on both engines (`engines.py`): window functions, GROUP BY, CASE,
joins. What the two dialects spell differently (parsing a time, a JSON path, a set of values, adding
seconds to a time) is one entry of `Dialect`, and nowhere else. The stages:

- `project`: one row per line read, the small columns kept (and a finding's evidence);
- `deduplicated`: one row per `measurement_id` (the newest re-judged copy wins), its local time and day;
- `DAYS` and `CLEAR`: per network, finding and local day, what the episode sweep (`events.py`) needs;
- `COVERAGE`, `EVIDENCE`: per network and day, what was measured; an episode's first measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

FINDINGS = ("dns", "tcp", "tls", "tls_mitm", "http", "quic", "throttled")  # issue 22: quic, throttled
# The network's states that are episodes of their own (issue 22); records measured in any restricted
# state (these, and no internet) are never a site's finding: the network's state explains them.
NETWORK_EPISODES = ("cut_off_abroad", "allow_list")
RESTRICTED = NETWORK_EPISODES + ("no_internet",)
MAX_IDS = 20  # measurement ids named per episode; all are counted


@dataclass(frozen=True)
class Dialect:
    """How each engine spells what ANSI SQL leaves open. `{0}`, `{1}`: the arguments."""

    name: str
    parse_time: str  # an ISO 8601 UTC time as `...T12:00:00.123456Z`, NULL when it is not one
    matches: str  # a regular expression search
    json_text: str  # a JSON path's value as JSON text (`[*]` gives a list), NULL when absent
    add_seconds: str  # a timestamp plus a number of seconds
    distinct_list: str  # the distinct non-NULL values of a group
    distinct_flat: str  # the distinct elements of a group's lists
    first_ids: str  # the group's first MAX_IDS measurement ids, by time (then id)


DUCKDB = Dialect(
    name="duckdb",
    parse_time="try_strptime({0}, '%Y-%m-%dT%H:%M:%S.%fZ')",
    matches="regexp_matches({0}, {1})",
    json_text="CAST(json_extract({0}, {1}) AS VARCHAR)",
    add_seconds="({0} + to_seconds({1}))",
    distinct_list="list(DISTINCT {0}) FILTER (WHERE {0} IS NOT NULL)",
    distinct_flat="flatten(list(DISTINCT {0}) FILTER (WHERE {0} IS NOT NULL))",
    first_ids=f"(list(measurement_id ORDER BY time, measurement_id) FILTER (WHERE measurement_id IS NOT NULL))"
    f"[1:{MAX_IDS}]",
)
SPARK = Dialect(
    name="spark",
    parse_time="try_to_timestamp({0}, \"yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'\")",
    matches="({0} RLIKE {1})",
    json_text="get_json_object({0}, {1})",
    add_seconds="timestampadd(SECOND, {1}, {0})",
    distinct_list="collect_set({0})",
    distinct_flat="flatten(collect_set({0}))",
    first_ids="slice(filter(transform(array_sort(collect_list(struct(time, measurement_id))), x -> x.measurement_id), "
    f"i -> i IS NOT NULL), 1, {MAX_IDS})",
)

# Where a finding's evidence is, in a record: (column, JSON path, the findings that keep it). Lists
# read with `[*]` come back from Spark as the bare value when they hold one: `events._evidence`
# makes them lists again. The target's handshake is the first one a record holds.
_MITM = ("tls_mitm", "local_interception")
EVIDENCE_PATHS = (
    ("chain_sha256", "analysis", "$.tls.certificates[*].sha256_der", _MITM),
    ("chain_spki", "analysis", "$.tls.certificates[*].sha256_spki", _MITM),
    ("chain", "observations", "$.tls_handshakes[0].peer_certificates", _MITM),  # the target's, as presented
    ("answers", "observations", "$.dns.system.addresses", ("dns",)),
    ("control_answers", "observations", "$.dns.control.addresses", ("dns",)),
    ("handshakes", "observations", "$.tls_handshakes", ("tls", "tcp")),
    ("connects", "observations", "$.tcp_connect", ("tcp",)),
    ("redirect_hop", "analysis", "$.redirect_hop", ()),
    ("forensics", "analysis", "$.forensics", ("tcp", "tls", "tls_mitm")),
)
JSON_COLUMNS = tuple(name for name, *_ in EVIDENCE_PATHS)

# The measurement's columns, as `project` makes them (then `deduplicated` adds confirmed, network_key,
# tz, local_time and day, and drops schema_version and rejudged_at).
_PLAIN = """filename AS file, schema_version, measurement_id, run_id,
    coalesce(probe_id, 'run:' || run_id) AS probe_id, {time} AS time, rejudged.at AS rejudged_at,
    target.host AS target, target.input AS target_input, target.category AS category,
    CASE WHEN {asn_like} THEN 'AS' || regexp_replace(upper(network.asn), '^AS', '') ELSE network.asn END AS network,
    network.as_name AS as_name, upper(network.country) AS country, network.region AS place,
    blocking, confidence, anomalies, network_state.state AS network_state,
    interceptor.catalog AS interceptor_catalog, interceptor.catalog_id AS catalog_id,
    interceptor.name AS interceptor_name, interceptor.issuer AS issuer, interceptor.matched_by AS matched_by,
    blockpage.id AS blockpage_id, blockpage.name AS blockpage_name, blockpage.matched AS blockpage_matched,
    CASE WHEN blocking IN ('tls_mitm', 'local_interception') THEN interceptor.matched_certificate END
        AS matched_certificate"""
KEPT = [
    "file",
    "measurement_id",
    "run_id",
    "probe_id",
    "time",
    "target",
    "target_input",
    "category",
    "network",
    "as_name",
    "country",
    "place",
    "blocking",
    "confidence",
    "anomalies",
    "network_state",
    "interceptor_catalog",
    "catalog_id",
    "interceptor_name",
    "issuer",
    "matched_by",
    "blockpage_id",
    "blockpage_name",
    "blockpage_matched",
    "matched_certificate",
] + list(JSON_COLUMNS)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def project(dialect: Dialect, source: str) -> str:
    """One row per line of `source` (records as read, JSON text in `analysis` and `observations`)."""
    plain = _PLAIN.format(
        time=dialect.parse_time.format("measurement_start_time"),
        asn_like=dialect.matches.format("upper(coalesce(network.asn, ''))", "'^(AS)?[0-9]+$'"),
    )
    evidence = []
    for name, column, path, findings in EVIDENCE_PATHS:
        value = dialect.json_text.format(column, f"'{path}'")
        evidence.append(f"CASE WHEN blocking IN {_in(findings)} THEN {value} END AS {name}" if findings else
                        f"{value} AS {name}")  # fmt: skip
    return f"SELECT {plain},\n    " + ",\n    ".join(evidence) + f"\nFROM {source}"


READABLE = "schema_version IN (1, 2) AND time IS NOT NULL AND target IS NOT NULL"


def deduplicated(dialect: Dialect, source: str, zone_sql: str, offset_sql: str) -> str:
    """`source`'s readable rows, one per measurement (the newest judgement wins), with local days."""
    columns = ", ".join(KEPT)
    local = dialect.add_seconds.format("time", offset_sql)
    return f"""
SELECT {columns}, confirmed, network_key, tz, local_time, CAST(local_time AS DATE) AS day FROM (
    SELECT *, {local} AS local_time FROM (
        SELECT *, coalesce(confidence, 'unconfirmed') = 'confirmed' AS confirmed,
            coalesce(network, 'unknown:' || probe_id) AS network_key, {zone_sql} AS tz,
            row_number() OVER (PARTITION BY measurement_id ORDER BY rejudged_at DESC NULLS LAST, file) AS copy
        FROM {source} WHERE {READABLE}) readable
    WHERE measurement_id IS NULL OR copy = 1) kept"""


STATE = """CASE WHEN blocking = 'none' THEN 'reachable' ELSE blocking || '|' || coalesce(
    CASE WHEN blocking = 'tls_mitm' THEN coalesce(catalog_id, issuer) END, blockpage_id, '') END"""


UNRESTRICTED = f"(network_state IS NULL OR network_state NOT IN {RESTRICTED})"


def _shown(all_confidence: bool) -> str:
    return f"blocking IN {FINDINGS} AND {UNRESTRICTED}" + ("" if all_confidence else " AND confirmed")


def days(dialect: Dialect, source: str, all_confidence: bool) -> str:
    """Per network, state and local day: the rows the episode sweep reads, in its order."""
    d = dialect
    return f"""
SELECT network_key, state, day, max(network), max(as_name), max(country), max(tz),
    count(*), count(CASE WHEN confirmed THEN 1 END), min(time), max(time), min(local_time), max(local_time),
    {d.distinct_list.format("target")}, {d.distinct_list.format("probe_id")}, {d.distinct_list.format("place")},
    {d.distinct_list.format("category")}, {d.distinct_flat.format("anomalies")}, {d.first_ids}
FROM (SELECT *, {STATE} AS state FROM {source} WHERE {_shown(all_confidence)}) findings
GROUP BY network_key, state, day ORDER BY network_key, state, day"""


def network_days(dialect: Dialect, source: str) -> str:
    """Per network, network state (cut off from abroad, an allow-list) and local day: the same rows as
    `days`, for the network's own episodes. Every record in the state counts as its evidence: the state
    was judged from the reference endpoints, whatever the site's own verdict."""
    d = dialect
    return f"""
SELECT network_key, network_state, day, max(network), max(as_name), max(country), max(tz),
    count(*), count(*), min(time), max(time), min(local_time), max(local_time),
    {d.distinct_list.format("target")}, {d.distinct_list.format("probe_id")}, {d.distinct_list.format("place")},
    {d.distinct_list.format("category")}, {d.distinct_flat.format("anomalies")}, {d.first_ids}
FROM {source} WHERE network_state IN {NETWORK_EPISODES}
GROUP BY network_key, network_state, day ORDER BY network_key, network_state, day"""


def network_clear(source: str) -> str:
    """Days a network was seen with full connectivity (the end of its cut-off or allow-list)."""
    return f"""
SELECT network_key, day, min(time) FROM {source} WHERE network_state = 'full' GROUP BY network_key, day"""


def clear(source: str, all_confidence: bool) -> str:
    """Days a site of a network's findings was seen reachable there (the end of an episode, unless
    another of its sites was still blocked that day)."""
    return f"""
SELECT s.network_key, s.day, s.target, min(s.time) FROM {source} s
JOIN (SELECT DISTINCT network_key, target FROM {source} WHERE {_shown(all_confidence)}) f
    ON s.network_key = f.network_key AND s.target = f.target
WHERE s.blocking = 'none' AND s.confirmed
GROUP BY s.network_key, s.day, s.target"""


EVIDENCE_COLUMNS = [
    "catalog_id",
    "interceptor_name",
    "issuer",
    "matched_by",
    "chain_sha256",
    "chain_spki",
    "chain",
    "matched_certificate",
    "blockpage_id",
    "blockpage_name",
    "blockpage_matched",
    "answers",
    "control_answers",
    "handshakes",
    "connects",
    "redirect_hop",
    "forensics",
    "anomalies",
    "measurement_id",
]


def evidence(source: str, ids: list[str]) -> str:
    listed = ", ".join("'" + i.replace("'", "''") + "'" for i in ids) or "NULL"
    return f"SELECT {', '.join(EVIDENCE_COLUMNS)} FROM {source} WHERE measurement_id IN ({listed})"


COVERAGE_COLUMNS = [
    "network_key",
    "day",
    "network",
    "as_name",
    "measured",
    "reachable",
    "blocked_confirmed",
    "blocked_unconfirmed",
    "failed",
    "offline",
    "local_interception",
]


_COUNTED_APART = FINDINGS + ("none", "offline", "local_interception")


def coverage(source: str) -> str:
    """Per network and local day: measured, and each measurement in exactly one column: reachable,
    blocked (confirmed or not), failed (down, inconclusive, any other verdict, and a finding measured
    while the network was cut off or allow-listed: the network's state, not the site's), offline, or the
    volunteer's own interception (an antivirus: the network's doing is unknown, and it is no block)."""
    return f"""
SELECT network_key, day, max(network) AS network, max(as_name) AS as_name, count(*) AS measured,
    count(CASE WHEN blocking = 'none' THEN 1 END) AS reachable,
    count(CASE WHEN blocking IN {FINDINGS} AND confirmed AND {UNRESTRICTED} THEN 1 END) AS blocked_confirmed,
    count(CASE WHEN blocking IN {FINDINGS} AND NOT confirmed AND {UNRESTRICTED} THEN 1 END) AS blocked_unconfirmed,
    count(CASE WHEN blocking IS NULL OR blocking NOT IN {_COUNTED_APART}
        OR (blocking IN {FINDINGS} AND NOT {UNRESTRICTED}) THEN 1 END) AS failed,
    count(CASE WHEN blocking = 'offline' THEN 1 END) AS offline,
    count(CASE WHEN blocking = 'local_interception' THEN 1 END) AS local_interception
FROM {source} GROUP BY network_key, day ORDER BY network_key, day"""
