"""Data access as keyword-only functions taking a session, shared by routes, tasks and the CLI."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, func, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from classifiers.cascade import AttemptRecord, Decision
from classifiers.taxonomy import Taxonomy as TaxonomyModel
from docsort.config import TaxonomySpec
from docsort.errors import NotFound
from store.models import (
    FINAL,
    WAITING,
    Attempt,
    Calibration,
    Document,
    DocumentCreate,
    ImportItem,
    Status,
    Taxonomy,
    utcnow,
)

_DOC = Document.__table__  # type: ignore[attr-defined]
_ATTEMPT = Attempt.__table__  # type: ignore[attr-defined]


def content_hash(text: str) -> str:
    """The dedup key of a document's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- taxonomies -------------------------------------------------------------------------------


def put_taxonomy(*, session: Session, spec: TaxonomySpec) -> Taxonomy:
    """Store spec as a new version of its name, unless it equals the current version."""
    current = get_taxonomy(session=session, name=spec.name, missing_ok=True)
    labels = [label.model_dump() for label in spec.labels]
    if current is not None and (
        current.labels == labels
        and current.multi_label == spec.multi_label
        and current.none_label == spec.none_label
        and current.description == spec.description
    ):
        return current
    row = Taxonomy(
        name=spec.name,
        description=spec.description,
        multi_label=spec.multi_label,
        none_label=spec.none_label,
        labels=labels,
        version=(current.version + 1) if current else 1,
    )
    session.add(row)
    session.flush()
    return row


def get_taxonomy(
    *, session: Session, name: str, version: int | None = None, missing_ok: bool = False
) -> Taxonomy | None:
    """The given (or newest) version of a taxonomy."""
    query = select(Taxonomy).where(Taxonomy.name == name)
    query = query.where(Taxonomy.version == version) if version else query
    row = session.exec(query.order_by(col(Taxonomy.version).desc()).limit(1)).first()
    if row is None and not missing_ok:
        raise NotFound(f"taxonomy {name!r} does not exist")
    return row


def to_runtime(row: Taxonomy) -> TaxonomyModel:
    """A stored taxonomy as the classifiers use it."""
    return TaxonomyModel(
        name=row.name,
        description=row.description,
        labels=row.labels,
        multi_label=row.multi_label,
        none_label=row.none_label,
        version=row.version,
    )


# --- documents --------------------------------------------------------------------------------


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
    stage: str,
    import_id: int | None = None,
    sources: Sequence[dict[str, Any] | None] | None = None,
) -> list[tuple[Stored, bool]]:
    """Store items (status queued), returning each with whether it is new; duplicates reuse rows.

    Core statements, not ORM objects: this is the API's hot path (a profile on PostgreSQL showed 80%
    of a batch POST in building and flushing Document objects).
    """
    hashes = [content_hash(item.text) for item in items]
    c = _DOC.c
    known: dict[str, Stored] = {
        row.content_hash: Stored(row.id, row.status, row.external_id)
        for row in session.execute(
            sa_select(c.id, c.status, c.external_id, c.content_hash).where(
                c.taxonomy == taxonomy.name, c.content_hash.in_(set(hashes))
            )
        )
    }
    now = utcnow()
    fresh: dict[str, dict[str, Any]] = {}
    for index, (item, digest) in enumerate(zip(items, hashes, strict=True)):
        if digest in known or digest in fresh:
            continue
        fresh[digest] = {
            "text": item.text,
            "external_id": item.external_id,
            "metadata": item.metadata,
            "taxonomy": taxonomy.name,
            "taxonomy_version": taxonomy.version,
            "content_hash": digest,
            "stage": stage,
            "status": Status.queued.value,
            "import_id": import_id,
            "source": sources[index] if sources else None,
            "created_at": now,
            "updated_at": now,
        }
    created: set[str] = set()
    if fresh:
        insert_rows = insert(_DOC).returning(c.id, c.content_hash, sort_by_parameter_order=True)
        try:
            with session.begin_nested():
                for row in session.execute(insert_rows, list(fresh.values())):
                    values = fresh[row.content_hash]
                    known[row.content_hash] = Stored(row.id, values["status"], values["external_id"])
                    created.add(row.content_hash)
        except IntegrityError:
            # Another request stored one of these texts meanwhile: take rows one at a time.
            for digest, values in fresh.items():
                known[digest], new = _one(session=session, values=values)
                if new:
                    created.add(digest)
    out: list[tuple[Stored, bool]] = []
    for digest in hashes:
        out.append((known[digest], digest in created))
        created.discard(digest)  # a text repeated in one request is new once
    return out


