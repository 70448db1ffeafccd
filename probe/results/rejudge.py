"""`probe analyze`: re-judge old results with the current rules and catalogs.

Observations are facts and stay untouched; `anomalies`, `blocking`, `confidence`, `interceptor`,
`blockpage` and `analysis` are derived again, and the record says when, by which rules and with
which catalogs (`rejudged`), and what it said before. The new file is written beside the old one,
which is never changed: history is re-judged, not rewritten.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probe import __version__
from probe.analyze.asn import AsNumbers
from probe.analyze.catalog import Catalogs
from probe.analyze.certs import ReferenceRoots
from probe.analyze.verdict import RULES_VERSION, AnalysisContext, judge
from probe.results.files import REJUDGED, ResultsPathError, open_text, results_files, stem_of
from probe.results.record import SCHEMA_VERSION, judgement_fields
from probe.results.writer import encode_record
from probe.vocabulary.errors import InputError


class RejudgeError(InputError):
    """Input that cannot be re-judged; the message names the path."""


def rejudge_record(
    record: dict[str, Any], roots: ReferenceRoots, catalogs: Catalogs, asn: AsNumbers | None, stamp: str
) -> dict[str, Any]:
    reference = record.get("reference") or {}
    context = AnalysisContext(
        roots=roots,
        catalogs=catalogs,
        documentation_is_public=bool(reference.get("documentation_addresses_public")),
        asn=asn,
    )
    observations = record.get("observations")
    if observations is None and record.get("error"):
        return record  # the probe failed on this target while measuring: nothing to judge
    started = datetime.strptime(record["measurement_start_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    offline = observations is None or bool(record.get("offline"))  # no route, or no internet: nothing judged
    judgement = judge(record["target"], observations, started, offline, context)
    rejudged = {
        **record,
        "schema_version": SCHEMA_VERSION,
        **judgement_fields(judgement),
        "rejudged": {
            "at": stamp,
            "software": {"name": "kz-probe", "version": __version__},
            "rules_version": RULES_VERSION,
            "roots": roots.describe(),
            "catalogs": catalogs.describe(),
            "previous": {k: record.get(k) for k in ("blocking", "confidence", "anomalies", "schema_version")},
        },
    }
    return rejudged


def _verdict(record: dict[str, Any]) -> str:
    """A verdict as `probe analyze` counts its changes: `tls_mitm (confirmed)`."""
    return f"{record.get('blocking')} ({record.get('confidence') or 'unconfirmed'})"


def judged_with(record: dict[str, Any]) -> str | None:
    """The SHA-256 of the reference roots a record was last judged with: those its re-judgement names
    (`rejudged.roots`), else those of the run that made it (`reference.roots`)."""
    for part, key in (("rejudged", "roots"), ("reference", "roots")):
        section = record.get(part)
        named = section.get(key) if isinstance(section, dict) else None
        if isinstance(named, dict) and isinstance(named.get("sha256"), str):
            return str(named["sha256"])
    return None


def rejudge_paths(
    paths: list[Path], roots: ReferenceRoots, catalogs: Catalogs, asn: AsNumbers | None = None
) -> list[tuple[Path, Path, Counter[str], set[str]]]:
    """Re-judge every file; return (old file, new file, how many verdicts changed and to what, the
    other reference roots its records had been judged with). A skipped line is said on stderr."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    written = []
    try:
        files = results_files(paths, rejudged="skip")  # history is re-judged from the originals
    except ResultsPathError as exc:
        raise RejudgeError(str(exc)) from None
    for path in files:
        target = path.with_name(f"{stem_of(path)}{REJUDGED}{now.strftime('%Y%m%dT%H%M%SZ')}.jsonl")
        partial = target.with_name(f".{target.name}.partial")  # renamed only once whole: never a cut copy
        counts: Counter[str] = Counter()
        other_roots: set[str] = set()
        try:
            with open_text(path) as source, partial.open("w", encoding="utf-8") as out:
                for number, line in enumerate(source, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        if not isinstance(record, dict) or "measurement_start_time" not in record:
                            raise ValueError("not a probe record")
                        new = rejudge_record(record, roots, catalogs, asn, stamp)
                    except Exception as exc:  # noqa: BLE001 - a hostile line costs only itself
                        counts["skipped"] += 1
                        print(f"probe analyze: {path}:{number}: skipped ({type(exc).__name__}: {exc})"[:300],
                              file=sys.stderr)  # fmt: skip
                        continue
                    earlier = judged_with(record)
                    if earlier is not None and earlier != roots.sha256:
                        other_roots.add(earlier)
                    before, after = _verdict(record), _verdict(new)
                    counts["unchanged" if before == after else f"{before} -> {after}"] += 1
                    out.write(encode_record(new).decode("utf-8"))  # the line a run writes
            partial.replace(target)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            partial.unlink(missing_ok=True)
            raise RejudgeError(f"{path}: cannot read: {exc}") from None
        written.append((path, target, counts, other_roots))
    return written


def other_roots_warning(written: list[tuple[Path, Path, Counter[str], set[str]]], roots: ReferenceRoots) -> str | None:
    """One warning for every file whose records were judged with other reference roots, counted."""
    files = [path for path, _target, _counts, other in written if other]
    if not files:
        return None
    hashes = sorted({h[:12] for *_rest, other in written for h in other})
    return (
        f"{len(files)} of {len(written)} files ({files[0]}{' and others' if len(files) > 1 else ''}) hold records "
        f"judged with other reference roots (SHA-256 {', '.join(hashes)}...) than these ({roots.source}, "
        f"{roots.sha256[:12]}...): verdicts that depend on the roots may change for that reason alone; give the "
        "roots they were made with (--roots) to see what the rules change"
    )
