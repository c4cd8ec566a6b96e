"""The local tier in the workers: its runner, queueing retrains when labels arrive, the retrain task."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery

from classifiers import embeddings
from classifiers.local import LocalClassifier
from classifiers.local_runner import LocalRunner, reference_cost
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import get_tokenizer
from docsort.config import Settings
from store import crud, learning
from store.db import session_scope
from store.models import LocalModel

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger("docsort.learning")
RETRAIN = "docsort.retrain"
CONTROL = "control"
PENDING_TTL_S = 3600  # a retrain lost with its worker blocks the next one at most this long


def build_local_runner(
    settings: Settings, taxonomy: Taxonomy, tier_name: str, row: LocalModel | None
) -> LocalRunner:
    """A runner for the local tier with the model of row (None: untrained, every document goes on)."""
    model, name = None, "local"
    if row is not None:
        try:
            path = Path(row.path)
            if not path.exists():  # trained elsewhere: look in this process's data_dir
                path = learning.model_path(settings, row.taxonomy, row.version)
            model, name = LocalClassifier.load(path), f"local-v{row.version}:{row.features}"
        except (OSError, ValueError, TypeError, EOFError, ImportError) as exc:
            log.warning("local model %s v%d unreadable, passing through: %s", row.taxonomy, row.version, exc)
        if (
            model
            and "embeddings" in model.features.kind
            and not embeddings.available(model.features.embed_backend)
        ):
            log.warning(
                "local model %s v%d needs the `embeddings` extra; passing through", row.taxonomy, row.version
            )
            model, name = None, "local"
    last = settings.models[-1]
    reference = None
    if last.kind != "local":  # what the document would have cost at the last tier: the saving baseline
        weights = str(settings.weights_path(last.weights)) if last.weights else None
        reference = reference_cost(taxonomy, last, get_tokenizer(last.tokenizer, weights))
    return LocalRunner(
        taxonomy=taxonomy,
        tier=settings.tier(tier_name),
        model=model,
        model_name=name,
        is_last=settings.next_tier(tier_name) is None,
        reference=reference,
    )


@lru_cache(maxsize=8)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _pending_key(taxonomy: str) -> str:
    return f"docsort:retrain:pending:{taxonomy}"


def request_retrains(app: Celery, settings: Settings, engine: Any, taxonomies: Iterable[str]) -> list[str]:
    """Queue a retrain for each taxonomy that is due and has none queued; returns those queued."""
    if not learning.learns(settings) or not settings.redis_url:
        return []
    try:
        with session_scope(engine) as session:
            due = [
                t for t in taxonomies if learning.retrain_due(session=session, settings=settings, taxonomy=t)
            ]
    except Exception as exc:  # never fail the batch that brought the labels: they are stored
        log.warning("could not check whether a retrain is due: %s", exc)
        return []
    queued = []
    for taxonomy in due:
        client = _redis(settings.redis_url)
        try:
            if not client.set(_pending_key(taxonomy), "1", nx=True, ex=PENDING_TTL_S):
                continue  # one is queued or running; it will see these labels or the next one will
            app.send_task(RETRAIN, args=[taxonomy], queue=CONTROL)
            queued.append(taxonomy)
        except Exception as exc:  # labels are stored; the next batch or upload asks again
            log.warning("could not queue a retrain of %s: %s", taxonomy, exc)
            with suppress(Exception):
                client.delete(_pending_key(taxonomy))
    return queued


def register_learning_tasks(app: Celery, runtime: Runtime) -> None:
    """Define docsort.retrain on app (control queue)."""
    settings = runtime.settings

    @app.task(name=RETRAIN, ignore_result=True, shared=False)
    def retrain(taxonomy: str, force: bool = False) -> dict[str, Any]:
        """Train a new version of taxonomy's local model if due; it replaces the active one if as good."""
        assert settings.redis_url is not None
        client = _redis(settings.redis_url)
        trained = False
        lock = client.lock(f"docsort:retrain:lock:{taxonomy}", timeout=PENDING_TTL_S)
        if not lock.acquire(blocking=False):
            return {"taxonomy": taxonomy, "skipped": "another retrain is running"}
        try:
            with session_scope(runtime.engine) as session:
                row = crud.get_taxonomy(session=session, name=taxonomy)
                assert row is not None
                current = crud.to_runtime(row)
                due = learning.retrain_due(session=session, settings=settings, taxonomy=taxonomy)
            if not (due or force):
                return {"taxonomy": taxonomy, "skipped": "not due"}
            model = learning.train_version(engine=runtime.engine, settings=settings, taxonomy=current)
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
            with suppress(Exception):
                client.delete(_pending_key(taxonomy))  # from now on new labels may queue the next one
            with suppress(Exception):
                lock.release()
            if trained:  # labels that came while it trained, and asked for nothing, may make one due
                request_retrains(app, settings, runtime.engine, [taxonomy])