def _one(*, session: Session, values: dict[str, Any]) -> tuple[Stored, bool]:
    c = _DOC.c
    try:
        with session.begin_nested():
            doc_id = session.execute(insert(_DOC).values(values).returning(c.id)).scalar_one()
        return Stored(doc_id, values["status"], values["external_id"]), True
    except IntegrityError:
        row = session.execute(
            sa_select(c.id, c.status, c.external_id).where(
                c.taxonomy == values["taxonomy"], c.content_hash == values["content_hash"]
            )
        ).one()
        return Stored(row.id, row.status, row.external_id), False


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
    status: str | None = None,
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


# --- the cascade's state machine -------------------------------------------------------------


class Claimed(NamedTuple):
    """What a batch needs of a claimed document (rows, not ORM objects: this is the hot path)."""

    id: int
    text: str
    taxonomy: str
    taxonomy_version: int


def claim(*, session: Session, ids: Iterable[int], stage: str, token: str) -> list[Claimed]:
    """Move waiting documents at stage to classifying under token; a redelivery re-claims its own."""
    now = utcnow()
    c = _DOC.c
    rows = session.execute(
        update(_DOC)
        .where(
            c.id.in_(list(ids)),
            c.stage == stage,
            or_(
                c.status.in_([s.value for s in WAITING]),
                and_(c.status == Status.classifying, c.claim_token == token),
            ),
        )
        .values(status=Status.classifying, claim_token=token, claimed_at=now, updated_at=now)
        .returning(c.id, c.text, c.taxonomy, c.taxonomy_version)
    )
    return sorted((Claimed(*row) for row in rows), key=lambda d: d.id)


_RECORD = (
    update(_DOC)
    .where(_DOC.c.id == bindparam("_id"))
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "stage",
                "claim_token",
                "updated_at",
                "status_reason",
                "label",
                "labels",
                "confidence",
                "tier",
                "model",
            )
        }
    )
)


def record(
    *,
    session: Session,
    decisions: Sequence[Decision],
    stage: str,
    token: str,
    next_stage: str | None,
) -> dict[str, list[int]]:
    """Write each decision and its attempts once, guarded by the claim; returns ids by outcome."""
    moved: dict[str, list[int]] = {"done": [], "escalated": [], "needs_review": []}
    now = utcnow()
    # Take the rows still claimed under token in one write (a redelivered or duplicated message
    # finds none), then update them all by primary key in one executemany.
    c = _DOC.c
    owned = set(
        session.execute(
            update(_DOC)
            .where(
                c.id.in_([d.doc_id for d in decisions]),
                c.claim_token == token,
                c.status == Status.classifying,
            )
            .values(claim_token=f"rec:{token}"[:64])
            .returning(c.id)
        ).scalars()
    )
    rows: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for decision in decisions:
        if decision.doc_id not in owned:
            continue  # someone else finished it: a duplicate message records nothing
        if decision.verdict == "accept":
            status, stage_after = Status.done, stage
        elif decision.verdict == "escalate" and next_stage is not None:
            status, stage_after = Status.escalated, next_stage
        else:
            status, stage_after = Status.needs_review, stage
        values: dict[str, Any] = {
            "_id": decision.doc_id,
            "status": status.value,
            "stage": stage_after,
            "claim_token": f"esc:{token}"[:64] if status == Status.escalated else None,
            "updated_at": now,
            "status_reason": None if status == Status.done else _reason(decision),
            "label": None,
            "labels": None,
            "confidence": None,
            "tier": None,
            "model": None,
        }
        if status != Status.escalated and (decision.label is not None or decision.labels is not None):
            last = decision.attempts[-1]
            values.update(
                label=decision.label,
                labels=decision.labels,
                confidence=decision.confidence,
                tier=last.tier,
                model=last.model,
            )
        rows.append(values)
        attempts += [_attempt(a, now) for a in decision.attempts]
        moved[status.value].append(decision.doc_id)
    if rows:
        session.execute(_RECORD, rows)
    if attempts:
        session.execute(insert(_ATTEMPT), attempts)
    return moved


