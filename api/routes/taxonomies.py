"""Named, versioned taxonomies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.deps import SessionDep
from api.limits import check_json_values
from api.schemas import problem_responses
from core.errors import InvalidInput
from core.taxonomy_spec import LabelSpec, TaxonomySpec
from store import taxonomies
from store.models import Taxonomy

router = APIRouter(prefix="/v1/taxonomies", tags=["taxonomies"])
NamePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]  # as TaxonomySpec.name


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
    labels: list[LabelSpec] = Field(min_length=2)
    multi_label: bool = False
    none_label: str | None = None


@router.put("/{name}", response_model=TaxonomyPublic, responses=problem_responses(413))
def put_taxonomy(name: NamePath, body: TaxonomyIn, session: SessionDep) -> TaxonomyPublic:
    """Create a new version of a taxonomy (an identical one keeps its version)."""
    check_json_values(body.model_dump(), where="taxonomy")
    try:
        spec = TaxonomySpec(name=name, **body.model_dump())
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return _public(taxonomies.put_taxonomy(session=session, spec=spec))


@router.get("/{name}", response_model=TaxonomyPublic, responses=problem_responses(404))
def get_taxonomy(name: NamePath, session: SessionDep) -> TaxonomyPublic:
    """The current version of a taxonomy."""
    row = taxonomies.get_taxonomy(session=session, name=name)
    assert row is not None
    return _public(row)
