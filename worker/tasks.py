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
from store import crud, learning
from store.db import session_scope
from store.models import NANO, Status, utcnow
from worker.learning import request_retrains
from worker.retry import RETRYABLE, countdown, out_of_retries
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

    def queue_depth(queue: str) -> int | None:
        """Messages waiting in a Redis queue, or None if Redis does not say."""
        try:
            with app.connection_for_read() as conn:
                return int(conn.default_channel.client.llen(queue))
        except Exception:
            return None

    def over_cap(taxonomies: list[str]) -> dict[str, str]:
        """Taxonomies whose daily spending cap is reached, with the reason documents wait."""
        spend = settings.spend
        if spend.daily_cap_usd is None and not spend.per_taxonomy_daily_cap_usd:
            return {}
        midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        held: dict[str, str] = {}
        with session_scope(runtime.engine) as session:
            if spend.daily_cap_usd is not None:
                spent = crud.total_cost(session=session, since=midnight) / NANO
                if spent >= spend.daily_cap_usd:
                    reason = f"waiting: daily spending cap ${spend.daily_cap_usd:.2f} reached"
                    held = dict.fromkeys(taxonomies, reason)
            for name in taxonomies:
                cap = spend.per_taxonomy_daily_cap_usd.get(name)
                if (
                    cap is not None
                    and name not in held
                    and crud.total_cost(session=session, taxonomy=name, since=midnight) / NANO >= cap
                ):
                    held[name] = f"waiting: daily spending cap ${cap:.2f} for {name} reached"
        return held

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
        ignore_result=True,  # the database holds the outcome; Flower shows it from the task events
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
            by_taxonomy[(doc.taxonomy, doc.taxonomy_version)].append(DocIn(doc.id, doc.text))
        taxonomies = {key: runtime.taxonomy(*key) for key in by_taxonomy}
        if not docs:
            return {"tier": args.tier, "claimed": 0}
        if args.tier != first:
            held = over_cap(list({name for name, _ in by_taxonomy}))
            for key in [k for k in by_taxonomy if k[0] in held]:
                ids_held = [d.id for d in by_taxonomy.pop(key)]
                with session_scope(runtime.engine) as session:
                    crud.hold(session=session, ids=ids_held, token=token, reason=held[key[0]])
            if not by_taxonomy:
                return {"tier": args.tier, "held": len(docs)}
        decisions: list[Decision] = []
        try:
            for key, items in by_taxonomy.items():
                decisions += runtime.runner(taxonomies[key], args.tier).run(items)
        except PermanentModelError as exc:
            with session_scope(runtime.engine) as session:
                crud.mark(
                    session=session,
                    ids=[d.id for d in docs],
                    token=token,
                    status=Status.failed,
                    reason=f"{args.tier}: {exc}",
                )
            log.error("permanent model error", extra={"tier": args.tier, "ids": args.ids})
            return {"tier": args.tier, "failed": len(docs), "error": str(exc)[:300]}
        except TransientModelError as exc:
            if not out_of_retries(self.request.retries, self.max_retries):
                raise self.retry(exc=exc, countdown=countdown(exc, self.request.retries)) from exc
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
            learnt = learning.harvest(
                session=session, settings=settings, tier=args.tier, decisions=decisions, done=moved["done"]
            )
        if learnt:  # labels the local tier learns from; retrain once enough have come
            request_retrains(app, settings, runtime.engine, {name for name, _ in by_taxonomy})
        log.info(
            "batch recorded",
            extra={
                "tier": args.tier,
                "task_id": token,
                "request_ids": sorted({a.request_id for d in decisions for a in d.attempts if a.request_id}),
                **{status: ids for status, ids in moved.items() if ids},
            },
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
        idle = [tier.name for tier in settings.models if queue_depth(tier.queue) == 0]
        with session_scope(runtime.engine) as session:
            stuck = crud.stale(session=session, older_than=older, idle_stages=idle)
            for ids in stuck.values():
                crud.release(session=session, ids=ids, first_stage=first)
        for stage in stuck:
            dispatch.apply_async(args=[stage], queue="control")
        counts = {stage: len(ids) for stage, ids in stuck.items()}
        if counts:
            log.warning("reconciled stuck documents", extra={"counts": counts})
        return counts
