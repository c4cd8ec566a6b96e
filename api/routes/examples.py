"""What the local tier learns from: gold examples, people's reviews, and its trained versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Celery
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import CeleryDep, IdPath, SessionDep, SettingsDep
from api.limits import check_json_values
from api.routes.documents import public_attempts, to_public
from api.routes.taxonomies import NamePath
from api.schemas import DocumentPublic, Problem, problem_responses
from core import messaging
from core.config import Settings
from core.errors import InvalidInput
from core.messaging import TaskName
from store import examples, local_models, reviews, taxonomies

router = APIRouter(tags=["learning"])
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The document is still in the cascade",
        "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
    }
}


class ExampleIn(BaseModel):
    """A text and its label (single-label taxonomies) or labels (multi-label)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1_000_000)
    label: str | None = Field(default=None, max_length=256)
    labels: list[str] | None = None


class ExamplesIn(BaseModel):
    """Gold labels to learn from."""

    model_config = ConfigDict(extra="forbid")

    examples: list[ExampleIn] = Field(min_length=1, max_length=10_000)


class ExamplesStored(BaseModel):
    """What a POST of examples stored, and whether it queued a retrain."""

    taxonomy: str
    stored: int
    retrain_queued: bool


class ReviewIn(BaseModel):
    """A person's label for a document."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=256)
    labels: list[str] | None = None


class LocalModelPublic(BaseModel):
    """One trained version of a taxonomy's local model and its held-out scores."""

    version: int
    features: str
    n_train: int
    score: float
    threshold: float
    active: bool
    metrics: dict[str, Any]
    created_at: datetime


def _retrain(session: Session, settings: Settings, celery: Celery, taxonomy: str) -> bool:
    """Queue a retrain of taxonomy's local model if enough labels came (and none is queued)."""
    due = settings.learns and local_models.retrain_due(
        session=session, local=settings.local, taxonomy=taxonomy
    )
    return due and messaging.send_once(celery, settings, TaskName.retrain, [taxonomy])


def _check_texts(texts: list[str]) -> None:
    for index, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"examples[{index}].text is empty or only whitespace")
        if "\x00" in text:
            raise InvalidInput(f"examples[{index}].text contains NUL characters")


@router.post(
    "/v1/taxonomies/{name}/examples",
    status_code=201,
    response_model=ExamplesStored,
    responses=problem_responses(404, 413),
)
def post_examples(
    name: NamePath,
    body: ExamplesIn,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> ExamplesStored:
    """Store gold labels for a taxonomy's current version; a retrain is queued once enough have come."""
    items = [e.model_dump() for e in body.examples]
    check_json_values(items, where="examples")
    _check_texts([e.text for e in body.examples])
    row = taxonomies.require(session=session, name=name)
    stored = examples.add_examples(session=session, taxonomy=taxonomies.to_runtime(row), items=items)
    session.commit()  # the retrain task reads them from another connection
    return ExamplesStored(
        taxonomy=name, stored=stored, retrain_queued=_retrain(session, settings, celery, name)
    )


@router.get(
    "/v1/taxonomies/{name}/local-models",
    response_model=list[LocalModelPublic],
    responses=problem_responses(404),
)
def get_local_models(name: NamePath, session: SessionDep) -> list[LocalModelPublic]:
    """Every trained version of the taxonomy's local model, newest first; one at most is active."""
    taxonomies.require(session=session, name=name)
    return [
        LocalModelPublic.model_validate(row, from_attributes=True)
        for row in local_models.versions(session=session, taxonomy=name)
    ]


@router.post(
    "/v1/documents/{document_id}/review",
    response_model=DocumentPublic,
    responses={**problem_responses(404), **CONFLICT},
)
def review_document(
    document_id: IdPath,
    body: ReviewIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> DocumentPublic:
    """A person's label for a finished document: it becomes the answer, and a label to learn from."""
    check_json_values(body.model_dump(), where="review")
    key = getattr(request.state, "api_key_id", None)
    doc = reviews.review(
        session=session,
        document_id=document_id,
        label=body.label,
        labels=body.labels,
        by=f"key {key}" if key else "api",
    )
    session.commit()
    _retrain(session, settings, celery, doc.taxonomy)
    return to_public(doc, public_attempts(session, document_id), text=True)


@router.post(
    "/v1/documents/{document_id}/review/undo",
    response_model=DocumentPublic,
    responses=problem_responses(404),
)
def undo_review(document_id: IdPath, session: SessionDep) -> DocumentPublic:
    """Undo the document's newest review (or bulk accept): its status, label and the local tier's examples
    are as they were before it; 404 if there is none to undo."""
    doc = reviews.undo(session=session, document_id=document_id)
    session.commit()
    return to_public(doc, public_attempts(session, document_id), text=True)
