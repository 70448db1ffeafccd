"""Reading the list of targets: `targets.txt` lines or a Citizen Lab test-list CSV.

A bad line stops the run before anything is measured, with an error that names the file and
line (`targets.txt:17: ...`), so that a volunteer can fix it.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

CATEGORY_CODES = frozenset(
    [
        "ALDR",
        "REL",
        "PORN",
        "PROV",
        "POLR",
        "HUMR",
        "ENV",
        "MILX",
        "HATE",
        "NEWS",
        "XED",
        "PUBH",
        "GMB",
        "ANON",
        "DATE",
        "GRP",
        "LGBT",
        "FILE",
        "HACK",
        "COMT",
        "MMED",
        "HOST",
        "SRCH",
        "GAME",
        "CULTR",
        "ECON",
        "GOVT",
        "COMM",
        "CTRL",
        "IGO",
        "MISC",
    ]
)

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
DEFAULT_PORTS = {"https": 443, "http": 80}


class TargetError(ValueError):
    """A target line that cannot be measured; its message names `file:line`."""


@dataclass(frozen=True)
class Target:
    input: str  # exactly as written in the targets file
    host: str  # lower-case host name or IP literal, no brackets
    port: int
    scheme: str  # "https" or "http": what the probe speaks to the port
    path: str  # path and query for HTTP, "/" when none was given
    category: str | None
    source_line: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS[self.scheme]
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"

    @property
    def is_ip_literal(self) -> bool:
        return is_ip_literal(self.host)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_host(host: str) -> str:
    if not host:
        raise ValueError("no host name")
    if is_ip_literal(host):
        return host
    name = host.rstrip(".").lower()
    if len(name) > 253:
        raise ValueError(f"host name longer than 253 characters: {host!r}")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid host name: {host!r} ({exc})") from None
    labels = ascii_name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid host name: {host!r}")
    return ascii_name


def _check_category(code: str) -> str:
    upper = code.strip().upper()
    if upper not in CATEGORY_CODES:
        raise ValueError(f"unknown Citizen Lab category code {code!r}")
    return upper


def parse_target(text: str, category: str | None, line_number: int) -> Target:
    """Parse one target: `host`, `host:port`, `[v6]:port` or an http(s) URL."""
    if "://" in text:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"unsupported scheme {parts.scheme!r} (use http:// or https://)")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ValueError(f"bad port in {text!r}: {exc}") from None
        host = _check_host(parts.hostname or "")
        return Target(text, host, port, scheme, request_path(parts.path, parts.query), category, line_number)
    host_text, port = text, 443
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host_text, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after ']' in {text!r}")
            port = _parse_port(rest[1:])
    elif text.count(":") == 1:
        host_text, port_text = text.split(":")
        port = _parse_port(port_text)
    host = _check_host(host_text)
    scheme = "http" if port == 80 else "https"
    return Target(text, host, port, scheme, "/", category, line_number)


def request_path(path: str, query: str) -> str:
    """The path and query as a browser sends them: non-ASCII characters percent-encoded as UTF-8
    (`/wiki/Қазақстан` -> `/wiki/%D2%9A...`), what is already encoded left alone."""
    encoded = quote(path or "/", safe="/%:@!$&'()*+,;=~")
    if query:
        encoded += "?" + quote(query, safe="/%:@!$&'()*+,;=~?")
    return encoded


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} (1-65535)")
    return int(text)


def parse_lines(lines: list[str], name: str) -> list[Target]:
    """Parse the plain format: a target, optionally a category code, `#` starts a comment."""
    targets: list[Target] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        if len(fields) > 2:
            raise TargetError(f"{name}:{number}: expected a target and at most one category code, got {text!r}")
        try:
            category = _check_category(fields[1]) if len(fields) == 2 else None
            targets.append(parse_target(fields[0], category, number))
        except ValueError as exc:
            raise TargetError(f"{name}:{number}: {exc}") from None
    return targets


def parse_csv(lines: list[str], name: str) -> list[Target]:
    """Parse a Citizen Lab test list: `url,category_code,category_description,...`."""
    reader = csv.reader(lines)
    targets: list[Target] = []
    for row in reader:
        number = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if number == 1 and row[0].strip().lower() == "url":
            continue
        try:
            url = row[0].strip()
            if "://" not in url:
                raise ValueError(f"expected a URL in the first column, got {url!r}")
            category = _check_category(row[1]) if len(row) > 1 and row[1].strip() else None
            targets.append(parse_target(url, category, number))
        except ValueError as exc:
            raise TargetError(f"{name}:{number}: {exc}") from None
    return targets


def load_targets(path: Path) -> list[Target]:
    """Read a targets file (plain or CSV, told apart by its header or `.csv` suffix)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TargetError(f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise TargetError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TargetError(f"{name}: cannot read: {exc.strerror}") from None
    lines = text.splitlines()
    is_csv = path.suffix.lower() == ".csv" or (lines and lines[0].lower().startswith("url,"))
    targets = parse_csv(lines, name) if is_csv else parse_lines(lines, name)
    if not targets:
        raise TargetError(f"{name}: no targets in the file")
    return targets
