"""SQLModel families per entity: Base (shared fields), table, Create (input), Public (output)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from core.vocab import ImportStatus, Origin, Outcome, RequestState, Status


def utcnow() -> datetime:
    """Timezone-aware now, stored as UTC."""
    return datetime.now(UTC)


NANO = 1_000_000_000  # costs are kept in integer nano-USD so that sums are exact


def enum_column(kind: type[StrEnum], *, index: bool = False) -> Column[Any]:
    """A column of a string enum: VARCHAR holding the values, checked by SQLAlchemy, no DB enum type."""
    return Column(
        SAEnum(kind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        nullable=False,
        index=index,
    )


# Taxonomy: a named, versioned label set.
class TaxonomyBase(SQLModel):
    name: str = Field(index=True, max_length=64)
    description: str = ""
    multi_label: bool = False
    none_label: str | None = None


class Taxonomy(TaxonomyBase, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    version: int = 1
    labels: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


# Document: one piece of text to classify, stored before it is queued.
class DocumentBase(SQLModel):
    external_id: str | None = Field(default=None, max_length=256)
    taxonomy: str = Field(max_length=64)


class Document(DocumentBase, table=True):
    __table_args__ = (
        UniqueConstraint("taxonomy", "content_hash", name="uq_document_taxonomy_hash"),
        Index("ix_document_status_tier", "status", "current_tier"),
    )
    id: int | None = Field(default=None, primary_key=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(max_length=64)
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON))
    source: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    import_id: int | None = Field(default=None, foreign_key="importjob.id", index=True)
    taxonomy_version: int = 1
    status: Status = Field(default=Status.queued, sa_column=enum_column(Status))
    status_reason: str | None = None
    # Where the document is (the tier it waits for or is being classified by), and, once it has a
    # label, which tier gave it (or "review" for a person): two different things.
    current_tier: str = Field(max_length=32)
    label: str | None = Field(default=None, index=True)
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    confidence: float | None = None
    answered_by: str | None = None
    model: str | None = None
    claim_token: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class DocumentCreate(BaseModel):
    """What a caller submits; not an SQLModel, whose class owns the name `metadata`."""

    model_config = ConfigDict(extra="forbid")

    text: str
    external_id: str | None = PydField(default=None, max_length=256)
    metadata: dict[str, Any] = PydField(default_factory=dict)
    taxonomy: str | None = None


# Attempt: one tier's answer for one document, with its share of the request's cost.
class AttemptBase(SQLModel):
    tier: str
    model: str
    request_id: str = Field(max_length=64)
    label: str | None = None
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    confidence: float | None = None
    raw_confidence: float | None = None
    confidence_method: str | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    outcome: Outcome = Field(sa_column=enum_column(Outcome))
    error: str | None = None


class Attempt(AttemptBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    cost_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # The same tokens priced at the last (largest) tier: the baseline of the saving report.
    reference_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AttemptPublic(AttemptBase):
    cost_usd: float
    created_at: datetime


# ModelRequest: one request to a model, written down before it is sent (classifiers/ledger.py).
class ModelRequest(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32, description="Sent as X-Client-Request-Id")
    tier: str = Field(max_length=32)
    model: str
    taxonomy: str = Field(max_length=64)
    purpose: str = Field(max_length=16, description="classify | reask")
    doc_ids: list[int] = Field(sa_column=Column(JSON, nullable=False))
    claim_token: str | None = Field(default=None, max_length=64)
    state: RequestState = Field(sa_column=enum_column(RequestState, index=True))
    estimate_nanousd: int = Field(sa_column=Column(BigInteger, nullable=False))
    reserve_nanousd: int = Field(sa_column=Column(BigInteger, nullable=False))
    reserved_day: date | None = Field(default=None, description="UTC day a cap reservation is held on")
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    # Actual cost once answered; the estimate once unanswered (it may have been billed); 0 if failed.
    cost_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    provider_request_id: str | None = Field(default=None, max_length=128)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)
    settled_at: datetime | None = None


# SpendDay: what a UTC day has spent and reserved, for all taxonomies ("*") or one; caps check it.
class SpendDay(SQLModel, table=True):
    day: date = Field(primary_key=True)
    scope: str = Field(primary_key=True, max_length=64)
    spent_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    reserved_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


# ImportJob: one bulk import of an S3 prefix.
class ImportJob(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    source: str
    endpoint_url: str | None = None
    taxonomy: str
    mode: str = "document_per_file"
    status: ImportStatus = Field(default=ImportStatus.listing, sa_column=enum_column(ImportStatus))
    continuation_token: str | None = Field(default=None, sa_column=Column(Text))
    listed: int = 0
    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# ImportItem: a document an import listed, whether that import stored it or found it already stored.
class ImportItem(SQLModel, table=True):
    import_id: int = Field(foreign_key="importjob.id", primary_key=True)
    document_id: int = Field(foreign_key="document.id", primary_key=True, index=True)


class ImportSkip(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    import_id: int = Field(foreign_key="importjob.id", index=True)
    key: str
    reason: str


# Example: a trusted label (gold, reviewed, or an LLM tier's accepted answer) to learn from.
class Example(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    taxonomy: str = Field(index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    label: str | None = None
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    origin: str = Field(max_length=16, description=f"{' | '.join(Origin)} | the LLM tier's name")
    document_id: int | None = Field(default=None, foreign_key="document.id")
    created_at: datetime = Field(default_factory=utcnow)


# Calibration: a fitted confidence map and threshold per taxonomy and tier.
class Calibration(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    taxonomy: str = Field(index=True)
    tier: str
    model: str
    method: str
    params: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    threshold: float
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


# LocalModel: a trained local classifier version with its held-out scores.
class LocalModel(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    taxonomy: str = Field(index=True)
    version: int
    features: str
    n_train: int
    score: float
    threshold: float
    active: bool = False
    path: str
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


# ApiKey: only a hash is stored; the key is shown once.
class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=128, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
