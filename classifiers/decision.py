"""What a tier's pass produces, shared by the runners, the store and the worker: decisions and attempts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from classifiers.costs import Usage
from classifiers.packing import DocIn
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


class Runner(Protocol):
    """A tier as the worker uses it: documents in, one decision each out, none dropped."""

    def run(self, docs: list[DocIn]) -> list[Decision]: ...


def unsure(is_last: bool) -> Outcome:
    """What a tier does with a document it cannot answer confidently: hand it on, or to a person."""
    return Outcome.review if is_last else Outcome.escalated
