"""Per-tier request and token limits, counted in a real Redis across every worker process."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from classifiers.costs import Usage
from classifiers.providers import Completion
from core.errors import RateLimited
from core.tiers import ModelTier
from worker.ratelimit import LimitedModel, MinuteWindow, limited


class Counting:
    """A ChatModel that answers nothing and counts its calls."""

    def __init__(self, tier: ModelTier) -> None:
        self.tier = tier
        self.calls = 0
        self.gives_logprobs = False

    def complete(self, **_: Any) -> Completion:
        self.calls += 1
        return Completion(text="{}", logprobs=None, usage=Usage(), latency_ms=0, request_id="r", model="m")


def test_requests_per_minute_are_shared_and_over_the_limit_wait(fresh_redis: str) -> None:
    client = redis.Redis.from_url(fresh_redis)
    tier = ModelTier(name="small", requests_per_minute=2)
    one, other = MinuteWindow(client, tier), MinuteWindow(client, tier)  # two worker processes
    one.acquire(10)
    other.acquire(10)
    with pytest.raises(RateLimited) as caught:
        one.acquire(10)
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60.1
    # Another tier has a window of its own.
    MinuteWindow(client, ModelTier(name="large", requests_per_minute=2)).acquire(10)


def test_tokens_per_minute_let_one_large_request_through_then_wait(fresh_redis: str) -> None:
    client = redis.Redis.from_url(fresh_redis)
    window = MinuteWindow(client, ModelTier(name="small", tokens_per_minute=100))
    window.acquire(150)  # a single request larger than the limit still goes (it could never fit)
    with pytest.raises(RateLimited):
        window.acquire(10)


def test_a_limited_model_is_not_asked_over_its_limit(fresh_redis: str) -> None:
    tier = ModelTier(name="small", requests_per_minute=1)
    inner = Counting(tier)
    model = limited(inner, fresh_redis)
    assert isinstance(model, LimitedModel)
    args: dict[str, Any] = {"system": "s", "user": "u", "answer_model": object, "max_tokens": 8}
    model.complete(**args)
    with pytest.raises(RateLimited):
        model.complete(**args)
    assert inner.calls == 1
    unlimited = Counting(ModelTier(name="large"))
    assert limited(unlimited, fresh_redis) is unlimited  # no limits: no Redis round trip
