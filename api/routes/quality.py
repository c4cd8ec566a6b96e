"""Live quality: audited agreement per tier, the cascade's estimated accuracy, the drift guard's changes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import IdPath, SessionDep, SettingsDep
from api.schemas import Problem, problem_responses
from store import audits, local_models, quality, taxonomies

router = APIRouter(prefix="/v1/quality", tags=["quality"])
TaxonomyQuery = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Default: settings")
]


class TierQuality(BaseModel):
    """One tier: what it answered, how its audits went, what its target implies, whether it is trusted."""

    model_config = ConfigDict(extra="allow")

    tier: str
    answered: int
    share: float
    target: float = Field(description="The accuracy its accepted answers promise")
    audits: int | None = Field(description="Audits settled (None for the auditor itself)")
    agreement: float | None
    interval_90: list[float] | None = Field(description="90% Wilson interval of the agreement")
    implied_agreement: float | None = Field(description="The agreement its target implies with the auditor")
    trust: str = Field(description="trusted | set_aside_local | raise_threshold | escalate_all")


class TrustChangePublic(BaseModel):
    """A change the drift guard made: what, why, on what evidence; in force until a person undoes it."""

    id: int
    tier: str
    action: str
    threshold: float | None
    local_model_id: int | None
    reason: str
    evidence: dict[str, Any]
    created_at: datetime
    undone_at: datetime | None
    undone_by: str | None
    in_force: bool


class QualityReport(BaseModel):
    """How good each tier's answers are, measured by audits, and what the guard did about it."""

    taxonomy: str
    since: datetime | None
    auditor: str = Field(description="The last tier's name, or review (a person)")
    audit_rate: float
    documents: int
    needs_review: int
    tiers: list[TierQuality]
    estimated_accuracy: float | None = Field(
        description="Each tier's share times its agreement, the auditor at its accuracy (see note)"
    )
    note: str
    changes: list[TrustChangePublic]


class UndoIn(BaseModel):
    """Who undoes a change (shown with it)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field("api", min_length=1, max_length=64)


@router.get("", response_model=QualityReport, responses=problem_responses(404))
def get_quality(
    session: SessionDep,
    settings: SettingsDep,
    taxonomy: TaxonomyQuery = None,
    since: Annotated[datetime | None, Query(description="Only documents and audits since (ISO 8601)")] = None,
) -> QualityReport:
    """Per tier: documents answered, audits, agreement with the auditor and its 90% interval, the target
    and the agreement it implies; the cascade's estimated accuracy; the drift guard's changes."""
    name = taxonomy or settings.default_taxonomy.name
    return QualityReport.model_validate(
        quality.report(session=session, settings=settings, taxonomy=name, since=since)
    )


@router.post(
    "/changes/{change_id}/undo",
    response_model=TrustChangePublic,
    responses={
        **problem_responses(404),
        409: {
            "description": "Undone already",
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        },
    },
)
def undo_change(
    change_id: IdPath, session: SessionDep, request: Request, body: UndoIn | None = None
) -> TrustChangePublic:
    """Undo a drift guard's change: the tier is trusted again (a set-aside local model answers again,
    unless a newer version replaced it); the guard then counts audits afresh."""
    who = (body or UndoIn()).by
    key = getattr(request.state, "api_key_id", None)
    change = audits.undo(session=session, change_id=change_id, by=f"key {key}: {who}" if key else who)
    if change.action == "set_aside_local" and change.local_model_id is not None:
        local_models.reactivate(session=session, model_id=change.local_model_id)
    taxonomies.require(session=session, name=change.taxonomy)
    return TrustChangePublic.model_validate(quality.change_public(change))
