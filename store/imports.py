"""Data access for bulk imports, as keyword-only functions taking a session (like the rest of store/).

An import's row is its resume point: a page's documents, skips, counters and the next continuation
token are written in one transaction, guarded by the token and count the page started from, so a page
is stored exactly once however many runners (a crashed one's redelivery, a resume) try it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, update
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.vocab import FINAL, ImportStatus, Status
from store import documents
from store.db import insert_or_skip
from store.models import (
    NANO,
    Attempt,
    Document,
    DocumentCreate,
    ImportItem,
    ImportJob,
    ImportSkip,
    Taxonomy,
    utcnow,
)

if TYPE_CHECKING:
    from ingest.s3 import ObjectResult

CHUNK = 500  # documents per create_documents call: keeps IN lists under every database's limit
SKIP_CATEGORIES = ("unsupported type", "too large", "empty", "unreadable", "failed")


@dataclass(frozen=True)
class PageCounts:
    """What storing one page added."""

    accepted: int
    duplicates: int
    skipped: int
    failed: int


def create_import(
    *, session: Session, source: str, taxonomy: str, endpoint_url: str | None, mode: str, batch: bool = False
) -> ImportJob:
    """A new import, status listing, at the start of its listing (batch: through a Batch API)."""
    job = ImportJob(
        source=source,
        taxonomy=taxonomy,
        endpoint_url=endpoint_url,
        mode=mode,
        status=ImportStatus.listing,
        batch=batch,
    )
    session.add(job)
    session.flush()
    return job


def get_import(*, session: Session, import_id: int) -> ImportJob:
    """An import by id, or NotFound."""
    job = session.get(ImportJob, import_id)
    if job is None:
        raise NotFound(f"import {import_id} does not exist")
    return job


def store_page(
    *,
    session: Session,
    import_id: int,
    expect_listed: int,
    expect_token: str | None,
    next_token: str | None,
    outcomes: Sequence[ObjectResult],
    taxonomy: Taxonomy,
    first_tier: str,
    batch: bool = False,
) -> PageCounts | None:
    """Store one page's outcomes and move the import to next_token; None if another runner did."""
    now = utcnow()
    token_now = (
        col(ImportJob.continuation_token).is_(None)
        if expect_token is None
        else col(ImportJob.continuation_token) == expect_token
    )
    moved = session.execute(  # first, so that PostgreSQL locks the row for the whole page
        update(ImportJob)
        .where(
            col(ImportJob.id) == import_id,
            col(ImportJob.status) == ImportStatus.listing,
            col(ImportJob.listed) == expect_listed,
            token_now,
        )
        .values(
            listed=col(ImportJob.listed) + len(outcomes),
            continuation_token=next_token,
            status=ImportStatus.listing if next_token else ImportStatus.listed,
            updated_at=now,
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    items = [item for outcome in outcomes for item in outcome.items]
    accepted = duplicates = 0
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        stored = documents.create_documents(
            session=session,
            items=[DocumentCreate(text=i.text, external_id=i.external_id) for i in chunk],
            taxonomy=taxonomy,
            first_tier=first_tier,
            import_id=import_id,
            batch=batch,
            sources=[i.source for i in chunk],
        )
        _link(session, import_id, {doc.id for doc, _ in stored})
        fresh = sum(created for _, created in stored)
        accepted += fresh
        duplicates += len(stored) - fresh
    skipped = sum(o.skipped for o in outcomes)
    failed = sum(1 for o in outcomes if o.failed)
    session.add_all(
        [ImportSkip(import_id=import_id, key=key, reason=reason) for o in outcomes for key, reason in o.skips]
        + [
            ImportSkip(import_id=import_id, key=o.key, reason=f"failed: {o.failed}")
            for o in outcomes
            if o.failed
        ]
    )
    session.execute(
        update(ImportJob)
        .where(col(ImportJob.id) == import_id)
        .values(
            accepted=col(ImportJob.accepted) + accepted,
            duplicates=col(ImportJob.duplicates) + duplicates,
            skipped=col(ImportJob.skipped) + skipped,
            failed=col(ImportJob.failed) + failed,
        )
    )
    session.flush()
    return PageCounts(accepted=accepted, duplicates=duplicates, skipped=skipped, failed=failed)


def _link(session: Session, import_id: int, document_ids: set[int]) -> None:
    """Record that the import listed these documents (once each, across pages and resumes)."""
    if not document_ids:
        return
    rows = [{"import_id": import_id, "document_id": d} for d in sorted(document_ids)]
    session.execute(insert_or_skip(session, ImportItem), rows)


def fail(*, session: Session, import_id: int, error: str) -> None:
    """Stop a listing on an error; resume() starts it again from its last stored page."""
    session.execute(
        update(ImportJob)
        .where(col(ImportJob.id) == import_id, col(ImportJob.status) == ImportStatus.listing)
        .values(status=ImportStatus.failed, error=error[:1000], updated_at=utcnow())
    )


def resume(*, session: Session, import_id: int) -> ImportJob:
    """Make a failed or stalled import listable again from its last stored page."""
    job = get_import(session=session, import_id=import_id)
    if job.status in (ImportStatus.listing, ImportStatus.failed):
        job.status, job.error, job.updated_at = ImportStatus.listing, None, utcnow()
        session.add(job)
        session.flush()
    return job


def stale(*, session: Session, older_than: timedelta, limit: int = 100) -> list[int]:
    """Listing imports silent for longer than older_than; they are touched so each is taken once."""
    cutoff = utcnow() - older_than
    ids = [
        i
        for i in session.exec(
            select(ImportJob.id)
            .where(col(ImportJob.status) == ImportStatus.listing, col(ImportJob.updated_at) < cutoff)
            .order_by(col(ImportJob.id))
            .limit(limit)
        )
        if i is not None
    ]
    if ids:
        session.execute(
            update(ImportJob)
            .where(col(ImportJob.id).in_(ids), col(ImportJob.updated_at) < cutoff)
            .values(updated_at=utcnow())
        )
    return ids


def progress(*, session: Session, import_id: int) -> dict[str, Any]:
    """The import's documents by status (those it found stored too), and what it has spent (nano-USD).

    The spend counts only documents this import stored first: one an earlier import stored was paid for
    then, and is not paid for again.
    """
    by_status = {
        status: int(count)
        for status, count in session.exec(
            select(Document.status, func.count())
            .join(ImportItem, col(ImportItem.document_id) == col(Document.id))
            .where(col(ImportItem.import_id) == import_id)
            .group_by(Document.status)
        )
    }
    spent = session.exec(
        select(col(Attempt.batched), col(Attempt.tier), func.sum(Attempt.cost_nanousd))
        .join(Document, col(Attempt.document_id) == col(Document.id))
        .where(col(Document.import_id) == import_id)
        .group_by(col(Attempt.batched), col(Attempt.tier))
    ).all()
    cost = sum(int(c or 0) for _, _, c in spent)
    return {
        "batched_nanousd_by_tier": {tier: int(c or 0) for batched, tier, c in spent if batched},
        "classified": by_status.get(Status.done, 0),
        "needs_review": by_status.get(Status.needs_review, 0),
        "classification_failed": by_status.get(Status.failed, 0),
        "pending": sum(n for s, n in by_status.items() if s not in FINAL),
        "cost_nanousd": int(cost or 0),
    }


def skip_reasons(*, session: Session, import_id: int) -> dict[str, int]:
    """How many skips (and failures) an import recorded, by category."""
    category = case(
        *[(col(ImportSkip.reason).like(f"{name}%"), name) for name in SKIP_CATEGORIES],
        else_="other",
    )
    rows = session.exec(
        select(category, func.count()).where(col(ImportSkip.import_id) == import_id).group_by(category)
    )
    return {str(name): int(count) for name, count in rows}


def list_skips(
    *, session: Session, import_id: int, after: int | None = None, limit: int = 100
) -> list[ImportSkip]:
    """An import's skips and failures by ascending id after a cursor."""
    query = select(ImportSkip).where(col(ImportSkip.import_id) == import_id)
    if after is not None:
        query = query.where(col(ImportSkip.id) > after)
    return list(session.exec(query.order_by(col(ImportSkip.id)).limit(limit)))


def export_rows(*, session: Session, import_id: int, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """One row per document of the import (key, line, label, confidence, tier, cost), in id order."""
    after: int | None = None
    while True:
        docs = documents.list_documents(session=session, import_id=import_id, limit=batch, after=after)
        if not docs:
            return
        costs = documents.costs_for(session=session, ids=[d.id for d in docs if d.id is not None])
        for doc in docs:
            source = doc.source or {}
            uri = str(source.get("uri", ""))
            yield {
                "key": uri.split("/", 3)[3] if uri.count("/") >= 3 else uri,
                "line": source.get("line"),
                "uri": uri,
                "document_id": doc.id,
                "status": doc.status,
                "label": doc.label,
                "labels": doc.labels,
                "confidence": doc.confidence,
                "tier": doc.answered_by,
                "cost_usd": costs.get(doc.id or 0, 0) / NANO,
            }
        after = docs[-1].id
        session.expunge_all()  # a large export keeps one batch in memory, not all of it
