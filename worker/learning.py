"""The local tier in the workers: queueing a retrain when labels arrive, and the retrain task."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import redis
from celery import Celery, Task
from sqlalchemy import Engine

from core import messaging
from core.config import Settings
from core.messaging import TaskName
from store import local_models, taxonomies
from store.db import session_scope
from worker import training
from worker.runtime import runtime_of

log = logging.getLogger("docsort.learning")
LOCK_TTL_S = 3600  # a retrain lost with its worker holds the lock at most this long


def request_retrains(app: Celery, settings: Settings, engine: Engine, names: Iterable[str]) -> list[str]:
    """Queue a retrain for each taxonomy that is due and has none queued; returns those queued."""
    if not settings.learns or not settings.redis_url:
        return []
    try:
        with session_scope(engine) as session:
            due = [
                t
                for t in names
                if local_models.retrain_due(session=session, local=settings.local, taxonomy=t)
            ]
    except Exception as exc:  # never fail what brought the labels: they are stored
        log.warning("could not check whether a retrain is due: %s", exc)
        return []
    return [t for t in due if messaging.send_once(app, settings, TaskName.retrain, [t])]


def retrain(self: Task[Any, Any], taxonomy: str, force: bool = False) -> dict[str, Any]:
    """Train a new version of taxonomy's local model if due; it replaces the active one if as good."""
    runtime = runtime_of(self)
    settings = runtime.settings
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    trained = False
    lock = client.lock(f"docsort:retrain:lock:{taxonomy}", timeout=LOCK_TTL_S)
    if not lock.acquire(blocking=False):
        return {"taxonomy": taxonomy, "skipped": "another retrain is running"}
    try:
        with session_scope(runtime.engine) as session:
            current = taxonomies.to_runtime(taxonomies.require(session=session, name=taxonomy))
            due = local_models.retrain_due(session=session, local=settings.local, taxonomy=taxonomy)
        if not (due or force):
            return {"taxonomy": taxonomy, "skipped": "not due"}
        model = training.train_version(engine=runtime.engine, settings=settings, taxonomy=current)
        trained = True
        return {
            "taxonomy": taxonomy,
            "version": model.version,
            "features": model.features,
            "score": model.score,
            "threshold": model.threshold,
            "active": model.active,
        }
    finally:
        messaging.release_once(settings, TaskName.retrain, [taxonomy])  # new labels may queue the next
        with suppress(redis.RedisError, redis.exceptions.LockError):
            lock.release()
        if trained:  # labels that came while it trained, and asked for nothing, may make one due
            request_retrains(self.app, settings, runtime.engine, [taxonomy])
