"""The ChatModel protocol: one schema-forced request to an endpoint, and its raw answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from classifiers.confidence import TokenLogprob
from classifiers.costs import Usage
from core.tiers import ModelTier


@dataclass(frozen=True)
class Completion:
    """A model's raw answer: the JSON text, its token logprobs if any, and what it used."""

    text: str
    logprobs: list[TokenLogprob] | None
    usage: Usage
    latency_ms: int
    request_id: str
    model: str


class ChatModel(Protocol):
    """An endpoint that answers one schema-forced request."""

    tier: ModelTier

    @property
    def gives_logprobs(self) -> bool:
        """Whether answers carry logprobs for the label tokens with this tier's transport."""
        ...

    def complete(
        self,
        *,
        system: str,
        user: str,
        answer_model: type[BaseModel],
        max_tokens: int,
        labels: list[str] | None = None,
        request_id: str = "",
    ) -> Completion:
        """Ask once (labels bind a label_only answer; request_id goes as X-Client-Request-Id).

        Raises ModelError subclasses, with `unanswered` set where the request may have been billed.
        """
        ...

    def request_body(
        self,
        *,
        system: str,
        user: str,
        answer_model: type[BaseModel],
        max_tokens: int,
        labels: list[str] | None = None,
    ) -> dict[str, Any]:
        """The JSON body complete() would send (a Batch API line's body)."""
        ...

    def completion_from(self, body: dict[str, Any], latency_ms: int = 0) -> Completion:
        """A chat completion's JSON as a Completion (a Batch API output line's body)."""
        ...
