"""What a tier's pass produces (decisions, attempts) and the books it writes its requests in (Ledger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from classifiers.costs import Usage
from classifiers.packing import DocIn
from classifiers.providers import Completion
from core.errors import ModelError
from core.vocab import Outcome


@dataclass
class AttemptRecord:
    """One document's share of one request: what it answered and what it cost."""

    doc_id: int
    tier: str
    model: str
    request_id: str
    usage: Usage
    cost_nanousd: int
    reference_nanousd: int
    latency_ms: int
    outcome: Outcome = Outcome.invalid
    label: str | None = None
    labels: list[str] | None = None
    confidence: float | None = None
    raw_confidence: float | None = None
    confidence_method: str | None = None
    error: str | None = None
    written: bool = False  # already in the books (written with its request's answer)
    purpose: str = "classify"  # classify, or audit (an answer checking another tier's)
    batched: bool = False  # answered through the Batch API, at its prices


@dataclass
class Decision:
    """A tier's outcome for one document (accepted, escalated, review or held), with its attempts."""

    doc_id: int
    outcome: Outcome
    label: str | None = None
    labels: list[str] | None = None
    confidence: float | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    reason: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the decision carries a label (or a label set, possibly empty)."""
        return self.label is not None or self.labels is not None


@dataclass(frozen=True)
class PlannedRequest:
    """A model request about to be sent, and what it may cost."""

    id: str  # docsort's id of the request, sent as X-Client-Request-Id: the provider's logs show it
    tier: str
    model: str
    purpose: str  # classify | reask
    doc_ids: tuple[int, ...]
    input_tokens: int
    max_output_tokens: int
    estimate_nanousd: int
    reserve_nanousd: int


class Ledger(Protocol):
    """Where a runner writes down its requests."""

    def before(self, request: PlannedRequest) -> None:
        """Write the request down before it is sent; SpendCapReached if a cap leaves no room for it."""
        ...

    def answered(
        self,
        request: PlannedRequest,
        completion: Completion,
        cost_nanousd: int,
        attempts: list[AttemptRecord],
    ) -> None:
        """The request's answer arrived: its usage, cost and each document's attempt, recorded now (or
        with the task's next write, where the ledger defers answers)."""
        ...

    def failed(self, request: PlannedRequest, error: ModelError) -> None:
        """No usable answer: an error answer (not billed), or none at all (error.unanswered: estimated)."""
        ...


class Runner(Protocol):
    """A tier as the worker uses it: documents in, one decision each out, none dropped."""

    def run(self, docs: list[DocIn], ledger: Ledger | None = None, alone: bool = False) -> list[Decision]:
        """Decide each of docs (alone: each in a request of its own, as a re-ask is)."""
        ...


def unsure(is_last: bool) -> Outcome:
    """What a tier does with a document it cannot answer confidently: hand it on, or to a person."""
    return Outcome.review if is_last else Outcome.escalated


def reused(attempt: AttemptRecord) -> Decision:
    """The decision an answered attempt already made (a redelivered task does not pay for it again)."""
    return Decision(
        doc_id=attempt.doc_id,
        outcome=attempt.outcome,
        label=attempt.label,
        labels=attempt.labels,
        confidence=attempt.confidence,
        attempts=[attempt],
    )
