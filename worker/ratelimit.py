"""Per-model request and token limits, shared by every worker process through Redis."""

from __future__ import annotations

import time
from typing import Any

import redis
from pydantic import BaseModel

from classifiers.providers.base import ChatModel, Completion
from core.errors import RateLimited
from core.tiers import ModelTier


class MinuteWindow:
    """Fixed one-minute windows of requests and tokens per tier, counted in Redis."""

    def __init__(self, client: redis.Redis, tier: ModelTier) -> None:
        self.client = client
        self.tier = tier

    def acquire(self, tokens: int) -> None:
        """Count one request of about `tokens` tokens, or raise RateLimited with the wait."""
        now = time.time()
        window = int(now // 60)
        key = f"docsort:rl:{self.tier.name}:{window}"
        pipe = self.client.pipeline()
        pipe.hincrby(key, "requests", 1)
        pipe.hincrby(key, "tokens", tokens)
        pipe.expire(key, 120)
        requests, used, _ = pipe.execute()
        rpm, tpm = self.tier.requests_per_minute, self.tier.tokens_per_minute
        if (rpm is not None and requests > rpm) or (tpm is not None and used > tpm and requests > 1):
            raise RateLimited(
                f"{self.tier.name}: over {rpm} requests or {tpm} tokens per minute",
                retry_after=60 - (now % 60) + 0.1,
            )


class LimitedModel:
    """A ChatModel that asks the window before every request."""

    def __init__(self, inner: ChatModel, window: MinuteWindow) -> None:
        self.inner = inner
        self.window = window
        self.tier = inner.tier

    @property
    def gives_logprobs(self) -> bool:
        return self.inner.gives_logprobs

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
        # A cheap estimate (4 characters a token) is enough to keep under a provider's limit.
        self.window.acquire((len(system) + len(user)) // 4 + max_tokens)
        return self.inner.complete(
            system=system,
            user=user,
            answer_model=answer_model,
            max_tokens=max_tokens,
            labels=labels,
            request_id=request_id,
        )

    def request_body(
        self,
        *,
        system: str,
        user: str,
        answer_model: type[BaseModel],
        max_tokens: int,
        labels: list[str] | None = None,
    ) -> dict[str, Any]:
        return self.inner.request_body(
            system=system, user=user, answer_model=answer_model, max_tokens=max_tokens, labels=labels
        )

    def completion_from(self, body: dict[str, Any], latency_ms: int = 0) -> Completion:
        return self.inner.completion_from(body, latency_ms)


def limited(model: ChatModel, redis_url: str | None) -> ChatModel:
    """model behind its tier's limits, if it has any."""
    tier = model.tier
    if redis_url is None or (tier.requests_per_minute is None and tier.tokens_per_minute is None):
        return model
    return LimitedModel(model, MinuteWindow(redis.Redis.from_url(redis_url), tier))
