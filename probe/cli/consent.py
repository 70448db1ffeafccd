"""Informed consent, asked once before the first measurement (as OONI Probe's onboarding does).

Volunteers run the probe at home, sometimes at risk. Before `probe run` measures anything, the
person at the terminal reads what is measured, what is recorded and what never is, the legal risk
and where the results go (`TEXT`, shown as docs/volunteers.md shows it), and answers yes or no. A
yes is kept in the probe's state directory (`consent.json`, beside the installation id) with the
text's version and digest: when the text changes, the next run asks again.

Unattended runs consent with `--yes` or `consent = true` in the configuration file, which record
the same file without asking. A run with no terminal to ask at (stdin is not a TTY) and no consent
for this text is refused before anything is measured (the caller exits 2).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from probe.publish.identity import HINT, StateError, state_directory

FILE_NAME = "consent.json"
# Raise VERSION when the text's meaning changes; any change of the text (its digest) asks again anyway.
VERSION = 2
TEXT = """\
Before the probe measures anything, please read this (docs/volunteers.md has the same text).

WHAT IS MEASURED
  The probe visits every site in its list the way a browser does: it asks for each site's
  address (DNS) from your network's resolver and from an encrypted resolver abroad (Cloudflare's
  1.1.1.1 unless set otherwise, which sees the names asked), connects, checks the TLS certificate
  the network presents, and reads the start of each page. With the CAP_NET_RAW capability (root)
  it also repeats a blocked connection with short-lived packets to find where the censor sits
  (--no-forensics turns this off).
  It also tries HTTP/3 (QUIC) where a site offers it, asks a few well-known services at home and
  abroad whether they answer (to tell a cut-off from a blocked site), and, with a helper, downloads
  a few hundred KiB per site from it to tell a slowed-down site from a slow link (--throughput off).

WHAT IS RECORDED, AND WHAT NEVER IS
  Recorded, for each site: the DNS answers, whether connections worked, the certificates, the
  first 16 KiB of the page, times and the verdict; your network's AS number and name and the
  country; the city or region you set with --region, if any; a random installation id (it says
  which records came from the same installation, not whose).
  Never recorded: your IP address (wherever it appears it is replaced with [scrubbed]), your
  name, your computer's name or its files, or anything of your own browsing.

THE RISK
  The list holds sites that are blocked. Your network operator, and the authorities, can see
  that this connection reached them, exactly as if you had visited them. In Kazakhstan, visiting
  or measuring blocked sites may carry legal risk. Go on only if you accept that risk; you can
  stop at any time with Ctrl-C.

WHERE THE RESULTS GO
  Into files on this computer, in the folder given by --out (results/ by default). Nothing is
  sent anywhere unless you run `probe upload`, or `probe run --upload`, to a destination you
  name yourself.

Your answer is kept in the probe's state directory, so you are asked once, and again only if
this text changes. Runs without a terminal (cron, systemd) consent with --yes, or with
`consent = true` in the configuration file.
"""
QUESTION = "Do you agree, and measure now? Type yes or no: "
ATTEMPTS = 3  # answers that are neither yes nor no before the run takes it as a no


def digest() -> str:
    """The text's SHA-256: consent to other words is not consent to these."""
    return hashlib.sha256(TEXT.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Agreement:
    """What `consent.json` says was agreed to: the text's version and digest, how, and when."""

    version: int
    text_sha256: str
    given: str  # "terminal", "--yes" or "configuration"
    at: str

    def current(self) -> bool:
        return self.version == VERSION and self.text_sha256 == digest()


def agreement(directory: Path | None = None) -> Agreement | None:
    """The recorded agreement, if there is a readable one (a damaged file is none: ask again)."""
    path = (directory or state_directory()) / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        found = Agreement(int(data["version"]), str(data["text_sha256"]), str(data["given"]), str(data["at"]))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        return None
    return found


def record(given: str, directory: Path | None = None) -> Path:
    """Keep consent to this text (written whole: a crash leaves the old file or the new one)."""
    directory = directory or state_directory()
    path = directory / FILE_NAME
    at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    data = {"version": VERSION, "text_sha256": digest(), "given": given, "at": at}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        raise StateError(f"cannot keep the consent in {directory}: {exc.strerror or exc}; {HINT}") from None
    return path


def interactive(stream: TextIO | None) -> bool:
    """Whether a person can answer on `stream` (a terminal), not a pipe, a file or /dev/null."""
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed
        return False


def ask(details: str, stdin: TextIO, out: TextIO) -> bool:
    """Show the text and this run's details; True for yes. End of input is a no."""
    out.write(f"\n{TEXT}\n{details}\n\n")
    for _ in range(ATTEMPTS):
        out.write(QUESTION)
        out.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D, or the terminal closed
            out.write("\n")
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        out.write("Please type yes or no.\n")
    return False


def obtain(given: str | None, details: str, stdin: TextIO | None = None, out: TextIO | None = None) -> bool:
    """Whether the run may measure: consent kept for this text, given now (`given`: "--yes" or
    "configuration"), or answered yes at a terminal; each new consent is recorded. When not, the
    reason and how to consent are said on `out` (stderr). StateError when it cannot be kept."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stderr if out is None else out
    directory = state_directory()
    found = agreement(directory)
    if found is not None and found.current():
        return True
    if given is not None:  # said on the command line or in the file: recorded without a word
        record(given, directory)
        return True
    changed = " The consent text has changed since it was agreed to." if found is not None else ""
    if not interactive(stdin):
        out.write(
            f"probe: not measuring: no consent for this installation ({directory / FILE_NAME}) and no terminal "
            f"to ask at.{changed} This is what consent means:\n\n{TEXT}\n"
            "probe: to consent, run `probe run` once at a terminal and answer yes, or give --yes (or "
            "`consent = true` in the configuration file) for unattended runs.\n"
        )
        return False
    if found is not None:
        out.write(f"\nThe consent text has changed since you agreed to it (version {found.version}, now {VERSION}): "
                  "please read it again.\n")  # fmt: skip
    if not ask(details, stdin, out):
        out.write("probe: not measuring: you did not agree, so nothing was measured.\n")
        return False
    record("terminal", directory)
    return True
