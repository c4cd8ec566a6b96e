"""Taxonomies: named, versioned label sets; a stored version never changes."""

from __future__ import annotations

from sqlmodel import Session, col, select

from classifiers.taxonomy import Taxonomy as TaxonomyModel
from core.errors import NotFound
from core.taxonomy_spec import TaxonomySpec
from store.models import Taxonomy


def put_taxonomy(*, session: Session, spec: TaxonomySpec) -> Taxonomy:
    """Store spec as a new version of its name, unless it equals the current version."""
    current = get_taxonomy(session=session, name=spec.name, missing_ok=True)
    labels = [label.model_dump() for label in spec.labels]
    if current is not None and (
        current.labels == labels
        and current.multi_label == spec.multi_label
        and current.none_label == spec.none_label
        and current.description == spec.description
    ):
        return current
    row = Taxonomy(
        name=spec.name,
        description=spec.description,
        multi_label=spec.multi_label,
        none_label=spec.none_label,
        labels=labels,
        version=(current.version + 1) if current else 1,
    )
    session.add(row)
    session.flush()
    return row


def get_taxonomy(
    *, session: Session, name: str, version: int | None = None, missing_ok: bool = False
) -> Taxonomy | None:
    """The given (or newest) version of a taxonomy; NotFound unless missing_ok."""
    query = select(Taxonomy).where(Taxonomy.name == name)
    query = query.where(Taxonomy.version == version) if version else query
    row = session.exec(query.order_by(col(Taxonomy.version).desc()).limit(1)).first()
    if row is None and not missing_ok:
        raise NotFound(f"taxonomy {name!r} does not exist")
    return row


def require(*, session: Session, name: str, version: int | None = None) -> Taxonomy:
    """The given (or newest) version of a taxonomy, or NotFound."""
    row = get_taxonomy(session=session, name=name, version=version)
    assert row is not None  # get_taxonomy raised otherwise
    return row


def to_runtime(row: Taxonomy) -> TaxonomyModel:
    """A stored taxonomy as the classifiers use it."""
    return TaxonomyModel(
        name=row.name,
        description=row.description,
        multi_label=row.multi_label,
        none_label=row.none_label,
        labels=row.labels,
        version=row.version,
    )


def names(*, session: Session) -> list[str]:
    """Every taxonomy's name, sorted."""
    return sorted({n for n in session.exec(select(Taxonomy.name))})
