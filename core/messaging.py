"""Queues, task names and sending: the one place the API and the workers agree on messages.

The API sends tasks by name through `client(settings)`, a Celery app with no tasks of its own; the
workers' app (worker/app.py) registers the tasks under the same names. Every send goes through `send`,
with one retry policy; when the broker is down it returns False instead of raising, because whatever the
message was about is already stored and the reconciler sends it again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from core.config import Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger("docsort.messaging")

CONTROL = "control"  # dispatch, reconcile, retrain: short tasks that must not wait behind model calls
IMPORTS = "imports"  # S3 listing and fetching


class TaskName(enum.StrEnum):
    """Every task docsort sends, by the name the workers register it under."""

    dispatch = "docsort.dispatch"
    classify_batch = "docsort.classify_batch"
    reconcile = "docsort.reconcile"
    retrain = "docsort.retrain"
    import_run = "docsort.import_run"
    import_reconcile = "docsort.import_reconcile"
    import_write_back = "docsort.import_write_back"
    audit = "docsort.audit"  # on the last tier's queue
    audit_flush = "docsort.audit_flush"  # sends the audits gathered in a part batch
    rollup = "docsort.rollup"  # the daily cost roll-up behind the dashboard
    batch_poll = "docsort.batch_poll"  # Batch API: submit shards, read the ended ones


# Where each task goes unless the sender names a queue (classify_batch goes to its tier's queue).
HOME_QUEUE = {
    TaskName.dispatch: CONTROL,
    TaskName.reconcile: CONTROL,
    TaskName.retrain: CONTROL,
    TaskName.import_reconcile: CONTROL,
    TaskName.import_run: IMPORTS,
    TaskName.import_write_back: IMPORTS,
    TaskName.rollup: CONTROL,
    TaskName.batch_poll: CONTROL,
    TaskName.audit_flush: CONTROL,
}

# A send tries twice, briefly: the caller must not hang on a dead broker (the reconciler resends).
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
ONCE_TTL_S = 3600  # send_once: a task lost with its worker blocks the next one at most this long


def tier_queue(tier: str) -> str:
    """The queue of a tier's classify_batch tasks."""
    return f"tier.{tier}"


def queue_names(settings: Settings) -> list[str]:
    """Every queue docsort uses: one per tier, control, imports."""
    return [tier_queue(tier.name) for tier in settings.models] + [CONTROL, IMPORTS]


def configure(app: Celery, settings: Settings) -> None:
    """The settings every docsort Celery app shares, sender or worker."""
    from kombu.entity import Queue

    if not settings.redis_url:
        raise ValueError("settings.redis_url is not set; docsort up resolves it")
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=settings.redis_url,
        task_queues=[Queue(name) for name in queue_names(settings)],
        task_default_queue=CONTROL,
        task_create_missing_queues=False,  # a misspelt queue is an error, not a new queue
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
    )


def client(settings: Settings) -> Celery:
    """A Celery app that only sends (the API's): no tasks, same queues and serialisation."""
    app = Celery("docsort-client", set_as_current=False)
    configure(app, settings)
    return app


def send(
    app: Celery,
    task: TaskName,
    args: Sequence[Any] = (),
    *,
    queue: str | None = None,
    countdown: float = 0.0,
) -> bool:
    """Send a task by name; False (logged) when the broker does not take it."""
    target = queue or HOME_QUEUE.get(task)
    if target is None:
        raise ValueError(f"{task} has no home queue; name one")
    try:
        app.send_task(
            str(task),
            args=list(args),
            queue=target,
            countdown=countdown or None,
            retry=True,
            retry_policy=RETRY_POLICY,
        )
    except Exception as exc:  # kombu raises many kinds; the reconciler resends whatever this was
        log.warning("broker did not take %s: %s", task, exc)
        return False
    return True


def _redis(settings: Settings, timeout_s: float = 5) -> redis.Redis:
    """A client of the broker's Redis that gives up on a dead server after timeout_s."""
    import redis

    return redis.Redis.from_url(
        settings.redis_url or "", socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def _once_key(task: TaskName, args: Sequence[Any]) -> str:
    return ":".join(["docsort:once", str(task), *map(str, args)])


def send_once(
    app: Celery, settings: Settings, task: TaskName, args: Sequence[Any], *, ttl_s: int = ONCE_TTL_S
) -> bool:
    """Send a task unless the same one (task and args) is still pending; True if sent.

    The task calls release_once when it starts; a task lost with its worker blocks the next for ttl_s.
    """
    import redis

    client = _redis(settings)
    try:
        if not client.set(_once_key(task, args), "1", nx=True, ex=ttl_s):
            return False  # one is queued or running: it sees what made this one wanted, or the next does
    except redis.RedisError as exc:
        log.warning("could not send %s: %s", task, exc)
        return False
    if send(app, task, args):
        return True
    release_once(settings, task, args)
    return False


def release_once(settings: Settings, task: TaskName, args: Sequence[Any]) -> None:
    """Let send_once send this task with these args again."""
    import redis

    try:
        redis.Redis.from_url(settings.redis_url or "", socket_timeout=5).delete(_once_key(task, args))
    except redis.RedisError as exc:  # the key expires by itself
        log.warning("could not release %s: %s", task, exc)


def kick(app: Celery, settings: Settings, *, tier: str, count: int) -> bool:
    """Ask the workers to dispatch documents waiting at tier: at once for a full batch, else soon."""
    full = count >= settings.tier(tier).batch_size
    countdown = 0.0 if full else settings.worker.flush_interval_s
    return send(app, TaskName.dispatch, [tier], countdown=countdown)


# Takes a full chunk off the head of a list, or nothing: two workers never take the same ids.
_TAKE_FULL = """
if redis.call('LLEN', KEYS[1]) < tonumber(ARGV[1]) then return {} end
local got = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('LTRIM', KEYS[1], tonumber(ARGV[1]), -1)
return got
"""


def gather(
    settings: Settings, key: str, ids: Sequence[int], size: int, wait_s: float
) -> tuple[list[list[int]], bool]:
    """Add ids to the Redis list key and take out its full chunks of size (each id comes out once);
    also whether the caller is to send a flush of the rest in wait_s (ids wait and none is due yet).

    Raises redis.RedisError: the caller sends the ids itself.
    """
    client = _redis(settings)
    client.rpush(key, *ids)
    take = client.register_script(_TAKE_FULL)
    chunks: list[list[int]] = []
    while got := take(keys=[key], args=[size]):
        chunks.append([int(i) for i in got])
    flush_due = bool(client.llen(key)) and bool(
        client.set(f"{key}:flush", "1", nx=True, ex=max(1, round(wait_s)) + 60)
    )
    return chunks, flush_due


def drain(settings: Settings, key: str) -> list[int]:
    """Take every id gathered in key (a flush: the next gather may ask for the next flush)."""
    client = _redis(settings)
    pipe = client.pipeline(transaction=True)
    pipe.delete(f"{key}:flush")
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    _, got, _ = pipe.execute()
    return [int(i) for i in got]


def queue_depths(settings: Settings, names: Sequence[str]) -> dict[str, int | None]:
    """Messages waiting in each Redis queue (None for all when Redis does not answer)."""
    import redis

    try:
        client = _redis(settings, timeout_s=2)
        pipe = client.pipeline()
        for name in names:
            pipe.llen(name)
        return {name: int(depth) for name, depth in zip(names, pipe.execute(), strict=True)}
    except redis.RedisError:  # the broker is down: depths are unknown, not zero
        return dict.fromkeys(names)
