"""The network's state, judged from one round of the reference endpoints (pure functions).

The rules (docs/verdicts.md, "The network's state"): what the foreign endpoints did decides between
full connectivity, an allow-list and a cut-off; the domestic endpoints tell a cut-off from no
internet at all. The system's own resolver is weak evidence (a home router answers from its cache
with its uplink down): it never counts as a domestic service answering. Where the evidence is too
thin the state is `unknown`, never a guess: no foreign endpoint asked, or only one; no domestic
endpoint known when nothing foreign answered; one foreign endpoint down while the others answer (a
broken anycast node, a helper being restarted, is not an allow-list).
"""

from __future__ import annotations

from typing import Any

from probe.vocabulary.netstate import (
    EndpointResult,
    Kind,
    NetworkCheck,
    NetworkState,
    Side,
    StateJudgement,
)

# The rule that decided, as `basis` names it in a record.
FOREIGN_ANSWERED = "foreign_answered"  # every foreign endpoint answered
DOMESTIC_ONLY = "domestic_only"  # domestic endpoints answered, no foreign one (two or more asked)
FOREIGN_PARTIAL = "foreign_partial"  # two or more foreign endpoints failed while others answered
NOTHING_ANSWERED = "nothing_answered"  # no endpoint answered (the system resolver aside)
NO_FOREIGN_ENDPOINT = "no_foreign_endpoint"  # nothing foreign was asked
ONE_FOREIGN_ENDPOINT = "one_foreign_endpoint"  # one foreign endpoint only, and it failed
NO_DOMESTIC_ENDPOINT = "no_domestic_endpoint"  # nothing foreign answered, and no domestic endpoint is known
ONE_FOREIGN_DOWN = "one_foreign_down"  # one foreign endpoint failed, the others answered
DOMESTIC_FAILED = "domestic_failed"  # some foreign endpoints answered, but no domestic one did
NO_ROUTE = "no_route"  # the routing table had no route: nothing was asked

MIN_FOREIGN_FAILED = 2  # foreign endpoints that must fail, others answering, for an allow-list


def _strong_domestic(result: EndpointResult) -> bool:
    return result.side == Side.DOMESTIC and result.kind != Kind.SYSTEM_RESOLVER


def judge_check(check: NetworkCheck) -> StateJudgement:
    """The state one round of the reference endpoints shows."""
    asked = [r for r in check.results if r.asked]  # an endpoint with no route was not asked: no evidence
    foreign = [r for r in asked if r.side == Side.FOREIGN]
    domestic = [r for r in asked if _strong_domestic(r)]
    f_asked, f_answered = len(foreign), sum(r.answered for r in foreign)
    d_asked, d_answered = len(domestic), sum(r.answered for r in domestic)

    def state(value: NetworkState, basis: str) -> StateJudgement:
        return StateJudgement(value, basis, d_asked, d_answered, f_asked, f_answered)

    if f_asked == 0:
        return state(NetworkState.UNKNOWN, NO_FOREIGN_ENDPOINT)
    if f_answered == f_asked:
        return state(NetworkState.FULL, FOREIGN_ANSWERED)
    if f_answered == 0:
        if d_answered:
            if f_asked < MIN_FOREIGN_FAILED:
                return state(NetworkState.UNKNOWN, ONE_FOREIGN_ENDPOINT)
            return state(NetworkState.CUT_OFF_ABROAD, DOMESTIC_ONLY)
        if d_asked == 0:
            return state(NetworkState.UNKNOWN, NO_DOMESTIC_ENDPOINT)
        return state(NetworkState.NO_INTERNET, NOTHING_ANSWERED)
    if f_asked - f_answered < MIN_FOREIGN_FAILED:
        return state(NetworkState.UNKNOWN, ONE_FOREIGN_DOWN)
    if d_asked and not d_answered:
        return state(NetworkState.UNKNOWN, DOMESTIC_FAILED)
    return state(NetworkState.ALLOW_LIST, FOREIGN_PARTIAL)


def state_fields(check: NetworkCheck, judgement: StateJudgement) -> dict[str, Any]:
    """A record's `network_state`: the state, the rule, the counts and each endpoint's outcome (names
    only: no address of the volunteer's network, such as the home router's, is written)."""
    return {
        "state": str(judgement.state),
        "basis": judgement.basis,
        "check": check.index,
        "checked_at": check.at,
        "domestic": {"asked": judgement.domestic_asked, "answered": judgement.domestic_answered},
        "foreign": {"asked": judgement.foreign_asked, "answered": judgement.foreign_answered},
        "endpoints": [
            {
                "name": r.name,
                "side": str(r.side),
                "kind": str(r.kind),
                "origin": str(r.origin),
                "answered": r.answered,
                "failure": r.failure,
                "elapsed": round(r.elapsed, 3),
                "asked": r.asked,
            }  # fmt: skip
            for r in check.results
        ],
    }


def no_route_fields(at: str) -> dict[str, Any]:
    """A run with no route at all: no endpoint was asked, and there is no internet."""
    return {
        "state": str(NetworkState.NO_INTERNET),
        "basis": NO_ROUTE,
        "check": 0,
        "checked_at": at,
        "domestic": {"asked": 0, "answered": 0},
        "foreign": {"asked": 0, "answered": 0},
        "endpoints": [],
    }
