"""The books of model requests (ModelRequest rows): written before a request is sent, settled after.

States: sent -> answered (usage, cost and each document's attempt, in one transaction), failed (an
error answer, not billed) or unanswered (no usable answer: counted at its estimate). A request the
reconciler found unanswered (its worker died, say) that is answered after all is settled again at its
real cost. Guarded updates make every settlement happen once, however often a task is delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, insert, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from classifiers.costs import Usage
from classifiers.decision import AttemptRecord, PlannedRequest
from core.vocab import Outcome, Purpose, RequestState
from store import lifecycle
from store.models import Attempt, Document, ModelRequest, utcnow

_REQ = ModelRequest.__table__  # type: ignore[attr-defined]
_ATTEMPT = Attempt.__table__  # type: ignore[attr-defined]


def add(
    *,
    session: Session,
    request: PlannedRequest,
    taxonomy: str,
    claim_token: str | None,
    reserved_day: date | None,
    batched: bool = False,
) -> None:
    """Write a request down (state sent) before it is sent (or written into a Batch API file)."""
    session.execute(
        insert(_REQ).values(
            id=request.id,
            tier=request.tier,
            model=request.model,
            taxonomy=taxonomy,
            purpose=request.purpose,
            doc_ids=list(request.doc_ids),
            claim_token=claim_token,
            state=RequestState.sent,
            estimate_nanousd=request.estimate_nanousd,
            reserve_nanousd=request.reserve_nanousd,
            reserved_day=reserved_day,
            batched=batched,
            input_tokens=0,
            cached_tokens=0,
            output_tokens=0,
            cost_nanousd=0,
            created_at=utcnow(),
        )
    )


class Settled(NamedTuple):
    """A request as it was when an answer settled it: what its settlement of the day's spend needs."""

    was: RequestState
    taxonomy: str
    reserved_day: date | None
    reserve_nanousd: int
    estimate_nanousd: int


_SETTLING = (_REQ.c.taxonomy, _REQ.c.reserved_day, _REQ.c.reserve_nanousd, _REQ.c.estimate_nanousd)


def answer(
    *,
    session: Session,
    request_id: str,
    input_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    cost_nanousd: int,
    provider_request_id: str | None,
    attempts: Sequence[AttemptRecord],
) -> Settled | None:
    """Record an answer and its attempts; the request as it was (None: already answered, nothing done)."""
    c = _REQ.c
    # One guarded UPDATE per state it may be in (sent nearly always), each returning what the books
    # need: no read before or after (two round trips of every request on the workers' hot path).
    for state in (RequestState.sent, RequestState.unanswered):
        row = session.execute(
            update(_REQ)
            .where(c.id == request_id, c.state == state)
            .values(
                state=RequestState.answered,
                input_tokens=input_tokens,
                cached_tokens=cached_tokens,
                output_tokens=output_tokens,
                cost_nanousd=cost_nanousd,
                provider_request_id=provider_request_id,
                error=None,
                settled_at=utcnow(),
            )
            .returning(*_SETTLING)
        ).first()
        if row is not None:
            if attempts:
                now = utcnow()
                session.execute(insert(_ATTEMPT), [lifecycle.attempt_row(a, now) for a in attempts])
            return Settled(state, *row)
    return None


def fail(*, session: Session, request_id: str, error: str, unanswered: bool) -> Settled | None:
    """Settle a request that brought no usable answer; the request as it was (None: already settled)."""
    c = _REQ.c
    row = session.execute(
        update(_REQ)
        .where(c.id == request_id, c.state == RequestState.sent)
        .values(
            state=RequestState.unanswered if unanswered else RequestState.failed,
            cost_nanousd=c.estimate_nanousd if unanswered else 0,
            error=error[:500],
            settled_at=utcnow(),
        )
        .returning(*_SETTLING)
    ).first()
    return None if row is None else Settled(RequestState.sent, *row)


def overdue(*, session: Session, cutoffs: dict[str, datetime], limit: int = 1000) -> list[ModelRequest]:
    """Requests still `sent` at a tier since before its cutoff: their worker died or lost them (a Batch
    API's requests wait up to a day: their shard settles them, not this)."""
    rows: list[ModelRequest] = []
    for tier, cutoff in cutoffs.items():
        query = (
            sa_select(ModelRequest)
            .where(
                col(ModelRequest.state) == RequestState.sent,
                col(ModelRequest.tier) == tier,
                col(ModelRequest.created_at) < cutoff,
                col(ModelRequest.batched).is_(False),
            )
            .limit(limit)
        )
        rows += list(session.execute(query).scalars())
    return rows


def answered_attempts(
    *,
    session: Session,
    doc_ids: Sequence[int],
    tier: str,
    purposes: Sequence[str] = (Purpose.classify, Purpose.reask),
) -> dict[int, AttemptRecord]:
    """Each document's last answered attempt at tier (a paid answer a redelivered task must not buy again)."""
    query = (
        sa_select(Attempt)
        .join(ModelRequest, col(ModelRequest.id) == col(Attempt.request_id))
        .where(
            col(Attempt.document_id).in_(list(doc_ids)),
            col(Attempt.tier) == tier,
            col(Attempt.outcome) != Outcome.invalid,
            col(ModelRequest.purpose).in_([str(p) for p in purposes]),
        )
        .order_by(col(Attempt.id))
    )
    return {a.document_id: _record(a) for a in session.execute(query).scalars()}


def _record(row: Attempt) -> AttemptRecord:
    """A stored attempt as the classifiers know it (already written)."""
    return AttemptRecord(
        doc_id=row.document_id,
        tier=row.tier,
        model=row.model,
        request_id=row.request_id,
        usage=Usage(
            input_tokens=row.input_tokens, cached_tokens=row.cached_tokens, output_tokens=row.output_tokens
        ),
        cost_nanousd=row.cost_nanousd,
        reference_nanousd=row.reference_nanousd,
        latency_ms=row.latency_ms,
        outcome=Outcome(row.outcome),
        label=row.label,
        labels=row.labels,
        confidence=row.confidence,
        raw_confidence=row.raw_confidence,
        confidence_method=row.confidence_method,
        error=row.error,
        written=True,
        purpose=row.purpose,
    )


def report(*, session: Session, since: datetime | None = None) -> dict[str, Any]:
    """Requests by state with their tokens and cost (unanswered ones at their estimate)."""
    query = sa_select(
        col(ModelRequest.state),
        func.count(),
        func.coalesce(func.sum(ModelRequest.cost_nanousd), 0),
    ).group_by(col(ModelRequest.state))
    if since is not None:
        query = query.where(col(ModelRequest.created_at) >= since)
    by_state = {RequestState(state): (int(n), int(cost)) for state, n, cost in session.execute(query)}
    return {
        state.value: {
            "requests": by_state.get(state, (0, 0))[0],
            "cost_nanousd": by_state.get(state, (0, 0))[1],
        }
        for state in RequestState
    }


def touch_claims(*, session: Session, doc_ids: Sequence[int], token: str) -> None:
    """Renew the lease of documents a live task still works on (the reconciler leaves them alone)."""
    session.execute(
        update(Document)
        .where(col(Document.id).in_(list(doc_ids)), col(Document.claim_token) == token)
        .values(claimed_at=utcnow())
    )


def older_than(seconds: float) -> datetime:
    """The moment seconds ago."""
    return utcnow() - timedelta(seconds=seconds)
