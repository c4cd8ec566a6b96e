"""Bulk imports: run_import lists, fetches and stores an S3 prefix page by page; the tasks take ids."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from celery import Task
from sqlalchemy import Engine

from core import messaging
from core.config import Settings
from core.errors import DocsortError
from core.messaging import TaskName
from core.vocab import ImportStatus
from ingest.s3 import Limits, S3Location, list_page, make_client, process_page, put_lines
from store import imports, taxonomies
from store.db import session_scope
from worker.retry import RETRYABLE, out_of_retries
from worker.runtime import runtime_of

log = logging.getLogger("docsort.worker")
MORE = "more"  # the time budget ran out with pages left: the task queues itself again
LOST = "lost"  # another runner stored the page first: it carries on, this one stops


def client_for(settings: Settings, endpoint_url: str | None) -> Any:
    """An S3 client for an import's endpoint (else the configured one), sized for fetching."""
    return make_client(
        endpoint_url=endpoint_url or settings.s3.endpoint_url,
        region=settings.s3.region,
        concurrency=settings.s3.fetch_concurrency,
    )


def run_import(
    *,
    engine: Engine,
    settings: Settings,
    import_id: int,
    kick: Callable[[int], None],
    deadline: float | None = None,
    client: Any = None,
) -> str:
    """Store pages from the import's resume point until it is listed (or deadline); then kick(new)."""
    with session_scope(engine) as session:
        job = imports.get_import(session=session, import_id=import_id)
        if job.status != ImportStatus.listing:
            return job.status
        taxonomy = taxonomies.require(session=session, name=job.taxonomy)
    location = S3Location.parse(job.source)
    client = client or client_for(settings, job.endpoint_url)
    limits = Limits(settings.s3.max_object_bytes, settings.api.max_document_bytes)
    first_tier = settings.models[0].name
    listed, token = job.listed, job.continuation_token
    with ThreadPoolExecutor(settings.s3.fetch_concurrency, thread_name_prefix=f"import-{import_id}") as pool:
        while True:
            page = list_page(client, location, token=token, page_size=settings.s3.page_size)
            outcomes = process_page(client, location, page.objects, mode=job.mode, limits=limits, pool=pool)
            with session_scope(engine) as session:
                counts = imports.store_page(
                    session=session,
                    import_id=import_id,
                    expect_listed=listed,
                    expect_token=token,
                    next_token=page.next_token,
                    outcomes=outcomes,
                    taxonomy=taxonomy,
                    first_tier=first_tier,
                    batch=job.batch,
                )
            if counts is None:
                log.info("import page stored by another runner", extra={"import_id": import_id})
                return LOST
            if counts.accepted:
                kick(counts.accepted)  # after the commit: stored first, then queued
            listed, token = listed + len(page.objects), page.next_token
            if token is None:
                return ImportStatus.listed
            if deadline is not None and time.monotonic() > deadline:
                return MORE


def write_back(*, engine: Engine, settings: Settings, import_id: int, client: Any = None) -> str:
    """Write the import's results as one JSONL object next to its prefix; returns its URI."""
    with session_scope(engine) as session:
        job = imports.get_import(session=session, import_id=import_id)
    location = S3Location.parse(job.source)
    key = location.results_key(import_id)
    client = client or client_for(settings, job.endpoint_url)
    with session_scope(engine) as session:
        rows = imports.export_rows(session=session, import_id=import_id)
        put_lines(client, location.bucket, key, (json.dumps(row, ensure_ascii=False) for row in rows))
    return location.uri(key)


def _give_up(task: Task[Any, Any], import_id: int, error: str) -> str:
    with session_scope(runtime_of(task).engine) as session:
        imports.fail(session=session, import_id=import_id, error=error)
    log.error("import failed", extra={"import_id": import_id, "error": error[:300]})
    return ImportStatus.failed


def import_run(self: Task[Any, Any], import_id: int) -> str:
    """List, fetch, extract and store the import's pages from its last stored one."""
    runtime = runtime_of(self)
    settings = runtime.settings
    first_tier = settings.models[0].name
    deadline = time.monotonic() + settings.s3.task_time_budget_s

    def kick(count: int) -> None:  # after each page's commit: stored first, then queued
        messaging.kick(self.app, settings, tier=first_tier, count=count)

    try:
        state = run_import(
            engine=runtime.engine, settings=settings, import_id=import_id, kick=kick, deadline=deadline
        )
    except RETRYABLE as exc:
        if not out_of_retries(self.request.retries, self.max_retries):
            raise
        return _give_up(self, import_id, f"gave up after {self.request.retries} retries: {exc}")
    except DocsortError as exc:  # no such bucket, access denied, a bad request: not retried
        return _give_up(self, import_id, str(exc))
    if state == MORE:
        messaging.send(self.app, TaskName.import_run, [import_id])
    return state


def import_reconcile(self: Task[Any, Any]) -> list[int]:
    """Resume imports whose runner has been silent for longer than s3.stale_after_s."""
    runtime = runtime_of(self)
    older = timedelta(seconds=runtime.settings.s3.stale_after_s)
    with session_scope(runtime.engine) as session:
        ids = imports.stale(session=session, older_than=older)
    for import_id in ids:
        messaging.send(self.app, TaskName.import_run, [import_id])
    if ids:
        log.warning("resumed stalled imports", extra={"ids": ids})
    return ids


def import_write_back(self: Task[Any, Any], import_id: int) -> str:
    """Write an import's results to S3 as JSONL next to its prefix."""
    runtime = runtime_of(self)
    return write_back(engine=runtime.engine, settings=runtime.settings, import_id=import_id)
