"""Thin Celery tasks: they take ids, call a runner from classifiers/, and write through store/.

Tasks are module-level functions bound to the app by worker/app.py; they reach the process's runtime
through the app (`runtime_of`), never a global.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from celery import Task
from pydantic import BaseModel, Field
from sqlmodel import Session

from classifiers.decision import Decision, reused
from classifiers.packing import DocIn
from core import health, messaging
from core.errors import PermanentModelError, TransientModelError
from core.messaging import TaskName
from core.vocab import Outcome, Status
from store import examples, lifecycle, requests, rollup, spend
from store.db import session_scope
from store.models import utcnow
from worker import audit, books, training
from worker.books import DatabaseLedger
from worker.learning import request_retrains
from worker.retry import countdown
from worker.runtime import Runtime, runtime_of

log = logging.getLogger("docsort.worker")


class BatchArgs(BaseModel):
    """Arguments of classify_batch: a tier and document ids, never text (Flower shows them)."""

    tier: str
    ids: list[int] = Field(min_length=1, max_length=1024)


def send_batches(task: Task[Any, Any], tier: str, ids: list[int], alone: bool = False) -> None:
    """Hand ids to classify_batch at tier, up to worker.requests_per_task requests' worth per task (alone:
    a request's worth, to be asked one by one).

    A few documents still go out a request's worth per task, so that every worker process gets some.
    """
    settings = runtime_of(task).settings
    batch = settings.tier(tier).batch_size
    spread = len(ids) // (batch * settings.worker.concurrency)
    size = batch * (1 if alone else max(1, min(settings.worker.requests_per_task, spread)))
    for start in range(0, len(ids), size):
        messaging.send(
            task.app,
            TaskName.classify_batch,
            [tier, ids[start : start + size], *([True] if alone else [])],
            queue=messaging.tier_queue(tier),
        )


def dispatch(self: Task[Any, Any], tier: str) -> int:
    """Hand every undispatched document waiting at tier to classify_batch, in batches."""
    runtime = runtime_of(self)
    limit = runtime.settings.tier(tier).batch_size * runtime.settings.worker.max_batches_per_dispatch
    token = f"d:{uuid.uuid4().hex}"
    with session_scope(runtime.engine) as session:
        ids = lifecycle.mark_dispatched(
            session=session,
            tier=tier,
            token=token,
            limit=limit,
            batch_api=runtime.settings.tier(tier).batch_api,
        )
    if ids:
        send_batches(self, tier, ids)
        if len(ids) == limit:  # more may be waiting
            messaging.send(self.app, TaskName.dispatch, [tier])
    return len(ids)


def _prior(session: Session, ids: list[int], tier: str) -> dict[int, Decision]:
    """Decisions already paid for at tier (answers recorded by an earlier delivery of the task)."""
    rows = requests.answered_attempts(session=session, doc_ids=ids, tier=tier)
    return {doc_id: reused(attempt) for doc_id, attempt in rows.items()}


def classify_batch(self: Task[Any, Any], tier: str, ids: list[int], alone: bool = False) -> dict[str, Any]:
    """Classify the documents ids with one tier and move each on.

    Answers are recorded as they arrive (worker/books.py); a redelivered or retried task reuses them
    instead of paying again, and asks only for what is still owed.
    """
    runtime = runtime_of(self)
    settings = runtime.settings
    args = BatchArgs(tier=tier, ids=ids)
    token = str(self.request.id or uuid.uuid4().hex)
    claimed_at = time.monotonic()  # before the claim's own timestamp: the lease is counted from earlier
    with session_scope(runtime.engine) as session:  # one transaction: each costs a commit
        docs = lifecycle.claim(session=session, ids=args.ids, tier=args.tier, token=token)
        decided = _prior(session, [d.id for d in docs], args.tier) if docs else {}
    if not docs:
        return {"tier": args.tier, "claimed": 0}
    by_taxonomy: dict[tuple[str, int], list[DocIn]] = defaultdict(list)
    for doc in docs:
        if doc.id not in decided:
            by_taxonomy[(doc.taxonomy, doc.taxonomy_version)].append(DocIn(doc.id, doc.text))
    failed: str | None = None  # why the documents still owed an answer give up at this tier
    give_up = Outcome.escalated  # a tier that stays down hands them on; a permanent error fails them
    ledgers: list[DatabaseLedger] = []  # their last answers are written with the record
    try:
        answered, ledgers = _run_tier(runtime, args.tier, by_taxonomy, token, claimed_at, alone)
        decided |= answered
    except PermanentModelError as exc:
        failed, give_up = f"{args.tier}: {exc}", Outcome.invalid
        log.error("permanent model error", extra={"tier": args.tier, "ids": args.ids})
    except TransientModelError as exc:
        tries = settings.tier(args.tier).max_retries
        if self.request.retries < tries:
            raise self.retry(
                exc=exc, countdown=countdown(exc, self.request.retries), max_retries=tries
            ) from exc
        failed = f"{args.tier} unavailable after {self.request.retries} retries: {exc}"
        log.warning("tier gave up after retries: %s", exc, extra={"tier": args.tier})
    if failed is not None:  # what was answered before the error stands; the rest moves on or fails
        with session_scope(runtime.engine) as session:
            decided |= _prior(session, [d.id for d in docs if d.id not in decided], args.tier)
        rest = [d.id for d in docs if d.id not in decided]
        if give_up is Outcome.escalated:
            decided |= {i: Decision(doc_id=i, outcome=give_up, reason=failed[:300]) for i in rest}
        else:
            with session_scope(runtime.engine) as session:
                lifecycle.mark(session=session, ids=rest, token=token, status=Status.failed, reason=failed)
    taxonomy_of = {d.id: d.taxonomy for d in docs}
    return record_decisions(
        self,
        runtime,
        args.tier,
        token,
        [decided[d.id] for d in docs if d.id in decided],
        taxonomy_of,
        ledgers=ledgers,
    )


def _run_tier(
    runtime: Runtime,
    tier: str,
    by_taxonomy: dict[tuple[str, int], list[DocIn]],
    token: str,
    claimed_at: float,
    alone: bool,
) -> tuple[dict[int, Decision], list[DatabaseLedger]]:
    """The tier's decisions on each taxonomy's documents, and the ledgers (one a taxonomy) whose last
    answers are owed to the record; whatever is raised, the answers already paid for are written first."""
    decided: dict[int, Decision] = {}
    ledgers: list[DatabaseLedger] = []
    try:
        for (name, version), items in by_taxonomy.items():
            ledger = DatabaseLedger(
                runtime.engine,
                runtime.settings,
                taxonomy=name,
                claim_token=token,
                renewed_at=claimed_at,
                defer_answers=True,
            )
            ledgers.append(ledger)
            runner = runtime.runner(runtime.taxonomy(name, version), tier)
            decided |= {d.doc_id: d for d in runner.run(items, ledger, alone=alone)}
    except BaseException:
        books.flush_all(ledgers)
        raise
    return decided, ledgers


def record_decisions(
    task: Task[Any, Any],
    runtime: Runtime,
    tier: str,
    token: str,
    decisions: list[Decision],
    taxonomy_of: dict[int, str],
    escalate_by_batch: bool = True,
    ledgers: list[DatabaseLedger] | None = None,
) -> dict[str, Any]:
    """Move each document on by its decision, keep what the local tier may learn, hand on escalations
    (to the next tier's Batch API where it takes them and escalate_by_batch, else to its queue); the
    ledgers' answers still owed are written in the same transaction, before the decisions."""
    settings = runtime.settings
    next_tier = settings.next_tier(tier)
    lower = next_tier is not None and settings.tier(tier).kind != "local"
    names = set(taxonomy_of.values())
    trust = {name: lower and audit.trusted(runtime, name, tier) for name in names}
    learnable = {
        d.doc_id
        for name in names
        for d in training.harvestable(
            settings, tier, [d for d in decisions if taxonomy_of[d.doc_id] == name], trusted=trust[name]
        )
    }
    with session_scope(runtime.engine) as session:
        books.flush_all(ledgers or [], session)
        moved = lifecycle.record(
            session=session,
            decisions=decisions,
            tier=tier,
            token=token,
            next_tier=next_tier.name if next_tier else None,
            first_tier=tier == settings.models[0].name,
        )
        done = set(moved[Status.done])  # a duplicate message moved nothing and learns nothing
        keep = [d for d in decisions if d.doc_id in learnable and d.doc_id in done]
        learnt = examples.add_answers(session=session, decisions=keep, origin=tier)
    if learnt:  # labels the local tier learns from; retrain once enough have come
        request_retrains(task.app, settings, runtime.engine, names)
    log.info(
        "batch recorded",
        extra={
            "tier": tier,
            "task_id": token,
            "request_ids": sorted({a.request_id for d in decisions for a in d.attempts if a.request_id}),
            **{status.value: ids for status, ids in moved.items() if ids},
        },
    )
    if moved[Status.escalated] and next_tier is not None:
        by_batch = (
            _batched_next(runtime, next_tier.name, moved[Status.escalated]) if escalate_by_batch else []
        )
        if by_batch:  # they wait for the next tier's shard: no task for them
            with session_scope(runtime.engine) as session:
                lifecycle.release_claims(session=session, ids=by_batch)
        rest = sorted(set(moved[Status.escalated]) - set(by_batch))
        if rest:
            send_batches(task, next_tier.name, rest)
    audit.open_sampled(task, runtime, tier, moved[Status.done])  # after the move: they keep their label
    return {"tier": tier, **{status.value: len(ids) for status, ids in moved.items()}}


def _batched_next(runtime: Runtime, tier: str, ids: list[int]) -> list[int]:
    """Those of ids the tier sends through its Batch API."""
    mode = runtime.settings.tier(tier).batch_api
    if mode == "off":
        return []
    if mode == "always":
        return ids
    with session_scope(runtime.engine) as session:
        return lifecycle.flagged_for_batch(session=session, ids=ids)


def reconcile(self: Task[Any, Any]) -> dict[str, int]:
    """Settle requests and re-hand documents whose task died (lease expired) or whose message was lost."""
    runtime = runtime_of(self)
    settings = runtime.settings
    if settings.redis_url:
        health.beat(settings.redis_url, "reconcile")
    books.sweep(runtime.engine, settings)
    now = utcnow()
    grace = timedelta(seconds=settings.worker.lease_grace_s)
    lease_ends = {t.name: now - timedelta(seconds=t.timeout_s) - grace for t in settings.models}
    waiting_since = now - timedelta(seconds=settings.worker.requeue_after_s)
    depths = messaging.queue_depths(settings, [messaging.tier_queue(t.name) for t in settings.models])
    idle = [t.name for t in settings.models if depths[messaging.tier_queue(t.name)] == 0]
    with session_scope(runtime.engine) as session:
        stuck = lifecycle.stale(
            session=session, lease_ends=lease_ends, waiting_since=waiting_since, idle_tiers=idle
        )
        for stuck_ids in stuck.values():
            lifecycle.release(session=session, ids=stuck_ids, first_tier=settings.models[0].name)
    for tier in stuck:
        messaging.send(self.app, TaskName.dispatch, [tier])
    if settings.models[-1].name in idle:  # audits whose message was lost
        audit.resend_pending(self, runtime, older_than=waiting_since)
    counts = {tier: len(stuck_ids) for tier, stuck_ids in stuck.items()}
    if counts:
        log.warning("reconciled stuck documents", extra={"counts": counts})
    return counts


def rollup_costs(self: Task[Any, Any]) -> int:
    """Refresh the dashboard's roll-ups: daily cost (today and yesterday; every day the first time) and
    the counts by status and tier."""
    runtime = runtime_of(self)
    with session_scope(runtime.engine) as session:
        days = rollup.days_to_refresh(session=session, today=spend.today())
        written = rollup.refresh(session=session, days=days)
    with session_scope(runtime.engine) as session:
        return written + rollup.refresh_counts(session=session)
