"""Submitting Batch API shards: documents waiting at a batch tier become a shard (stored first), whose file is
uploaded and whose batch is created, each id stored as soon as it exists (worker/batches.py says the rest)."""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import openai
from sqlmodel import col, select

from classifiers.llm_runner import LLMRunner, Prepared
from classifiers.packing import DocIn
from core.errors import PermanentModelError
from core.tiers import ModelTier
from core.vocab import ShardStatus
from store import requests, shards, spend
from store.db import session_scope
from store.models import BatchShard, Document, utcnow
from worker.books import caps_for
from worker.runtime import Runtime

log = logging.getLogger("docsort.batches")


def client(tier: ModelTier) -> openai.OpenAI:
    """The provider's client for files and batches. It never retries: a create whose answer was lost may
    have made a batch, and a second one would pay twice; the next poll looks the shard's key up instead."""
    return openai.OpenAI(
        base_url=tier.base_url,
        api_key=tier.api_key.get_secret_value(),
        timeout=max(tier.timeout_s, 300.0),  # files of up to 200 MB
        max_retries=0,
    )


def runner_for(runtime: Runtime, taxonomy: str, version: int, tier: str) -> LLMRunner:
    """The tier's runner (an LLM tier: the only kind a Batch API serves)."""
    runner = runtime.runner(runtime.taxonomy(taxonomy, version), tier)
    if not isinstance(runner, LLMRunner):
        raise PermanentModelError(f"tier {tier} cannot use a Batch API")
    return runner


def aware(moment: datetime) -> datetime:
    """A stored moment as UTC (SQLite returns them naive)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def submit_due(runtime: Runtime, tier: ModelTier) -> list[int]:
    """Make shards of the documents waiting long enough at tier; the shards made."""
    made: list[int] = []
    per_file = tier.batch_max_requests * tier.batch_size
    with session_scope(runtime.engine) as session:
        rows = shards.waiting(
            session=session, tier=tier.name, imports_only=tier.batch_api == "imports", limit=per_file
        )
    groups: dict[tuple[str, int, int | None], list[tuple[int, str, datetime]]] = defaultdict(list)
    for doc_id, text, taxonomy, version, import_id, since in rows:
        groups[(taxonomy, version, import_id)].append((doc_id, text, since))
    now = utcnow()
    for (taxonomy, version, import_id), docs in groups.items():
        oldest = min(aware(since) for _, _, since in docs)
        if len(docs) < per_file and (now - oldest).total_seconds() < tier.batch_flush_s:
            continue  # more may come: a fuller file later
        shard_id = make_shard(runtime, tier, taxonomy, version, import_id, [DocIn(i, t) for i, t, _ in docs])
        if shard_id is not None:
            made.append(shard_id)
    return made


def make_shard(
    runtime: Runtime,
    tier: ModelTier,
    taxonomy: str,
    version: int,
    import_id: int | None,
    docs: list[DocIn],
    retry: int = 0,
) -> int | None:
    """Store a shard of docs (within the limits), then upload and submit it; its id, or None.

    retry > 0: documents asked again, each alone in its line (after a failed, expired or invalid one)."""
    settings = runtime.settings
    runner = runner_for(runtime, taxonomy, version, tier.name)
    prepared = runner.prepare(docs, attempt=retry)
    with session_scope(runtime.engine) as session:
        room = None
        if tier.batch_enqueued_tokens is not None:
            room = tier.batch_enqueued_tokens - shards.in_flight_tokens(session=session, tier=tier.name)
    lines: list[tuple[Prepared, bytes]] = []
    size = tokens = 0
    for item in prepared:
        line = _line(runner, item)
        if len(lines) >= tier.batch_max_requests or size + len(line) > tier.batch_max_bytes:
            break
        if room is not None and tokens + item.request.input_tokens > room:
            break
        lines.append((item, line))
        size += len(line)
        tokens += item.request.input_tokens
    if not lines:
        return None  # the provider's enqueued-token limit is full: they wait for a shard to end
    key = uuid.uuid4().hex
    shard = BatchShard(
        key=key,
        tier=tier.name,
        taxonomy=taxonomy,
        taxonomy_version=version,
        import_id=import_id,
        status=ShardStatus.created,
        lines=[{"id": item.request.id, "doc_ids": list(item.request.doc_ids)} for item, _ in lines],
        requests=len(lines),
        input_tokens=tokens,
        bytes=size,
        retry=retry,
    )
    doc_ids = [i for item, _ in lines for i in item.request.doc_ids]
    caps = caps_for(settings, taxonomy)
    day = spend.today() if caps else None
    with session_scope(runtime.engine) as session:
        if day is not None:
            reserve = sum(item.request.reserve_nanousd for item, _ in lines)
            if spend.reserve(session=session, day=day, caps=caps, amount=reserve) is not None:
                session.rollback()
                log.warning("spending cap: batch of %d requests waits", len(lines), extra={"tier": tier.name})
                return None
        if not shards.create(session=session, shard=shard, doc_ids=doc_ids):
            session.rollback()  # another runner took some of them: they go in its shard
            return None
        for item, _ in lines:
            requests.add(
                session=session,
                request=item.request,
                taxonomy=taxonomy,
                claim_token=shards.token(shard),
                reserved_day=day,
                batched=True,
            )
        shard_id = shard.id
    assert shard_id is not None
    submit(runtime, tier, shard_id, b"".join(line for _, line in lines))
    return shard_id


def _line(runner: LLMRunner, item: Prepared) -> bytes:
    request = {
        "custom_id": item.request.id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": runner.body(item),
    }
    return (json.dumps(request, separators=(",", ":")) + "\n").encode()


def submit(runtime: Runtime, tier: ModelTier, shard_id: int, content: bytes | None) -> None:
    """Upload a shard's file and create its batch, storing each id at once; resumes where it stopped."""
    with session_scope(runtime.engine) as session:
        shard = shards.get(session=session, shard_id=shard_id)
    assert shard is not None
    api = client(tier)
    if shard.batch_id is None and shard.status != ShardStatus.created:
        found = _find(api, shard.key)  # it may have been created by a worker that died before storing it
        if found is not None:
            _store_batch(runtime, shard_id, found)
            return
    file_id = shard.file_id
    if file_id is None:
        data = content if content is not None else _rebuild(runtime, shard)
        uploaded = api.files.create(file=(f"docsort-shard-{shard.key}.jsonl", data), purpose="batch")
        file_id = uploaded.id
        with session_scope(runtime.engine) as session:
            shards.record(session=session, shard_id=shard_id, file_id=file_id, status=ShardStatus.uploaded)
    created = api.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"docsort_shard": shard.key, "docsort_tier": shard.tier},
    )
    _store_batch(runtime, shard_id, created)
    log.info("batch submitted", extra={"shard": shard.key, "batch": created.id, "requests": shard.requests})


