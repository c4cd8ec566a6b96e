"""End to end with real parts: API -> database -> Redis -> Celery worker -> llama.cpp -> database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from classifiers.costs import Usage, cost_nanousd
from core.config import Settings
from docsort.demo import samples
from tests.conftest import make_settings, running
from worker.app import create_celery

pytestmark = [pytest.mark.llm, pytest.mark.slow]
FINAL = {"done", "needs_review", "failed"}


def wait_final(client: TestClient, ids: list[int], timeout: float = 400) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = [client.get(f"/v1/documents/{i}").json() for i in ids]
        if all(d["status"] in FINAL for d in docs):
            return docs
        time.sleep(0.5)
    raise AssertionError(f"not final: {[(d['id'], d['status']) for d in docs]}")


@pytest.fixture
def stack(
    tmp_path: Path, database_url: str, fresh_redis: str, llama_port: int
) -> Iterator[tuple[TestClient, Settings]]:
    settings = make_settings(tmp_path, database_url, fresh_redis, port=llama_port)
    settings.worker.flush_interval_s = 0.2
    celery = create_celery(settings)
    with running(settings, celery) as client:
        yield client, settings


def test_documents_are_classified_with_tokens_and_costs(stack: tuple[TestClient, Settings]) -> None:
    client, settings = stack
    items = samples()[:6]
    r = client.post(
        "/v1/documents",
        json={"documents": [{"text": s["text"], "external_id": s["id"]} for s in items]},
    )
    assert r.status_code == 202
    docs = wait_final(client, [d["id"] for d in r.json()["data"]])
    labels = {label.name for label in settings.default_taxonomy.labels}
    prices = {t.name: t.price for t in settings.models}
    for doc in docs:
        assert doc["status"] in {"done", "needs_review"}, doc
        assert doc["attempts"], doc
        if doc["label"] is None:
            # The tiny offline model can fail every re-ask: that is a review, said so, never "done".
            assert doc["status"] == "needs_review" and doc["status_reason"], doc
        else:
            assert doc["label"] in labels and doc["tier"] in prices
            assert 0 <= doc["confidence"] <= 1
        for attempt in doc["attempts"]:
            assert attempt["input_tokens"] > 0 and attempt["output_tokens"] > 0
    # Shares of a request add up, to the nano-dollar, to the request's usage at the price table.
    requests: dict[tuple[str, str], list[dict[str, Any]]] = {}
    total_by_tier: dict[str, float] = {}
    for doc in docs:
        for a in doc["attempts"]:
            requests.setdefault((a["tier"], a["request_id"]), []).append(a)
            total_by_tier[a["tier"]] = total_by_tier.get(a["tier"], 0) + a["cost_usd"]
    for (tier, _), shares in requests.items():
        usage = Usage(
            input_tokens=sum(a["input_tokens"] for a in shares),
            cached_tokens=sum(a["cached_tokens"] for a in shares),
            output_tokens=sum(a["output_tokens"] for a in shares),
        )
        assert round(sum(a["cost_usd"] for a in shares) * 1e9) == cost_nanousd(usage, prices[tier])
    costs = client.get("/v1/costs").json()
    # Every request in the books is one the documents' attempts came from, and nothing went unanswered.
    assert costs["requests"]["answered"] == len(requests) and costs["requests"]["in_flight"] == 0
    assert costs["unanswered_requests"]["requests"] == 0
    assert costs["documents"] == len(docs)
    assert costs["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in docs))
    for row in costs["by_tier"]:
        assert row["cost_usd"] == pytest.approx(total_by_tier[row["tier"]])
    assert costs["cost_if_all_large_usd"] > 0


def test_single_posts_are_micro_batched(stack: tuple[TestClient, Settings]) -> None:
    client, _ = stack
    ids = [
        client.post("/v1/documents", json={"text": s["text"]}).json()["data"][0]["id"]
        for s in samples()[6:10]
    ]
    docs = wait_final(client, ids)
    first_requests = {d["attempts"][0]["request_id"] for d in docs}
    assert len(first_requests) < len(ids)  # several single POSTs shared a model request
