"""POST and GET documents."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from api.deps import MAX_DB_INT, CeleryDep, IdPath, SessionDep, SettingsDep
from api.limits import check_json_values
from api.schemas import (
    Accepted,
    AcceptedList,
    DocumentPublic,
    DocumentsIn,
    DocumentsPublic,
    problem_responses,
)
from core import messaging
from core.config import Settings
from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from core.vocab import Status
from ingest import records
from ingest.extract import decode, extension
from store import documents, taxonomies
from store.models import NANO, AttemptPublic, Document, DocumentCreate

router = APIRouter(prefix="/v1/documents", tags=["documents"])
MAX_FORM_FIELDS = 20  # non-file fields of an upload (only `taxonomy` is read)

_BODY = TypeAdapter(DocumentsIn | DocumentCreate)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """schema with its $defs put where they are used: the route reads its body itself, so FastAPI
    does not list these models under components, and a $ref to them would dangle."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return dict(resolve(schema))


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _inline(_BODY.json_schema())},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "minItems": 1,
                    },
                    "taxonomy": {"type": "string"},
                    "mode": {
                        "type": "string",
                        "enum": ["document_per_file", "document_per_line"],
                        "description": "document_per_line: each .jsonl line, .csv row or .json array "
                        "element is a document",
                    },
                },
                "required": ["files"],
            }
        },
    },
}


async def _read_body(request: Request, settings: Settings) -> bytes:
    limit = settings.api.max_request_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes", limit=limit)
    return bytes(body)


def _check(items: list[DocumentCreate], settings: Settings) -> None:
    limit = settings.api.max_documents_per_request
    if len(items) > limit:
        raise PayloadTooLarge(f"{len(items)} documents in one request; the limit is {limit}", limit=limit)
    for index, item in enumerate(items):
        size = len(item.text.encode("utf-8"))
        if size > settings.api.max_document_bytes:
            raise PayloadTooLarge(
                f"document {index} has {size} bytes; the limit is {settings.api.max_document_bytes}",
                limit=settings.api.max_document_bytes,
            )
        if not item.text.strip():
            raise InvalidInput(f"document {index}: text is empty or only whitespace")
        if "\x00" in item.text:
            raise InvalidInput(f"document {index}: text contains NUL characters")


async def _from_json(request: Request, settings: Settings) -> tuple[list[DocumentCreate], str | None]:
    raw = await _read_body(request, settings)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput("body is nested too deeply") from exc
    check_json_values(data)
    try:
        body = _BODY.validate_python(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"invalid document(s): {errors}") from exc
    if isinstance(body, DocumentsIn):
        return body.documents, body.taxonomy
    return [body], body.taxonomy


async def _from_form(request: Request, settings: Settings) -> tuple[list[DocumentCreate], str | None]:
    declared = request.headers.get("content-length")
    limit = settings.api.max_request_bytes
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", limit=limit)
    max_files = settings.api.max_files_per_upload
    try:
        form = await request.form(max_files=max_files, max_fields=MAX_FORM_FIELDS)
    except Exception as exc:  # starlette raises its own errors for malformed or over-limit forms
        message = str(getattr(exc, "detail", exc))
        if message.startswith("Too many files"):
            raise PayloadTooLarge(f"more than {max_files} files in one upload", limit=max_files) from exc
        if message.startswith("Too many fields"):
            raise PayloadTooLarge(f"more than {MAX_FORM_FIELDS} form fields", limit=MAX_FORM_FIELDS) from exc
        raise InvalidInput(f"unreadable multipart form: {message}") from exc
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise InvalidInput("multipart upload has no files (field 'files')")
    taxonomy = form.get("taxonomy")
    mode = form.get("mode") or "document_per_file"
    if mode not in ("document_per_file", "document_per_line"):
        raise InvalidInput(f"mode must be document_per_file or document_per_line, got {str(mode)[:40]!r}")
    items: list[DocumentCreate] = []
    for upload in files:
        name = upload.filename or "upload.txt"
        # A file of records may hold many documents: the request limit bounds it, not the document one.
        per_line = mode == "document_per_line" and extension(name) in records.RECORD_TYPES
        limit = settings.api.max_request_bytes if per_line else settings.api.max_document_bytes
        data = await upload.read()
        if len(data) > limit:
            raise PayloadTooLarge(f"{name}: {len(data)} bytes; the limit is {limit}", limit=limit)
        if per_line:
            items += _records(name, data, settings)
        else:
            items.append(
                DocumentCreate(
                    text=records.text_of(name, data), external_id=name[:256], metadata={"filename": name}
                )
            )
    return items, taxonomy if isinstance(taxonomy, str) else None


