"""Named, versioned taxonomies."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import SessionDep
from docsort.config import LabelSpec, TaxonomySpec
from docsort.errors import InvalidInput
from store import crud
from store.models import Taxonomy

router = APIRouter(prefix="/v1/taxonomies", tags=["taxonomies"])


class TaxonomyPublic(TaxonomySpec):
    """A stored taxonomy version."""

    version: int
    created_at: datetime


def _public(row: Taxonomy) -> TaxonomyPublic:
    return TaxonomyPublic(
        name=row.name,
        description=row.description,
        labels=[LabelSpec(**label) for label in row.labels],
        multi_label=row.multi_label,
        none_label=row.none_label,
        version=row.version,
        created_at=row.created_at,
    )


class TaxonomyIn(BaseModel):
    """A taxonomy's content; the name comes from the path."""

    description: str = ""
    labels: list[LabelSpec]
    multi_label: bool = False
    none_label: str | None = None


@router.put("/{name}", response_model=TaxonomyPublic, responses={422: {"description": "Invalid"}})
def put_taxonomy(name: str, body: TaxonomyIn, session: SessionDep) -> TaxonomyPublic:
    """Create a new version of a taxonomy (an identical one keeps its version)."""
    try:
        spec = TaxonomySpec(name=name, **body.model_dump())
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return _public(crud.put_taxonomy(session=session, spec=spec))


@router.get("/{name}", response_model=TaxonomyPublic, responses={404: {"description": "Unknown"}})
def get_taxonomy(name: str, session: SessionDep) -> TaxonomyPublic:
    """The current version of a taxonomy."""
    row = crud.get_taxonomy(session=session, name=name)
    assert row is not None
    return _public(row)
