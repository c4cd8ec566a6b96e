"""create_celery(settings): the workers' Celery app with its queues, schedule and tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_ready

from classifiers.runners import check_kinds
from core import messaging
from core.config import Settings
from core.messaging import TaskName
from worker import audit, batches, imports, learning, tasks
from worker.retry import RETRYABLE
from worker.runtime import DocsortCelery, Runtime

log = logging.getLogger("docsort.worker")


@dataclass(frozen=True)
class TaskSpec:
    """A task's function and how Celery runs it."""

    name: TaskName
    function: Callable[..., Any]
    retried: bool = False  # RETRYABLE errors are retried with exponential backoff and jitter
    max_retries: int | None = None
    acks_late: bool = False  # only on idempotent tasks
    ignore_result: bool = True  # the database holds outcomes; Flower shows tasks from their events


TASKS = [
    TaskSpec(TaskName.dispatch, tasks.dispatch),
    # acks_late is safe: claims and writes are guarded, so a redelivery changes nothing.
    TaskSpec(TaskName.classify_batch, tasks.classify_batch, retried=True, max_retries=6, acks_late=True),
    TaskSpec(TaskName.reconcile, tasks.reconcile),
    TaskSpec(TaskName.retrain, learning.retrain),
    # acks_late is safe: a page is stored once whoever runs it (guarded by its token).
    TaskSpec(TaskName.import_run, imports.import_run, retried=True, max_retries=8, acks_late=True),
    TaskSpec(TaskName.import_reconcile, imports.import_reconcile),
    TaskSpec(TaskName.import_write_back, imports.import_write_back, retried=True, max_retries=5),
    # acks_late is safe: paid audit answers are reused and an audit is settled once.
    TaskSpec(TaskName.audit, audit.audit, retried=True, max_retries=6, acks_late=True),
    TaskSpec(TaskName.audit_flush, audit.flush),  # lost: the reconciler resends waiting audits
    TaskSpec(TaskName.rollup, tasks.rollup_costs),
    TaskSpec(TaskName.batch_poll, batches.poll),  # a failed poll is the next period's to do again
]

# The periodic jobs, all on the one beat: sweeping documents and imports that lost their message, the
# dashboard's roll-ups, and the Batch API's submitting and polling.
PERIODIC = (TaskName.reconcile, TaskName.import_reconcile, TaskName.rollup, TaskName.batch_poll)


def create_celery(settings: Settings, runtime: Runtime | None = None) -> DocsortCelery:
    """The workers' app for settings; redis_url must be resolved by the caller."""
    check_kinds(settings)
    app = DocsortCelery("docsort", set_as_current=False)
    messaging.configure(app, settings)
    app.conf.update(
        task_track_started=True,
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            str(name): {
                "task": str(name),
                "schedule": settings.worker.reconcile_every_s,
                "options": {"queue": messaging.HOME_QUEUE[name]},
            }
            for name in PERIODIC
        },
    )
    app.runtime = runtime or Runtime(settings)
    for spec in TASKS:
        app.task(
            name=str(spec.name),
            bind=True,
            shared=False,  # other apps in the same process (tests) keep their own tasks
            ignore_result=spec.ignore_result,
            acks_late=spec.acks_late,
            reject_on_worker_lost=spec.acks_late,  # a killed child's message goes back to the queue
            autoretry_for=RETRYABLE if spec.retried else (),
            retry_backoff=2,
            retry_backoff_max=120,
            retry_jitter=True,
            max_retries=spec.max_retries,
        )(spec.function)

    def reconcile_at_start(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is not app:
            return  # another app in the same process (tests)
        for name in PERIODIC:
            messaging.send(app, name)

    worker_ready.connect(reconcile_at_start, weak=False)
    return app
