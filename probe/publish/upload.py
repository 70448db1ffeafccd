"""`probe upload`: finished results files to an S3-compatible object store (AWS, MinIO, Ceph,
Garage, most hosting providers), so that a node's logs reach the analysts without hands.

- Keys come from the file: `PREFIX/<installation id>/<YYYY>/<MM>/<DD>/<file name>` (the file's
  name holds its UTC start time and run id), so a retry writes the same key and never duplicates.
- A local ledger (`uploads.json` in the data directory) records what was sent, with its SHA-256;
  a file already sent with the same content is skipped.
- Large files go in parts (multipart upload); the ledger keeps the upload's id and every finished
  part, so an interrupted upload resumes where it stopped instead of starting again. An upload id
  the store no longer knows (lifecycle rules abort old uploads: `NoSuchUpload`) starts it again.
- A file a running run may still be writing is skipped (`skip`, given by the command: probe.run.lock
  knows who holds a results directory's lock); it goes next time, whole, once.
- Errors of input (the destination, the paths) are `UploadUsageError`; a state directory that
  cannot be written is probe.publish.identity's `StateError`; both are raised before anything is sent.
Credentials come from boto3's usual places (environment, `~/.aws`, an instance role).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe.publish.identity import StateError, installation_id, state_directory, writable_state
from probe.results.files import ResultsPathError, results_files
from probe.vocabulary.errors import NetworkError

PART_SIZE = 8 << 20  # S3's smallest part is 5 MiB; results files are rarely larger than a few parts
_STAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z-")


class UploadError(NetworkError):
    """An upload that could not finish; what was sent is in the ledger, and the next try resumes."""


class UploadUsageError(UploadError):
    """Input that cannot be uploaded (the destination, a path); nothing was sent."""


@dataclass(frozen=True)
class Sent:
    path: Path
    key: str
    sha256: str
    skipped: bool  # already in the object store with the same content
    held: str | None = None  # not sent: a running run may still be writing it (who holds its lock)


def destination(to: str | None) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` as (bucket, prefix)."""
    if not to or not to.startswith("s3://"):
        given = repr(to) if to else "nothing"
        raise UploadUsageError(f"expected --to s3://BUCKET/PREFIX (or [upload] to in the configuration); got {given}")
    bucket, _, prefix = to[5:].partition("/")
    if not bucket:
        raise UploadUsageError(f"no bucket in {to!r}")
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
        partial = self.path.with_suffix(".partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError as exc:
            raise StateError(f"cannot write the upload ledger {self.path}: {exc.strerror or exc}") from None


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
    from botocore.exceptions import ClientError

    try:
        _send_parts(client, bucket, key, path, digest, ledger)
    except ClientError as exc:
        if not _forgotten(exc):
            raise
        ledger.data["in_progress"].pop(key, None)  # forgotten while we sent: start again, once
        ledger.save()
        _send_parts(client, bucket, key, path, digest, ledger)


def _forgotten(exc: Exception) -> bool:
    """The store no longer knows the upload: a lifecycle rule aborted it, and its parts are gone."""
    return bool(getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchUpload")


def _parts_kept(client: Any, bucket: str, key: str, upload_id: str) -> dict[str, str] | None:
    """The parts the store holds for an upload in progress (number -> ETag), or None when it no
    longer knows the upload. What the store says wins over the ledger: a part it lost goes again."""
    from botocore.exceptions import ClientError

    kept: dict[str, str] = {}
    marker = 0
    while True:
        try:
            page = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        except ClientError as exc:
            if _forgotten(exc):
                return None
            raise
        kept.update({str(part["PartNumber"]): part["ETag"] for part in page.get("Parts", [])})
        if not page.get("IsTruncated"):
            return kept
        marker = int(page["NextPartNumberMarker"])


def _send_parts(client: Any, bucket: str, key: str, path: Path, digest: str, ledger: Ledger) -> None:
    progress = ledger.data["in_progress"].get(key)
    if progress is not None and progress.get("sha256") == digest:
        kept = _parts_kept(client, bucket, key, progress["upload_id"])
        if kept is None:
            progress = None  # the store forgot it: start again
        else:
            progress["parts"] = kept
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


def ready(to: str | None, ledger_path: Path | None = None) -> tuple[str, str, Path]:
    """The destination (bucket, prefix) and the ledger's path, checked before anything is measured
    or sent: UploadUsageError for the destination, StateError when the ledger cannot be written."""
    bucket, prefix = destination(to)
    if ledger_path is None:
        return bucket, prefix, writable_state(state_directory()) / "uploads.json"
    writable_state(ledger_path.parent)
    return bucket, prefix, ledger_path


def upload_files(
    paths: list[Path],
    to: str | None,
    endpoint: str | None,
    ledger_path: Path | None = None,
    quiet: bool = False,
    skip: Callable[[Path], str | None] | None = None,
) -> list[Sent]:
    """Send every finished results file not sent yet; raise UploadError at the first that fails.
    `skip` says, for a file, who may still be writing it (None: nobody): such a file waits."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix, ledger_path = ready(to, ledger_path)
    try:
        files = results_files(paths, rejudged="skip")  # what a node measured, not local re-judgings
    except ResultsPathError as exc:
        raise UploadUsageError(str(exc)) from None
    ledger = Ledger(ledger_path)
    installation = installation_id()
    client = _client(endpoint)
    sent = []
    for path in files:
        key = object_key(prefix, path, installation)
        holder = skip(path) if skip is not None else None
        if holder is not None:
            sent.append(Sent(path, key, "", skipped=False, held=holder))
            continue
        try:
            digest = _sha256(path)
        except FileNotFoundError:  # replaced meanwhile (a run compressed it): the new file goes next time
            continue
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
