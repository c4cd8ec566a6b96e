"""The ChatModel protocol and the registry of endpoint kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx2 as httpx  # the HTTP library of the openai client (a fork of httpx)
from pydantic import BaseModel

from classifiers.confidence import TokenLogprob
from classifiers.costs import Usage
from docsort.config import ModelTier
from docsort.errors import PermanentModelError


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
    ) -> Completion:
        """Ask once (labels bind a label_only answer); raises ModelError subclasses."""
        ...


Factory = Callable[[ModelTier, httpx.Client | None], ChatModel]
_KINDS: dict[str, Factory] = {}


class UnknownModelKind(PermanentModelError):
    """No endpoint adapter is registered under that kind."""


def register(kind: str) -> Callable[[Factory], Factory]:
    """Register a factory for an endpoint kind."""

    def wrap(factory: Factory) -> Factory:
        _KINDS[kind] = factory
        return factory

    return wrap


def get_model(tier: ModelTier, http_client: httpx.Client | None = None) -> ChatModel:
    """The adapter for tier's endpoint kind; http_client is the seam tests inject faults at."""
    try:
        factory = _KINDS[tier.kind]
    except KeyError:
        raise UnknownModelKind(f"no endpoint kind {tier.kind!r}; known: {sorted(_KINDS)}") from None
    return factory(tier, http_client)
