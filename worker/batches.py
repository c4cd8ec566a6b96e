"""The OpenAI Batch API behind imports: half price, answers within 24 hours.

A tier with `batch_api` "imports" (documents of imports that asked, `"batch": true`) or "always" sends
its waiting documents as shards: the same packing as synchronous requests (several documents a request),
each request a line of a JSONL file, within the provider's limits (requests and bytes a file, and the
input tokens enqueued at once). Everything runs on the one periodic job (`docsort.batch_poll`, on beat):

    submit   documents waiting long enough (`batch_flush_s`) or enough to fill a file become a shard:
             its row, its lines and its requests in the books are stored and its documents moved to
             `batched` in one transaction; then its file is uploaded and its batch created, each id
             stored as soon as it exists. A shard found without a batch id looks its key up in the
             provider's batches (the metadata) before creating one: never submitted twice, never lost.
    poll     reads each submitted shard's batch; once it has ended (completed, expired, failed,
             cancelled) its answers are read like synchronous ones: the same parsing, confidence,
             calibration and escalation, recorded at batch prices. Documents of lines that failed for a
             transient reason or expired are resubmitted, each alone (`batch_line_retries` times), then
             sent synchronously; those whose answer was missing or invalid are re-asked the same way,
             through the Batch API still, at its prices, until they have been asked 1 + `max_reasks`
             times as a synchronous run asks them; then they are escalated (review at the last tier).
             Invalid requests fail their documents with the reason. Files are deleted once read.

Escalations of batched documents go to the next tier as a batch (when it takes them) or synchronously
(`batch_escalation`), so the worst case is about twice the 24-hour window.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

import openai
from celery import Task
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from classifiers.decision import AttemptRecord, PlannedRequest
from classifiers.llm_runner import Answer
from classifiers.packing import DocIn
from core.errors import InvalidAnswer, ModelError
from core.tiers import ModelTier
from core.vocab import ShardStatus, Status
from store import lifecycle, shards
from store.db import session_scope
from store.models import BatchShard, Document, ModelRequest, utcnow
from worker import batch_submit
from worker.books import DatabaseLedger
from worker.runtime import Runtime, runtime_of
from worker.tasks import record_decisions, send_batches

log = logging.getLogger("docsort.batches")
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
TRANSIENT_CODES = frozenset({"batch_expired", "server_error", "rate_limit_exceeded", "timeout"})


def batch_tiers(runtime: Runtime) -> list[ModelTier]:
    """The tiers that use a Batch API."""
    return [t for t in runtime.settings.models if t.kind != "local" and t.batch_api != "off"]


# --- polling and reading answers --------------------------------------------------------------------


def poll(self: Task[Any, Any]) -> dict[str, int]:
    """The periodic job of the Batch API: submit what is due, resume what a crash left, read what ended."""
    runtime = runtime_of(self)
    counts = {"submitted": 0, "resumed": 0, "ingested": 0}
    for tier in batch_tiers(runtime):
        counts["submitted"] += len(batch_submit.submit_due(runtime, tier))
    with session_scope(runtime.engine) as session:
        open_shards = shards.unfinished(session=session)
    for shard in open_shards:
        tier = runtime.settings.tier(shard.tier)
        assert shard.id is not None
        if shard.batch_id is None:
            # Older than a request's time-out and the lease grace: its worker died on the way.
            resume_after = tier.timeout_s + runtime.settings.worker.lease_grace_s
            if (utcnow() - batch_submit.aware(shard.created_at)).total_seconds() >= resume_after:
                batch_submit.submit(runtime, tier, shard.id, None)
                counts["resumed"] += 1
            continue
        batch = batch_submit.client(tier).batches.retrieve(shard.batch_id)
        with session_scope(runtime.engine) as session:
            shards.record(
                session=session,
                shard_id=shard.id,
                provider_status=batch.status,
                counts=batch.request_counts.model_dump() if batch.request_counts else {},
            )
        if batch.status in TERMINAL:
            ingest(self, runtime, shard, batch)
            counts["ingested"] += 1
    return counts


def _download(api: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if not file_id:
        return {}
    text = api.files.content(file_id).text
    return {row["custom_id"]: row for row in (json.loads(line) for line in text.splitlines() if line.strip())}


def ingest(task: Task[Any, Any], runtime: Runtime, shard: BatchShard, batch: Any) -> None:
    """Read an ended batch's answers into decisions, as synchronous answers are; resubmit or go
    synchronous where lines failed; delete the files."""
    settings = runtime.settings
    tier = settings.tier(shard.tier)
    api = batch_submit.client(tier)
    results = _download(api, batch.output_file_id) | _download(api, batch.error_file_id)
    runner = batch_submit.runner_for(runtime, shard.taxonomy, shard.taxonomy_version, shard.tier)
    ledger = DatabaseLedger(
        runtime.engine, settings, taxonomy=shard.taxonomy, claim_token=shards.token(shard)
    )
    with session_scope(runtime.engine) as session:
        docs = {d.id: d for d in shards.claim(session=session, shard=shard) if d.id is not None}
        stored = {r.id: r for r in session.exec(_requests_of(shard))}
    attempts: dict[int, list[AttemptRecord]] = defaultdict(list)
    answers: dict[int, Answer] = {}
    resubmit: list[int] = []  # lines that failed or expired: their documents again, alone
    reask: list[int] = []  # documents whose answer was missing or broke the schema: asked again, alone
    synchronous: list[int] = []
    failed: dict[int, str] = {}
    for line in shard.lines:
        ids = [i for i in line["doc_ids"] if i in docs]
        if not ids:
            continue  # recorded already (a second ingestion of the same shard finds nothing)
        result = results.get(line["id"], {})
        response = result.get("response") or {}
        planned = _planned(stored.get(line["id"]))
        if response.get("status_code") == 200:
            prepared = runner.prepare_line([DocIn(i, docs[i].text) for i in ids], line["id"], shard.retry)
            try:
                completion = runner.model.completion_from(response["body"])
            except InvalidAnswer as exc:
                if planned:
                    ledger.failed(planned, exc)
                for packed in prepared.batch:
                    attempts[packed.doc.id].append(runner.failed_attempt(packed, exc, line["id"]))
                reask += ids
                continue
            missing, records, total = runner.settle(prepared, completion, attempts, answers, batched=True)
            if planned:
                ledger.answered(planned, completion, total, records)
            reask += [p.doc.id for p in missing]
            continue
        error = result.get("error") or {}
        code = str(error.get("code") or response.get("status_code") or "missing")
        status = int(response.get("status_code") or 0)
        if planned:
            ledger.failed(planned, ModelError(f"batch line: {code}"))
        if 400 <= status < 500 and status != 429:
            reason = json.dumps(response.get("body", {}).get("error", {}))[:300]
            failed.update(dict.fromkeys(ids, f"{shard.tier}: invalid batch request ({status}): {reason}"))
        elif shard.retry < tier.batch_line_retries:
            resubmit += ids
        else:
            synchronous += ids
    # A document is asked at most 1 + max_reasks times, as a synchronous run asks it: after that its
    # missing or broken answer is final (escalated, or review at the last tier), not asked again.
    final = set(reask) if shard.retry >= tier.max_reasks else set()
    resubmit += [i for i in reask if i not in final]
    decisions = [runner.decide(i, answers.get(i), attempts[i]) for i in docs if i in answers or i in final]
    token = shards.token(shard)
    escalate_by_batch = tier.batch_escalation == "batch"
    record_decisions(
        task,
        runtime,
        shard.tier,
        token,
        decisions,
        {i: d.taxonomy for i, d in docs.items() if i},
        escalate_by_batch,
    )
    first = shard.tier == settings.models[0].name
    with session_scope(runtime.engine) as session:
        for doc_id, reason in failed.items():
            lifecycle.mark(session=session, ids=[doc_id], token=token, status=Status.failed, reason=reason)
        sync_ids = shards.hand_back(
            session=session,
            ids=synchronous,
            token_now=f"sync:{shard.key}"[:64],
            first_tier=first,
            reason="asked again synchronously after its batch",
        )
        retry_ids = shards.hand_back(
            session=session,
            ids=resubmit,
            token_now=f"retry:{shard.key}"[:64],
            first_tier=first,
            reason="asked again in a batch, alone",
        )
    if sync_ids:  # their lines failed or expired in every try: asked synchronously, each alone
        send_batches(task, shard.tier, sync_ids, alone=True)
    if retry_ids:
        _resubmit(runtime, tier, shard, retry_ids)
    _delete_files(api, [shard.file_id, batch.output_file_id, batch.error_file_id])
    assert shard.id is not None
    with session_scope(runtime.engine) as session:
        shards.record(session=session, shard_id=shard.id, status=ShardStatus.ingested, finished_at=utcnow())
    log.info(
        "batch ingested",
        extra={
            "shard": shard.key,
            "answered": len(decisions),
            "sync": len(sync_ids),
            "retried": len(retry_ids),
        },
    )


def _requests_of(shard: BatchShard) -> SelectOfScalar[ModelRequest]:
    return select(ModelRequest).where(col(ModelRequest.id).in_([line["id"] for line in shard.lines]))


def _planned(row: ModelRequest | None) -> PlannedRequest | None:
    if row is None:
        return None
    return PlannedRequest(
        id=row.id,
        tier=row.tier,
        model=row.model,
        purpose=row.purpose,
        doc_ids=tuple(row.doc_ids),
        input_tokens=0,
        max_output_tokens=0,
        estimate_nanousd=row.estimate_nanousd,
        reserve_nanousd=row.reserve_nanousd,
    )


def _resubmit(runtime: Runtime, tier: ModelTier, shard: BatchShard, ids: list[int]) -> None:
    """Documents to ask again, each alone in its line, in a new shard (one more try), now."""
    texts = batch_submit.texts_of(runtime, ids)
    with session_scope(runtime.engine) as session:
        session.execute(update(Document).where(col(Document.id).in_(ids)).values(claim_token=None))
    batch_submit.make_shard(
        runtime,
        tier,
        shard.taxonomy,
        shard.taxonomy_version,
        shard.import_id,
        [DocIn(i, texts[i]) for i in ids],
        retry=shard.retry + 1,
    )


def _delete_files(api: openai.OpenAI, file_ids: list[str | None]) -> None:
    for file_id in file_ids:
        if file_id:
            try:
                api.files.delete(file_id)
            except openai.OpenAIError as exc:  # a file left behind costs storage, not answers
                log.warning("could not delete batch file %s: %s", file_id, exc)
