"""Documents: stored once per text and taxonomy (deduplicated by content hash), read back with attempts."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.vocab import Status
from store.db import insert_or_skip
from store.models import Attempt, Document, DocumentCreate, ImportItem, Taxonomy, utcnow

_DOC = Document.__table__  # type: ignore[attr-defined]


def content_hash(text: str) -> str:
    """The dedup key of a document's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Stored(NamedTuple):
    """An accepted document as the caller is told of it."""

    id: int
    status: str
    external_id: str | None


def create_documents(
    *,
    session: Session,
    items: Sequence[DocumentCreate],
    taxonomy: Taxonomy,
    first_tier: str,
    import_id: int | None = None,
    sources: Sequence[dict[str, Any] | None] | None = None,
    batch: bool = False,
) -> list[tuple[Stored, bool]]:
    """Store items (status queued), returning each with whether it is new; duplicates reuse rows.

    Core statements, not ORM objects: this is the API's hot path (a profile on PostgreSQL showed 80%
    of a batch POST in building and flushing Document objects).
    """
    hashes = [content_hash(item.text) for item in items]
    now = utcnow()
    fresh: dict[str, dict[str, Any]] = {}
    for index, (item, digest) in enumerate(zip(items, hashes, strict=True)):
        if digest in fresh:
            continue
        fresh[digest] = {
            "text": item.text,
            "external_id": item.external_id,
            "metadata": item.metadata,
            "taxonomy": taxonomy.name,
            "taxonomy_version": taxonomy.version,
            "content_hash": digest,
            "current_tier": first_tier,
            "status": Status.queued,
            "import_id": import_id,
            "batch": batch,
            "source": sources[index] if sources else None,
            "created_at": now,
            "updated_at": now,
        }
    # Insert first and let the unique index settle duplicates (ON CONFLICT DO NOTHING): a look-up of
    # every hash first cost 70% of a POST on PostgreSQL, whose planner, before the growing table has
    # statistics, scans the taxonomy's whole index for it. Only the texts stored before are looked up.
    c = _DOC.c
    known: dict[str, Stored] = {}
    created: set[str] = set()
    new_rows = insert_or_skip(session, _DOC, unique=["taxonomy", "content_hash"]).returning(
        c.id, c.content_hash
    )
    for row in session.execute(new_rows, list(fresh.values())) if fresh else ():
        values = fresh[row.content_hash]
        known[row.content_hash] = Stored(row.id, values["status"], values["external_id"])
        created.add(row.content_hash)
    stored_before = [digest for digest in fresh if digest not in created]
    if stored_before:
        query = sa_select(c.id, c.status, c.external_id, c.content_hash).where(
            c.taxonomy == taxonomy.name, c.content_hash.in_(stored_before)
        )
        known |= {
            row.content_hash: Stored(row.id, row.status, row.external_id) for row in session.execute(query)
        }
    out: list[tuple[Stored, bool]] = []
    for digest in hashes:
        out.append((known[digest], digest in created))
        created.discard(digest)  # a text repeated in one request is new once
    return out


def get_document(*, session: Session, document_id: int) -> Document:
    """A document by id, or NotFound."""
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"document {document_id} does not exist")
    return doc


def list_attempts(*, session: Session, document_id: int) -> list[Attempt]:
    """Every attempt on a document, oldest first."""
    query = select(Attempt).where(Attempt.document_id == document_id).order_by(col(Attempt.id))
    return list(session.exec(query))


def list_documents(
    *,
    session: Session,
    status: Status | None = None,
    label: str | None = None,
    taxonomy: str | None = None,
    import_id: int | None = None,
    limit: int = 100,
    after: int | None = None,
) -> list[Document]:
    """Documents by ascending id after a cursor (keyset pagination)."""
    query = select(Document)
    if status:
        query = query.where(Document.status == status)
    if label:
        query = query.where(Document.label == label)
    if taxonomy:
        query = query.where(Document.taxonomy == taxonomy)
    if import_id is not None:  # every document the import listed, not only those it stored first
        query = query.join(ImportItem, col(ImportItem.document_id) == col(Document.id)).where(
            col(ImportItem.import_id) == import_id
        )
    if after is not None:
        query = query.where(col(Document.id) > after)
    return list(session.exec(query.order_by(col(Document.id)).limit(limit)))


def costs_for(*, session: Session, ids: Sequence[int]) -> dict[int, int]:
    """nano-USD spent classifying each of ids (audits apart)."""
    query = (
        select(Attempt.document_id, func.sum(Attempt.cost_nanousd))
        .where(col(Attempt.document_id).in_(list(ids)), col(Attempt.purpose) != "audit")
        .group_by(col(Attempt.document_id))
    )
    return {doc_id: int(total or 0) for doc_id, total in session.exec(query)}
