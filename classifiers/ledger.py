"""The books a runner keeps: every request is written down before it is sent, and what came of it after.

The runner calls a Ledger around each model request; the workers keep it in the database
(worker/books.py), so that an answer that was paid for is recorded the moment it arrives, whatever
happens to the task afterwards, and a request whose answer never came (a time-out, a killed worker) is
still counted, at an estimate. `docsort eval` and the benches use MemoryLedger.

A request is planned with two prices: `estimate` (its input and a typical answer: what an unanswered
request is counted at) and `reserve` (its input and the longest answer it may get: what a spending cap
reserves before it is sent, so that concurrent workers cannot spend past the cap).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from classifiers.costs import Usage, cost_nanousd
from classifiers.decision import AttemptRecord, PlannedRequest
from classifiers.providers import Completion
from core.errors import ModelError
from core.tiers import ModelTier

ANSWER_TOKENS = 16  # a typical answer for one document: {"ref": n, "label": "..."}
INPUT_MARGIN = 1.2  # the tier's tokenizer may count fewer tokens than the provider bills


def plan(
    tier: ModelTier, *, purpose: str, doc_ids: list[int], input_tokens: int, max_output_tokens: int
) -> PlannedRequest:
    """A request of tier for doc_ids, priced at its estimate and its reservation."""
    estimate = Usage(input_tokens=input_tokens, output_tokens=ANSWER_TOKENS * len(doc_ids))
    most = Usage(input_tokens=int(input_tokens * INPUT_MARGIN) + 64, output_tokens=max_output_tokens)
    return PlannedRequest(
        id=uuid.uuid4().hex,
        tier=tier.name,
        model=tier.model,
        purpose=purpose,
        doc_ids=tuple(doc_ids),
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        estimate_nanousd=cost_nanousd(estimate, tier.price),
        reserve_nanousd=cost_nanousd(most, tier.price),
    )


@dataclass
class MemoryLedger:
    """A ledger in memory, without caps: for `docsort eval`, the benches and tests."""

    planned: list[PlannedRequest] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)  # request id -> cost
    failures: dict[str, ModelError] = field(default_factory=dict)

    def before(self, request: PlannedRequest) -> None:
        self.planned.append(request)

    def answered(
        self,
        request: PlannedRequest,
        completion: Completion,
        cost_nanousd: int,
        attempts: list[AttemptRecord],
    ) -> None:
        self.answers[request.id] = cost_nanousd

    def failed(self, request: PlannedRequest, error: ModelError) -> None:
        self.failures[request.id] = error

    @property
    def unanswered(self) -> list[PlannedRequest]:
        """Requests that may have been billed but brought no usable answer."""
        return [r for r in self.planned if r.id in self.failures and self.failures[r.id].unanswered]
