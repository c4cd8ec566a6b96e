"""S3 listing, fetching and text extraction for bulk imports; no Celery and no database here.

Formats: `.txt .md .html .pdf .docx` (through ingest.extract) and `.json .jsonl .csv`.

- `document_per_file`: every supported object is one document; JSON and CSV files are read as text.
- `document_per_line`: each record of a `.jsonl`, `.csv` or `.json` file is one document (the rules are
  in ingest/records.py); its external id is the record's own, else `key#L<n>`. The other formats stay
  one document per object.

Anything else is skipped with a reason that starts with its category: `unsupported type`, `too large`,
`empty` or `unreadable`. Objects that cannot be fetched are `failed`; an unreachable endpoint raises
Unavailable so that the page is tried again, never half-stored.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from core.errors import (
    DocsortError,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ingest import records
from ingest.extract import SUPPORTED, decode, extension
from ingest.records import RECORD_TYPES

IMPORTABLE = frozenset(SUPPORTED | RECORD_TYPES)
MAX_SKIPS_PER_OBJECT = 20  # reasons kept per object; the count covers every skipped line
RESULTS_FILE = re.compile(r"(^|[/.])docsort-import-\d+\.jsonl$")
_URI = re.compile(r"s3://([^/]*)(?:/(.*))?", re.DOTALL)
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound", "404"}
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "403",
}
_BUSY = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """s3://bucket/prefix (the prefix may be empty), or InvalidInput."""
        match = _URI.fullmatch(uri)
        if match is None or not _BUCKET.fullmatch(match[1]) or "\x00" in uri:
            raise InvalidInput(f"source must look like s3://bucket/prefix, got {uri[:200]!r}")
        prefix = match[2] or ""
        if len(prefix.encode("utf-8")) > 1024:
            raise InvalidInput("source prefix is longer than S3's 1024-byte key limit")
        return cls(bucket=match[1], prefix=prefix)

    def uri(self, key: str | None = None) -> str:
        """The s3:// URI of key (or of the prefix)."""
        return f"s3://{self.bucket}/{self.prefix if key is None else key}"

    def results_key(self, import_id: int) -> str:
        """Where an import's results go: next to the prefix, and never imported themselves."""
        base = self.prefix.rstrip("/")
        return f"{base}.docsort-import-{import_id}.jsonl" if base else f"docsort-import-{import_id}.jsonl"


@dataclass(frozen=True)
class Limits:
    """Sizes beyond which an object or a document is skipped."""

    max_object_bytes: int
    max_document_bytes: int


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object."""

    key: str
    etag: str
    size: int
    last_modified: str


@dataclass(frozen=True)
class Page:
    """One page of a listing and the token of the next (None at the end)."""

    objects: list[ObjectInfo]
    next_token: str | None


@dataclass(frozen=True)
class Item:
    """One document to store."""

    text: str
    external_id: str
    source: dict[str, Any]


@dataclass
class ObjectResult:
    """What one listed object became: documents, skips with reasons, or a failure."""

    key: str
    items: list[Item] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    failed: str | None = None

    def skip(self, key: str, reason: str) -> None:
        """Count a skip; keep its reason unless this object already has many."""
        self.skipped += 1
        if len(self.skips) < MAX_SKIPS_PER_OBJECT:
            self.skips.append((key, reason[:500]))


def make_client(*, endpoint_url: str | None, region: str | None, concurrency: int = 10) -> Any:
    """An S3 client from boto3's standard credential chain, with a pool sized for concurrency."""
    config = Config(
        max_pool_connections=max(10, concurrency + 2),
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def translate(exc: Exception, what: str) -> DocsortError:
    """A boto error as docsort's: NotFound, Unauthorized, Unavailable (worth retrying) or InvalidInput."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{what}: {code} {error.get('Message', '')}".strip()
        if code in _NOT_FOUND:
            return NotFound(message)
        if code in _DENIED:
            return Unauthorized(message)
        if code in _BUSY or status >= 500:
            return Unavailable(message, retry_after=10)
        return InvalidInput(message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Unauthorized(f"{what}: no S3 credentials (environment, profile or instance role)")
    return Unavailable(f"{what}: {type(exc).__name__}: {exc}", retry_after=10)


def list_page(client: Any, location: S3Location, *, token: str | None, page_size: int) -> Page:
    """One page of the listing under location, starting at a continuation token."""
    kwargs: dict[str, Any] = {"Bucket": location.bucket, "Prefix": location.prefix, "MaxKeys": page_size}
    if token:
        kwargs["ContinuationToken"] = token
    try:
        response = client.list_objects_v2(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, f"listing {location.uri()}") from exc
    objects = [
        ObjectInfo(
            key=o["Key"],
            etag=str(o.get("ETag", "")).strip('"'),
            size=int(o.get("Size", 0)),
            last_modified=o["LastModified"].isoformat(),
        )
        for o in response.get("Contents", [])
    ]
    truncated = bool(response.get("IsTruncated"))
    next_token = response.get("NextContinuationToken") if truncated else None
    if truncated and not next_token:
        raise Unavailable(f"listing {location.uri()}: truncated page without a continuation token")
    return Page(objects=objects, next_token=next_token)


def precheck(obj: ObjectInfo, limits: Limits) -> str | None:
    """Why an object is skipped without reading it, or None."""
    if obj.key.endswith("/"):
        return "empty: a folder marker"
    if RESULTS_FILE.search(obj.key):
        return "unsupported type: a docsort results file"
    ext = extension(obj.key)
    if ext not in IMPORTABLE:
        return f"unsupported type: {ext or '(no extension)'}"
    if obj.size == 0:
        return "empty: 0 bytes"
    if obj.size > limits.max_object_bytes:
        return f"too large: {obj.size} bytes; the limit is {limits.max_object_bytes}"
    return None


def fetch(client: Any, bucket: str, obj: ObjectInfo, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The object's bytes (at most limit + 1) and the source fields of the version read."""
    try:
        response = client.get_object(Bucket=bucket, Key=obj.key)
        with response["Body"] as body:
            data: bytes = body.read(limit + 1)
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, f"reading {obj.key}") from exc
    modified = response.get("LastModified")
    source = {
        "uri": f"s3://{bucket}/{obj.key}",
        "etag": str(response.get("ETag", obj.etag)).strip('"'),
        "size": int(response.get("ContentLength", obj.size)),
        "last_modified": modified.isoformat() if modified is not None else obj.last_modified,
    }
    return data, source


