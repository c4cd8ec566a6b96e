"""How many documents a classify task carries (worker.requests_per_task): read off a real Redis queue."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis

from core.config import WorkerSettings
from core.messaging import tier_queue
from tests.conftest import make_settings
from worker import audit
from worker.app import create_celery
from worker.runtime import runtime_of
from worker.tasks import send_batches


def _queued(url: str, queue: str) -> list[list[Any]]:
    """The args of every message waiting on queue, oldest first (kombu pushes to the list's head)."""
    raw = redis.Redis.from_url(url).lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in reversed(raw)]


def test_a_task_carries_up_to_requests_per_task_requests_worth_but_few_documents_spread(
    tmp_path: Path, fresh_redis: str
) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        fresh_redis,
        worker=WorkerSettings(concurrency=2, requests_per_task=4),
    )
    batch = settings.tier("small").batch_size  # documents per request
    task = SimpleNamespace(app=create_celery(settings))
    queue = tier_queue("small")

    def chunks(n: int, size: int) -> list[int]:
        return [size] * (n // size) + ([n % size] if n % size else [])

    n = 25 * batch + 1
    cases = [  # ids, alone, documents per task
        (list(range(n)), False, chunks(n, 4 * batch)),  # a backlog: four requests' worth a task
        (list(range(5 * batch)), False, chunks(5 * batch, 2 * batch)),  # 2 each spreads 5 over 2 processes
        (list(range(3 * batch)), False, chunks(3 * batch, batch)),  # fewer than 2 per process: one each
        (list(range(n)), True, chunks(n, batch)),  # asked one by one: a request's worth
    ]
    for ids, alone, sizes in cases:
        redis.Redis.from_url(fresh_redis).delete(queue)
        send_batches(task, "small", ids, alone=alone)  # type: ignore[arg-type]
        sent = _queued(fresh_redis, queue)
        assert [len(args[1]) for args in sent] == sizes
        assert [i for args in sent for i in args[1]] == ids  # every id once, in order
        assert all(args[0] == "small" and (args[2:] == [True]) == alone for args in sent)


def test_audits_go_in_the_last_tiers_full_batches_and_a_part_batch_waits_for_its_flush(
    tmp_path: Path, fresh_redis: str
) -> None:
    """Each classify task opens a few audits; gathered in Redis, they reach the auditor a batch a task,
    every id once, even with several workers gathering at once."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fresh_redis)
    size = settings.models[-1].batch_size
    task: Any = SimpleNamespace(app=create_celery(settings))
    runtime = runtime_of(task)
    audits_queue = tier_queue(settings.models[-1].name)

    def flushes() -> list[tuple[str, bool]]:
        """The tasks waiting on the control queue: their names, and whether each has a countdown."""
        raw = redis.Redis.from_url(fresh_redis).lrange("control", 0, -1)
        return [(h["task"], h["eta"] is not None) for h in (json.loads(m)["headers"] for m in raw)]

    audit.gather(task, runtime, list(range(size - 1)))
    assert _queued(fresh_redis, audits_queue) == []  # a part batch waits
    assert flushes() == [("docsort.audit_flush", True)]
    audit.gather(task, runtime, [100, 101, 102])
    assert _queued(fresh_redis, audits_queue) == [[[*range(size - 1), 100]]]  # one full batch, in order
    assert len(flushes()) == 1  # a flush is due already
    assert audit.flush(task) == 2
    assert _queued(fresh_redis, audits_queue)[-1] == [[101, 102]]
    assert audit.flush(task) == 0

    redis.Redis.from_url(fresh_redis).delete(audits_queue)

    def worker(w: int) -> None:  # a worker's tasks open two audits each
        for i in range(0, 250, 2):
            audit.gather(task, runtime, [w * 1000 + i, w * 1000 + i + 1])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    audit.flush(task)
    sent = [args[0] for args in _queued(fresh_redis, audits_queue)]
    assert sorted(i for ids in sent for i in ids) == [w * 1000 + i for w in range(4) for i in range(250)]
    assert [len(ids) for ids in sent] == [size] * (1000 // size) + ([1000 % size] if 1000 % size else [])


def test_audits_that_cannot_be_gathered_are_sent_at_once(tmp_path: Path, fresh_redis: str) -> None:
    """A Redis error on the gathering connection does not hold audits back: they go to the auditor now."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fresh_redis)
    task: Any = SimpleNamespace(app=create_celery(settings))  # its broker answers
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    runtime: Any = SimpleNamespace(settings=unreachable)
    size = settings.models[-1].batch_size
    audit.gather(task, runtime, list(range(size + 3)))
    assert _queued(fresh_redis, tier_queue(settings.models[-1].name)) == [
        [list(range(size))],
        [[size, size + 1, size + 2]],
    ]
