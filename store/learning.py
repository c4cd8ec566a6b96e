"""What the local tier learns from (Example rows) and which of its versions answers (LocalModel rows).

Labels come from people (origin "gold": uploaded; "review": confirmed on a document) and from LLM
tiers (origin: the tier's name) when they accept a document at or above their threshold: any LLM tier
under `local.harvest = "accepted"` (their thresholds are set so that accepted answers are as good as the
cascade's), only the last one under "last_tier". The local tier's own answers are never learnt from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, col, select

from classifiers.cascade import Decision
from classifiers.local import (
    Label,
    LocalClassifier,
    NotEnoughLabels,
    TrainParams,
    as_label,
    in_holdout,
    train,
)
from classifiers.taxonomy import Taxonomy
from docsort.config import Settings
from docsort.errors import Conflict, InvalidInput
from store import crud
from store.db import session_scope
from store.models import FINAL, Document, Example, LocalModel, Status, utcnow

log = logging.getLogger("docsort.learning")
PEOPLE = ("gold", "review")


def learns(settings: Settings) -> bool:
    """Whether the cascade has a local tier, and so whether labels are worth keeping."""
    return any(tier.kind == "local" for tier in settings.models)


def check_label(taxonomy: Taxonomy, label: str | None, labels: list[str] | None, where: str) -> None:
    """InvalidInput unless the label (or labels) fit the taxonomy and its cardinality."""
    known = set(taxonomy.label_names)
    if taxonomy.multi_label:
        if label is not None or labels is None:
            raise InvalidInput(f"{where}: taxonomy {taxonomy.name} is multi-label; give `labels`")
        chosen = labels
    else:
        if labels is not None or label is None:
            raise InvalidInput(f"{where}: taxonomy {taxonomy.name} is single-label; give `label`")
        chosen = [label]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise InvalidInput(f"{where}: {unknown} not in taxonomy {taxonomy.name} ({sorted(known)})")


def add_examples(
    *, session: Session, taxonomy: Taxonomy, items: Sequence[dict[str, Any]], origin: str = "gold"
) -> int:
    """Store labelled texts ({"text", "label" | "labels"}) after checking every one; returns how many."""
    for index, item in enumerate(items):
        if not str(item.get("text") or "").strip():
            raise InvalidInput(f"examples[{index}].text is empty")
        check_label(taxonomy, item.get("label"), item.get("labels"), f"examples[{index}]")
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


def harvest(
    *, session: Session, settings: Settings, tier: str, decisions: Sequence[Decision], done: Sequence[int]
) -> int:
    """Keep the labels an LLM tier accepted (documents now done) as examples; returns how many."""
    this = settings.tier(tier)
    rule = settings.local.harvest
    if not learns(settings) or this.kind == "local" or rule == "none":
        return 0  # never learn from the local tier itself
    if rule == "last_tier" and settings.next_tier(tier) is not None:
        return 0
    finished = set(done)
    accepted = {d.doc_id: d for d in decisions if d.verdict == "accept" and d.doc_id in finished}
    if not accepted:
        return 0
    known = set(session.exec(select(Example.document_id).where(col(Example.document_id).in_(list(accepted)))))
    docs = session.exec(select(Document).where(col(Document.id).in_(list(accepted))))
    rows = [
        Example(
            taxonomy=doc.taxonomy,
            text=doc.text,
            label=accepted[doc.id].label,
            labels=accepted[doc.id].labels,
            origin=tier[:16],
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
    doc = crud.get_document(session=session, document_id=document_id)
    if doc.status not in {s.value for s in FINAL}:
        raise Conflict(f"document {document_id} is {doc.status}; review it once the cascade is done")
    row = crud.get_taxonomy(session=session, name=doc.taxonomy, version=doc.taxonomy_version)
    assert row is not None
    check_label(crud.to_runtime(row), label, labels, "review")
    doc.label, doc.labels = label, labels
    doc.status, doc.tier, doc.model, doc.confidence = Status.done, "review", "person", 1.0
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
            origin="review",
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


def versions(*, session: Session, taxonomy: str) -> list[LocalModel]:
    """Every trained version of a taxonomy's local model, newest first."""
    query = select(LocalModel).where(LocalModel.taxonomy == taxonomy)
    return list(session.exec(query.order_by(col(LocalModel.version).desc())))


def active_model(*, session: Session, taxonomy: Taxonomy) -> LocalModel | None:
    """The active version, if it knows only labels this taxonomy version has."""
    query = select(LocalModel).where(LocalModel.taxonomy == taxonomy.name, col(LocalModel.active))
    row = session.exec(query.order_by(col(LocalModel.version).desc()).limit(1)).first()
    if row is None or not set(row.metrics.get("classes", [])) <= set(taxonomy.label_names):
        return None
    return row


