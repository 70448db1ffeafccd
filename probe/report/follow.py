"""Following a results store, one round at a time, reading only what is new.

A store is a folder (`results/`, as `probe run` writes it, or a fleet's files collected in one place:
`*.jsonl`, `*.jsonl.gz`, `*.jsonl.zst`, found by probe.results.files) or an S3 prefix
(`s3://BUCKET/PREFIX`, as `probe upload` writes: `PREFIX/<installation>/<YYYY>/<MM>/<DD>/<file>`).

What was read is kept per file in the watch's state: for a plain file its size, modification time,
the byte offset of the last whole line read and the lines read; for an object its ETag too. A round
reads a plain file from its offset (a line still being written, with no newline yet, waits for the
next round); a compressed file (written whole) again only when it changed, skipping the lines read
before. Files `probe analyze` wrote beside the originals (`.analyzed-`) are not followed: the store
is what the fleet measured.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.results.files import REJUDGED, SUFFIXES, ResultsPathError, open_text, results_files
from probe.vocabulary.errors import InputError, NetworkError

MAX_PLACES = 10  # bad lines named one by one; the rest are counted


class StoreError(InputError):
    """A store that is not there or not a store: the message names it."""


class StoreUnreachable(NetworkError):
    """The object store did not answer (listing or reading); nothing of this round is kept."""


@dataclass
class Reading:
    """One round's new records, and what to keep in the state once they are processed."""

    records: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # the state's `files`, updated
    files_read: int = 0
    bad_lines: int = 0
    places: list[str] = field(default_factory=list)  # the bad lines' and unreadable files' places

    def problem(self, place: str) -> None:
        self.bad_lines += 1
        if len(self.places) < MAX_PLACES:
            self.places.append(place)

    def take(self, name: str, lines: list[str], first: int) -> None:
        """Parse whole lines; a line that is not a record is counted and named, never fatal."""
        for number, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                self.problem(f"{name}:{number}: not a JSON record")
                continue
            if not isinstance(record, dict) or "schema_version" not in record:
                self.problem(f"{name}:{number}: not a probe record")
                continue
            self.records.append(record)


def is_s3(store: str) -> bool:
    return store.startswith("s3://")


def read_new(store: str, files: dict[str, dict[str, Any]], endpoint: str | None, timeout: float) -> Reading:
    reading = Reading(files=dict(files))
    if is_s3(store):
        _read_s3(store, reading, endpoint, timeout)
    else:
        _read_folder(Path(store), reading)
    return reading


def _read_folder(root: Path, reading: Reading) -> None:
    if not root.is_dir():
        raise StoreError(f"{root}: no such folder (a results folder or s3://BUCKET/PREFIX)")
    try:
        paths = results_files([root], rejudged="skip")
    except ResultsPathError:
        paths = []  # nothing yet: a fleet's first files come later
    for path in paths:
        name = path.relative_to(root).as_posix()
        try:
            status = path.stat()
        except FileNotFoundError:  # compressed or moved meanwhile: next round
            continue
        entry = reading.files.get(name, {})
        if entry.get("size") == status.st_size and entry.get("mtime") == status.st_mtime_ns:
            continue
        try:
            if path.name.endswith(".jsonl"):
                kept = _read_plain(path, name, entry, status.st_size, reading)
            else:
                with open_text(path, errors="replace") as handle:
                    kept = _take_all(name, list(handle), entry, reading)
        except (OSError, EOFError, ValueError) as exc:
            reading.problem(f"{name}: cannot be read ({exc}); tried again next round")
            continue
        reading.files[name] = {**kept, "size": status.st_size, "mtime": status.st_mtime_ns}
        reading.files_read += 1


def _read_plain(path: Path, name: str, entry: dict[str, Any], size: int, reading: Reading) -> dict[str, Any]:
    offset, lines = entry.get("offset", 0), entry.get("lines", 0)
    if size < offset:  # replaced by a shorter file: read it again (duplicates are dropped by id)
        offset, lines = 0, 0
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    whole = data[: data.rfind(b"\n") + 1]  # a line being written waits for its newline
    text = whole.decode("utf-8", errors="replace").splitlines()
    reading.take(name, text, lines + 1)
    return {"offset": offset + len(whole), "lines": lines + len(text)}


def _take_all(name: str, text: list[str], entry: dict[str, Any], reading: Reading) -> dict[str, Any]:
    """A compressed file, whole: the lines read before are skipped."""
    skip = entry.get("lines", 0) if len(text) >= entry.get("lines", 0) else 0
    reading.take(name, text[skip:], skip + 1)
    return {"lines": len(text)}


def s3_location(store: str) -> tuple[str, str]:
    bucket, _, prefix = store[5:].partition("/")
    if not bucket:
        raise StoreError(f"no bucket in {store!r} (expected s3://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


def _client(endpoint: str | None, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=timeout, read_timeout=timeout)
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def _objects(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
    for page in pages:
        yield from page.get("Contents", [])


def _read_s3(store: str, reading: Reading, endpoint: str | None, timeout: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = s3_location(store)
    client = _client(endpoint, timeout)
    try:
        for item in _objects(client, bucket, prefix):
            key = item["Key"]
            name = key.rsplit("/", 1)[-1]
            if not name.endswith(SUFFIXES) or REJUDGED in name:
                continue
            entry = reading.files.get(key, {})
            if entry.get("etag") == item["ETag"]:
                continue
            kept = _read_object(client, bucket, key, item["Size"], entry, reading)
            reading.files[key] = {**kept, "etag": item["ETag"], "size": item["Size"]}
            reading.files_read += 1
    except (BotoCoreError, ClientError) as exc:
        raise StoreUnreachable(f"{store}: {exc}") from None


def _read_object(
    client: Any, bucket: str, key: str, size: int, entry: dict[str, Any], reading: Reading
) -> dict[str, Any]:
    if key.endswith(".jsonl"):
        offset, lines = entry.get("offset", 0), entry.get("lines", 0)
        if size < offset:
            offset, lines = 0, 0
        if offset >= size:
            return {"offset": offset, "lines": lines}
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        data = client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
        text = data.decode("utf-8", errors="replace").splitlines()  # an object is whole: every line counts
        reading.take(key, text, lines + 1)
        return {"offset": offset + len(data), "lines": lines + len(text)}
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        if key.endswith(".gz"):
            data = gzip.decompress(data)
        else:
            import zstandard

            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except (OSError, EOFError, ValueError, ImportError) as exc:  # zstandard.ZstdError is a ValueError
        reading.problem(f"{key}: cannot be decompressed ({exc})")
        return {"lines": entry.get("lines", 0)}
    return _take_all(key, data.decode("utf-8", errors="replace").splitlines(), entry, reading)
