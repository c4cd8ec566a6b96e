"""Audits in the workers: sample what a lower tier accepted, check it with the last tier (or queue it for a
person), record agree or disagree, and guard against drift.

The guard: when a tier's audited agreement is confidently below what its target implies (the upper end
of its 90% interval under the implied agreement, over at least `audit.min_support` audits since its last
change), docsort stops trusting it for that taxonomy: the local model is set aside (the next retrain may
bring a new one), an LLM tier's threshold is raised to the lowest value whose audited answers do meet the
target, or, where none does, everything it answers is escalated. Each change is stored with its reason
and evidence; a person can undo it (POST /v1/quality/changes/{id}/undo).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis
from celery import Task
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from classifiers.decision import Decision, reused
from classifiers.packing import DocIn
from classifiers.selective import NEVER
from classifiers.trust import raised_threshold, sampled
from core import messaging
from core.messaging import TaskName
from core.vocab import Origin, Purpose, Status
from store import audits, examples, local_models, quality, requests, taxonomies
from store.db import session_scope
from store.models import Document, TrustChange
from worker.books import DatabaseLedger
from worker.runtime import Runtime, runtime_of

log = logging.getLogger("docsort.audit")


def open_sampled(task: Task[Any, Any], runtime: Runtime, tier: str, done: Sequence[int]) -> int:
    """Open audits for the sampled share of documents a lower tier just accepted; how many."""
    settings = runtime.settings
    if not done or settings.audit.rate <= 0 or settings.next_tier(tier) is None:
        return 0  # the last tier is the auditor, not audited
    chosen = [i for i in done if sampled(settings.audit.seed, i, settings.audit.rate)]
    if not chosen:
        return 0
    auditor = quality.auditor_of(settings)
    with session_scope(runtime.engine) as session:
        docs = list(session.exec(select(Document).where(col(Document.id).in_(chosen))))
        opened = audits.open_audits(session=session, documents=docs, auditor=auditor)
    if opened and auditor != "review":
        gather(task, runtime, opened)
    return len(opened)


def gather(task: Task[Any, Any], runtime: Runtime, ids: list[int]) -> None:
    """Send audits in the last tier's full batches, gathered across tasks in Redis (a task accepts a
    few each: one audit task apiece cost the workers as much as classifying); a part batch is sent by
    `flush` after audit.gather_s. Where Redis fails they go now, and the reconciler resends lost ones."""
    settings = runtime.settings
    last = settings.models[-1]
    try:
        chunks, flush_due = messaging.gather(
            settings, _gathered(last.name), ids, last.batch_size, settings.audit.gather_s
        )
    except redis.RedisError as exc:
        log.warning("could not gather audits, sending them now: %s", exc)
        send(task, runtime, ids)
        return
    for chunk in chunks:
        send(task, runtime, chunk)
    if flush_due:
        messaging.send(task.app, TaskName.audit_flush, countdown=settings.audit.gather_s)


def flush(self: Task[Any, Any]) -> int:
    """Send the audits gathered so far (a part batch that waited audit.gather_s); how many."""
    runtime = runtime_of(self)
    ids = messaging.drain(runtime.settings, _gathered(runtime.settings.models[-1].name))
    if ids:
        send(self, runtime, ids)
    return len(ids)


def _gathered(auditor: str) -> str:
    return f"docsort:audits:{auditor}"


def send(task: Task[Any, Any], runtime: Runtime, ids: list[int]) -> None:
    """Ask the last tier to audit documents, in batches of its size."""
    last = runtime.settings.models[-1]
    for start in range(0, len(ids), last.batch_size):
        chunk = ids[start : start + last.batch_size]
        messaging.send(task.app, TaskName.audit, [chunk], queue=messaging.tier_queue(last.name))


def audit(self: Task[Any, Any], ids: list[int]) -> dict[str, int]:
    """The last tier's answer for documents whose lower-tier answer is audited; agree or disagree."""
    runtime = runtime_of(self)
    settings = runtime.settings
    last = settings.models[-1].name
    with session_scope(runtime.engine) as session:
        open_ids = set(audits.pending(session=session, auditor=last)) & set(ids)
        docs = list(session.exec(select(Document).where(col(Document.id).in_(sorted(open_ids)))))
        paid = requests.answered_attempts(
            session=session, doc_ids=sorted(open_ids), tier=last, purposes=(Purpose.audit,)
        )
    decisions: dict[int, Decision] = {i: reused(a) for i, a in paid.items()}  # a redelivery pays nothing
    groups: dict[tuple[str, int], list[DocIn]] = defaultdict(list)
    for doc in docs:
        if doc.id is not None and doc.id not in decisions:
            groups[(doc.taxonomy, doc.taxonomy_version)].append(DocIn(doc.id, doc.text))
    for (name, version), items in groups.items():
        ledger = DatabaseLedger(runtime.engine, settings, taxonomy=name, purpose=Purpose.audit)
        runner = runtime.runner(runtime.taxonomy(name, version), last)
        decisions |= {d.doc_id: d for d in runner.run(items, ledger)}  # transient errors: the task retries
    agreed = disagreed = 0
    touched: set[tuple[str, str]] = set()
    with session_scope(runtime.engine) as session:
        for doc in docs:
            decision = decisions.get(doc.id or 0)
            if decision is None:
                continue
            settled = audits.settle(
                session=session, document_id=decision.doc_id, label=decision.label, labels=decision.labels
            )
            if settled is None or settled.agree is None:
                continue
            agreed += settled.agree
            disagreed += not settled.agree
            touched.add((settled.taxonomy, settled.tier))
        learnable = [d for d in decisions.values() if d.answered and d.outcome.value == "accepted"]
        if settings.learns and settings.local.harvest != "none":
            examples.add_answers(session=session, decisions=learnable, origin=Origin.audit)
    for taxonomy, tier in touched:
        guard(runtime, taxonomy, tier)
    return {"agreed": agreed, "disagreed": disagreed}


