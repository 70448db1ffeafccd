"""`probe watch`: one round of following a results store and alerting (docs/alerts.md).

A round: read what is new in the store (probe.report.follow), drop records already seen (by
`measurement_id`) or older than the dedupe window, feed the rest in time order to the detectors
(probe.report.alerting), write the state with the new alerts as pending (atomically: written beside,
then renamed), write the Atom feed, send the pending alerts to the webhook, and write the state
again with what was delivered. A crash anywhere loses nothing (the state is the last one written
whole) and repeats at most the deliveries after the last state written.

The state file (JSON) holds: the store it follows, per file what was read, the measurement ids seen
per day within the window, each key's CUSUM that is not at rest, the open episodes, and the alerts
(pending ones, and the last `feed_entries` delivered, which the feed shows).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from probe.report.alerting import Detector, Signal, network_signal_of, signal_of
from probe.report.changepoint import DEFAULT_EVIDENCE, iso, parse_time
from probe.report.deliver import Webhook, atom, deliver, write_atomically
from probe.report.follow import Reading, read_new
from probe.vocabulary.errors import InputError

STATE_VERSION = 1


class WatchStateError(InputError):
    """A state file that cannot be read, or belongs to another store: the message names it."""


class WatchBusy(InputError):
    """Another `probe watch` holds the state file's lock."""


@dataclass(frozen=True)
class WatchOptions:
    store: str  # a folder, or s3://BUCKET/PREFIX
    state: Path
    webhook: Webhook | None = None
    atom: Path | None = None
    language: str = "en"
    evidence: int = DEFAULT_EVIDENCE
    window_days: float = 7.0  # measurement ids kept for dedupe; older records are late
    group_hours: float = 6.0  # onsets this close to an episode's first are one alert
    endpoint: str | None = None
    timeout: float = 30.0
    feed_entries: int = 100
    feed_id: str | None = None
    tz: str | None = None  # every network's times in this zone, instead of its country's


@dataclass
class Round:
    read: Reading
    evidence: int = 0  # measurements fed to the detectors
    duplicates: int = 0
    late: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)  # raised this round
    sent: int = 0
    pending: int = 0  # still to deliver
    failure: str | None = None


@contextmanager
def locked(state: Path) -> Iterator[None]:
    """One watcher per state file: two would deliver the same alerts."""
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.with_name(state.name + ".lock"), "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchBusy(f"{state}: another probe watch is using this state file") from None
        yield


def load_state(path: Path, store: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": STATE_VERSION, "store": store}
    except OSError as exc:
        raise WatchStateError(f"{path}: cannot read the watch state ({exc.strerror or exc})") from None
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise WatchStateError(f"{path}: not a probe watch state file (version {STATE_VERSION}); move it away to "
                              "start again, and every episode in the store is alerted anew")  # fmt: skip
    if state.get("store") != store:
        raise WatchStateError(f"{path}: the state of another store ({state.get('store')}), not {store}; "
                              "give each store its own --state")  # fmt: skip
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(state, indent=1, sort_keys=True))


def _new_signals(
    records: list[dict[str, Any]], state: dict[str, Any], window: timedelta, result: Round
) -> list[Signal]:
    seen: dict[str, set[str]] = {day: set(ids) for day, ids in state.get("seen", {}).items()}
    horizon = parse_time(state["newest"]) - window if state.get("newest") else None
    signals = []
    for signal in (s for r in records for s in (signal_of(r), network_signal_of(r))):  # issue 22: the network's
        if signal is None:
            continue
        if horizon is not None and signal.time < horizon:
            result.late += 1
            continue
        day = seen.setdefault(signal.time.date().isoformat(), set())
        if signal.measurement_id in day:
            result.duplicates += 1
            continue
        day.add(signal.measurement_id)
        signals.append(signal)
    signals.sort(key=lambda s: (s.time, s.measurement_id))
    if signals:
        newest = max(iso(signals[-1].time), state.get("newest") or "")
        state["newest"] = newest
        oldest = (parse_time(newest) - window).date().isoformat()
        seen = {day: ids for day, ids in seen.items() if day >= oldest}
    state["seen"] = {day: sorted(ids) for day, ids in sorted(seen.items())}
    return signals


def watch_round(options: WatchOptions, now: datetime | None = None) -> Round:
    """One round; raises WatchBusy, WatchStateError, follow's StoreError and StoreUnreachable, OSError
    (the state cannot be written). A delivery that fails is said in `Round.failure`, not raised."""
    with locked(options.state):
        state = load_state(options.state, options.store)
        reading = read_new(options.store, state.get("files", {}), options.endpoint, options.timeout)
        result = Round(read=reading)
        signals = _new_signals(reading.records, state, timedelta(days=options.window_days), result)
        reading.records = []  # the signals are all this round needs: free the records
        detector = Detector(state, options.evidence, timedelta(hours=options.group_hours), options.tz)
        for signal in signals:
            detector.feed(signal)
        result.evidence = len(signals)
        result.alerts = detector.finish()
        recorded = iso(now or datetime.now(UTC).replace(tzinfo=None))
        for alert in result.alerts:
            alert["recorded"], alert["delivered"] = recorded, False
        alerts: list[dict[str, Any]] = state.get("alerts", []) + result.alerts
        state.update(detector.dump())
        state["files"], state["alerts"] = reading.files, alerts
        save_state(options.state, state)  # from here on, nothing read or raised is lost
        failures = []
        if options.atom is not None:
            try:
                feed_id = options.feed_id or f"urn:kz-probe:watch:{_digest(options.store)}"
                write_atomically(options.atom, atom(alerts[-options.feed_entries :], feed_id, options.language))
            except OSError as exc:
                failures.append(f"Atom feed {options.atom}: {exc.strerror or exc}")
        result.sent, failure = deliver(alerts, options.webhook, options.language)
        if failure:
            failures.append(failure)
        delivered = [a for a in alerts if a.get("delivered")][-options.feed_entries :]
        state["alerts"] = [a for a in alerts if not a.get("delivered") or a in delivered]
        result.pending = sum(1 for a in alerts if not a.get("delivered"))
        result.failure = "; ".join(failures) or None
        save_state(options.state, state)
    return result


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
