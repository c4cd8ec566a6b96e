"""Trained versions of a taxonomy's local model (LocalModel rows); at most one is active."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from classifiers.taxonomy import Taxonomy
from core.config import LocalSettings
from store import examples
from store.models import LocalModel


def versions(*, session: Session, taxonomy: str) -> list[LocalModel]:
    """Every trained version of a taxonomy's local model, newest first."""
    query = select(LocalModel).where(LocalModel.taxonomy == taxonomy)
    return list(session.exec(query.order_by(col(LocalModel.version).desc())))


def latest(*, session: Session, taxonomy: str) -> LocalModel | None:
    """The newest version, active or not (a failed training is stored too)."""
    query = select(LocalModel).where(LocalModel.taxonomy == taxonomy)
    return session.exec(query.order_by(col(LocalModel.version).desc()).limit(1)).first()


def active_model(*, session: Session, taxonomy: Taxonomy) -> LocalModel | None:
    """The active version, if it knows only labels this taxonomy version has."""
    query = select(LocalModel).where(LocalModel.taxonomy == taxonomy.name, col(LocalModel.active))
    row = session.exec(query.order_by(col(LocalModel.version).desc()).limit(1)).first()
    if row is None or not set(row.metrics.get("classes", [])) <= set(taxonomy.label_names):
        return None
    return row


def add_version(*, session: Session, row: LocalModel) -> LocalModel:
    """Store a trained version; an active one deactivates the others."""
    if row.active:
        session.execute(
            update(LocalModel).where(col(LocalModel.taxonomy) == row.taxonomy).values(active=False)
        )
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def deactivate(*, session: Session, row: LocalModel) -> None:
    """Set a version aside: it answers no more (a drift guard's decision)."""
    session.execute(update(LocalModel).where(col(LocalModel.id) == row.id).values(active=False))


def reactivate(*, session: Session, model_id: int) -> LocalModel | None:
    """Make a set-aside version active again, unless a newer version is active by now; the row or None."""
    row = session.get(LocalModel, model_id)
    if row is None:
        return None
    newer = session.exec(
        select(LocalModel).where(
            col(LocalModel.taxonomy) == row.taxonomy,
            col(LocalModel.active),
            col(LocalModel.version) > row.version,
        )
    ).first()
    if newer is not None:
        return None
    session.execute(update(LocalModel).where(col(LocalModel.taxonomy) == row.taxonomy).values(active=False))
    session.execute(update(LocalModel).where(col(LocalModel.id) == model_id).values(active=True))
    return row


def retrain_due(*, session: Session, local: LocalSettings, taxonomy: str) -> bool:
    """Whether enough labels arrived since the last training (or, before any, enough in all)."""
    last = latest(session=session, taxonomy=taxonomy)
    since = int(last.metrics.get("max_example_id", 0)) if last else 0
    new = examples.count_after(session=session, taxonomy=taxonomy, after_id=since)
    return new >= (local.retrain_every if last else local.min_examples)