def process(client: Any, location: S3Location, obj: ObjectInfo, *, mode: str, limits: Limits) -> ObjectResult:
    """Fetch one object and turn it into documents or skips; Unavailable if the endpoint is down."""
    out = ObjectResult(key=obj.key)
    reason = precheck(obj, limits)
    if reason:
        out.skip(obj.key, reason)
        return out
    try:
        data, source = fetch(client, location.bucket, obj, limits.max_object_bytes)
    except Unavailable:
        raise
    except DocsortError as exc:
        out.failed = str(exc)[:500]
        return out
    if len(data) > limits.max_object_bytes:
        out.skip(obj.key, f"too large: over {limits.max_object_bytes} bytes when read")
    elif not data:
        out.skip(obj.key, "empty: 0 bytes")
    elif mode == "document_per_line" and extension(obj.key) in RECORD_TYPES:
        _records(out, obj.key, data, source, limits)
    else:
        _whole(out, obj.key, data, source, limits)
    return out


def process_page(
    client: Any,
    location: S3Location,
    objects: Sequence[ObjectInfo],
    *,
    mode: str,
    limits: Limits,
    pool: ThreadPoolExecutor,
) -> list[ObjectResult]:
    """Outcomes of a page's objects, in listing order, fetched at the pool's concurrency."""
    futures: list[Future[ObjectResult]] = [
        pool.submit(process, client, location, obj, mode=mode, limits=limits) for obj in objects
    ]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()  # after an error: do not fetch the rest of a page that is retried


def check_text(text: str, limits: Limits) -> str | None:
    """Why an extracted text cannot be a document, or None."""
    if "\x00" in text:
        return "unreadable: contains NUL characters (binary data?)"
    if not text.strip():
        return "empty: no text"
    size = len(text.encode("utf-8"))
    if size > limits.max_document_bytes:
        return f"too large: {size} bytes of text; the limit is {limits.max_document_bytes}"
    return None


def _why(key: str, exc: Exception) -> str:
    message = str(exc)
    return message[len(key) + 2 :] if message.startswith(f"{key}: ") else message or type(exc).__name__


def _whole(out: ObjectResult, key: str, data: bytes, source: dict[str, Any], limits: Limits) -> None:
    try:
        text = records.text_of(key, data)
    except UnsupportedMediaType as exc:
        out.skip(key, f"unsupported type: {_why(key, exc)}")
        return
    except InvalidInput as exc:
        out.skip(key, f"unreadable: {_why(key, exc)}")
        return
    except Exception as exc:  # third-party parsers raise anything on hostile input
        out.skip(key, f"unreadable: {type(exc).__name__}")
        return
    reason = check_text(text, limits)
    if reason:
        out.skip(key, reason)
    else:
        out.items.append(Item(text=text, external_id=records.clip(key), source=source))


def _records(out: ObjectResult, key: str, data: bytes, source: dict[str, Any], limits: Limits) -> None:
    try:
        text = decode(data, name=key)
    except InvalidInput as exc:
        out.skip(key, f"unreadable: {_why(key, exc)}")
        return
    found = False
    for record in records.parse(extension(key), text, limits.max_document_bytes):
        found = True
        where = f"{key}#L{record.number}"
        reason = record.problem or check_text(record.text, limits)
        if reason:
            out.skip(where, reason)
            continue
        out.items.append(
            Item(
                text=record.text,
                external_id=record.external_id or records.clip(where),
                source={**source, "line": record.number},
            )
        )
    if not found:
        out.skip(key, "empty: no records")


def put_lines(client: Any, bucket: str, key: str, lines: Iterable[str]) -> None:
    """Upload lines as one object, spooled to disk past 8 MB (multipart for large ones)."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 2**20) as buffer:
        for line in lines:
            buffer.write(line.encode("utf-8") + b"\n")
        buffer.seek(0)
        try:
            client.upload_fileobj(buffer, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise translate(exc, f"writing s3://{bucket}/{key}") from exc
