"""Reading the list of targets: `targets.txt` lines or a Citizen Lab test-list CSV.

A bad line stops the run before anything is measured, with an error that names the file and
line (`targets.txt:17: ...`), so that a volunteer can fix it.

Names and URLs are read as browsers read them (the WHATWG URL standard, which redirects'
`Location`s follow too, `resolve_url`): a host name is mapped and encoded by IDNA 2008 with UTS 46,
non-transitional (`faß.de` is `xn--fa-hia.de`, not `fass.de`), `\\` is `/` in http(s) URLs
(`https://example.com\\@evil.com/` is example.com), an IPv4 address may be written as browsers
accept it (`127.1`, `0x7f.0.0.1`), and `.` and `..` path segments are resolved. Unlike a browser,
a target may not carry a user name or password (`user@host`) nor name port 0.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import idna

from probe.vocabulary.errors import InputError

_CATEGORIES = (
    "ALDR REL PORN PROV POLR HUMR ENV MILX HATE NEWS XED PUBH GMB ANON DATE GRP LGBT FILE HACK COMT MMED HOST "
    "SRCH GAME CULTR ECON GOVT COMM CTRL IGO MISC"
)
CATEGORY_CODES = frozenset(_CATEGORIES.split())

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
DEFAULT_PORTS = {"https": 443, "http": 80}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_SLASHES = "/\\"
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_PATH_ENCODED = frozenset(' "#<>?^`{}')  # WHATWG's path percent-encode set (with C0, DEL, non-ASCII)
_QUERY_ENCODED = frozenset(" \"#<>'")  # its special-query percent-encode set
_IPV4_DIGITS = {10: re.compile(r"[0-9]+"), 8: re.compile(r"[0-7]+"), 16: re.compile(r"[0-9A-Fa-f]+")}


class TargetError(InputError):
    """A target line that cannot be measured; its message names `file:line`."""


def _serialise(scheme: str, host: str, port: int, path: str) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    netloc = bracketed if port == DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
    return f"{scheme}://{netloc}{path}"


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
        return _serialise(self.scheme, self.host, self.port, self.path)

    @property
    def is_ip_literal(self) -> bool:
        return is_ip_literal(self.host)


@dataclass(frozen=True)
class Url:
    """An http(s) URL as a browser parsed it: what it would connect to and ask for."""

    scheme: str  # "https" or "http"
    host: str  # as `Target.host`
    port: int
    path: str  # path and query, percent-encoded: the request line's
    userinfo: bool  # the URL carried a user name or password (never kept)

    @property
    def url(self) -> str:  # without the user name and password
        return _serialise(self.scheme, self.host, self.port, self.path)


@functools.lru_cache(maxsize=4096)  # asked several times per target while measuring: a name raises here
def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ipv4_number(text: str) -> int | None:
    """One part of an IPv4 address as browsers read it: decimal, `0x` hex or `0` octal."""
    radix = 10
    if text[:2].lower() == "0x":
        text, radix = text[2:], 16
        if not text:
            return 0
    elif len(text) > 1 and text[0] == "0":
        text, radix = text[1:], 8
    if not _IPV4_DIGITS[radix].fullmatch(text):
        return None
    return int(text, radix) if len(text) < 4000 else 2**64  # past int()'s digit limit: too large anyway


def _ipv4_parts(name: str) -> list[str]:
    parts = name.split(".")
    return parts[:-1] if len(parts) > 1 and not parts[-1] else parts


def _ipv4(name: str) -> str | None:
    """A host that ends in a number is an IPv4 address (`127.1`, `0x7f.0.0.1`), or no host at all."""
    parts = _ipv4_parts(name)
    last = parts[-1]
    if not (last.isascii() and last.isdigit()) and (not last or _ipv4_number(last) is None):
        return None  # a name, not an address
    numbers = [_ipv4_number(part) if part else None for part in parts]
    if len(parts) > 4 or None in numbers:
        raise ValueError(f"not a valid IPv4 address: {name!r}")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ValueError(f"not a valid IPv4 address (a part is too large): {name!r}")
    return str(ipaddress.IPv4Address(values[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(values[:-1]))))


def _domain_to_ascii(domain: str) -> str:
    """UTS 46 mapping, non-transitional, then each non-ASCII label to its IDNA 2008 A-label."""
    try:
        mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() and not label.startswith("xn--") else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        ]
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise ValueError(f"not a valid host name: {domain!r} ({exc})") from None
    return ".".join(labels)


def parse_host(text: str) -> str:
    """A URL's host as browsers read it: `[IPv6]`, an IPv4 address, or a name in lower-case ASCII."""
    if not text:
        raise ValueError("no host name")
    if text.startswith("[") or ":" in text:
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if "%" in inner or not text.startswith("["):  # zone ids are for this machine's links only
            raise ValueError(f"not a valid host: {text!r}")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ValueError(f"not a valid IPv6 address: {text!r}") from None
    try:
        domain = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not a valid host name: {text!r} (not UTF-8 once percent-decoded)") from None
    ascii_name = _domain_to_ascii(domain)
    address = _ipv4(ascii_name)
    if address is not None:
        return address
    name = ascii_name.removesuffix(".")  # the root's dot; an empty label anywhere else is no name
    if len(name) > 253:
        raise ValueError(f"host name longer than 253 characters: {text!r}")
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"not a valid host name: {text!r}")
    return name


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} (1-65535)")
    return int(text)