def _records(name: str, data: bytes, settings: Settings) -> list[DocumentCreate]:
    """One document per record of an uploaded .jsonl, .csv or .json file; a bad record is a 422."""
    items = []
    for record in records.parse(extension(name), decode(data, name=name), settings.api.max_document_bytes):
        if record.problem:
            raise InvalidInput(f"{name} record {record.number}: {record.problem}")
        items.append(
            DocumentCreate(
                text=record.text,
                external_id=record.external_id or records.clip(f"{name}#L{record.number}"),
                metadata={"filename": name, "line": record.number},
            )
        )
    if not items:
        raise InvalidInput(f"{name}: no records")
    return items


@router.post(
    "",
    status_code=202,
    response_model=AcceptedList,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=problem_responses(404, 413, 415),
)
async def post_documents(
    request: Request, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> AcceptedList:
    """Store documents (status queued), then queue them; answers 202 with their ids."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        items, taxonomy_name = await _from_json(request, settings)
    elif content_type == "multipart/form-data":
        items, taxonomy_name = await _from_form(request, settings)
    else:
        raise UnsupportedMediaType(
            f"content type {content_type or '(none)'} is not accepted; "
            "send application/json or multipart/form-data"
        )
    _check(items, settings)
    name = taxonomy_name or settings.default_taxonomy.name
    by_taxonomy: dict[str, list[DocumentCreate]] = {}
    for item in items:
        by_taxonomy.setdefault(item.taxonomy or name, []).append(item)
    accepted: list[Accepted] = []
    first_tier = settings.models[0].name
    new = 0
    for tax_name, group in by_taxonomy.items():
        taxonomy = taxonomies.require(session=session, name=tax_name)
        for doc, created in documents.create_documents(
            session=session, items=group, taxonomy=taxonomy, first_tier=first_tier
        ):
            assert doc.id is not None
            new += created
            accepted.append(
                Accepted(id=doc.id, status=doc.status, duplicate=not created, external_id=doc.external_id)
            )
    session.commit()  # stored before queued: nothing accepted is lost if the queue is down
    # Already stored: if the broker is down, the reconciler queues them later.
    queued = messaging.kick(celery, settings, tier=first_tier, count=new) if new else True
    return AcceptedList(data=accepted, count=len(accepted), queued=queued)


def to_public(
    doc: Document, attempts: list[AttemptPublic], cost_nanousd: int | None = None, *, text: bool = False
) -> DocumentPublic:
    """A document as the API shows it."""
    assert doc.id is not None
    return DocumentPublic(
        id=doc.id,
        external_id=doc.external_id,
        taxonomy=doc.taxonomy,
        taxonomy_version=doc.taxonomy_version,
        status=doc.status,
        status_reason=doc.status_reason,
        stage=doc.current_tier,
        label=doc.label,
        labels=doc.labels,
        confidence=doc.confidence,
        tier=doc.answered_by,
        model=doc.model,
        metadata=doc.meta or {},
        source=doc.source,
        cost_usd=(cost_nanousd / NANO)
        if cost_nanousd is not None
        else sum(a.cost_usd for a in attempts if a.purpose != "audit"),
        created_at=doc.created_at,
        updated_at=doc.updated_at,
        text=doc.text if text else None,
        attempts=attempts,
    )


def public_attempts(session: Any, document_id: int) -> list[AttemptPublic]:
    """A document's attempts with costs in dollars."""
    return [
        AttemptPublic(**a.model_dump(), cost_usd=a.cost_nanousd / NANO)
        for a in documents.list_attempts(session=session, document_id=document_id)
    ]


@router.get(
    "/{document_id}",
    response_model=DocumentPublic,
    responses=problem_responses(404),
)
def get_document(document_id: IdPath, session: SessionDep) -> DocumentPublic:
    """A document's status, label, confidence, tier and every attempt with its cost."""
    doc = documents.get_document(session=session, document_id=document_id)
    return to_public(doc, public_attempts(session, document_id), text=True)


@router.get("", response_model=DocumentsPublic)
def list_documents(
    session: SessionDep,
    status: Annotated[Status | None, Query()] = None,
    label: Annotated[str | None, Query(max_length=256)] = None,
    taxonomy: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=0, le=MAX_DB_INT, description="next_cursor of the previous page")
    ] = None,
) -> DocumentsPublic:
    """Documents in id order, filtered, with keyset pagination."""
    docs = documents.list_documents(
        session=session, status=status, label=label, taxonomy=taxonomy, limit=limit, after=cursor
    )
    costs = documents.costs_for(session=session, ids=[doc.id for doc in docs if doc.id is not None])
    data = [to_public(doc, [], costs.get(doc.id or 0, 0)) for doc in docs]
    next_cursor = data[-1].id if len(data) == limit else None
    return DocumentsPublic(data=data, count=len(data), next_cursor=next_cursor)
