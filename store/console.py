"""What the review console reads: review queues by keyset, each tier's suggestions for a document, bulk
candidates, and counts by status and tier (indexed: ix_document_taxonomy_status_tier and friends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.vocab import Status
from store.models import Attempt, Audit, Document, ImportItem

Queue = Literal["needs_review", "disagreements"]
Order = Literal["oldest", "least_confident"]


@dataclass(frozen=True)
class Page:
    """A page of documents and the cursor of the next (None at the end)."""

    documents: list[Document]
    next_cursor: str | None


Q = TypeVar("Q", bound=SelectOfScalar[Any])


def _filters(query: Q, *, taxonomy: str | None, import_id: int | None, tier: str | None, queue: Queue) -> Q:
    if taxonomy:
        query = query.where(col(Document.taxonomy) == taxonomy)
    if import_id is not None:
        query = query.join(ImportItem, col(ImportItem.document_id) == col(Document.id)).where(
            col(ImportItem.import_id) == import_id
        )
    if tier:
        column = col(Audit.tier) if queue == "disagreements" else col(Document.current_tier)
        query = query.where(column == tier)
    return query


def review_queue(
    *,
    session: Session,
    queue: Queue = "needs_review",
    taxonomy: str | None = None,
    import_id: int | None = None,
    tier: str | None = None,
    order: Order = "oldest",
    after: str | None = None,
    limit: int = 50,
) -> Page:
    """Documents waiting for a person: needs_review, or open audit disagreements; keyset pages."""
    query = select(Document)
    if queue == "needs_review":
        query = query.where(col(Document.status) == Status.needs_review)
    else:
        query = query.join(Audit, col(Audit.document_id) == col(Document.id)).where(
            col(Audit.agree).is_(False), col(Audit.resolved_at).is_(None)
        )
    query = _filters(query, taxonomy=taxonomy, import_id=import_id, tier=tier, queue=queue)
    if order == "least_confident":
        docs = _least_confident(session, query, after, limit)
    else:
        if after:
            query = query.where(col(Document.id) > int(after))
        docs = list(session.exec(query.order_by(col(Document.id)).limit(limit)))
    cursor = None
    if len(docs) == limit:
        last = docs[-1]
        if order == "least_confident":
            cursor = f"{'none' if last.confidence is None else repr(last.confidence)}:{last.id}"
        else:
            cursor = str(last.id)
    return Page(documents=docs, next_cursor=cursor)


def _least_confident(
    session: Session, query: SelectOfScalar[Document], after: str | None, limit: int
) -> list[Document]:
    """Documents without a confidence first (by id), then by confidence and id. Two index-ordered scans
    (ix_document_status_confidence), not one ORDER BY ... NULLS FIRST, which PostgreSQL's ascending
    index (nulls last) cannot serve without sorting every waiting document."""
    docs: list[Document] = []
    conf_text, _, id_text = (after or "none:0").partition(":")
    if conf_text == "none":
        nulls = query.where(col(Document.confidence).is_(None), col(Document.id) > int(id_text))
        # Ordered as the index is (confidence, then id; all confidences NULL here): PostgreSQL otherwise
        # walked the primary key, filtering every document, when there were none without a confidence.
        docs = list(session.exec(nulls.order_by(col(Document.confidence), col(Document.id)).limit(limit)))
        rest = query.where(col(Document.confidence).is_not(None))
    else:
        conf, last_id = float(conf_text), int(id_text)
        rest = query.where(
            or_(
                col(Document.confidence) > conf,
                and_(col(Document.confidence) == conf, col(Document.id) > last_id),
            )
        )
    if len(docs) < limit:
        ordered = rest.order_by(col(Document.confidence), col(Document.id)).limit(limit - len(docs))
        docs += list(session.exec(ordered))
    return docs


def suggestions(*, session: Session, document_id: int) -> list[Attempt]:
    """Each tier's last answer on a document (classifying and auditing), oldest tier first."""
    query = (
        select(Attempt)
        .where(
            col(Attempt.document_id) == document_id,
            or_(col(Attempt.label).is_not(None), col(Attempt.labels).is_not(None)),
        )
        .order_by(col(Attempt.id))
    )
    latest: dict[tuple[str, str], Attempt] = {}
    for attempt in session.exec(query):
        latest[(attempt.tier, attempt.purpose)] = attempt
    return list(latest.values())


def bulk_candidates(
    *,
    session: Session,
    taxonomy: str | None,
    tier: str | None,
    min_confidence: float,
    limit: int | None = None,
) -> tuple[int, list[int]]:
    """Documents needing review whose suggestion is at least min_confidence: their count and ids (oldest first)."""
    base = select(Document.id).where(
        col(Document.status) == Status.needs_review,
        col(Document.confidence) >= min_confidence,
        or_(col(Document.label).is_not(None), col(Document.labels).is_not(None)),
    )
    base = _filters(base, taxonomy=taxonomy, import_id=None, tier=tier, queue="needs_review")
    count = session.exec(select(func.count()).select_from(base.subquery())).one()
    query = base.order_by(col(Document.id))
    if limit is not None:
        query = query.limit(limit)
    return int(count), [i for i in session.exec(query) if i is not None]


def backlog(*, session: Session, taxonomy: str) -> dict[str, int]:
    """Waiting for a person: documents needing review, and audit disagreements not judged yet."""
    needs = session.exec(
        select(func.count()).where(
            col(Document.taxonomy) == taxonomy, col(Document.status) == Status.needs_review
        )
    ).one()
    open_ = session.exec(
        select(func.count()).where(
            col(Audit.taxonomy) == taxonomy, col(Audit.agree).is_(False), col(Audit.resolved_at).is_(None)
        )
    ).one()
    return {"needs_review": int(needs), "disagreements": int(open_)}


def documents_by_id(*, session: Session, ids: Sequence[int]) -> list[Document]:
    """Documents by id, in id order."""
    return list(
        session.exec(select(Document).where(col(Document.id).in_(list(ids))).order_by(col(Document.id)))
    )
