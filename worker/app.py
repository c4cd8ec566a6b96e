"""create_celery(settings): the Celery app with its queues, schedule and tasks."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu.entity import Queue

from docsort.config import Settings
from worker.imports import register_import_tasks
from worker.learning import register_learning_tasks
from worker.runtime import Runtime
from worker.tasks import register_tasks

log = logging.getLogger("docsort.worker")
CONTROL = "control"
IMPORTS = "imports"


def queue_names(settings: Settings) -> list[str]:
    """Every queue docsort uses: one per tier, control, imports."""
    return [tier.queue for tier in settings.models] + [CONTROL, IMPORTS]


def create_celery(settings: Settings, runtime: Runtime | None = None) -> Celery:
    """The Celery app for settings; redis_url must be resolved by the caller."""
    if not settings.redis_url:
        raise ValueError("settings.redis_url is not set; docsort up resolves it")
    app = Celery("docsort", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_queues=[Queue(name) for name in queue_names(settings)],
        task_default_queue=CONTROL,
        task_create_missing_queues=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        beat_schedule={
            "reconcile": {
                "task": "docsort.reconcile",
                "schedule": settings.worker.reconcile_every_s,
                "options": {"queue": CONTROL},
            }
        },
    )
    runtime = runtime or Runtime(settings)
    register_tasks(app, runtime)
    register_import_tasks(app, runtime)
    register_learning_tasks(app, runtime)

    def reconcile_at_start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return  # another app in the same process (tests)
        app.send_task("docsort.reconcile", queue=CONTROL)

    worker_ready.connect(reconcile_at_start, weak=False)
    return app
