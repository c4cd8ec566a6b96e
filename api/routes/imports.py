"""Bulk imports of an S3 prefix: start, watch, list, export, write back, resume."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session

from api.deps import MAX_DB_INT, CeleryDep, IdPath, SessionDep, SettingsDep
from api.routes.documents import to_public
from api.schemas import DocumentsPublic, problem_responses
from core import messaging
from core.config import Settings
from core.errors import DocsortError, Forbidden, InvalidInput
from core.messaging import TaskName
from core.vocab import ImportStatus, ShardStatus, Status
from ingest.records import Mode
from ingest.s3 import S3Location
from store import documents, imports, shards, taxonomies
from store.models import NANO, ImportJob

router = APIRouter(prefix="/v1/imports", tags=["imports"])
NOT_FOUND = problem_responses(404)  # no such import (or, on POST, taxonomy)
EXPORT_FIELDS = ("key", "line", "uri", "document_id", "status", "label", "confidence", "tier", "cost_usd")


class ImportIn(BaseModel):
    """What to import: an S3 prefix, the taxonomy, where S3 is, and how files become documents."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="s3://bucket/prefix; every object under the prefix is imported")
    taxonomy: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Default: settings.default_taxonomy"
    )
    endpoint_url: str | None = Field(
        None, max_length=2000, description="S3-compatible endpoint (MinIO, SeaweedFS, R2); default: settings"
    )
    mode: Mode = Field(
        "document_per_file",
        description="document_per_line: each .jsonl line, .csv row or .json array element is a document",
    )
    batch: bool = Field(
        False,
        description="Through the tiers' Batch API (tiers with batch_api 'imports'): half price, within 24 hours",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        try:
            S3Location.parse(value)
        except DocsortError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s\x00-\x1f/?#]+(/[^\s\x00-\x1f]*)?", value):
            raise ValueError("endpoint_url must be an http:// or https:// URL")
        return value


class ImportAccepted(BaseModel):
    """A started import."""

    id: int
    status: ImportStatus
    queued: bool = Field(description="False if the queue was unreachable; the reconciler starts it")


class Skip(BaseModel):
    """An object (or a line of one, key#L<n>) that was not imported, and why."""

    id: int
    key: str
    reason: str


class SkipsPublic(BaseModel):
    """A page of skips and the cursor for the next one."""

    data: list[Skip]
    count: int
    next_cursor: int | None


class BatchPublic(BaseModel):
    """One Batch API shard: its documents' requests, where it is, the provider's counts and expiry."""

    id: int
    tier: str
    status: str = Field(description="created | uploaded | submitted | ingested (docsort's)")
    provider_status: str | None = Field(
        description="validating, in_progress, finalizing, completed, expired..."
    )
    requests: int
    documents: int
    counts: dict[str, Any]
    retry: int
    batch_id: str | None
    expires_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


class ImportPublic(BaseModel):
    """An import's progress: objects listed and what became of them, documents classified, cost."""

    id: int
    source: str
    endpoint_url: str | None
    taxonomy: str
    mode: str
    status: ImportStatus = Field(description="listing | classifying | done | failed")
    error: str | None
    listed: int = Field(description="Objects listed so far")
    accepted: int = Field(description="New documents stored")
    duplicates: int = Field(description="Documents whose text was already stored (not classified again)")
    skipped: int = Field(description="Objects or lines not imported; reasons in `skips`")
    failed: int = Field(description="Objects that could not be read from S3")
    classified: int = Field(description="Documents done")
    needs_review: int
    classification_failed: int
    pending: int = Field(description="Documents still waiting or classifying")
    cost_usd: float
    skip_reasons: dict[str, int] = Field(description="Skips and failures by category")
    skips: list[Skip] = Field(description="The first skips; all of them at /v1/imports/{id}/skips")
    batch: bool = Field(description="Its documents go through a Batch API")
    batches: list[BatchPublic] = Field(description="Its Batch API shards: status, counts, expiry")
    batch_cost_usd: float = Field(description="Spent through Batch APIs (in cost_usd too)")
    batch_saving_usd: float = Field(description="What the same answers would have cost more synchronously")
    created_at: datetime
    updated_at: datetime


def status_of(job: ImportJob, pending: int, open_batches: int = 0) -> ImportStatus:
    """The import's status as shown: listing, classifying, done or failed. A Batch API shard's
    documents are final before its files are deleted and it is marked ingested: done waits for that."""
    if job.status != ImportStatus.listed:
        return job.status
    return ImportStatus.classifying if pending or open_batches else ImportStatus.done


def _skip(row: Any) -> Skip:
    return Skip(id=row.id, key=row.key, reason=row.reason)


def public(session: Session, job: ImportJob, settings: Settings) -> ImportPublic:
    """An import as the API shows it."""
    assert job.id is not None
    done = imports.progress(session=session, import_id=job.id)
    batches = shards.for_import(session=session, import_id=job.id)
    open_batches = sum(1 for shard in batches if shard.status != ShardStatus.ingested)
    return ImportPublic(
        id=job.id,
        source=job.source,
        endpoint_url=job.endpoint_url,
        taxonomy=job.taxonomy,
        mode=job.mode,
        status=status_of(job, done["pending"], open_batches),
        error=job.error,
        listed=job.listed,
        accepted=job.accepted,
        duplicates=job.duplicates,
        skipped=job.skipped,
        failed=job.failed,
        classified=done["classified"],
        needs_review=done["needs_review"],
        classification_failed=done["classification_failed"],
        pending=done["pending"],
        cost_usd=done["cost_nanousd"] / NANO,
        skip_reasons=imports.skip_reasons(session=session, import_id=job.id),
        skips=[_skip(s) for s in imports.list_skips(session=session, import_id=job.id, limit=100)],
        batch=job.batch,
        batches=[
            BatchPublic(
                id=shard.id or 0,
                tier=shard.tier,
                status=shard.status,
                provider_status=shard.provider_status,
                requests=shard.requests,
                documents=sum(len(line["doc_ids"]) for line in shard.lines),
                counts=shard.counts,
                retry=shard.retry,
                batch_id=shard.batch_id,
                expires_at=shard.expires_at,
                created_at=shard.created_at,
                finished_at=shard.finished_at,
            )
            for shard in batches
        ],
        batch_cost_usd=sum(done["batched_nanousd_by_tier"].values()) / NANO,
        batch_saving_usd=sum(
            cost * (1 / settings.tier(tier).price.batch_discount - 1)
            for tier, cost in done["batched_nanousd_by_tier"].items()
            if tier in {t.name for t in settings.models} and settings.tier(tier).price.batch_discount
        )
        / NANO,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def _check_endpoint(url: str | None, settings: Settings) -> None:
    """Refuse an endpoint the deployment does not allow (the workers would connect to it)."""
    s3 = settings.s3
    permitted = {e.rstrip("/") for e in [s3.endpoint_url, *(s3.allowed_endpoints or [])] if e}
    if url is None or url.rstrip("/") in permitted:
        return
    if s3.allowed_endpoints is None and settings.env == "development":
        return
    raise Forbidden(
        f"endpoint_url {url} is not allowed here; the operator lists endpoints in "
        "s3.allowed_endpoints (DOCSORT_S3__ALLOWED_ENDPOINTS)"
    )


@router.post("", status_code=202, response_model=ImportAccepted, responses=problem_responses(403, 404))
def post_import(
    body: ImportIn, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> ImportAccepted:
    """Start importing every object under an S3 prefix; 202 with the import's id."""
    name = body.taxonomy or settings.default_taxonomy.name
    _check_endpoint(body.endpoint_url, settings)
    taxonomies.require(session=session, name=name)  # NotFound: 404
    if body.batch and not any(t.batch_api == "imports" for t in settings.models):
        raise InvalidInput("no tier takes batch imports: set batch_api = 'imports' on a tier to use `batch`")
    job = imports.create_import(
        session=session,
        source=body.source,
        taxonomy=name,
        endpoint_url=body.endpoint_url,
        mode=body.mode,
        batch=body.batch,
    )
    session.commit()  # stored before queued
    assert job.id is not None
    queued = messaging.send(celery, TaskName.import_run, [job.id])  # else the import reconciler does
    return ImportAccepted(id=job.id, status=job.status, queued=queued)


@router.get("/{import_id}", response_model=ImportPublic, responses=NOT_FOUND)
def get_import(import_id: IdPath, session: SessionDep, settings: SettingsDep) -> ImportPublic:
    """Status and counts: listed, accepted, duplicates, skipped (with reasons), failed, classified, cost;
    its Batch API shards, and what they saved."""
    return public(session, imports.get_import(session=session, import_id=import_id), settings)


@router.post("/{import_id}/resume", status_code=202, response_model=ImportAccepted, responses=NOT_FOUND)
def resume_import(import_id: IdPath, session: SessionDep, celery: CeleryDep) -> ImportAccepted:
    """Continue a failed or stalled import from its last stored page (nothing is imported twice)."""
    job = imports.resume(session=session, import_id=import_id)
    session.commit()
    queued = job.status == ImportStatus.listing and messaging.send(celery, TaskName.import_run, [import_id])
    pending = imports.progress(session=session, import_id=import_id)["pending"]
    return ImportAccepted(id=import_id, status=status_of(job, pending), queued=queued)


@router.get("/{import_id}/skips", response_model=SkipsPublic, responses=NOT_FOUND)
def list_skips(
    import_id: IdPath,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_DB_INT, description="next_cursor of the previous page")
    ] = None,
) -> SkipsPublic:
    """Every object or line the import skipped or could not read, with the reason."""
    imports.get_import(session=session, import_id=import_id)
    rows = imports.list_skips(session=session, import_id=import_id, after=cursor, limit=limit)
    data = [_skip(row) for row in rows]
    return SkipsPublic(data=data, count=len(data), next_cursor=data[-1].id if len(data) == limit else None)


@router.get("/{import_id}/documents", response_model=DocumentsPublic, responses=NOT_FOUND)
def list_documents(
    import_id: IdPath,
    session: SessionDep,
    status: Annotated[Status | None, Query()] = None,
    label: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_DB_INT, description="next_cursor of the previous page")
    ] = None,
) -> DocumentsPublic:
    """The documents this import stored, with labels, in id order (keyset pagination)."""
    imports.get_import(session=session, import_id=import_id)
    docs = documents.list_documents(
        session=session, status=status, label=label, import_id=import_id, limit=limit, after=cursor
    )
    costs = documents.costs_for(session=session, ids=[doc.id for doc in docs if doc.id is not None])
    data = [to_public(doc, [], costs.get(doc.id or 0, 0)) for doc in docs]
    return DocumentsPublic(
        data=data, count=len(data), next_cursor=data[-1].id if len(data) == limit else None
    )


