"""Roll-ups for the dashboard: daily spend (DailyCost rows), so that it sums over time without reading
every attempt, and a snapshot of documents by status and tier (StatusCount). Refreshed by a periodic job
(today and yesterday; the first run fills every day since the first attempt)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from store.models import Attempt, DailyCost, Document, StatusCount, utcnow


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def refresh(*, session: Session, days: list[date]) -> int:
    """Recompute the roll-up rows of days from the attempts; how many rows were written."""
    written = 0
    for day in days:
        start, end = _bounds(day)
        in_day = (col(Attempt.created_at) >= start, col(Attempt.created_at) < end)
        spend = session.exec(
            select(
                Document.taxonomy,
                func.sum(Attempt.cost_nanousd).filter(col(Attempt.purpose) != "audit"),
                func.sum(Attempt.cost_nanousd).filter(col(Attempt.purpose) == "audit"),
            )
            .join(Document, col(Document.id) == col(Attempt.document_id))
            .where(*in_day)
            .group_by(col(Document.taxonomy))
        ).all()
        # A document counts on the day of its first attempt; its baseline is that attempt's reference.
        first = (
            select(func.min(col(Attempt.id)).label("id"))
            .group_by(col(Attempt.document_id))
            .having(func.min(col(Attempt.created_at)) >= start, func.min(col(Attempt.created_at)) < end)
            .subquery()
        )
        firsts = {
            taxonomy: (int(n), int(ref or 0))
            for taxonomy, n, ref in session.exec(
                select(Document.taxonomy, func.count(), func.sum(Attempt.reference_nanousd))
                .join(Document, col(Document.id) == col(Attempt.document_id))
                .where(col(Attempt.id).in_(select(first.c.id)))
                .group_by(col(Document.taxonomy))
            )
        }
        session.execute(delete(DailyCost).where(col(DailyCost.day) == day))
        for taxonomy, cost, audit in spend:
            n, baseline = firsts.get(taxonomy, (0, 0))
            session.add(
                DailyCost(
                    day=day,
                    taxonomy=taxonomy,
                    documents=n,
                    cost_nanousd=int(cost or 0),
                    baseline_nanousd=baseline,
                    audit_nanousd=int(audit or 0),
                )
            )
            written += 1
    session.flush()
    return written


def days_to_refresh(*, session: Session, today: date) -> list[date]:
    """Today and yesterday; every day since the first attempt when the roll-up is empty."""
    if session.exec(select(func.count()).select_from(DailyCost)).one():
        return [today - timedelta(days=1), today]
    oldest = session.exec(select(func.min(Attempt.created_at))).one()
    if oldest is None:
        return [today]
    first = oldest.date() if isinstance(oldest, datetime) else today
    return [first + timedelta(days=i) for i in range((today - first).days + 1)]


def series(*, session: Session, taxonomy: str, days: int, today: date) -> list[DailyCost]:
    """A taxonomy's roll-up rows for the last days, oldest first."""
    query = select(DailyCost).where(
        col(DailyCost.taxonomy) == taxonomy, col(DailyCost.day) > today - timedelta(days=days)
    )
    return list(session.exec(query.order_by(col(DailyCost.day))))


def refresh_counts(*, session: Session) -> int:
    """Snapshot documents by taxonomy, status and answering tier (one scan); how many rows."""
    rows = session.exec(
        select(Document.taxonomy, Document.status, Document.answered_by, func.count()).group_by(
            col(Document.taxonomy), col(Document.status), col(Document.answered_by)
        )
    ).all()
    now = utcnow()
    session.execute(delete(StatusCount))
    session.add_all(
        StatusCount(taxonomy=t, status=str(s), answered_by=by or "-", n=int(n), as_of=now)
        for t, s, by, n in rows
    )
    session.flush()
    return len(rows)


def counts(*, session: Session, taxonomy: str) -> tuple[dict[str, dict[str, int]], datetime | None]:
    """A taxonomy's snapshot: documents by status and answering tier, and when it was taken."""
    out: dict[str, dict[str, int]] = {}
    as_of = None
    for row in session.exec(select(StatusCount).where(col(StatusCount.taxonomy) == taxonomy)):
        out.setdefault(row.status, {})[row.answered_by] = row.n
        as_of = row.as_of
    return out, as_of
