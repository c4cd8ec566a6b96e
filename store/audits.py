"""Audits and trust changes: a sample of accepted answers checked by the last tier or a person, and the
drift guard's changes to what a tier may answer (each with its reason, evidence and undo)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, update
from sqlmodel import Session, col, select

from classifiers.trust import Agreement
from core.errors import Conflict, NotFound
from core.vocab import AuditStatus
from store.db import insert_or_skip
from store.models import Audit, Document, TrustChange, utcnow


def open_audits(*, session: Session, documents: Sequence[Document], auditor: str) -> list[int]:
    """Open one audit per document (a second one for the same document is not opened); their ids."""
    if not documents:
        return []
    rows = [
        {
            "document_id": doc.id,
            "taxonomy": doc.taxonomy,
            "tier": doc.answered_by,
            "label": doc.label,
            "labels": doc.labels,
            "confidence": doc.confidence,
            "auditor": auditor,
            "status": AuditStatus.pending,
            "created_at": utcnow(),
        }
        for doc in documents
    ]
    session.execute(insert_or_skip(session, Audit, unique=["document_id"]), rows)
    ids = [doc.id for doc in documents]
    query = select(Audit.document_id).where(
        col(Audit.document_id).in_(ids),
        col(Audit.status) == AuditStatus.pending,
        col(Audit.auditor) == auditor,
    )
    return [i for i in session.exec(query) if i is not None]


def settle(
    *,
    session: Session,
    document_id: int,
    label: str | None,
    labels: list[str] | None,
    auditor: str | None = None,
) -> Audit | None:
    """Record an audit's answer and whether it agrees with the audited one; None if none is open."""
    query = select(Audit).where(
        col(Audit.document_id) == document_id, col(Audit.status) == AuditStatus.pending
    )
    if auditor is not None:
        query = query.where(col(Audit.auditor) == auditor)
    audit = session.exec(query).first()
    if audit is None:
        return None
    audit.audit_label, audit.audit_labels = label, labels
    if label is None and labels is None:
        audit.status, audit.agree = AuditStatus.failed, None  # no valid answer: no evidence either way
    else:
        audit.status = AuditStatus.done
        audit.agree = (
            sorted(labels or []) == sorted(audit.labels or []) if labels is not None else label == audit.label
        )
    audit.settled_at = utcnow()
    session.add(audit)
    session.flush()
    return audit


def pending(
    *, session: Session, auditor: str, opened_before: datetime | None = None, limit: int = 1000
) -> list[int]:
    """Documents whose audit by auditor is still open (opened before a moment, if given)."""
    query = select(Audit.document_id).where(
        col(Audit.status) == AuditStatus.pending, col(Audit.auditor) == auditor
    )
    if opened_before is not None:
        query = query.where(col(Audit.created_at) < opened_before)
    query = query.order_by(col(Audit.id)).limit(limit)
    return [i for i in session.exec(query) if i is not None]


def _settled(taxonomy: str, tier: str, since: datetime | None) -> list[Any]:
    where = [col(Audit.taxonomy) == taxonomy, col(Audit.tier) == tier, col(Audit.status) == AuditStatus.done]
    if since is not None:
        where.append(col(Audit.settled_at) >= since)
    return where


def agreement(
    *, session: Session, taxonomy: str, tier: str, since: datetime | None = None
) -> tuple[Agreement, list[tuple[float, bool]]]:
    """A tier's audited agreement (audits settled since a moment), and each audit's confidence and verdict."""
    query = select(Audit.confidence, Audit.agree).where(*_settled(taxonomy, tier, since))
    rows = [(float(c or 0.0), bool(a)) for c, a in session.exec(query)]
    return Agreement(audits=len(rows), agreed=sum(a for _, a in rows)), rows