def _rows(request: Request, import_id: int, fmt: str) -> Iterator[str]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        rows = imports.export_rows(session=session, import_id=import_id)
        if fmt == "jsonl":
            for row in rows:
                yield json.dumps({k: row[k] for k in (*EXPORT_FIELDS, "labels")}, ensure_ascii=False) + "\n"
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()


@router.get(
    "/{import_id}/export",
    responses={
        **NOT_FOUND,
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "One row a document"},
    },
)
def export(
    import_id: IdPath,
    request: Request,
    session: SessionDep,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
) -> StreamingResponse:
    """The import's results, one row a document: key, line, label, confidence, tier, cost (streamed)."""
    imports.get_import(session=session, import_id=import_id)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return StreamingResponse(
        _rows(request, import_id, format),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}.{format}"'},
    )


class WriteBack(BaseModel):
    """Where an import's results are being written."""

    id: int
    uri: str
    queued: bool


@router.post("/{import_id}/write-back", status_code=202, response_model=WriteBack, responses=NOT_FOUND)
def write_back(import_id: IdPath, session: SessionDep, celery: CeleryDep) -> WriteBack:
    """Write the results so far to S3 as one JSONL object next to the source prefix."""
    job = imports.get_import(session=session, import_id=import_id)
    location = S3Location.parse(job.source)
    queued = messaging.send(celery, TaskName.import_write_back, [import_id])
    return WriteBack(id=import_id, uri=location.uri(location.results_key(import_id)), queued=queued)
