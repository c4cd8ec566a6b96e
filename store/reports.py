"""Reports: documents by status, spending by tier and model, throughput."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from core.vocab import FINAL, Status
from store.models import Attempt, Document


def counts_by_status(*, session: Session) -> dict[Status, int]:
    """How many documents are in each status."""
    rows = session.exec(select(Document.status, func.count()).group_by(Document.status))
    return {Status(status): count for status, count in rows}


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
            col(Attempt.purpose),
        ).group_by(Attempt.tier, Attempt.model, col(Attempt.purpose))
    ).all()
    first = select(func.min(col(Attempt.id))).group_by(col(Attempt.document_id)).scalar_subquery()
    baseline = session.exec(
        select(func.sum(Attempt.reference_nanousd)).where(col(Attempt.id).in_(first))
    ).one()
    documents = session.exec(select(func.count(func.distinct(Attempt.document_id)))).one()
    groups = [
        (
            purpose,
            {
                "tier": tier,
                "model": model,
                "attempts": int(n),
                "documents": int(d),
                "input_tokens": int(i or 0),
                "cached_tokens": int(c or 0),
                "output_tokens": int(o or 0),
                "cost_nanousd": int(cost or 0),
            },
        )
        for tier, model, n, d, i, c, o, cost, purpose in rows
    ]
    return {
        "documents": int(documents or 0),
        "baseline_nanousd": int(baseline or 0),
        # Classifying and auditing apart: audits are the price of knowing, not of labelling.
        "by_tier": [g for purpose, g in groups if purpose != "audit"],
        "audits": [g for purpose, g in groups if purpose == "audit"],
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


def batched_cost(*, session: Session) -> dict[str, tuple[int, int]]:
    """Per tier, the attempts answered through a Batch API and what they cost (nano-USD)."""
    query = (
        select(col(Attempt.tier), func.count(), func.coalesce(func.sum(Attempt.cost_nanousd), 0))
        .where(col(Attempt.batched).is_(True))
        .group_by(col(Attempt.tier))
    )
    return {tier: (int(n), int(cost)) for tier, n, cost in session.exec(query)}


def tier_throughput(*, session: Session, since: datetime) -> dict[str, dict[str, float]]:
    """Per tier, the documents it classified since a moment, in how many requests, and their busy time.

    A request's attempts share its latency, so busy time is summed over requests, not attempts.
    """
    per_request = (
        sa_select(
            col(Attempt.tier).label("tier"),
            func.count().label("docs"),
            func.max(Attempt.latency_ms).label("ms"),
        )
        .where(col(Attempt.created_at) >= since, col(Attempt.purpose) == "classify")
        .group_by(col(Attempt.tier), col(Attempt.request_id))
        .subquery()
    )
    query = sa_select(
        per_request.c.tier, func.sum(per_request.c.docs), func.count(), func.sum(per_request.c.ms)
    ).group_by(per_request.c.tier)
    return {
        str(tier): {"documents": int(docs or 0), "requests": int(n), "busy_s": int(ms or 0) / 1000}
        for tier, docs, n, ms in session.execute(query)
    }
