"""Thin Celery tasks: they take ids, call the cascade in classifiers/, and write through store/."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from pydantic import BaseModel, Field

from classifiers.cascade import Decision
from classifiers.packing import DocIn
from docsort.errors import PermanentModelError, TransientModelError
from store import crud
from store.db import session_scope
from store.models import Status
from worker.retry import RETRYABLE, out_of_retries
from worker.runtime import Runtime

log = logging.getLogger("docsort.worker")


class BatchArgs(BaseModel):
    """Arguments of classify_batch: a tier and document ids, never text (Flower shows them)."""

    tier: str
    ids: list[int] = Field(min_length=1, max_length=1000)


def register_tasks(app: Celery, runtime: Runtime) -> None:
    """Define docsort's tasks on app, closing over the process runtime."""
    settings = runtime.settings
    first = settings.models[0].name

    def send_batches(tier: str, ids: list[int]) -> None:
        size = settings.tier(tier).batch_size
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            classify_batch.apply_async(args=[tier, chunk], queue=settings.tier(tier).queue)

    @app.task(name="docsort.dispatch", ignore_result=True, shared=False)
    def dispatch(tier: str) -> int:
        """Hand every undispatched document waiting at tier to classify_batch, in batches."""
        limit = settings.tier(tier).batch_size * settings.worker.max_batches_per_dispatch
        token = f"d:{uuid.uuid4().hex}"
        with session_scope(runtime.engine) as session:
            ids = crud.mark_dispatched(session=session, stage=tier, token=token, limit=limit)
        if ids:
            send_batches(tier, ids)
            if len(ids) == limit:  # more may be waiting
                dispatch.apply_async(args=[tier], queue="control")
        return len(ids)

    @app.task(
        bind=True,
        name="docsort.classify_batch",
        shared=False,
        acks_late=True,  # safe: claims and writes are guarded, so a redelivery changes nothing
        reject_on_worker_lost=True,
        autoretry_for=RETRYABLE,
        retry_backoff=2,
        retry_backoff_max=120,
        retry_jitter=True,
        max_retries=6,
    )
    def classify_batch(self: Task, tier: str, ids: list[int]) -> dict[str, Any]:
        """Classify the documents ids with one tier and move each on."""
        args = BatchArgs(tier=tier, ids=ids)
        token = str(self.request.id or uuid.uuid4().hex)
        with session_scope(runtime.engine) as session:
            docs = crud.claim(session=session, ids=args.ids, stage=args.tier, token=token)
            by_taxonomy: dict[tuple[str, int], list[DocIn]] = defaultdict(list)
            for doc in docs:
                assert doc.id is not None
                by_taxonomy[(doc.taxonomy, doc.taxonomy_version)].append(DocIn(doc.id, doc.text))
            taxonomies = {
                key: crud.to_runtime(
                    crud.get_taxonomy(session=session, name=key[0], version=key[1])  # type: ignore[arg-type]
                )
                for key in by_taxonomy
            }
        if not docs:
            return {"tier": args.tier, "claimed": 0}
        decisions: list[Decision] = []
        try:
            for key, items in by_taxonomy.items():
                decisions += runtime.runner(taxonomies[key], args.tier).run(items)
        except PermanentModelError as exc:
            with session_scope(runtime.engine) as session:
                crud.mark(
                    session=session,
                    ids=[d.id for d in docs if d.id is not None],
                    token=token,
                    status=Status.failed,
                    reason=f"{args.tier}: {exc}",
                )
            log.error("permanent model error", extra={"tier": args.tier, "ids": args.ids})
            return {"tier": args.tier, "failed": len(docs), "error": str(exc)[:300]}
        except TransientModelError as exc:
            if not out_of_retries(self.request.retries, self.max_retries):
                raise
            reason = f"{args.tier} unavailable after {self.request.retries} retries: {exc}"
            decisions = [
                Decision(doc_id=doc.id, verdict="escalate", reason=reason[:300])
                for group in by_taxonomy.values()
                for doc in group
            ]
            log.warning("tier gave up after retries: %s", exc, extra={"tier": args.tier})
        next_tier = settings.next_tier(args.tier)
        with session_scope(runtime.engine) as session:
            moved = crud.record(
                session=session,
                decisions=decisions,
                stage=args.tier,
                token=token,
                next_stage=next_tier.name if next_tier else None,
            )
        if moved["escalated"] and next_tier is not None:
            try:
                send_batches(next_tier.name, moved["escalated"])
            except Exception:  # the reconciler hands them on once the broker is back
                log.exception("could not queue escalations", extra={"ids": moved["escalated"]})
        return {"tier": args.tier, **{k: len(v) for k, v in moved.items()}}

    @app.task(name="docsort.reconcile", ignore_result=True, shared=False)
    def reconcile() -> dict[str, int]:
        """Re-queue documents stuck waiting or classifying for longer than the configured time."""
        older = timedelta(seconds=settings.worker.reconcile_after_s)
        with session_scope(runtime.engine) as session:
            stuck = crud.stale(session=session, older_than=older)
            for ids in stuck.values():
                crud.release(session=session, ids=ids, first_stage=first)
        for stage in stuck:
            dispatch.apply_async(args=[stage], queue="control")
        counts = {stage: len(ids) for stage, ids in stuck.items()}
        if counts:
            log.warning("reconciled stuck documents", extra={"counts": counts})
        return counts