def _encode(text: str, encoded: frozenset[str]) -> str:
    """Percent-encode as browsers do: controls, space, non-ASCII (as UTF-8) and the set given."""
    return "".join(
        "".join(f"%{b:02X}" for b in c.encode("utf-8")) if c in encoded or not "!" <= c <= "~" else c for c in text
    )


def _normalise_path(path: str) -> str:
    """Resolve `.` and `..` segments (and their `%2e` spellings), as a special URL's path is."""
    segments, out = path.removeprefix("/").split("/"), list[str]()
    for index, segment in enumerate(segments):
        lowered, last = segment.lower(), index == len(segments) - 1
        if lowered in ("..", ".%2e", "%2e.", "%2e%2e"):
            if out:
                out.pop()
        elif lowered not in (".", "%2e"):
            out.append(segment)
            continue
        if last:
            out.append("")
    return "/" + "/".join(out)


def request_path(path: str, query: str | None) -> str:
    """The path and query as a browser sends them: non-ASCII characters percent-encoded as UTF-8
    (`/wiki/Қазақстан` -> `/wiki/%D2%9A...`), what is already encoded left alone."""
    encoded = _encode(_normalise_path(path), _PATH_ENCODED)
    return encoded if query is None else f"{encoded}?{_encode(query, _QUERY_ENCODED)}"


def _tail(text: str) -> tuple[str, str | None]:
    """The path (`\\` read as `/`) and query (None when there is no `?`) after an authority."""
    path, mark, query = text.split("#", 1)[0].partition("?")
    return path.replace("\\", "/"), query if mark else None


def _with_authority(scheme: str, rest: str) -> Url:
    """An http(s) URL after its `scheme:`: any slashes, then the authority, path and query."""
    rest = rest.lstrip(_SLASHES)
    end = next((i for i, c in enumerate(rest) if c in "/\\?#"), len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    if hostport.startswith("[") and "]" in hostport:
        host_text, _, after = hostport.partition("]")
        host_text += "]"
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected text after ']' in {rest[:end]!r}")
        port_text = after[1:]
    else:
        host_text, _, port_text = hostport.partition(":")
    host = parse_host(host_text)
    port = _parse_port(port_text) if port_text else DEFAULT_PORTS[scheme]
    return Url(scheme, host, port, request_path(*_tail(rest[end:])), bool(at))


def _clean(text: str) -> str:
    """What every URL parser does first: outer controls and spaces off, tabs and newlines out."""
    return text.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")


def parse_url(text: str) -> Url:
    """An absolute http:// or https:// URL."""
    found = _SCHEME.match(_clean(text))
    scheme = found.group(1).lower() if found else ""
    if found is None or scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"unsupported scheme {scheme!r} (use http:// or https://)" if found else f"not a URL: {text!r}"
        )
    return _with_authority(scheme, _clean(text)[found.end() :])


def _leading_slashes(text: str) -> int:
    return len(text) - len(text.lstrip(_SLASHES))


def resolve_url(base: str, reference: str) -> Url | None:
    """`reference` (a redirect's `Location`) read against the http(s) URL `base`, as a browser
    reads it (the WHATWG URL standard); None for a scheme that is not http(s) (`mailto:`, `ftp:`)."""
    text, start = _clean(reference), parse_url(base)
    found = _SCHEME.match(text)
    if found is not None:
        scheme, text = found.group(1).lower(), text[found.end() :]
        if scheme not in DEFAULT_PORTS:
            return None
        if scheme != start.scheme or _leading_slashes(text) >= 2:
            return _with_authority(scheme, text)
    elif _leading_slashes(text) >= 2:
        return _with_authority(start.scheme, text)
    base_path, mark, base_query = start.path.partition("?")
    path, query = _tail(text)
    if _leading_slashes(text) == 0 and not path:  # nothing, `?query` or `#fragment`: the base's path
        path = base_path
        if not text.startswith("?"):
            query = base_query if mark else None
    elif _leading_slashes(text) == 0:  # relative to the base's folder
        path = base_path.rsplit("/", 1)[0] + "/" + path
    return Url(start.scheme, start.host, start.port, request_path(path, query), False)


def _check_category(code: str) -> str:
    upper = code.strip().upper()
    if upper not in CATEGORY_CODES:
        raise ValueError(f"unknown Citizen Lab category code {code!r}")
    return upper


def parse_target(text: str, category: str | None, line_number: int) -> Target:
    """Parse one target: `host`, `host:port`, `[v6]:port` or an http(s) URL."""
    found = _SCHEME.match(text)
    if found is not None and text[found.end() : found.end() + 1] in ("/", "\\"):
        url = parse_url(text)
        if url.userinfo:
            raise ValueError("a user name or password before '@' in a target: give the host alone")
        return Target(text, url.host, url.port, url.scheme, url.path, category, line_number)
    if "@" in text:
        raise ValueError("a user name or password before '@' in a target: give the host alone")
    host_text, port = text, 443
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host_text, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after ']' in {text!r}")
            port = _parse_port(rest[1:])
    elif text.count(":") == 1:
        host_text, port_text = text.split(":")
        port = _parse_port(port_text)
    elif ":" in text:  # a bare IPv6 address
        host_text = f"[{text}]"
    host = parse_host(host_text)
    scheme = "http" if port == 80 else "https"
    return Target(text, host, port, scheme, "/", category, line_number)


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