def _find(api: openai.OpenAI, key: str) -> Any:
    """The provider's batch whose metadata names this shard, if any."""
    for batch in api.batches.list(limit=100):
        if (batch.metadata or {}).get("docsort_shard") == key:
            return batch
    return None


def _store_batch(runtime: Runtime, shard_id: int, batch: Any) -> None:
    expires = datetime.fromtimestamp(batch.expires_at, UTC) if batch.expires_at else None
    with session_scope(runtime.engine) as session:
        shards.record(
            session=session,
            shard_id=shard_id,
            batch_id=batch.id,
            file_id=batch.input_file_id,
            status=ShardStatus.submitted,
            provider_status=batch.status,
            expires_at=expires,
            submitted_at=utcnow(),
        )


def _rebuild(runtime: Runtime, shard: BatchShard) -> bytes:
    """A shard's file again from its stored lines (after a crash before the upload)."""
    runner = runner_for(runtime, shard.taxonomy, shard.taxonomy_version, shard.tier)
    texts = texts_of(runtime, [i for line in shard.lines for i in line["doc_ids"]])
    return b"".join(
        _line(
            runner,
            runner.prepare_line([DocIn(i, texts[i]) for i in line["doc_ids"]], line["id"], shard.retry),
        )
        for line in shard.lines
    )


def texts_of(runtime: Runtime, ids: list[int]) -> dict[int, str]:
    with session_scope(runtime.engine) as session:
        rows = session.exec(select(Document.id, Document.text).where(col(Document.id).in_(ids)))
        return {i: t for i, t in rows if i is not None}
