"""Throttling, judged against a control (docs/verdicts.md, "throttled"). Pure.

The flows differ only in the name their ClientHello carried (the target's, the control's, none),
to the same server, of the same size, one after the other, in rounds. The name is shown to slow
its flow only when, in every round made (at least two), the target's flow was far slower than the
slowest of the others while those were healthy, and the others agree with each other (a link whose
healthy flows already differ that much cannot tell a name's share from chance). A flow that stalls
at the same byte offset in every round while the others finish is a freeze. Confirmed only with
the helper's bulk endpoint: the site's own download has no honest control (a server may serve
names differently), so there it is at most unconfirmed.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from probe.analyze.common import Finding, Judgement, Outcome, RuleContext, proven
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.observations import Observations
from probe.vocabulary.proofs import Proof
from probe.vocabulary.throughput import FLOW_TARGET, BulkFlow, Throughput

# The target's flow at most this share of the slowest other flow's speed, in every round: 4x slower.
# OONI calls 10x "extreme"; a censor's 130-150 kbit/s (Russia, 2021) is 10x to 100x below a
# broadband link but only about 8x below a poor mobile one, which 10x would miss. Honest variance
# between back-to-back flows to one server is far below 4x, and the others' own spread is checked.
THROTTLE_SHARE = 0.25
MAX_CONTROL_SPREAD = 1 / THROTTLE_SHARE  # the healthy flows' fastest over slowest, beyond which no verdict
# A flow of a few hundred KiB cannot measure a fast link (slow start and one round trip dominate):
# every flow that brings this many bytes a second or more counts as this fast ("at line rate").
FAST_SECONDS = 0.5  # the whole size within this counts as fast (256 KiB: about 4 Mbit/s)
MIN_ROUNDS = 2
FREEZE_TOLERANCE = 4096  # bytes: stalls within this of each other are at "the same" offset
HEALTHY_STATUSES = frozenset({200, 206})


def rate(flow: BulkFlow, size: int) -> float | None:
    """Body bytes a second, capped at what the flow's size can measure; None without a sample."""
    seconds = flow.seconds
    if seconds is None or seconds <= 0 or flow.bytes <= 0:
        return None
    return min(flow.bytes / seconds, size / FAST_SECONDS)


def healthy(flow: BulkFlow) -> bool:
    """A flow that measured the path: answered, never stalled, cut by nothing but its own bound."""
    cut_at_bound = flow.failure == "generic_timeout_error" and flow.stalled_at is None and flow.bytes > 0
    return flow.status in HEALTHY_STATUSES and (flow.failure is None or cut_at_bound) and flow.stalled_at is None


def _rounds(t: Throughput) -> list[tuple[BulkFlow, list[BulkFlow]]]:
    """Each round's target flow and the others, for rounds in which the server answered them all (a
    helper that refused a flow, 429 or 503, measured nothing of it: the round does not count)."""
    made = []
    for number in range(t.rounds):
        this = [f for f in t.flows if f.round == number]
        target = [f for f in this if f.kind == FLOW_TARGET]
        others = [f for f in this if f.kind != FLOW_TARGET]
        if not target or not others or any(o.status not in HEALTHY_STATUSES for o in others):
            continue
        if target[0].status in HEALTHY_STATUSES or (target[0].status is None and target[0].stalled_at is not None):
            made.append((target[0], others))
    return made


def judge_throttle(observations: Observations, rules: RuleContext, j: Judgement) -> Finding:
    """BLOCKED (`throttled`) for a slowed or frozen name, else OK. Writes `j.throttle`."""
    ok = Finding(Outcome.OK, False, Blocking.THROTTLED)
    t = observations.throughput
    if t is None:
        return ok
    rounds = _rounds(t)
    if len(rounds) < MIN_ROUNDS or any(not all(healthy(o) for o in others) for _, others in rounds):
        return ok  # a control that failed or stalled: nothing to compare with
    other_rates = [rate(o, t.size) for _, others in rounds for o in others]
    if any(r is None for r in other_rates):
        return ok
    known = [r for r in other_rates if r is not None]
    spread = max(known) / min(known)
    freeze = _freeze(t, rounds)
    if freeze is not None:
        j.add(Anomaly.THROUGHPUT_FROZEN)
        j.throttle = freeze
        return _finding(t)
    shares = [_share(target, others, t.size) for target, others in rounds]
    if any(s is None or s > THROTTLE_SHARE for s in shares):
        return ok
    if spread > MAX_CONTROL_SPREAD:
        j.add(Anomaly.THROUGHPUT_UNSTABLE)  # the healthy flows themselves differ that much
        return ok
    j.add(Anomaly.THROUGHPUT_THROTTLED)
    j.throttle = {"kind": "slowdown", "source": t.source, "rounds": len(rounds),
                  "share": round(max(s for s in shares if s is not None), 4),
                  "target_bytes_per_second": round(median(_target_rates(rounds, t.size))),
                  "control_bytes_per_second": round(median(known))}  # fmt: skip
    return _finding(t)


def _finding(t: Throughput) -> Finding:
    if t.source == "helper":
        return proven(Outcome.BLOCKED, Blocking.THROTTLED, Proof.CONTROL_FLOWS)
    return Finding(Outcome.BLOCKED, False, Blocking.THROTTLED)


def _target_rates(rounds: list[tuple[BulkFlow, list[BulkFlow]]], size: int) -> list[float]:
    return [r for r in (rate(target, size) for target, _ in rounds) if r is not None] or [0.0]


def _share(target: BulkFlow, others: list[BulkFlow], size: int) -> float | None:
    """The target flow's speed over the slowest other flow's, in one round (None: not comparable).
    A target flow that failed otherwise (reset, closed) is no slowdown: the TLS rules judge that."""
    if target.stalled_at is not None or not (target.failure is None or target.failure == "generic_timeout_error"):
        return None
    if target.status not in HEALTHY_STATUSES:
        return None
    if any(o.bytes < target.bytes for o in others):
        return None  # another page (a default host's, smaller): speeds of different sizes do not compare
    slowest = min(r for r in (rate(o, size) for o in others) if r is not None)
    mine = rate(target, size)
    return None if mine is None else mine / slowest


def _freeze(t: Throughput, rounds: list[tuple[BulkFlow, list[BulkFlow]]]) -> dict[str, Any] | None:
    """The target's flow stalled in every round at one offset while every other flow finished."""
    targets = [target for target, _ in rounds]
    if any(f.stalled_at is None for f in targets):
        return None
    body = [f.stalled_at for f in targets if f.stalled_at is not None]
    if any(o.bytes < min(t.size, max(body) + 4 * FREEZE_TOLERANCE) for _, others in rounds for o in others):
        return None  # every other flow went well past where the target's stopped
    wire = [f.stalled_at_wire for f in targets]
    offsets = [w for w in wire if w is not None] if all(w is not None for w in wire) else None
    compared = offsets if offsets is not None else body
    if max(compared) - min(compared) > FREEZE_TOLERANCE:
        return None
    return {"kind": "freeze", "source": t.source, "rounds": len(rounds),
            "offset": int(median(compared)), "offset_counts": "wire" if offsets is not None else "body",
            "body_offset": int(median(body))}  # fmt: skip