def guard(runtime: Runtime, taxonomy: str, tier: str) -> TrustChange | None:
    """Stop trusting a tier whose audits are confidently below its target (see the module docstring)."""
    try:
        return _guard(runtime, taxonomy, tier)
    except IntegrityError:  # a concurrent audit's guard recorded it first: one change in force per tier
        return None


def _guard(runtime: Runtime, taxonomy: str, tier: str) -> TrustChange | None:
    settings = runtime.settings
    with session_scope(runtime.engine) as session:
        tax = taxonomies.to_runtime(taxonomies.require(session=session, name=taxonomy))
        last_change = audits.latest(session=session, taxonomy=taxonomy, tier=tier)
        if last_change is not None and last_change.undone_at is None:
            return None  # already distrusted; a person or a new model decides what is next
        since = None
        if last_change is not None:  # counted afresh after an undo: the old evidence was judged
            since = last_change.undone_at
        agreement, rows = audits.agreement(session=session, taxonomy=taxonomy, tier=tier, since=since)
        level = quality.implied(settings, tier, len(tax.label_names))
        if not agreement.confidently_below(level, settings.audit.min_support):
            return None
        evidence = audits.evidence(agreement, level, target=settings.target_for(tier))
        low, high = agreement.interval
        why = f"audited agreement {agreement.rate:.2f} (90% interval {low:.2f}-{high:.2f}, {agreement.audits} audits) is below the {level:.2f} its target implies"
        if settings.tier(tier).kind == "local":
            active = local_models.active_model(session=session, taxonomy=tax)
            if active is None:
                return None
            local_models.deactivate(session=session, row=active)
            change = TrustChange(
                taxonomy=taxonomy,
                tier=tier,
                action="set_aside_local",
                local_model_id=active.id,
                reason=f"{why}: local model v{active.version} set aside; the next retrain may bring one back",
                evidence=evidence,
            )
        else:
            threshold = raised_threshold(
                [c for c, _ in rows], [a for _, a in rows], level, settings.audit.min_support
            )
            if threshold is not None:
                change = TrustChange(
                    taxonomy=taxonomy,
                    tier=tier,
                    action="raise_threshold",
                    threshold=min(threshold + 1e-9, NEVER),
                    reason=f"{why}: its threshold is raised to {threshold:.3f}, where its audits meet it",
                    evidence=evidence,
                )
            else:
                change = TrustChange(
                    taxonomy=taxonomy,
                    tier=tier,
                    action="escalate_all",
                    threshold=NEVER,
                    reason=f"{why}, at every threshold its calibration allows: everything it answers is escalated",
                    evidence=evidence,
                )
        audits.add_change(session=session, change=change)
    log.warning("drift guard: %s", change.reason, extra={"taxonomy": taxonomy, "tier": tier})
    return change


def trusted(runtime: Runtime, taxonomy: str, tier: str) -> bool:
    """Whether a lower tier's accepted answers may be learnt from: its audits reach its implied agreement
    (looked up at most every 10 s: every batch of the tier asks)."""
    return runtime.cached(("trusted", taxonomy, tier), 10.0, lambda: _trusted(runtime, taxonomy, tier))


def _trusted(runtime: Runtime, taxonomy: str, tier: str) -> bool:
    settings = runtime.settings
    with session_scope(runtime.engine) as session:
        tax = taxonomies.to_runtime(taxonomies.require(session=session, name=taxonomy))
        if any(c.tier == tier for c in audits.in_force(session=session, taxonomy=taxonomy)):
            return False  # distrusted by the guard
        agreement = audits.agreement_counts(session=session, taxonomy=taxonomy, tier=tier)
    level = quality.implied(settings, tier, len(tax.label_names))
    return agreement.confidently_at_least(level, settings.audit.min_support)


def resend_pending(task: Task[Any, Any], runtime: Runtime, older_than: datetime) -> int:
    """Audits whose message was lost (a Redis restart): send them again (the caller checks the queue is idle)."""
    last = runtime.settings.models[-1].name
    if runtime.settings.audit.to == "review":
        return 0
    with session_scope(runtime.engine) as session:
        ids = audits.pending(session=session, auditor=last, opened_before=older_than)
        done = set(
            session.exec(
                select(Document.id).where(col(Document.id).in_(ids), col(Document.status) == Status.done)
            )
        )
    waiting = [i for i in ids if i in done]
    if waiting:
        send(task, runtime, waiting)
    return len(waiting)
