"""Faults with real processes: a worker killed mid-batch, Redis restarted, a model endpoint down for a while.

Each ends with every document done or needs_review, with one final label and its costs recorded once.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import Settings, WorkerSettings
from docsort.demo import samples
from docsort.services import Supervisor, free_port, llama_services, redis_service
from tests.conftest import make_settings, offline_tiers
from tests.processes import BeatProcess, WorkerProcess, wait_for

pytestmark = [pytest.mark.llm, pytest.mark.slow]
FINAL = {"done", "needs_review"}
FAST_RECOVERY = WorkerSettings(
    concurrency=1, flush_interval_s=0.2, lease_grace_s=5, requeue_after_s=10, reconcile_every_s=3
)


def post(client: TestClient, texts: list[str]) -> list[int]:
    r = client.post("/v1/documents", json={"documents": [{"text": t} for t in texts]})
    assert r.status_code == 202, r.text
    return [d["id"] for d in r.json()["data"]]


def statuses(client: TestClient, ids: list[int]) -> list[dict[str, Any]]:
    return [client.get(f"/v1/documents/{i}").json() for i in ids]


def all_final(client: TestClient, ids: list[int]) -> list[dict[str, Any]] | None:
    docs = statuses(client, ids)
    return docs if all(d["status"] in FINAL for d in docs) else None


def assert_recorded_once(docs: list[dict[str, Any]], settings: Settings) -> None:
    labels = {label.name for label in settings.default_taxonomy.labels}
    for doc in docs:
        assert doc["status"] in FINAL, doc
        # needs_review may carry no label at all when no tier gave a valid answer
        assert doc["label"] in labels or (doc["status"] == "needs_review" and doc["label"] is None), doc
        answered = Counter(a["tier"] for a in doc["attempts"] if a["outcome"] != "invalid")
        assert all(n == 1 for n in answered.values()), doc["attempts"]  # one answer per tier, once


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[Supervisor, Settings, int]]:
    """A Redis this test may stop and restart."""
    port = free_port()
    base = Settings(data_dir=tmp_path / "redis", models=offline_tiers(1))
    sup = Supervisor(tmp_path / "logs")
    sup.start(redis_service(base, port))
    yield sup, base, port
    sup.stop()


def test_worker_killed_mid_batch(
    tmp_path: Path, database_url: str, fresh_redis: str, llama_port: int
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        fresh_redis,
        models=offline_tiers(llama_port, timeout_s=60),
        worker=FAST_RECOVERY,
    )
    with TestClient(create_app(settings)) as client:
        ids = post(client, [s["text"] for s in samples()[:6]])
        beat = BeatProcess(settings, tmp_path / "beat.log")
        first = WorkerProcess(settings, tmp_path / "w1.log", "w1")
        try:
            wait_for(
                lambda: any(d["status"] == "classifying" for d in statuses(client, ids)),
                90,
                "a batch in flight",
            )
        finally:
            first.kill()
        assert not all_final(client, ids)
        second = WorkerProcess(settings, tmp_path / "w2.log", "w2")
        try:
            docs = wait_for(lambda: all_final(client, ids), 600, "every document final", interval=2)
        finally:
            second.stop()
            beat.stop()
        assert_recorded_once(docs, settings)
        assert client.get("/v1/costs").json()["documents"] == len(ids)


def test_redis_restart_loses_messages_not_documents(
    tmp_path: Path, own_redis: tuple[Supervisor, Settings, int], llama_port: int
) -> None:
    sup, base, port = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", url, port=llama_port, worker=FAST_RECOVERY
    )
    with TestClient(create_app(settings)) as client:
        ids = post(client, [s["text"] for s in samples()[:6]])
        worker = WorkerProcess(settings, tmp_path / "w.log")
        beat = BeatProcess(settings, tmp_path / "beat.log")
        try:
            wait_for(lambda: any(d["status"] != "queued" for d in statuses(client, ids)), 90, "work started")
            sup.stop()  # no persistence: every queued message is gone
            r = client.post(
                "/v1/documents", json={"text": "Arrived while Redis was down: the port authority reopened."}
            )
            assert r.status_code == 202 and r.json()["queued"] is False
            ids.append(r.json()["data"][0]["id"])
            time.sleep(1)
            sup.start(redis_service(base, port))
            docs = wait_for(lambda: all_final(client, ids), 600, "every document final", interval=2)
        finally:
            worker.stop()
            beat.stop()
        assert_recorded_once(docs, settings)


def test_model_endpoint_down_for_a_while(tmp_path: Path, fresh_redis: str) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fresh_redis, port=port, worker=FAST_RECOVERY
    )
    sup = Supervisor(tmp_path / "logs")
    with TestClient(create_app(settings)) as client:
        ids = post(client, [s["text"] for s in samples()[8:12]])
        worker = WorkerProcess(settings, tmp_path / "w.log")
        try:
            time.sleep(6)  # connection refused meanwhile: the task retries with backoff
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0
            assert not all_final(client, ids)
            for service in llama_services(settings):
                sup.start(service)
            docs = wait_for(lambda: all_final(client, ids), 600, "every document final", interval=2)
        finally:
            worker.stop()
            sup.stop()
        assert_recorded_once(docs, settings)
