"""What a volunteer sees while the probe runs, and what the findings mean, in plain words.

On a terminal: a progress bar with counts, rate and the time left (rich), and each finding printed
above it as it comes. Not on a terminal (cron, a timer, a pipe): nothing but the summary, or
nothing at all with `--quiet`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

PLAIN = {
    "tls_mitm": "intercepted: the network presented a certificate the site did not issue, so it could read the traffic",
    "tls": "blocked while connecting securely (the network cut the connection when it saw the site's name)",
    "tcp": "blocked: no connection could be made to the site's addresses",
    "dns": "blocked by false answers from the network's name servers",
    "http": "blocked: a blockpage, or a cut connection, instead of the site's page",
    "quic": "HTTP/3 (QUIC) blocked, while ordinary connections to the site worked",  # issue 22
    "throttled": "slowed: connections naming the site were throttled or frozen, others were not",  # issue 22
    "local_interception": "intercepted by software on this computer (an antivirus or a company proxy), not the network",
    "down": "down for everyone (not blocked)",
    "inconclusive": "could not be judged (nothing proves blocking, nothing proves the contrary)",
    "offline": "not measured: this machine was offline",
    "none": "reachable, nothing found",
}
FINDINGS = ("tls_mitm", "tls", "tcp", "dns", "http", "quic", "throttled", "local_interception")  # issue 22


class Progress:
    """A rich progress bar on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = stream.isatty() if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._console = Console(file=stream)
            self._bar = Bar(
                TextColumn("[bold]measuring"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[found]}"),
                console=self._console,
                transient=True,
            )
            self._task = self._bar.add_task("measuring", total=total, rate="", found="")
            self._found: Counter[str] = Counter()
            self._bar.start()

    def update(self, done: int, host: str, blocking: str, elapsed: float) -> None:
        if not self.enabled:
            return
        if blocking in FINDINGS:
            self._found[blocking] += 1
            self._console.print(f"[bold red]{host}[/]: {PLAIN[blocking]}")
        found = ", ".join(f"{n} {kind}" for kind, n in self._found.most_common())
        rate = f"{done / elapsed:.1f} targets/s" if elapsed > 0 else ""
        self._bar.update(self._task, completed=done, rate=rate, found=f"found: {found}" if found else "")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def plain_summary(verdicts: Counter[str]) -> list[str]:
    """What the verdicts mean, one line a kind, most serious first."""
    order = [*FINDINGS, "down", "inconclusive", "offline", "none"]
    lines = []
    for kind in order:
        count = verdicts.get(kind, 0)
        if count:
            lines.append(f"  {count} {'site' if count == 1 else 'sites'} {PLAIN[kind]}")
    return lines


OFFLINE = {
    "no_route": "No network: this machine has no route to the internet, so no site was measured and nothing is "
    "claimed about any site (each record says offline).",
    "no_internet": "No internet: nothing answered, and every control failed for every target (the control resolver, "
    "the control handshakes, the helpers): this machine's connection is down, or everything is blocked, the controls "
    "included. So no site could be judged, and nothing is claimed about any site (each record says offline, "
    "no_internet). Check the connection, then run again.",
    "captive_portal": "This network asks you to log in (a captive portal at {host}): log in and run again. Every "
    "site pointed at the portal and every control failed, so no site could be judged, and nothing is claimed about "
    "any site (each record says offline, captive_portal).",
}


NETWORK_STATES = {
    "full": "full connectivity: the foreign reference services answered",
    "cut_off_abroad": "cut off from abroad: domestic services answered, no foreign one did",
    "allow_list": "an allow-list: domestic services and some foreign ones answered, other foreign ones did not",
    "no_internet": "no internet: no reference service answered",
    "unknown": "unknown: too little evidence",
}


def network_lines(summary: Any) -> list[str]:
    """The network's state in each round of the reference endpoints, and what it means for the findings."""
    rounds = getattr(summary, "network_states", None) or []
    if not rounds:
        return []
    lines = []
    for number, item in enumerate(rounds):
        if number and item["state"] == rounds[number - 1]["state"]:
            continue  # a state is said when it begins, not at every round
        counts = (f"domestic {item['domestic']['answered']}/{item['domestic']['asked']}, "
                  f"foreign {item['foreign']['answered']}/{item['foreign']['asked']} answered")  # fmt: skip
        lines.append(f"Network ({item['checked_at'][:19]}Z): {NETWORK_STATES[item['state']]} ({counts}).")
    restricted = sum(summary.during_restriction.values())
    if restricted:
        lines.append(f"  {restricted} targets were measured while the network was restricted: their failures are "
                     "the network's state, not the sites' blocking, and the report says so.")  # fmt: skip
    return lines


def offline_words(summary: Any) -> str:
    """Why an offline run (a `probe.run.execute.RunSummary`) measured nothing, in plain words."""
    return OFFLINE[summary.offline].format(host=getattr(summary, "portal", None) or "an unknown host")


def format_summary(summary: Any) -> str:
    """The end of a run (a `probe.run.execute.RunSummary`), in plain words, for the person who ran it."""
    lines = [f"Measured {summary.measured} of {summary.total} targets in {summary.duration:.0f} s."]
    if summary.offline:
        lines.append(offline_words(summary))
    lines += network_lines(summary)
    lines += plain_summary(summary.verdicts)
    late = summary.not_measured - summary.verdicts.get("offline", 0)
    if late:
        lines.append(f"The run's deadline came first: {late} targets were not measured (recorded as such).")
    if summary.interrupted:
        lines.append("The run was interrupted; every finished record is in the file.")
    if getattr(summary, "capture_stopped", None):  # probe/forensics/capture.py
        lines.append(f"Packet forensics: {summary.capture_stopped}; the records completed after it say so.")
    counts = ", ".join(f"{verdict}: {count}" for verdict, count in summary.verdicts.most_common())
    if counts:
        lines.append(f"Verdicts: {counts}")
    for item in summary.interceptions:
        catalog = item["catalog_id"] or "not in the catalog"
        how = f" (matched by {item['matched_by'].replace('_', ' ')})" if item["matched_by"] else ""
        lines.append(f"  {item['host']}: {item['blocking']}, issuer {item['issuer']}; {catalog}{how}")
    lines.append(f"Records are in {summary.results_path}. They never hold your IP address (docs/volunteers.md).")
    return "\n".join(lines)
