"""`probe show`'s lines for throughput flows and a throttled name (issue 22, docs/verdicts.md)."""

from __future__ import annotations

from typing import Any


def _speed(flow: dict[str, Any]) -> str:
    samples = flow.get("samples") or []
    if not samples or not samples[-1][0]:
        return "-"
    kbit = 8 * samples[-1][1] / samples[-1][0] / 1000
    return f"{kbit:,.0f} kbit/s"


def throughput_lines(throughput: dict[str, Any] | None, throttle: dict[str, Any] | None) -> list[str]:
    """What the analysis found of the flows, then each flow: its name, bytes, speed, stall."""
    lines = []
    if throttle and throttle.get("kind") == "freeze":
        lines.append(f"  throttled: the name's flows froze after {throttle['offset']:,} bytes "
                     f"({throttle['offset_counts']}), in each of {throttle['rounds']} rounds")  # fmt: skip
    elif throttle:
        lines.append(f"  throttled: the name's flows at {throttle['share']:.0%} of the control's speed at most, "
                     f"in each of {throttle['rounds']} rounds")  # fmt: skip
    if not throughput:
        return lines
    where = "the helper's bulk endpoint" if throughput.get("source") == "helper" else "the site itself"
    lines.append(f"  throughput: {throughput.get('rounds')} rounds from {where}"
                 + (f" (stopped: {throughput['stopped']})" if throughput.get("stopped") else ""))  # fmt: skip
    for flow in throughput.get("flows") or []:
        stalled = f", stalled at {flow['stalled_at']:,} bytes" if flow.get("stalled_at") is not None else ""
        failure = f", {flow['failure']}" if flow.get("failure") and not stalled else ""
        lines.append(f"    round {flow['round']} sni={flow.get('server_name') or '-'} ({flow['kind']}): "
                     f"{flow['bytes']:,} bytes, {_speed(flow)}{stalled}{failure}")  # fmt: skip
    return lines
