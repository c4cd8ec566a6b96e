"""A document's way through the tiers, as guarded updates: dispatch, claim, record, hold, release.

Every move is one UPDATE guarded by the document's status, tier and claim token, so a redelivered or
duplicated message finds nothing to move and records nothing. Core statements, not ORM objects: this is
the workers' hot path (a profile showed 47% of a worker's time in `record` and 17% in `claim` with the
ORM; docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    Update,
    and_,
    bindparam,
    column,
    func,
    insert,
    or_,
    type_coerce,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from classifiers.decision import AttemptRecord, Decision
from core.vocab import WAITING, Outcome, Status, status_after
from store.models import Attempt, Document, utcnow

_DOC = Document.__table__  # type: ignore[attr-defined]
_ATTEMPT = Attempt.__table__  # type: ignore[attr-defined]
_WAITING = [s.value for s in WAITING]


class Claimed(NamedTuple):
    """What a batch needs of a claimed document (rows, not ORM objects: this is the hot path)."""

    id: int
    text: str
    taxonomy: str
    taxonomy_version: int


def mark_dispatched(
    *, session: Session, tier: str, token: str, limit: int, batch_api: str = "off"
) -> list[int]:
    """Take up to limit undispatched documents waiting at tier under token, oldest first; those a Batch
    API takes (batch_api "imports": of batch imports; "always": all) wait for their shard instead."""
    c = _DOC.c
    if batch_api == "always":
        return []
    pick = sa_select(c.id).where(c.current_tier == tier, c.status.in_(_WAITING), c.claim_token.is_(None))
    if batch_api == "imports":
        pick = pick.where(c.batch.is_(False))
    pick = pick.order_by(c.id).limit(limit)
    ids = list(session.execute(pick).scalars())
    if not ids:
        return []
    taken = session.execute(
        update(_DOC)
        .where(c.id.in_(ids), c.claim_token.is_(None))
        .values(claim_token=token, updated_at=utcnow())
        .returning(c.id)
    )
    return sorted(taken.scalars())


def _row_check(column: Any) -> ColumnElement[str]:
    """column as an expression no index matches (`column || ''`): in a statement that picks rows by id,
    a guard on status or tier is then checked on those rows instead of being scanned for. Before a
    fast-growing table has statistics, PostgreSQL's planner scanned the status index for it (dead
    entries and all): 10-18 ms per claim or record instead of well under one."""
    return type_coerce(column, String) + ""


def claim(*, session: Session, ids: Iterable[int], tier: str, token: str) -> list[Claimed]:
    """Move waiting documents at tier to classifying under token; a redelivery re-claims its own."""
    now = utcnow()
    c = _DOC.c
    rows = session.execute(
        update(_DOC)
        .where(
            c.id.in_(list(ids)),
            _row_check(c.current_tier) == tier,
            or_(
                _row_check(c.status).in_(_WAITING),
                and_(_row_check(c.status) == Status.classifying.value, c.claim_token == token),
            ),
        )
        .values(status=Status.classifying, claim_token=token, claimed_at=now, updated_at=now)
        .returning(c.id, c.text, c.taxonomy, c.taxonomy_version)
    )
    return sorted((Claimed(*row) for row in rows), key=lambda d: d.id)


_RECORDED = (
    "status",
    "current_tier",
    "claim_token",
    "status_reason",
    "label",
    "labels",
    "confidence",
    "answered_by",
    "model",
)


def _recording(dialect: str) -> Update:
    """The record's one statement: UPDATE document FROM the decisions (one JSON parameter, "rows"),
    guarded by the claim, RETURNING the ids it wrote. Its shape never changes, so SQLAlchemy compiles it
    once (a VALUES list of the rows was compiled anew for every batch: half the record's time)."""
    c = _DOC.c
    if dialect == "postgresql":
        rows: Any = (
            func.json_to_recordset(bindparam("rows", type_=JSON))
            .table_valued(*(column(name, c[name].type) for name in ("id", *_RECORDED)))
            .render_derived(name="incoming", with_types=True)
        )
        key, fields = rows.c.id, {name: rows.c[name] for name in _RECORDED}
    else:  # SQLite: json_each over the same parameter, fields taken out of each row by path
        rows = func.json_each(bindparam("rows", type_=JSON)).table_valued("value").alias("incoming")
        key = func.json_extract(rows.c.value, "$.id")
        fields = {name: func.json_extract(rows.c.value, f"$.{name}") for name in _RECORDED}
    return (
        update(_DOC)
        .where(
            c.id == key,
            c.id.in_(bindparam("ids", expanding=True)),  # the primary key, for the planner
            c.claim_token == bindparam("token"),
            _row_check(c.status) == Status.classifying.value,
        )
        .values(fields | {"updated_at": bindparam("now")})
        .returning(c.id)
    )


_RECORDING = {dialect: _recording(dialect) for dialect in ("postgresql", "sqlite")}


def record(
    *,
    session: Session,
    decisions: Sequence[Decision],
    tier: str,
    token: str,
    next_tier: str | None,
    first_tier: bool = False,
) -> dict[Status, list[int]]:
    """Write each decision, and its attempts not yet written, once, guarded by the claim; ids by status."""
    moved: dict[Status, list[int]] = {s: [] for s in (Status.done, Status.escalated, Status.needs_review)}
    moved[Status.queued] = []
    now = utcnow()
    rows: dict[int, dict[str, Any]] = {}
    statuses: dict[int, Status] = {}
    for decision in decisions:
        status = status_after(decision.outcome, has_next=next_tier is not None, first_tier=first_tier)
        moves_on = status is Status.escalated and decision.outcome is Outcome.escalated
        answered = status in (Status.done, Status.needs_review) and decision.answered
        last = decision.attempts[-1] if answered else None
        rows[decision.doc_id] = {
            "id": decision.doc_id,
            "status": status.value,
            "current_tier": next_tier if moves_on else tier,
            # An escalation is handed to the next tier's batches by the task (not by a dispatch).
            "claim_token": f"esc:{token}"[:64] if moves_on else None,
            "status_reason": None if status is Status.done else _reason(decision),
            "label": decision.label if answered else None,
            "labels": decision.labels if answered else None,
            "confidence": decision.confidence if answered else None,
            "answered_by": last.tier if last else None,
            "model": last.model if last else None,
        }
        statuses[decision.doc_id] = status
    if not rows:
        return moved
    # One guarded write per document: only the rows still claimed under token are written (a
    # redelivered or duplicated message finds none), each once; RETURNING says which. Taking the rows
    # first and writing them after was two row versions per document (docs/benchmarks.md, session 9).
    statement = _RECORDING[session.get_bind().dialect.name]
    params = {"rows": list(rows.values()), "ids": list(rows), "token": token, "now": now}
    owned = set(session.execute(statement, params).scalars())
    attempts: list[dict[str, Any]] = []
    for decision in decisions:
        if decision.doc_id not in owned:
            continue  # someone else finished it: a duplicate message records nothing
        attempts += [attempt_row(a, now) for a in decision.attempts if not a.written]
        moved.setdefault(statuses[decision.doc_id], []).append(decision.doc_id)
    if attempts:
        session.execute(insert(_ATTEMPT), attempts)
    return moved


def attempt_row(a: AttemptRecord, now: datetime) -> dict[str, Any]:
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
        "purpose": a.purpose,
        "batched": a.batched,
        "created_at": now,
    }


