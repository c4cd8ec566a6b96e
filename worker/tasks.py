"""Thin Celery tasks: they take ids, call a runner from classifiers/, and write through store/.

Tasks are module-level functions bound to the app by worker/app.py; they reach the process's runtime
through the app (`runtime_of`), never a global.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from celery import Task
from pydantic import BaseModel, Field

from classifiers.decision import Decision
from classifiers.packing import DocIn
from core import messaging
from core.errors import PermanentModelError, TransientModelError
from core.messaging import TaskName
from core.vocab import Outcome, Status
from store import examples, lifecycle, reports
from store.db import session_scope
from store.models import NANO, utcnow
from worker import training
from worker.learning import request_retrains
from worker.retry import countdown, out_of_retries
from worker.runtime import Runtime, runtime_of

log = logging.getLogger("docsort.worker")


class BatchArgs(BaseModel):
    """Arguments of classify_batch: a tier and document ids, never text (Flower shows them)."""

    tier: str
    ids: list[int] = Field(min_length=1, max_length=1000)


def send_batches(task: Task[Any, Any], tier: str, ids: list[int]) -> None:
    """Hand ids to classify_batch at tier in batches of the tier's size."""
    size = runtime_of(task).settings.tier(tier).batch_size
    for start in range(0, len(ids), size):
        messaging.send(
            task.app,
            TaskName.classify_batch,
            [tier, ids[start : start + size]],
            queue=messaging.tier_queue(tier),
        )


def over_cap(runtime: Runtime, taxonomies: list[str]) -> dict[str, str]:
    """Taxonomies whose daily spending cap is reached, with the reason documents wait."""
    spend = runtime.settings.spend
    if spend.daily_cap_usd is None and not spend.per_taxonomy_daily_cap_usd:
        return {}
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    held: dict[str, str] = {}
    with session_scope(runtime.engine) as session:
        if spend.daily_cap_usd is not None:
            spent = reports.total_cost(session=session, since=midnight) / NANO
            if spent >= spend.daily_cap_usd:
                reason = f"waiting: daily spending cap ${spend.daily_cap_usd:.2f} reached"
                held = dict.fromkeys(taxonomies, reason)
        for name in taxonomies:
            cap = spend.per_taxonomy_daily_cap_usd.get(name)
            if (
                cap is not None
                and name not in held
                and reports.total_cost(session=session, taxonomy=name, since=midnight) / NANO >= cap
            ):
                held[name] = f"waiting: daily spending cap ${cap:.2f} for {name} reached"
    return held


def dispatch(self: Task[Any, Any], tier: str) -> int:
    """Hand every undispatched document waiting at tier to classify_batch, in batches."""
    runtime = runtime_of(self)
    limit = runtime.settings.tier(tier).batch_size * runtime.settings.worker.max_batches_per_dispatch
    token = f"d:{uuid.uuid4().hex}"
    with session_scope(runtime.engine) as session:
        ids = lifecycle.mark_dispatched(session=session, tier=tier, token=token, limit=limit)
    if ids:
        send_batches(self, tier, ids)
        if len(ids) == limit:  # more may be waiting
            messaging.send(self.app, TaskName.dispatch, [tier])
    return len(ids)


def classify_batch(self: Task[Any, Any], tier: str, ids: list[int]) -> dict[str, Any]:
    """Classify the documents ids with one tier and move each on."""
    runtime = runtime_of(self)
    settings = runtime.settings
    args = BatchArgs(tier=tier, ids=ids)
    first = settings.models[0].name
    token = str(self.request.id or uuid.uuid4().hex)
    with session_scope(runtime.engine) as session:
        docs = lifecycle.claim(session=session, ids=args.ids, tier=args.tier, token=token)
    by_taxonomy: dict[tuple[str, int], list[DocIn]] = defaultdict(list)
    for doc in docs:
        by_taxonomy[(doc.taxonomy, doc.taxonomy_version)].append(DocIn(doc.id, doc.text))
    taxonomies = {key: runtime.taxonomy(*key) for key in by_taxonomy}
    if not docs:
        return {"tier": args.tier, "claimed": 0}
    if args.tier != first:
        held = over_cap(runtime, list({name for name, _ in by_taxonomy}))
        for key in [k for k in by_taxonomy if k[0] in held]:
            ids_held = [d.id for d in by_taxonomy.pop(key)]
            with session_scope(runtime.engine) as session:
                lifecycle.hold(
                    session=session, ids=ids_held, token=token, reason=held[key[0]], first_tier=False
                )
        if not by_taxonomy:
            return {"tier": args.tier, "held": len(docs)}
    decisions: list[Decision] = []
    try:
        for key, items in by_taxonomy.items():
            decisions += runtime.runner(taxonomies[key], args.tier).run(items)
    except PermanentModelError as exc:
        with session_scope(runtime.engine) as session:
            lifecycle.mark(
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
            Decision(doc_id=doc.id, outcome=Outcome.escalated, reason=reason[:300])
            for group in by_taxonomy.values()
            for doc in group
        ]
        log.warning("tier gave up after retries: %s", exc, extra={"tier": args.tier})
    next_tier = settings.next_tier(args.tier)
    with session_scope(runtime.engine) as session:
        moved = lifecycle.record(
            session=session,
            decisions=decisions,
            tier=args.tier,
            token=token,
            next_tier=next_tier.name if next_tier else None,
            first_tier=args.tier == first,
        )
        done = set(moved[Status.done])  # a duplicate message moved nothing and learns nothing
        keep = [d for d in training.harvestable(settings, args.tier, decisions) if d.doc_id in done]
        learnt = examples.add_answers(session=session, decisions=keep, origin=args.tier)
    if learnt:  # labels the local tier learns from; retrain once enough have come
        request_retrains(self.app, settings, runtime.engine, {name for name, _ in by_taxonomy})
    log.info(
        "batch recorded",
        extra={
            "tier": args.tier,
            "task_id": token,
            "request_ids": sorted({a.request_id for d in decisions for a in d.attempts if a.request_id}),
            **{status.value: ids for status, ids in moved.items() if ids},
        },
    )
    if moved[Status.escalated] and next_tier is not None:
        send_batches(self, next_tier.name, moved[Status.escalated])
    return {"tier": args.tier, **{status.value: len(ids) for status, ids in moved.items()}}


def reconcile(self: Task[Any, Any]) -> dict[str, int]:
    """Re-queue documents stuck waiting or classifying for longer than the configured time."""
    runtime = runtime_of(self)
    settings = runtime.settings
    older = timedelta(seconds=settings.worker.reconcile_after_s)
    depths = messaging.queue_depths(settings, [messaging.tier_queue(t.name) for t in settings.models])
    idle = [t.name for t in settings.models if depths[messaging.tier_queue(t.name)] == 0]
    with session_scope(runtime.engine) as session:
        stuck = lifecycle.stale(session=session, older_than=older, idle_tiers=idle)
        for stuck_ids in stuck.values():
            lifecycle.release(session=session, ids=stuck_ids, first_tier=settings.models[0].name)
    for tier in stuck:
        messaging.send(self.app, TaskName.dispatch, [tier])
    counts = {tier: len(stuck_ids) for tier, stuck_ids in stuck.items()}
    if counts:
        log.warning("reconciled stuck documents", extra={"counts": counts})
    return counts
