"""Bulk imports: run_import lists, fetches and stores an S3 prefix page by page; the tasks take ids."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready
from sqlalchemy import Engine

from docsort.config import Settings
from docsort.errors import DocsortError
from ingest.s3 import Limits, S3Location, list_page, make_client, process_page, put_lines
from store import crud, imports
from store.db import session_scope
from worker.retry import RETRYABLE, out_of_retries
from worker.runtime import Runtime

log = logging.getLogger("docsort.worker")
IMPORTS = "imports"
CONTROL = "control"
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
        if job.status != imports.LISTING:
            return job.status
        taxonomy = crud.get_taxonomy(session=session, name=job.taxonomy)
        assert taxonomy is not None
    location = S3Location.parse(job.source)
    client = client or client_for(settings, job.endpoint_url)
    limits = Limits(settings.s3.max_object_bytes, settings.api.max_document_bytes)
    stage = settings.models[0].name
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
                    stage=stage,
                )
            if counts is None:
                log.info("import page stored by another runner", extra={"import_id": import_id})
                return LOST
            if counts.accepted:
                kick(counts.accepted)  # after the commit: stored first, then queued
            listed, token = listed + len(page.objects), page.next_token
            if token is None:
                return imports.LISTED
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


def register_import_tasks(app: Celery, runtime: Runtime) -> None:
    """Define the import tasks on app (queue imports) and their reconciler (beat, worker start)."""
    settings = runtime.settings
    stage = settings.models[0].name

    def kick(count: int) -> None:
        countdown = 0.0 if count >= settings.tier(stage).batch_size else settings.worker.flush_interval_s
        try:
            app.send_task(
                "docsort.dispatch",
                args=[stage],
                queue=CONTROL,
                countdown=countdown,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
            )
        except Exception as exc:  # stored already: the reconciler queues them when the broker is back
            log.warning("broker unavailable, imported documents wait for the reconciler: %s", exc)

    def give_up(import_id: int, error: str) -> str:
        with session_scope(runtime.engine) as session:
            imports.fail(session=session, import_id=import_id, error=error)
        log.error("import failed", extra={"import_id": import_id, "error": error[:300]})
        return imports.FAILED

    @app.task(
        bind=True,
        name="docsort.import_run",
        shared=False,
        acks_late=True,  # safe: a page is stored once whoever runs it (guarded by its token)
        autoretry_for=RETRYABLE,
        retry_backoff=2,
        retry_backoff_max=120,
        retry_jitter=True,
        max_retries=8,
    )
    def import_run(self: Task, import_id: int) -> str:
        """List, fetch, extract and store the import's pages from its last stored one."""
        deadline = time.monotonic() + settings.s3.task_time_budget_s
        try:
            state = run_import(
                engine=runtime.engine, settings=settings, import_id=import_id, kick=kick, deadline=deadline
            )
        except RETRYABLE as exc:
            if not out_of_retries(self.request.retries, self.max_retries):
                raise
            return give_up(import_id, f"gave up after {self.request.retries} retries: {exc}")
        except DocsortError as exc:  # no such bucket, access denied, a bad request: not retried
            return give_up(import_id, str(exc))
        if state == MORE:
            import_run.apply_async(args=[import_id], queue=IMPORTS)
        return state

    @app.task(name="docsort.import_reconcile", ignore_result=True, shared=False)
    def import_reconcile() -> list[int]:
        """Resume imports whose runner has been silent for longer than s3.stale_after_s."""
        with session_scope(runtime.engine) as session:
            ids = imports.stale(session=session, older_than=timedelta(seconds=settings.s3.stale_after_s))
        for import_id in ids:
            import_run.apply_async(args=[import_id], queue=IMPORTS)
        if ids:
            log.warning("resumed stalled imports", extra={"ids": ids})
        return ids

    @app.task(
        name="docsort.import_write_back",
        shared=False,
        autoretry_for=RETRYABLE,
        retry_backoff=2,
        max_retries=5,
    )
    def import_write_back(import_id: int) -> str:
        """Write an import's results to S3 as JSONL next to its prefix."""
        return write_back(engine=runtime.engine, settings=settings, import_id=import_id)

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "reconcile-imports": {
            "task": "docsort.import_reconcile",
            "schedule": settings.worker.reconcile_every_s,
            "options": {"queue": CONTROL},
        },
    }

    def reconcile_at_start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return  # another app in the same process (tests)
        app.send_task("docsort.import_reconcile", queue=CONTROL)

    worker_ready.connect(reconcile_at_start, weak=False)