def retrain_due(*, session: Session, settings: Settings, taxonomy: str) -> bool:
    """Whether enough labels arrived since the last training (or, before any, enough in all)."""
    if not learns(settings):
        return False
    last = session.exec(
        select(LocalModel).where(LocalModel.taxonomy == taxonomy).order_by(col(LocalModel.version).desc())
    ).first()
    since = int(last.metrics.get("max_example_id", 0)) if last else 0
    new = session.exec(
        select(func.count()).where(Example.taxonomy == taxonomy, col(Example.id) > since)
    ).one()
    return int(new) >= (settings.local.retrain_every if last else settings.local.min_examples)


def model_path(settings: Settings, taxonomy: str, version: int) -> Path:
    """Where a version's file lives (the workers need data_dir shared with whoever trains)."""
    return settings.data_dir / "local_models" / f"{taxonomy}-v{version}.joblib"


def train_version(
    *, engine: Engine, settings: Settings, taxonomy: Taxonomy, params: TrainParams | None = None
) -> LocalModel:
    """Train a new version on the stored labels; it becomes active only if at least as good."""
    params = params or TrainParams.from_settings(settings.local)
    with session_scope(engine) as session:
        texts, labels, newest = training_set(
            session=session, taxonomy=taxonomy, limit=settings.local.max_examples
        )
        incumbent = active_model(session=session, taxonomy=taxonomy)
        version = 1 + max((r.version for r in versions(session=session, taxonomy=taxonomy.name)), default=0)
    base: dict[str, Any] = {"taxonomy_version": taxonomy.version, "max_example_id": newest}
    try:
        candidate = train(texts, labels, params)
    except NotEnoughLabels as exc:
        # Stored, so that the next try waits for retrain_every more labels instead of every batch.
        row = LocalModel(
            taxonomy=taxonomy.name,
            version=version,
            features="-",
            n_train=len(texts),
            score=0.0,
            threshold=1.0,
            active=False,
            path="",
            metrics={**base, "error": str(exc)},
        )
        return _store(engine, row)
    path = model_path(settings, taxonomy.name, version).resolve()
    candidate.save(path)
    metrics = {**base, **candidate.metrics}
    score = metrics["holdout_accuracy"]
    if score is None:  # no held-out slice (holdout_fraction 0 or very few labels): out-of-fold instead
        score = metrics["oof_accuracy"]
    replace, metrics["comparison"] = _at_least_as_good(candidate, incumbent, texts, labels, params)
    row = LocalModel(
        taxonomy=taxonomy.name,
        version=version,
        features=candidate.features.kind,
        n_train=metrics["n_train"],
        score=float(score),
        threshold=candidate.threshold,
        active=replace,
        path=str(path),
        metrics=metrics,
    )
    return _store(engine, row)


def _at_least_as_good(
    candidate: LocalClassifier,
    incumbent: LocalModel | None,
    texts: list[str],
    labels: list[Label],
    params: TrainParams,
) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate scores at least the incumbent's accuracy on labels neither trained on."""
    # The held-out slice is fixed by text hash, so the incumbent never saw any of it either.
    if incumbent is None:
        return True, {"against": None}
    latest = dict(zip(texts, labels, strict=True))
    held = [(t, y) for t, y in latest.items() if in_holdout(t, params.holdout_fraction)]
    if not held or incumbent.metrics.get("holdout_fraction") != params.holdout_fraction:
        # No common held-out slice to compare on: the newer labels win.
        return True, {"against": incumbent.version, "compared": False}
    try:
        old = LocalClassifier.load(Path(incumbent.path))
    except (OSError, ValueError, TypeError) as exc:
        log.warning("incumbent local model unreadable, replacing it: %s", exc)
        return True, {"against": incumbent.version, "compared": False}
    held_texts, held_labels = [t for t, _ in held], [y for _, y in held]
    new_score = candidate.accuracy(held_texts, held_labels)
    old_score = old.accuracy(held_texts, held_labels)
    verdict: dict[str, Any] = {"against": incumbent.version, "compared": True, "n": len(held)}
    verdict.update(candidate_accuracy=new_score, incumbent_accuracy=old_score)
    return new_score >= old_score, verdict


def _store(engine: Engine, row: LocalModel) -> LocalModel:
    with session_scope(engine) as session:
        if row.active:
            session.execute(
                update(LocalModel).where(col(LocalModel.taxonomy) == row.taxonomy).values(active=False)
            )
        session.add(row)
        session.flush()
        session.refresh(row)
    log.info(
        "local model %s v%d: %s, score %.3f, threshold %.3f, active %s",
        row.taxonomy,
        row.version,
        row.features,
        row.score,
        row.threshold,
        row.active,
    )
    return row
