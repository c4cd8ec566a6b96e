"""The one place that says which failures are retried and which end a document's tier."""

from __future__ import annotations

import random

import redis.exceptions
import sqlalchemy.exc

from core.errors import RateLimited, TransientModelError, Unavailable

# Retried by Celery with exponential backoff and jitter (declared on the tasks).
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientModelError,
    Unavailable,
    sqlalchemy.exc.OperationalError,
    redis.exceptions.ConnectionError,
)


def out_of_retries(retries: int, max_retries: int | None) -> bool:
    """Whether a task that failed transiently has used all its tries."""
    return max_retries is not None and retries >= max_retries


def countdown(exc: BaseException, retries: int) -> float:
    """Seconds before the next try: the endpoint's Retry-After if it gave one, else 2^n with jitter."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    return float(random.uniform(0, min(120.0, 2.0 ** (retries + 1))))
