"""Bulk classification through a Batch API: an S3 import (SeaweedFS) with `"batch": true`, a real worker
and Redis, beat polling, and the fake Batch API (its own process) answering lines through the real
llama.cpp server and billing them at batch prices."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.main import create_app
from core.config import Settings, WorkerSettings
from core.tiers import GPT_4O, GPT_4O_MINI, ModelTier
from core.vocab import ShardStatus
from docsort.demo import samples
from docsort.services import free_port
from store import shards
from store.db import session_scope
from store.models import BatchShard, ModelRequest
from tests.conftest import make_settings
from tests.processes import ROOT, BeatProcess, Process, WorkerProcess, wait_for
from tests.s3_fixtures import S3Server, put_many, s3_server  # noqa: F401

pytestmark = [pytest.mark.llm, pytest.mark.slow]
FAST = WorkerSettings(
    concurrency=1, flush_interval_s=0.1, lease_grace_s=2, requeue_after_s=3, reconcile_every_s=1
)
FINAL = {"done", "needs_review"}


class FakeBatchAPI(Process):
    """tests/fake_batch_api.py in its own process, answering through the llama.cpp server."""

    def __init__(self, port: int, upstream_port: int, log: Path) -> None:
        argv = [sys.executable, "-m", "tests.fake_batch_api", "--port", str(port)]
        argv += ["--upstream", f"http://127.0.0.1:{upstream_port}/v1", "--upstream-model", "smollm2-135m"]
        argv += ["--price", f"batch-small={GPT_4O_MINI.input},{GPT_4O_MINI.output}"]
        argv += ["--price", f"batch-large={GPT_4O.input},{GPT_4O.output}"]
        super().__init__(argv, {"PYTHONPATH": str(ROOT)}, log)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, 20, "the fake Batch API")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/_faults", json=faults, timeout=5).raise_for_status()

    def get(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}{path}", timeout=10).json()
        return data


def batch_tiers(port: int, **overrides: Any) -> list[ModelTier]:
    common: dict[str, Any] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "transport": "json_schema",
        "confidence": "stated",
        "top_logprobs": 0,
        "tokenizer": "approx",
        "batch_size": 4,
        "max_output_tokens": 64,
        "doc_token_budget": 200,
        "timeout_s": 120.0,
        "batch_api": "imports",
        "batch_flush_s": 0.0,
    }
    thresholds = {"small": overrides.pop("threshold", 0.9), "large": overrides.pop("threshold_large", 0.5)}
    common.update(overrides)
    return [
        ModelTier(
            name="small", model="batch-small", price=GPT_4O_MINI, threshold=thresholds["small"], **common
        ),
        ModelTier(name="large", model="batch-large", price=GPT_4O, threshold=thresholds["large"], **common),
    ]


@pytest.fixture
def fake(tmp_path: Path, llama_port: int) -> Iterator[FakeBatchAPI]:
    server = FakeBatchAPI(free_port(), llama_port, tmp_path / "fake-batch.log")
    yield server
    server.kill()


def seed_prefix(s3: S3Server, prefix: str, count: int) -> None:
    texts = [s["text"] for s in samples()][:count]
    put_many(s3.client, s3.bucket, {f"{prefix}/{i:02d}.txt": t.encode() for i, t in enumerate(texts)})


def import_settings(
    tmp_path: Path, fresh_redis: str, s3: S3Server, models: list[ModelTier], prefix: str, count: int
) -> Settings:
    """Settings for one batch import test (SQLite, FAST worker) and its prefix seeded with count texts."""
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fresh_redis, models=models, worker=FAST
    )
    settings.s3.endpoint_url = s3.endpoint
    seed_prefix(s3, prefix, count)
    return settings


def start_import(client: TestClient, s3: S3Server, prefix: str) -> int:
    r = client.post(
        "/v1/imports",
        json={"source": f"s3://{s3.bucket}/{prefix}/", "endpoint_url": s3.endpoint, "batch": True},
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def finished(client: TestClient, import_id: int, timeout: float = 600) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state: dict[str, Any] = client.get(f"/v1/imports/{import_id}").json()
        return state if state["status"] == "done" else None

    result: dict[str, Any] = wait_for(done, timeout, "the import to finish", interval=1)
    return result


def create_engine_for(settings: Settings) -> Any:
    from store.db import make_engine

    return make_engine(settings.db_url)


def books_match_the_bill(settings: Settings, fake: FakeBatchAPI) -> list[ModelRequest]:
    """Each request docsort recorded as answered is on the fake's bill (batched ones at batch prices), and
    the totals agree; returns the batched requests."""
    from store.db import make_engine

    engine = make_engine(settings.db_url)
    with Session(engine) as session:
        rows = list(session.exec(select(ModelRequest)))
    engine.dispose()
    bill = fake.get("/_bill")
    for row in rows:
        entries = bill["lines"] if row.batched else bill["sync"]
        if row.state == "answered":
            entry = entries[row.id]
            assert (row.input_tokens, row.output_tokens) == (
                entry["prompt_tokens"],
                entry["completion_tokens"],
            )
            assert row.cost_nanousd == entry["cost_nanousd"]  # batched: half the price, to the nano-dollar
        else:
            assert row.id not in entries and row.cost_nanousd == 0  # failed or expired lines are not billed
    assert sum(r.cost_nanousd for r in rows if r.state == "answered") == bill["total_nanousd"]
    return [r for r in rows if r.batched]


def test_a_batch_import_ends_done_or_review_at_batch_prices(
    tmp_path: Path, s3: S3Server, fresh_redis: str, fake: FakeBatchAPI
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    settings = import_settings(tmp_path, fresh_redis, s3, batch_tiers(port), "batchimp", 8)
    fake.faults(shuffle=True)  # lines come back in any order: they are joined on custom_id
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    beat = BeatProcess(settings, tmp_path / "beat.log")
    try:
        with TestClient(create_app(settings)) as client:
            import_id = start_import(client, s3, "batchimp")
            state = finished(client, import_id)
            docs = client.get(f"/v1/imports/{import_id}/documents").json()["data"]
            costs = client.get("/v1/costs").json()
            # A shard's documents are final a moment before its files are deleted and it is marked
            # ingested: the import is done only after that (CI once read it in between).
            last = state["batches"][-1]["id"]
            engine = client.app.state.engine  # type: ignore[attr-defined]
            for status, shown in ((ShardStatus.submitted, "classifying"), (ShardStatus.ingested, "done")):
                with session_scope(engine) as session:
                    shards.record(session=session, shard_id=last, status=status)
                assert client.get(f"/v1/imports/{import_id}").json()["status"] == shown
    finally:
        worker.stop()
        beat.stop()
    assert state["classified"] + state["needs_review"] == 8 and state["pending"] == 0
    assert {d["status"] for d in docs} <= FINAL
    assert state["batches"] and all(b["status"] == "ingested" for b in state["batches"])
    assert state["batch_cost_usd"] > 0
    assert state["batch_saving_usd"] == pytest.approx(state["batch_cost_usd"])  # half price: saves as much
    rows = books_match_the_bill(settings, fake)
    assert rows and all(r.state == "answered" for r in rows)
    assert costs["cost_usd"] * 1e9 == pytest.approx(fake.get("/_bill")["total_nanousd"])
    assert costs["batch_api"]["cost_usd"] == pytest.approx(state["batch_cost_usd"])
    assert costs["batch_api"]["saving_usd"] == pytest.approx(costs["batch_api"]["cost_usd"])
    stats = fake.get("/_stats")
    assert stats["batches_created"] == len(state["batches"])
    assert stats["deleted_files"] == stats["files"]  # input, output (and error) files deleted once read


def test_no_shard_is_submitted_twice_across_a_worker_kill(
    tmp_path: Path, s3: S3Server, fresh_redis: str, fake: FakeBatchAPI
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    settings = import_settings(
        tmp_path, fresh_redis, s3, batch_tiers(port, timeout_s=5.0, threshold=0.0), "batchkill", 4
    )
    fake.faults(hold_create_s=15)  # the batch is created, but the answer comes too late for the worker
    first = WorkerProcess(settings, tmp_path / "w1.log", "w1")
    beat = BeatProcess(settings, tmp_path / "beat.log")
    try:
        with TestClient(create_app(settings)) as client:
            import_id = start_import(client, s3, "batchkill")
            wait_for(lambda: fake.get("/_stats")["batches_created"] >= 1, 120, "a batch created")
            first.kill()
            with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
                [shard] = session.exec(select(BatchShard)).all()
            assert shard.batch_id is None  # it never learned the batch's id
            second = WorkerProcess(settings, tmp_path / "w2.log", "w2")
            try:
                state = finished(client, import_id)
            finally:
                second.stop()
    finally:
        first.kill()
        beat.stop()
    keys = [b["metadata"]["docsort_shard"] for b in fake.get("/v1/batches")["data"]]
    with Session(create_engine_for(settings)) as session:
        stored = sorted(s.key for s in session.exec(select(BatchShard)))
    assert (
        sorted(keys) == stored
    )  # each shard submitted once: the first found again by its key, not made twice
    assert state["classified"] + state["needs_review"] == 4
    books_match_the_bill(settings, fake)


def test_expired_and_failed_lines_are_finished_after_all(
    tmp_path: Path, s3: S3Server, fresh_redis: str, fake: FakeBatchAPI
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    settings = import_settings(
        tmp_path,
        fresh_redis,
        s3,
        batch_tiers(port, batch_size=1, threshold=0.0, batch_line_retries=1)[:1],
        "batchexp",
        4,
    )
    # The first batch expires after one answered line; of the rest, one fails once more in its retry.
    fake.faults(expire_after=1)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    beat = BeatProcess(settings, tmp_path / "beat.log")
    try:
        with TestClient(create_app(settings)) as client:
            import_id = start_import(client, s3, "batchexp")
            wait_for(lambda: fake.get("/_stats")["batches_created"] >= 1, 120, "the first batch")
            time.sleep(1)
            fake.faults(fail_lines=1)
            state = finished(client, import_id)
    finally:
        worker.stop()
        beat.stop()
    assert state["classified"] + state["needs_review"] == 4
    with Session(create_engine_for(settings)) as session:
        shards_ = {s.id: s for s in session.exec(select(BatchShard))}
        requests_ = list(session.exec(select(ModelRequest)))
    first = min(shards_)
    first_lines = {line["id"] for line in shards_[first].lines}
    expired = {i for r in requests_ if r.id in first_lines and r.state == "failed" for i in r.doc_ids}
    assert len(expired) == 3  # one line answered before the batch expired; three expired, not billed
    retried = {i for s in shards_.values() if s.retry == 1 for line in s.lines for i in line["doc_ids"]}
    assert expired <= retried  # resubmitted, each alone in its line
    assert all(len(line["doc_ids"]) == 1 for s in shards_.values() if s.retry for line in s.lines)
    books_match_the_bill(settings, fake)
    assert fake.get("/_bill")["sync"]  # the line that failed in its retry too was asked synchronously


def test_unreadable_answers_are_asked_as_often_as_synchronously_then_reviewed(
    tmp_path: Path, s3: S3Server, fresh_redis: str, fake: FakeBatchAPI
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    settings = import_settings(
        tmp_path,
        fresh_redis,
        s3,
        batch_tiers(port, batch_size=2, threshold=0.0, max_reasks=1)[:1],
        "batchgarbage",
        2,
    )
    fake.faults(garbage_lines=100)  # every line is answered and billed, none readable
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    beat = BeatProcess(settings, tmp_path / "beat.log")
    try:
        with TestClient(create_app(settings)) as client:
            import_id = start_import(client, s3, "batchgarbage")
            state = finished(client, import_id)
            listed = client.get(f"/v1/imports/{import_id}/documents").json()["data"]
            docs = [client.get(f"/v1/documents/{d['id']}").json() for d in listed]
    finally:
        worker.stop()
        beat.stop()
    assert state["needs_review"] == 2 and state["classified"] == 0
    with Session(create_engine_for(settings)) as session:
        shards_ = sorted(session.exec(select(BatchShard)), key=lambda s: s.retry)
    # Asked 1 + max_reasks times, as a synchronous run asks: packed, then each alone; never synchronously.
    assert [(s.retry, [line["doc_ids"] for line in s.lines]) for s in shards_] == [
        (0, [sorted(d["id"] for d in docs)]),
        (1, [[d] for d in sorted(d["id"] for d in docs)]),
    ]
    bill = fake.get("/_bill")
    assert len(bill["lines"]) == 3 and bill["sync"] == {}
    batched = books_match_the_bill(settings, fake)
    assert len(batched) == 3 and all(r.state == "answered" for r in batched)  # billed, so paid for
    for doc in docs:
        assert doc["status"] == "needs_review"
        assert doc["attempts"] and all(a["error"] for a in doc["attempts"])  # why: no readable answer
