"""The baseline: plain Celery no-op tasks on the same Redis, one task per document."""

from __future__ import annotations

import os
from functools import cache

import redis
from celery import Celery

app = Celery("noop", broker=os.environ["NOOP_REDIS_URL"], backend=None)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["NOOP_REDIS_URL"])


@app.task(name="noop.count")
def count(doc_id: int) -> None:
    """Count one finished 'document' (the least a real task does: one write)."""
    _client().incr("noop:done")
