"""The one place that says which failures are retried and which end a document's tier."""

from __future__ import annotations

import redis.exceptions
import sqlalchemy.exc

from docsort.errors import PermanentModelError, TransientModelError, Unavailable

# Retried by Celery with exponential backoff and jitter (declared on the tasks).
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientModelError,
    Unavailable,
    sqlalchemy.exc.OperationalError,
    redis.exceptions.ConnectionError,
)

# Not retried: the documents of the batch are marked failed with the reason.
PERMANENT: tuple[type[BaseException], ...] = (PermanentModelError,)


def out_of_retries(retries: int, max_retries: int | None) -> bool:
    """Whether a task that failed transiently has used all its tries."""
    return max_retries is not None and retries >= max_retries