def _attempt(a: AttemptRecord, now: datetime) -> dict[str, Any]:
    """An attempt row as the insert takes it."""
    return {
        "document_id": a.doc_id,
        "request_id": a.request_id,
        "tier": a.tier,
        "model": a.model,
        "label": a.label,
        "labels": a.labels,
        "confidence": a.confidence,
        "raw_confidence": a.raw_confidence,
        "confidence_method": a.confidence_method,
        "input_tokens": a.usage.input_tokens,
        "cached_tokens": a.usage.cached_tokens,
        "output_tokens": a.usage.output_tokens,
        "cost_nanousd": a.cost_nanousd,
        "reference_nanousd": a.reference_nanousd,
        "latency_ms": a.latency_ms,
        "outcome": a.outcome,
        "error": a.error,
        "created_at": now,
    }


def _reason(decision: Decision) -> str:
    if decision.reason:
        return decision.reason
    if decision.label is None and decision.labels is None:
        return "no valid answer after re-asking"
    confidence = decision.confidence
    shown = "none" if confidence is None else f"{confidence:.2f}"
    return f"confidence {shown} below threshold"


def mark(*, session: Session, ids: Sequence[int], token: str, status: Status, reason: str) -> int:
    """Set a final status on claimed documents (a permanent model error, say)."""
    result = session.execute(
        update(Document)
        .where(col(Document.id).in_(ids), col(Document.claim_token) == token)
        .values(status=status, status_reason=reason[:500], claim_token=None, updated_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def stale(
    *, session: Session, older_than: timedelta, idle_stages: Sequence[str], limit: int = 10_000
) -> dict[str, list[int]]:
    """Documents classifying for longer than older_than, and those waiting as long at an idle stage.

    A waiting document at a stage whose queue still holds messages is most likely behind them,
    not lost, so it is left alone: re-queueing a backlog would only flood the queue.
    """
    cutoff: datetime = utcnow() - older_than
    query = (
        select(Document.id, Document.stage)
        .where(
            or_(
                and_(
                    col(Document.status).in_([s.value for s in WAITING]),
                    col(Document.updated_at) < cutoff,
                    col(Document.stage).in_(list(idle_stages)),
                ),
                and_(col(Document.status) == Status.classifying, col(Document.claimed_at) < cutoff),
            )
        )
        .order_by(col(Document.id))
        .limit(limit)
    )
    by_stage: dict[str, list[int]] = {}
    for doc_id, stage in session.exec(query):
        if doc_id is not None:
            by_stage.setdefault(stage, []).append(doc_id)
    return by_stage


def release(*, session: Session, ids: Sequence[int], first_stage: str) -> None:
    """Put stuck documents back to waiting and undispatched, so that a dispatch takes them again."""
    now = utcnow()
    base = update(Document).where(
        col(Document.id).in_(ids),
        col(Document.status).in_([Status.classifying.value, *[s.value for s in WAITING]]),
    )
    session.execute(
        base.where(col(Document.stage) == first_stage).values(
            status=Status.queued, claim_token=None, updated_at=now
        )
    )
    session.execute(
        base.where(col(Document.stage) != first_stage).values(
            status=Status.escalated, claim_token=None, updated_at=now
        )
    )


def waiting(*, session: Session, stage: str, limit: int) -> list[int]:
    """Ids waiting at stage, oldest first."""
    query = (
        select(Document.id)
        .where(Document.stage == stage, col(Document.status).in_([s.value for s in WAITING]))
        .order_by(col(Document.id))
        .limit(limit)
    )
    return [i for i in session.exec(query) if i is not None]


def latest_calibration(*, session: Session, taxonomy: str, tier: str) -> Calibration | None:
    """The newest calibration for a taxonomy and tier."""
    query = (
        select(Calibration)
        .where(Calibration.taxonomy == taxonomy, col(Calibration.tier) == tier)
        .order_by(col(Calibration.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


# --- reports ----------------------------------------------------------------------------------


def counts_by_status(*, session: Session) -> dict[str, int]:
    """How many documents are in each status."""
    rows = session.exec(select(Document.status, func.count()).group_by(Document.status))
    return {status: count for status, count in rows}


def mark_dispatched(*, session: Session, stage: str, token: str, limit: int) -> list[int]:
    """Take up to limit undispatched documents waiting at stage under token, oldest first."""
    pick = (
        select(Document.id)
        .where(
            col(Document.stage) == stage,
            col(Document.status).in_([s.value for s in WAITING]),
            col(Document.claim_token).is_(None),
        )
        .order_by(col(Document.id))
        .limit(limit)
    )
    ids = [i for i in session.exec(pick) if i is not None]
    if not ids:
        return []
    session.execute(
        update(Document)
        .where(col(Document.id).in_(ids), col(Document.claim_token).is_(None))
        .values(claim_token=token, updated_at=utcnow())
    )
    taken = select(Document.id).where(col(Document.id).in_(ids), col(Document.claim_token) == token)
    return sorted(i for i in session.exec(taken) if i is not None)


def costs_for(*, session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Total nano-USD spent on each of ids."""
    query = (
        select(Attempt.document_id, func.sum(Attempt.cost_nanousd))
        .where(col(Attempt.document_id).in_(list(ids)))
        .group_by(col(Attempt.document_id))
    )
    return {doc_id: int(total or 0) for doc_id, total in session.exec(query)}


def cost_report(*, session: Session) -> dict[str, Any]:
    """Spending by tier and model, and the all-to-the-last-tier baseline (first attempt repriced)."""
    rows = session.execute(
        sa_select(
            col(Attempt.tier),
            col(Attempt.model),
            func.count(),
            func.count(func.distinct(Attempt.document_id)),
            func.sum(Attempt.input_tokens),
            func.sum(Attempt.cached_tokens),
            func.sum(Attempt.output_tokens),
            func.sum(Attempt.cost_nanousd),
        ).group_by(Attempt.tier, Attempt.model)
    ).all()
    first = select(func.min(col(Attempt.id))).group_by(col(Attempt.document_id)).scalar_subquery()
    baseline = session.exec(
        select(func.sum(Attempt.reference_nanousd)).where(col(Attempt.id).in_(first))
    ).one()
    documents = session.exec(select(func.count(func.distinct(Attempt.document_id)))).one()
    return {
        "documents": int(documents or 0),
        "baseline_nanousd": int(baseline or 0),
        "by_tier": [
            {
                "tier": tier,
                "model": model,
                "attempts": int(n),
                "documents": int(d),
                "input_tokens": int(i or 0),
                "cached_tokens": int(c or 0),
                "output_tokens": int(o or 0),
                "cost_nanousd": int(cost or 0),
            }
            for tier, model, n, d, i, c, o, cost in rows
        ],
    }


def finished_since(*, session: Session, since: datetime) -> int:
    """How many documents reached a final status since a moment."""
    query = select(func.count()).where(
        col(Document.status).in_([s.value for s in FINAL]), col(Document.updated_at) >= since
    )
    return int(session.exec(query).one())


def total_cost(*, session: Session, taxonomy: str | None = None, since: datetime | None = None) -> int:
    """nano-USD spent, optionally for one taxonomy and since a moment."""
    query = select(func.coalesce(func.sum(Attempt.cost_nanousd), 0))
    if taxonomy is not None:
        query = query.join(Document, col(Document.id) == col(Attempt.document_id)).where(
            col(Document.taxonomy) == taxonomy
        )
    if since is not None:
        query = query.where(Attempt.created_at >= since)
    return int(session.exec(query).one())


def hold(*, session: Session, ids: Sequence[int], token: str, reason: str) -> int:
    """Give claimed documents back to waiting, with why they wait (the reconciler retries later)."""
    result = session.execute(
        update(Document)
        .where(col(Document.id).in_(ids), col(Document.claim_token) == token)
        .values(status=Status.escalated, claim_token=None, status_reason=reason[:500], updated_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
