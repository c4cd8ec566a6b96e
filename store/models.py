"""SQLModel families per entity: Base (shared fields), table, Create (input), Public (output)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from core.vocab import AuditStatus, ImportStatus, Origin, Outcome, RequestState, Status


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
        # Documents waiting for a dispatch (no token yet), by tier, oldest first: the dispatcher reads
        # these alone instead of every waiting document (handed out ones included) sorted by id.
        Index(
            "ix_document_undispatched",
            "current_tier",
            "status",
            "id",
            sqlite_where=text("claim_token IS NULL"),
            postgresql_where=text("claim_token IS NULL"),
        ),
        # The console: counts by status and tier per taxonomy, and review queues (oldest, least sure first).
        Index("ix_document_taxonomy_status_tier", "taxonomy", "status", "answered_by"),
        Index("ix_document_status_taxonomy_id", "status", "taxonomy", "id"),
        Index("ix_document_status_confidence", "status", "confidence", "id"),
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
    batch: bool = Field(default=False, description="May go through a Batch API (an import that asked)")
    shard_id: int | None = Field(default=None, index=True, description="The Batch API shard it waits in")
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
    purpose: str = Field(default="classify", max_length=16, description="classify | audit")
    batched: bool = Field(default=False, description="Answered through a Batch API, at its prices")


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
    batched: bool = False
    created_at: datetime = Field(default_factory=utcnow, index=True)
    settled_at: datetime | None = None


# BatchShard: documents sent to a provider's Batch API as one file of requests (worker/batches.py).
class BatchShard(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=32, unique=True, description="Sent as the batch's metadata docsort_shard")
    tier: str = Field(max_length=32)
    taxonomy: str = Field(max_length=64)
    taxonomy_version: int = 1
    import_id: int | None = Field(default=None, foreign_key="importjob.id", index=True)
    status: str = Field(max_length=16, index=True, description="created | uploaded | submitted | ingested")
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))  # [{"id", "doc_ids"}]
    requests: int = 0
    input_tokens: int = 0
    bytes: int = 0
    retry: int = Field(default=0, description="0: first submission; n: lines resubmitted alone, n-th time")
    file_id: str | None = Field(default=None, max_length=128)
    batch_id: str | None = Field(default=None, max_length=128)
    provider_status: str | None = Field(default=None, max_length=32)
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    expires_at: datetime | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    submitted_at: datetime | None = None
    finished_at: datetime | None = None


# Audit: an accepted answer of a tier other than the last, checked by the last tier or a person.
class Audit(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", unique=True)
    taxonomy: str = Field(max_length=64, index=True)
    tier: str = Field(max_length=32, description="The tier whose answer is audited")
    label: str | None = None
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    confidence: float | None = None
    auditor: str = Field(max_length=32, description="The last tier's name, or review (a person)")
    audit_label: str | None = None
    audit_labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    agree: bool | None = None
    status: AuditStatus = Field(sa_column=enum_column(AuditStatus, index=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    settled_at: datetime | None = None
    resolved_at: datetime | None = Field(default=None, description="A person judged the disagreement")


# Review: a person's decision on a document, with what it replaced, so that it can be undone.
class Review(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    label: str | None = None
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    origin: str = Field(max_length=16, description="review (a person's label) | bulk_accept")
    by: str | None = Field(default=None, max_length=64)
    before: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    examples_before: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    undone_at: datetime | None = None


# StatusCount: documents by taxonomy, status and answering tier, as of the last roll-up (the dashboard's
# table: counting a million rows on every page view took 150-300 ms).
class StatusCount(SQLModel, table=True):
    taxonomy: str = Field(primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=16)
    answered_by: str = Field(primary_key=True, max_length=32, description='"-" when none')
    n: int = 0
    as_of: datetime = Field(default_factory=utcnow)


# DailyCost: a UTC day's documents and spend per taxonomy (the dashboard's sums over time).
class DailyCost(SQLModel, table=True):
    day: date = Field(primary_key=True)
    taxonomy: str = Field(primary_key=True, max_length=64)
    documents: int = 0  # documents first attempted that day
    cost_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    baseline_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    audit_nanousd: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


# TrustChange: the drift guard stopped trusting a tier for a taxonomy (until a person undoes it).
class TrustChange(SQLModel, table=True):
    # At most one change in force per taxonomy and tier: concurrent guards cannot both act.
    __table_args__ = (
        Index(
            "uq_trustchange_in_force",
            "taxonomy",
            "tier",
            unique=True,
            sqlite_where=text("undone_at IS NULL"),
            postgresql_where=text("undone_at IS NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    taxonomy: str = Field(max_length=64, index=True)
    tier: str = Field(max_length=32)
    action: str = Field(max_length=32, description="set_aside_local | raise_threshold | escalate_all")
    threshold: float | None = Field(default=None, description="The threshold in force while it holds")
    local_model_id: int | None = Field(default=None, description="The local model version set aside")
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    undone_at: datetime | None = None
    undone_by: str | None = Field(default=None, max_length=64)


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
    batch: bool = Field(default=False, description="Its documents may go through a Batch API")
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


# TextEmbedding: a text's sentence embedding under one embedder (by text hash), so none is computed twice.
class TextEmbedding(SQLModel, table=True):
    embedder: str = Field(primary_key=True, max_length=64)
    text_hash: str = Field(primary_key=True, max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


# ApiKey: only a hash is stored; the key is shown once.
class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=128, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
