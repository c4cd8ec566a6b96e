"""Labels to learn from (Example rows): from people (gold, review) and from the LLM tiers' answers.

Which answers are worth learning from is the worker's rule (worker/training.py); this module stores
and reads them. A person's review replaces whatever a model said about that document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import func
from sqlmodel import Session, col, select

from classifiers.decision import Decision
from classifiers.local import Label, as_label
from classifiers.selective import PERSON_ORIGINS, person_given
from classifiers.taxonomy import Taxonomy
from core.errors import InvalidInput
from core.vocab import Origin, Outcome
from store.models import Attempt, Document, Example


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


class TrainingSet(NamedTuple):
    """Labelled texts to train on, each label's origin (gold, review, a tier's name, ...), newest id."""

    texts: list[str]
    labels: list[Label]
    origins: list[str]
    newest: int


def training_set(*, session: Session, taxonomy: Taxonomy, limit: int) -> TrainingSet:
    """The newest labelled texts whose labels the taxonomy has, people's last, and the newest example id.

    A label is a string, or for a multi-label taxonomy the sorted tuple of its labels; its origin says
    who gave it (classifiers/selective.py: PERSON_ORIGINS are a person's, every other a model's).
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
    rows.sort(key=lambda r: (person_given(r[3]), r[0]))
    kept: list[tuple[str, Label, str]] = []
    for _, text, value, origin in rows:
        if value is None:  # a JSON column stores None as JSON null, which IS NOT NULL lets through
            continue
        answer = as_label(value)
        if set([answer] if isinstance(answer, str) else answer) <= known:  # () is "none applies"
            kept.append((text, answer, str(origin)))
    newest = max((r[0] or 0 for r in rows), default=0)
    return TrainingSet(
        [t for t, _, _ in kept], [y for _, y, _ in kept], [o for _, _, o in kept], int(newest or 0)
    )


def count_after(*, session: Session, taxonomy: str, after_id: int) -> int:
    """How many examples of a taxonomy were stored after the example after_id."""
    query = select(func.count()).where(Example.taxonomy == taxonomy, col(Example.id) > after_id)
    return int(session.exec(query).one())


def teacher_accuracy(
    *, session: Session, taxonomy: Taxonomy, tier: str, min_count: int = 50
) -> tuple[float, int] | None:
    """How often tier's accepted answers were right by a person's later label: (accuracy, n), or None.

    The documents counted have both a person's label (an example of a person origin: review, or gold;
    not audit or bulk_accept, which are a model's) and an accepted answer of tier (its newest accepted Attempt; accepted answers are
    the ones learnt from), exact label sets for a multi-label taxonomy. None under min_count of them.
    Documents people chose to review are not a random sample: if they pick the doubtful ones, this
    under-estimates the tier, and the local tier's threshold rule then answers more than it should.
    """
    column: Any = col(Example.labels) if taxonomy.multi_label else col(Example.label)
    said: Any = col(Attempt.labels) if taxonomy.multi_label else col(Attempt.label)
    people = session.exec(
        select(Example.document_id, column)
        .where(
            Example.taxonomy == taxonomy.name,
            col(Example.origin).in_(sorted(PERSON_ORIGINS)),
            col(Example.document_id).is_not(None),
            column.is_not(None),
        )
        .order_by(col(Example.id))
    )
    person = {doc: value for doc, value in people if value is not None}  # the newest per document
    if len(person) < min_count:
        return None
    answers: dict[int, Any] = {}
    ids = sorted(d for d in person if d is not None)
    for start in range(0, len(ids), 500):  # IN lists of bounded length
        chunk = ids[start : start + 500]
        rows = session.exec(
            select(Attempt.document_id, said)
            .where(
                col(Attempt.document_id).in_(chunk),
                Attempt.tier == tier,
                Attempt.outcome == Outcome.accepted,
                said.is_not(None),
            )
            .order_by(col(Attempt.id))
        )
        answers.update((doc, value) for doc, value in rows if value is not None)
    pairs = [(as_label(person[d]), as_label(a)) for d, a in answers.items()]
    if len(pairs) < min_count:
        return None
    return sum(p == a for p, a in pairs) / len(pairs), len(pairs)
