"""`probe upload`: finished results files to an S3-compatible object store (AWS, MinIO, Ceph,
Garage, most hosting providers), so that a node's logs reach the analysts without hands.

- Keys come from the file: `PREFIX/<installation id>/<YYYY>/<MM>/<DD>/<file name>` (the file's
  name holds its UTC start time and run id), so a retry writes the same key and never duplicates.
- A local ledger (`uploads.json` in the data directory) records what was sent, with its SHA-256;
  a file already sent with the same content is skipped.
- Large files go in parts (multipart upload); the ledger keeps the upload's id and every finished
  part, so an interrupted upload resumes where it stopped instead of starting again.
Credentials come from boto3's usual places (environment, `~/.aws`, an instance role).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.identity import data_directory, installation_id
from probe.results.files import ResultsPathError, results_files

PART_SIZE = 8 << 20  # S3's smallest part is 5 MiB; results files are rarely larger than a few parts
_STAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z-")


class UploadError(Exception):
    """An upload that could not finish; what was sent is in the ledger, and the next try resumes."""


@dataclass(frozen=True)
class Sent:
    path: Path
    key: str
    sha256: str
    skipped: bool  # already in the object store with the same content


def destination(to: str | None) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` as (bucket, prefix)."""
    if not to or not to.startswith("s3://"):
        raise UploadError(f"expected --to s3://BUCKET/PREFIX (or [upload] to = ... in the configuration), got {to!r}")
    bucket, _, prefix = to[5:].partition("/")
    if not bucket:
        raise UploadError(f"no bucket in {to!r}")
    return bucket, prefix.strip("/")


def object_key(prefix: str, path: Path, installation: str) -> str:
    """Where a results file goes: by installation and by the day its run started (from its name)."""
    found = _STAMP.match(path.name)
    day = "/".join(found.groups()) if found else time.strftime("%Y/%m/%d", time.gmtime(path.stat().st_mtime))
    return "/".join(p for p in (prefix, installation, day, path.name) if p)


class Ledger:
    """What was sent, and the parts of uploads in progress: a JSON file, replaced whole on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("sent", {})
        self.data.setdefault("in_progress", {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parts(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        number = 1
        while block := handle.read(PART_SIZE):
            yield number, block
            number += 1


def _client(endpoint: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # noqa: S324 - S3's integrity check


def _send(client: Any, bucket: str, key: str, path: Path, digest: str, ledger: Ledger) -> None:
    size = path.stat().st_size
    if size <= PART_SIZE:
        data = path.read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=_md5(data), Metadata={"sha256": digest})
        return
    progress = ledger.data["in_progress"].get(key)
    if progress is None or progress.get("sha256") != digest:
        started = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": digest})
        progress = {"upload_id": started["UploadId"], "sha256": digest, "parts": {}}
        ledger.data["in_progress"][key] = progress
        ledger.save()
    for number, block in _parts(path):
        if str(number) in progress["parts"]:
            continue  # sent before the interruption
        answer = client.upload_part(Bucket=bucket, Key=key, UploadId=progress["upload_id"], PartNumber=number,
                                    Body=block, ContentMD5=_md5(block))  # fmt: skip
        progress["parts"][str(number)] = answer["ETag"]
        ledger.save()
    parts = [
        {"PartNumber": int(n), "ETag": etag} for n, etag in sorted(progress["parts"].items(), key=lambda i: int(i[0]))
    ]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=progress["upload_id"],
                                     MultipartUpload={"Parts": parts})  # fmt: skip
    del ledger.data["in_progress"][key]


def _already_there(client: Any, bucket: str, key: str, digest: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return bool(head.get("Metadata", {}).get("sha256") == digest)


def upload_files(
    paths: list[Path], to: str | None, endpoint: str | None, ledger_path: Path | None = None, quiet: bool = False
) -> list[Sent]:
    """Send every finished results file not sent yet; raise UploadError at the first that fails."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = destination(to)
    ledger = Ledger(ledger_path or data_directory() / "uploads.json")
    installation = installation_id()
    client = _client(endpoint)
    sent = []
    try:
        files = results_files(paths, rejudged="skip")  # what a node measured, not local re-judgings
    except ResultsPathError as exc:
        raise UploadError(str(exc)) from None
    for path in files:
        key = object_key(prefix, path, installation)
        digest = _sha256(path)
        done = ledger.data["sent"].get(key)
        if done is not None and done["sha256"] == digest:
            sent.append(Sent(path, key, digest, skipped=True))
            continue
        try:
            skipped = _already_there(client, bucket, key, digest)
            if not skipped:
                _send(client, bucket, key, path, digest, ledger)
        except (BotoCoreError, ClientError) as exc:
            ledger.save()
            raise UploadError(f"{path} -> s3://{bucket}/{key}: {exc}") from None
        ledger.data["sent"][key] = {"sha256": digest, "size": path.stat().st_size, "file": path.name,
                                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        ledger.save()
        sent.append(Sent(path, key, digest, skipped=skipped))
        if not quiet:
            print(f"{path} -> s3://{bucket}/{key}")
    return sent