def _reason(decision: Decision) -> str:
    if decision.reason:
        return decision.reason
    if not decision.answered:
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


def hold(*, session: Session, ids: Sequence[int], token: str, reason: str, first_tier: bool) -> int:
    """Give claimed documents back to waiting, with why they wait (the reconciler retries later)."""
    status = status_after(Outcome.held, has_next=True, first_tier=first_tier)
    result = session.execute(
        update(Document)
        .where(col(Document.id).in_(ids), col(Document.claim_token) == token)
        .values(status=status, claim_token=None, status_reason=reason[:500], updated_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def stale(
    *,
    session: Session,
    lease_ends: dict[str, datetime],
    waiting_since: datetime,
    idle_tiers: Sequence[str],
    limit: int = 10_000,
) -> dict[str, list[int]]:
    """Documents whose claim at a tier was last renewed before lease_ends[tier] (their task died),
    and those waiting since before waiting_since at an idle tier (their message was lost).

    A waiting document at a tier whose queue still holds messages is most likely behind them,
    not lost, so it is left alone: re-queueing a backlog would only flood the queue.
    """
    c = _DOC.c
    expired = [
        and_(c.status == Status.classifying, c.current_tier == tier, c.claimed_at < cutoff)
        for tier, cutoff in lease_ends.items()
    ]
    lost = and_(c.status.in_(_WAITING), c.updated_at < waiting_since, c.current_tier.in_(list(idle_tiers)))
    query = sa_select(c.id, c.current_tier).where(or_(lost, *expired)).order_by(c.id).limit(limit)
    by_tier: dict[str, list[int]] = {}
    for doc_id, tier in session.execute(query):
        by_tier.setdefault(tier, []).append(doc_id)
    return by_tier


def release(*, session: Session, ids: Sequence[int], first_tier: str) -> None:
    """Put stuck documents back to waiting and undispatched, so that a dispatch takes them again."""
    now = utcnow()
    base = update(Document).where(
        col(Document.id).in_(ids),
        col(Document.status).in_([Status.classifying.value, *_WAITING]),
    )
    for at_first in (True, False):
        where = col(Document.current_tier) == first_tier
        session.execute(
            base.where(where if at_first else ~where).values(
                status=status_after(Outcome.held, has_next=True, first_tier=at_first),
                claim_token=None,
                updated_at=now,
            )
        )


def flagged_for_batch(*, session: Session, ids: Sequence[int]) -> list[int]:
    """Those of ids that may go through a Batch API (documents of batch imports)."""
    c = _DOC.c
    return sorted(session.execute(sa_select(c.id).where(c.id.in_(list(ids)), c.batch.is_(True))).scalars())


def release_claims(*, session: Session, ids: Sequence[int]) -> None:
    """Clear the claim of waiting documents: whoever gathers waiting documents at their tier takes them."""
    session.execute(
        update(Document)
        .where(col(Document.id).in_(list(ids)), col(Document.status).in_(_WAITING))
        .values(claim_token=None, updated_at=utcnow())
    )