def agreement_counts(
    *, session: Session, taxonomy: str, tier: str, since: datetime | None = None
) -> Agreement:
    """A tier's audited agreement, counted by the database (reports: no rows fetched)."""
    agreed = func.sum(case((col(Audit.agree).is_(True), 1), else_=0))
    n, hits = session.exec(select(func.count(), agreed).where(*_settled(taxonomy, tier, since))).one()
    return Agreement(audits=int(n or 0), agreed=int(hits or 0))


def counts(*, session: Session, taxonomy: str, since: datetime | None = None) -> dict[str, dict[str, int]]:
    """Audits by audited tier: opened, done, agreed."""
    query = select(Audit.tier, Audit.status, Audit.agree, func.count()).where(col(Audit.taxonomy) == taxonomy)
    if since is not None:
        query = query.where(col(Audit.created_at) >= since)
    out: dict[str, dict[str, int]] = {}
    for tier, status, agree, n in session.exec(
        query.group_by(col(Audit.tier), col(Audit.status), col(Audit.agree))
    ):
        row = out.setdefault(str(tier), {"opened": 0, "done": 0, "agreed": 0, "open": 0})
        row["opened"] += int(n)
        row["done"] += int(n) if status == AuditStatus.done else 0
        row["agreed"] += int(n) if agree else 0
        row["open"] += int(n) if status == AuditStatus.pending else 0
    return out


def disagreements(
    *, session: Session, taxonomy: str | None = None, after: int | None = None, limit: int = 100
) -> list[Audit]:
    """Audits whose answer differs from the audited one, oldest first (for a person to judge)."""
    query = select(Audit).where(col(Audit.agree).is_(False))
    if taxonomy is not None:
        query = query.where(col(Audit.taxonomy) == taxonomy)
    if after is not None:
        query = query.where(col(Audit.id) > after)
    return list(session.exec(query.order_by(col(Audit.id)).limit(limit)))


# --- trust changes ---------------------------------------------------------------------------------


def add_change(*, session: Session, change: TrustChange) -> TrustChange:
    """Record a change the drift guard made (it is in force until undone)."""
    session.add(change)
    session.flush()
    return change


def in_force(*, session: Session, taxonomy: str | None = None) -> list[TrustChange]:
    """Changes not undone, newest first."""
    query = select(TrustChange).where(col(TrustChange.undone_at).is_(None))
    if taxonomy is not None:
        query = query.where(col(TrustChange.taxonomy) == taxonomy)
    return list(session.exec(query.order_by(col(TrustChange.id).desc())))


def latest(*, session: Session, taxonomy: str, tier: str) -> TrustChange | None:
    """The newest change for a taxonomy's tier, in force or undone (audits count from its time)."""
    query = select(TrustChange).where(col(TrustChange.taxonomy) == taxonomy, col(TrustChange.tier) == tier)
    return session.exec(query.order_by(col(TrustChange.id).desc()).limit(1)).first()


def history(*, session: Session, taxonomy: str, limit: int = 50) -> list[TrustChange]:
    """A taxonomy's changes, newest first, undone ones included."""
    query = select(TrustChange).where(col(TrustChange.taxonomy) == taxonomy)
    return list(session.exec(query.order_by(col(TrustChange.id).desc()).limit(limit)))


def undo(*, session: Session, change_id: int, by: str) -> TrustChange:
    """Undo a change (a person's decision); Conflict if it was undone already."""
    change = session.get(TrustChange, change_id)
    if change is None:
        raise NotFound(f"trust change {change_id} does not exist")
    if change.undone_at is not None:
        raise Conflict(f"trust change {change_id} was undone already")
    session.execute(
        update(TrustChange)
        .where(col(TrustChange.id) == change_id)
        .values(undone_at=utcnow(), undone_by=by[:64])
    )
    session.flush()
    session.refresh(change)
    return change


def evidence(agreement: Agreement, level: float, **more: Any) -> dict[str, Any]:
    """What a change rests on, as stored with it."""
    low, high = agreement.interval
    return {
        "audits": agreement.audits,
        "agreed": agreement.agreed,
        "interval_90": [low, high],
        "implied": level,
        **more,
    }
