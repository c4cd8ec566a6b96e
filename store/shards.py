"""Batch API shards (BatchShard rows): documents written into one file of requests for a provider's Batch
API. A shard's row (its key, its lines) is stored, and its documents moved to `batched`, before its file
is uploaded; the file's and the batch's ids are stored as soon as they exist, so that after a crash the
shard is found again (by its key, in the batch's metadata) and never submitted twice nor forgotten."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from core.vocab import WAITING, ShardStatus, Status
from store.models import BatchShard, Document, utcnow

_DOC = Document.__table__  # type: ignore[attr-defined]


def token(shard: BatchShard) -> str:
    """The claim token of a shard's documents."""
    return f"shard:{shard.key}"


def waiting(
    *, session: Session, tier: str, imports_only: bool, limit: int
) -> list[tuple[int, str, str, int, int | None, datetime]]:
    """Documents waiting at tier for a batch (those of batch imports only, or all), oldest first:
    (id, text, taxonomy, taxonomy version, import id, waiting since)."""
    c = _DOC.c
    query = sa_select(c.id, c.text, c.taxonomy, c.taxonomy_version, c.import_id, c.updated_at).where(
        c.current_tier == tier, c.status.in_([s.value for s in WAITING]), c.claim_token.is_(None)
    )
    if imports_only:
        query = query.where(c.batch.is_(True))
    rows = session.execute(query.order_by(c.id).limit(limit))
    return [(r.id, r.text, r.taxonomy, r.taxonomy_version, r.import_id, r.updated_at) for r in rows]


def create(*, session: Session, shard: BatchShard, doc_ids: Sequence[int]) -> bool:
    """Store a shard and move its documents into it; False (nothing stored) if one was taken meanwhile."""
    session.add(shard)
    session.flush()
    moved = session.execute(
        update(Document)
        .where(
            col(Document.id).in_(list(doc_ids)),
            col(Document.status).in_([s.value for s in WAITING]),
            col(Document.claim_token).is_(None),
        )
        .values(status=Status.batched, shard_id=shard.id, claim_token=token(shard), updated_at=utcnow())
    )
    return bool(moved.rowcount == len(doc_ids))  # type: ignore[attr-defined]


def record(*, session: Session, shard_id: int, **values: Any) -> None:
    """Store what became known of a shard (its file, its batch, the provider's status...)."""
    session.execute(update(BatchShard).where(col(BatchShard.id) == shard_id).values(**values))


def get(*, session: Session, shard_id: int) -> BatchShard | None:
    """A shard by id."""
    return session.get(BatchShard, shard_id)


def unfinished(*, session: Session) -> list[BatchShard]:
    """Shards not ingested yet, oldest first."""
    query = select(BatchShard).where(col(BatchShard.status) != ShardStatus.ingested)
    return list(session.exec(query.order_by(col(BatchShard.id))))


def in_flight_tokens(*, session: Session, tier: str) -> int:
    """Input tokens of a tier's shards submitted and not ingested (the provider's enqueued-token limit)."""
    query = select(func.coalesce(func.sum(BatchShard.input_tokens), 0)).where(
        col(BatchShard.tier) == tier, col(BatchShard.status) != ShardStatus.ingested
    )
    return int(session.exec(query).one())


def claim(*, session: Session, shard: BatchShard) -> list[Document]:
    """The shard's documents still waiting in it, now classifying under its token (to record once)."""
    session.execute(
        update(Document)
        .where(col(Document.shard_id) == shard.id, col(Document.status) == Status.batched)
        .values(status=Status.classifying, claimed_at=utcnow())
    )
    query = select(Document).where(
        col(Document.shard_id) == shard.id,
        col(Document.status) == Status.classifying,
        col(Document.claim_token) == token(shard),
    )
    return list(session.exec(query))


def hand_back(
    *, session: Session, ids: Sequence[int], token_now: str, first_tier: bool, reason: str
) -> list[int]:
    """Documents of a shard back to waiting at their tier, under token_now (so that no dispatch takes
    them while their next task is on its way); the ids moved."""
    status = Status.queued if first_tier else Status.escalated
    rows = session.execute(
        update(_DOC)
        .where(_DOC.c.id.in_(list(ids)), _DOC.c.status == Status.classifying)
        .values(status=status, claim_token=token_now, status_reason=reason[:500], updated_at=utcnow())
        .returning(_DOC.c.id)
    )
    return sorted(rows.scalars())


def for_import(*, session: Session, import_id: int) -> list[BatchShard]:
    """An import's shards, oldest first."""
    query = select(BatchShard).where(col(BatchShard.import_id) == import_id)
    return list(session.exec(query.order_by(col(BatchShard.id))))
