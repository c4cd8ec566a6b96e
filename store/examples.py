"""Labels to learn from (Example rows): from people (gold, review) and from the LLM tiers' answers.

Which answers are worth learning from is the worker's rule (worker/training.py); this module stores
and reads them. A person's review replaces whatever a model said about that document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from classifiers.decision import Decision
from classifiers.local import Label, as_label
from classifiers.taxonomy import Taxonomy
from core.errors import Conflict, InvalidInput
from core.vocab import FINAL, Origin, Status
from store import documents, taxonomies
from store.models import Document, Example, utcnow

PEOPLE = (Origin.gold.value, Origin.review.value)


def add_examples(
    *, session: Session, taxonomy: Taxonomy, items: Sequence[dict[str, Any]], origin: str = Origin.gold
) -> int:
    """Store labelled texts ({"text", "label" | "labels"}) after checking every one; returns how many."""
    for index, item in enumerate(items):
        if not str(item.get("text") or "").strip():
            raise InvalidInput(f"examples[{index}].text is empty")
        taxonomy.check_label(item.get("label"), item.get("labels"), f"examples[{index}]")
    session.add_all(
        Example(
            taxonomy=taxonomy.name,
            text=item["text"],
            label=item.get("label"),
            labels=item.get("labels"),
            origin=origin,
        )
        for item in items
    )
    session.flush()
    return len(items)


def add_answers(*, session: Session, decisions: Sequence[Decision], origin: str) -> int:
    """Keep the answers of decisions as examples of their documents (once per document); how many."""
    by_id = {d.doc_id: d for d in decisions if d.answered}
    if not by_id:
        return 0
    known = set(session.exec(select(Example.document_id).where(col(Example.document_id).in_(list(by_id)))))
    docs = session.exec(select(Document).where(col(Document.id).in_(list(by_id))))
    rows = [
        Example(
            taxonomy=doc.taxonomy,
            text=doc.text,
            label=by_id[doc.id].label,
            labels=by_id[doc.id].labels,
            origin=origin[:16],
            document_id=doc.id,
        )
        for doc in docs
        if doc.id is not None and doc.id not in known
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


def review(*, session: Session, document_id: int, label: str | None, labels: list[str] | None) -> Document:
    """A person's label for a finished document: it becomes the answer and an example to learn from."""
    doc = documents.get_document(session=session, document_id=document_id)
    if doc.status not in FINAL:
        raise Conflict(f"document {document_id} is {doc.status}; review it once the cascade is done")
    row = taxonomies.require(session=session, name=doc.taxonomy, version=doc.taxonomy_version)
    taxonomies.to_runtime(row).check_label(label, labels, "review")
    doc.label, doc.labels = label, labels
    doc.status, doc.answered_by, doc.model, doc.confidence = Status.done, "review", "person", 1.0
    doc.status_reason, doc.claim_token, doc.updated_at = "confirmed in review", None, utcnow()
    session.add(doc)
    # A person's word replaces what a model said about this document.
    session.execute(delete(Example).where(col(Example.document_id) == document_id))
    session.add(
        Example(
            taxonomy=doc.taxonomy,
            text=doc.text,
            label=label,
            labels=labels,
            origin=Origin.review,
            document_id=doc.id,
        )
    )
    session.flush()
    return doc


def training_set(*, session: Session, taxonomy: Taxonomy, limit: int) -> tuple[list[str], list[Label], int]:
    """The newest labelled texts whose labels the taxonomy has, people's last, and the newest example id.

    A label is a string, or for a multi-label taxonomy the sorted tuple of its labels.
    """
    column: Any = col(Example.labels) if taxonomy.multi_label else col(Example.label)
    query = (
        select(Example.id, Example.text, column, Example.origin)
        .where(Example.taxonomy == taxonomy.name, column.is_not(None))
        .order_by(col(Example.id).desc())
        .limit(limit)
    )
    rows = list(session.exec(query))
    known = set(taxonomy.label_names)
    # Ordered so that a later row wins for the same text: models first, then people, each oldest first.
    rows.sort(key=lambda r: (r[3] in PEOPLE, r[0]))
    kept: list[tuple[str, Label]] = []
    for _, text, value, _ in rows:
        if value is None:  # a JSON column stores None as JSON null, which IS NOT NULL lets through
            continue
        answer = as_label(value)
        if set([answer] if isinstance(answer, str) else answer) <= known:  # () is "none applies"
            kept.append((text, answer))
    newest = max((r[0] or 0 for r in rows), default=0)
    return [t for t, _ in kept], [y for _, y in kept], int(newest or 0)


def count_after(*, session: Session, taxonomy: str, after_id: int) -> int:
    """How many examples of a taxonomy were stored after the example after_id."""
    query = select(func.count()).where(Example.taxonomy == taxonomy, col(Example.id) > after_id)
    return int(session.exec(query).one())
