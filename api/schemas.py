"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.vocab import Status
from store.models import AttemptPublic, DocumentCreate


class DocumentsIn(BaseModel):
    """Several documents in one request."""

    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentCreate] = Field(min_length=1)
    taxonomy: str | None = None


class Accepted(BaseModel):
    """One stored document: its id, and whether it was new or a duplicate of a stored one."""

    id: int
    status: Status
    duplicate: bool
    external_id: str | None = None


class AcceptedList(BaseModel):
    """What a POST stored."""

    data: list[Accepted]
    count: int
    queued: bool = Field(description="False if the queue was unreachable; the reconciler retries")


class DocumentPublic(BaseModel):
    """A document with its decision and every attempt."""

    id: int
    external_id: str | None
    taxonomy: str
    taxonomy_version: int
    status: Status
    status_reason: str | None
    stage: str = Field(description="The tier the document waits for or is being classified by")
    label: str | None
    labels: list[str] | None
    confidence: float | None
    tier: str | None = Field(description="The tier whose answer is the label (`review`: a person)")
    model: str | None
    metadata: dict[str, Any]
    source: dict[str, Any] | None
    cost_usd: float = Field(description="What classifying it cost (an audit's cost is apart: its attempts)")
    created_at: datetime
    updated_at: datetime
    text: str | None = Field(None, description="The document's text (in GET /v1/documents/{id} only)")
    attempts: list[AttemptPublic] = Field(default_factory=list)


class DocumentsPublic(BaseModel):
    """A page of documents and the cursor for the next one."""

    data: list[DocumentPublic]
    count: int
    next_cursor: int | None


class TierCost(BaseModel):
    """Spending of one tier and model."""

    tier: str
    model: str
    attempts: int
    documents: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: float


class Requests(BaseModel):
    """Model requests by what came of them."""

    answered: int = Field(description="Answers recorded: usage and cost as the provider reported them")
    failed: int = Field(description="Error answers (429, 5xx, 4xx): providers do not bill them")
    in_flight: int = Field(description="Sent, no answer yet")


class Unanswered(BaseModel):
    """Requests that may have been billed though no usable answer reached docsort."""

    requests: int = Field(description="Time-outs, dropped connections, unreadable bodies, killed workers")
    cost_usd: float = Field(description="Their estimated cost: input tokens and a typical answer")
    estimated: bool = Field(True, description="Always true: the provider's usage for them is unknown")


class Spend(BaseModel):
    """Today's (UTC) spend against the daily caps, with what requests in flight have reserved."""

    day: str
    spent_usd: float
    reserved_usd: float
    daily_cap_usd: float | None
    per_taxonomy: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="Per capped taxonomy: spent_usd, reserved_usd, cap_usd"
    )


class AuditCost(BaseModel):
    """What auditing lower tiers' answers cost (not counted in cost_usd)."""

    attempts: int
    documents: int
    cost_usd: float
    by_tier: list[TierCost]


class BatchSpend(BaseModel):
    """Spend through Batch APIs (part of cost_usd), and what the same answers cost synchronously."""

    attempts: int
    cost_usd: float
    at_sync_prices_usd: float
    saving_usd: float


class CostReport(BaseModel):
    """What the cascade spent, and what sending everything to the last tier would have."""

    documents: int
    cost_usd: float = Field(description="Recorded spend: the answered requests' cost")
    cost_per_1k_docs: float
    cost_if_all_large_usd: float
    saving_usd: float
    saving_pct: float
    by_tier: list[TierCost]
    requests: Requests
    unanswered_requests: Unanswered
    spend: Spend
    audits: AuditCost = Field(description="Audit spend, apart from the rest: the price of knowing")
    batch_api: BatchSpend


class Problem(BaseModel):
    """An RFC 9457 problem: every error has this body."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    limit: int | None = Field(None, description="413: the limit the request went over")
    errors: list[dict[str, Any]] | None = Field(None, description="422: each invalid field")


PROBLEM_TEXT = {
    401: "No valid API key (`Authorization: Bearer <key>`)",
    403: "Not allowed by this deployment's settings",
    404: "No such resource",
    413: "Over a size or count limit; `limit` says which",
    415: "Unsupported content type",
    422: "Invalid input; `detail` names the field",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring each status as an application/problem+json Problem."""
    schema = Problem.model_json_schema()
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": PROBLEM_TEXT[status],
            "content": {"application/problem+json": {"schema": schema}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 503:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "required": True}}
        out[status] = response
    return out
