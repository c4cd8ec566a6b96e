"""People's decisions on documents: a review (a person's label), a bulk accept (a person accepting a
model's suggestion), and undoing either, which restores the document and its labels to learn from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from core.errors import Conflict, InvalidInput, NotFound
from core.vocab import FINAL, AuditStatus, Origin, Status
from store import documents, taxonomies
from store.models import Audit, Document, Example, Review, utcnow

_FIELDS = ("status", "status_reason", "label", "labels", "confidence", "answered_by", "model")


def review(
    *,
    session: Session,
    document_id: int,
    label: str | None,
    labels: list[str] | None,
    origin: str = Origin.review,
    by: str | None = None,
) -> Document:
    """A person's label for a finished document (or, origin bulk_accept, their acceptance of its
    suggestion): it becomes the answer and an example to learn from; what it replaced is kept for undo."""
    doc = documents.get_document(session=session, document_id=document_id)
    if doc.status not in FINAL:
        raise Conflict(f"document {document_id} is {doc.status}; review it once the cascade is done")
    row = taxonomies.require(session=session, name=doc.taxonomy, version=doc.taxonomy_version)
    taxonomies.to_runtime(row).check_label(label, labels, "review")
    before: dict[str, Any] = {name: getattr(doc, name) for name in _FIELDS}
    audit = session.exec(select(Audit).where(col(Audit.document_id) == document_id)).first()
    if audit is not None:
        before["audit"] = {
            "status": audit.status,
            "agree": audit.agree,
            "audit_label": audit.audit_label,
            "audit_labels": audit.audit_labels,
            "settled_at": audit.settled_at.isoformat() if audit.settled_at else None,
            "resolved_at": audit.resolved_at.isoformat() if audit.resolved_at else None,
        }
    replaced = list(session.exec(select(Example).where(col(Example.document_id) == document_id)))
    examples_before = [
        {"taxonomy": e.taxonomy, "text": e.text, "label": e.label, "labels": e.labels, "origin": e.origin}
        for e in replaced
    ]
    # A person's word replaces what a model said about this document.
    session.execute(delete(Example).where(col(Example.document_id) == document_id))
    person = origin == Origin.review
    doc.label, doc.labels = label, labels
    doc.status, doc.answered_by = Status.done, "review" if person else Origin.bulk_accept.value
    doc.model = "person"
    doc.confidence = 1.0 if person else doc.confidence
    doc.status_reason = "confirmed in review" if person else "suggestion accepted in bulk by a person"
    doc.claim_token, doc.updated_at = None, utcnow()
    session.add(doc)
    session.add(
        Example(
            taxonomy=doc.taxonomy,
            text=doc.text,
            label=label,
            labels=labels,
            origin=origin,
            document_id=doc.id,
        )
    )
    if audit is not None:
        if audit.status == AuditStatus.pending and audit.auditor == "review" and person:
            _settle(audit, label, labels)
        if audit.agree is False:
            audit.resolved_at = utcnow()  # a person judged the disagreement
        session.add(audit)
    session.add(
        Review(
            document_id=document_id,
            label=label,
            labels=labels,
            origin=origin,
            by=by,
            before=_jsonable(before),
            examples_before=examples_before,
        )
    )
    session.flush()
    return doc


def _settle(audit: Audit, label: str | None, labels: list[str] | None) -> None:
    audit.audit_label, audit.audit_labels = label, labels
    audit.status = AuditStatus.done
    audit.agree = (
        sorted(labels or []) == sorted(audit.labels or []) if labels is not None else label == audit.label
    )
    audit.settled_at = utcnow()


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}


def undo(*, session: Session, document_id: int) -> Document:
    """Undo the newest review of a document that is not undone: the document, its labels to learn from
    and its audit are as they were before it. NotFound if there is none to undo."""
    row = session.exec(
        select(Review)
        .where(col(Review.document_id) == document_id, col(Review.undone_at).is_(None))
        .order_by(col(Review.id).desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"document {document_id} has no review to undo")
    doc = documents.get_document(session=session, document_id=document_id)
    before = dict(row.before)
    audit_before = before.pop("audit", None)
    for name, value in before.items():
        setattr(doc, name, value)
    doc.status = Status(before["status"])
    doc.updated_at = utcnow()
    session.add(doc)
    session.execute(delete(Example).where(col(Example.document_id) == document_id))
    session.add_all(Example(**e, document_id=document_id) for e in row.examples_before)
    if audit_before is not None:
        audit = session.exec(select(Audit).where(col(Audit.document_id) == document_id)).first()
        if audit is not None:
            audit.status = AuditStatus(audit_before["status"])
            audit.agree = audit_before["agree"]
            audit.audit_label, audit.audit_labels = audit_before["audit_label"], audit_before["audit_labels"]
            for name in ("settled_at", "resolved_at"):
                value = audit_before[name]
                setattr(audit, name, datetime.fromisoformat(value) if value else None)
            session.add(audit)
    row.undone_at = utcnow()
    session.add(row)
    session.flush()
    return doc


def bulk_accept(*, session: Session, document_ids: Sequence[int], by: str | None = None) -> int:
    """Accept the suggestion of each document (its current label, from the tier that was unsure); how many.

    Documents without a suggestion are refused: there is nothing to accept."""
    accepted = 0
    docs = session.exec(select(Document).where(col(Document.id).in_(list(document_ids)))).all()
    if len(docs) != len(set(document_ids)):
        raise NotFound("some of the documents do not exist")
    for doc in docs:
        if doc.label is None and doc.labels is None:
            raise InvalidInput(f"document {doc.id} has no suggestion to accept")
        assert doc.id is not None
        review(
            session=session,
            document_id=doc.id,
            label=doc.label,
            labels=doc.labels,
            origin=Origin.bulk_accept,
            by=by,
        )
        accepted += 1
    return accepted
